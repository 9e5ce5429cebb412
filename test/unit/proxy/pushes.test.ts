// Keeping pushes: the request forms the door recognises, and the upload sessions' rules (commit only on a
// matching digest and the upstream's 201; bounds; order; idle sessions), on a real filesystem storage and
// SQLite index in a temp dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classifyPush, uploadUuid } from '../../../src/doors/proxy/push.js';
import { parseByteSpan, UploadSessions, type ChunkTap } from '../../../src/cache/pushes.js';
import { SqliteIndex } from '../../../src/index/sqlite.js';
import { FilesystemDriver } from '../../../src/storage/fs.js';
import { blobKey } from '../../../src/storage/driver.js';

const route = { upstream: 'registry.example', repo: 'team/app' };
const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

test('classifyPush: every upload form, manifests, and what is not a push', () => {
  assert.deepEqual(classifyPush('POST', '/v2/team/app/blobs/uploads/', {}), { kind: 'start', name: 'team/app' });
  assert.deepEqual(classifyPush('POST', '/v2/team/app/blobs/uploads/?digest=sha256:ab', {}), { kind: 'monolithic', name: 'team/app', digest: 'sha256:ab' });
  assert.deepEqual(classifyPush('POST', '/v2/a/b/c/blobs/uploads/?mount=sha256:ab&from=x/y', {}), { kind: 'mount', name: 'a/b/c', digest: 'sha256:ab', from: 'x/y' });
  assert.deepEqual(classifyPush('PATCH', '/v2/team/app/blobs/uploads/u-1?_state=s', { 'content-range': '10-19' }), { kind: 'chunk', name: 'team/app', uuid: 'u-1', start: 10 });
  assert.deepEqual(classifyPush('PATCH', '/v2/team/app/blobs/uploads/u-1', {}), { kind: 'chunk', name: 'team/app', uuid: 'u-1', start: undefined });
  assert.deepEqual(classifyPush('PUT', '/v2/team/app/blobs/uploads/u-1?_state=s&digest=sha256%3Aab', {}), { kind: 'final', name: 'team/app', uuid: 'u-1', digest: 'sha256:ab', start: undefined });
  assert.deepEqual(classifyPush('DELETE', '/v2/team/app/blobs/uploads/u-1', {}), { kind: 'cancel', name: 'team/app', uuid: 'u-1' });
  assert.deepEqual(classifyPush('PUT', '/v2/team/app/manifests/v1', {}), { kind: 'manifest', name: 'team/app', reference: 'v1' });
  assert.deepEqual(classifyPush('DELETE', '/v2/team/app/manifests/sha256:ab', {}), { kind: 'deleteManifest', name: 'team/app', reference: 'sha256:ab' });
  // A PUT without a digest is not a final chunk; reads and other paths are no pushes.
  assert.equal(classifyPush('PUT', '/v2/team/app/blobs/uploads/u-1', {}), undefined);
  assert.equal(classifyPush('GET', '/v2/team/app/blobs/uploads/u-1', {}), undefined);
  assert.equal(classifyPush('HEAD', '/v2/team/app/blobs/sha256:ab', {}), undefined);
  assert.equal(classifyPush('POST', '/v2/token', {}), undefined);
});

test('uploadUuid: from Location (absolute or not), else Docker-Upload-UUID', () => {
  assert.equal(uploadUuid({ location: 'http://127.0.0.1:5000/v2/team/app/blobs/uploads/abc-123?_state=x' }), 'abc-123');
  assert.equal(uploadUuid({ location: '/v2/team/app/blobs/uploads/abc-123' }), 'abc-123');
  assert.equal(uploadUuid({ 'docker-upload-uuid': 'u-9' }), 'u-9');
  assert.equal(uploadUuid({ location: '/elsewhere', 'docker-upload-uuid': '../x' }), undefined);
});

test('parseByteSpan: "start-end" and the bytes forms', () => {
  assert.deepEqual(parseByteSpan('0-99'), { start: 0, end: 99 });
  assert.deepEqual(parseByteSpan('bytes=5-9'), { start: 5, end: 9 });
  assert.equal(parseByteSpan('9-5'), undefined);
  assert.equal(parseByteSpan('x'), undefined);
  assert.equal(parseByteSpan(undefined), undefined);
});

async function setup(opts: { maxUploads?: number; idleMs?: number; mayKeep?: boolean } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'relais-pushes-'));
  const storage = new FilesystemDriver(join(dir, 'storage'));
  const index = new SqliteIndex(join(dir, 'index.db'));
  const spoolDir = join(dir, 'spool');
  await rm(spoolDir, { recursive: true, force: true });
  await mkdir(spoolDir, { recursive: true });
  let now = 1_000_000;
  const sessions = new UploadSessions({
    storage,
    index,
    spoolDir,
    maxUploads: opts.maxUploads ?? 4,
    idleMs: opts.idleMs ?? 60_000,
    now: () => now,
    ...(opts.mayKeep === false ? { mayKeep: () => Promise.resolve(false) } : {}),
  });
  return {
    sessions,
    storage,
    index,
    spool: () => readdir(spoolDir),
    advance: (ms: number) => (now += ms),
    close: async () => {
      await sessions.close();
      await index.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function send(tap: ChunkTap, data: Buffer, pieces = 3): Promise<void> {
  const step = Math.ceil(data.byteLength / pieces);
  for (let i = 0; i < data.byteLength; i += step) await tap.write(data.subarray(i, i + step));
  tap.end();
}

test('a chunked upload is committed when the digest matches and the upstream answered 201', async () => {
  const t = await setup();
  try {
    const data = randomBytes(200_000);
    assert.ok(t.sessions.start(route, 'u1'));
    const a = t.sessions.chunk(route, 'u1', 0);
    assert.ok(a);
    await send(a, data.subarray(0, 120_000));
    a.accepted('0-119999');
    const b = t.sessions.chunk(route, 'u1', 120_000);
    assert.ok(b);
    await send(b, data.subarray(120_000));
    b.completed(201, sha(data));
    await t.sessions.settle();
    assert.deepEqual(await t.storage.getContent(blobKey(sha(data))), data);
    assert.equal((await t.index.getContent(sha(data)))?.size, data.byteLength);
    assert.ok(await t.index.isLinked(route.upstream, route.repo, sha(data)));
    assert.equal(t.sessions.size, 0);
    assert.deepEqual(await t.spool(), []);
    assert.equal(t.sessions.stats.kept, 1);
  } finally {
    await t.close();
  }
});

test('a 201 for other bytes than the digest named (a mismatch) is never committed, and a 4xx with the right bytes neither', async () => {
  const t = await setup();
  try {
    const data = randomBytes(50_000);
    t.sessions.start(route, 'bad');
    const tap = t.sessions.chunk(route, 'bad', undefined);
    assert.ok(tap);
    await send(tap, data);
    const claimed = sha(randomBytes(10));
    tap.completed(201, claimed);
    await t.sessions.settle();
    assert.equal(await t.index.getContent(claimed), undefined);
    assert.equal(await t.index.getContent(sha(data)), undefined);
    assert.equal(t.sessions.stats.mismatches, 1);

    t.sessions.start(route, 'refused');
    const r = t.sessions.chunk(route, 'refused', undefined);
    assert.ok(r);
    await send(r, data);
    r.completed(400, sha(data));
    await t.sessions.settle();
    assert.equal(await t.index.getContent(sha(data)), undefined);
    assert.equal(await t.storage.stat(blobKey(sha(data))), undefined);
    assert.equal(t.sessions.stats.rejected, 1);
    assert.deepEqual(await t.spool(), [], 'spool files removed');
  } finally {
    await t.close();
  }
});

test('out of order, concurrent chunks, a body cut short, a PATCH the upstream counts otherwise: tracking dropped', async () => {
  const t = await setup();
  try {
    const data = randomBytes(1000);
    t.sessions.start(route, 'ooo');
    assert.equal(t.sessions.chunk(route, 'ooo', 500), undefined, 'a chunk that does not start at the offset');
    assert.equal(t.sessions.has(route, 'ooo'), false);

    t.sessions.start(route, 'conc');
    const first = t.sessions.chunk(route, 'conc', 0);
    assert.ok(first);
    assert.equal(t.sessions.chunk(route, 'conc', 0), undefined, 'a second request while the first is in flight');
    assert.equal(t.sessions.has(route, 'conc'), false);

    t.sessions.start(route, 'cut');
    const cut = t.sessions.chunk(route, 'cut', 0);
    assert.ok(cut);
    await cut.write(data.subarray(0, 10));
    cut.completed(201, sha(data.subarray(0, 10)));
    await t.sessions.settle();
    assert.equal(await t.index.getContent(sha(data.subarray(0, 10))), undefined, 'a body not seen to its end is never committed');

    t.sessions.start(route, 'range');
    const r = t.sessions.chunk(route, 'range', 0);
    assert.ok(r);
    await send(r, data);
    r.accepted('0-499');
    assert.equal(t.sessions.has(route, 'range'), false, 'the upstream holds other bytes than relais saw');
    await t.sessions.settle();
    assert.deepEqual(await t.spool(), []);
  } finally {
    await t.close();
  }
});

test('bounds: at most maxUploads sessions; idle ones are swept (injected clock) and make room', async () => {
  const t = await setup({ maxUploads: 2, idleMs: 10_000 });
  try {
    assert.ok(t.sessions.start(route, 'a'));
    assert.ok(t.sessions.start(route, 'b'));
    assert.equal(t.sessions.start(route, 'c'), false, 'over the bound: not tracked');
    assert.equal(t.sessions.monolithic(route), undefined);
    assert.equal(t.sessions.stats.untracked, 2);
    // 'a' gets a chunk (spooled), then both go idle.
    const tap = t.sessions.chunk(route, 'a', 0);
    assert.ok(tap);
    await send(tap, randomBytes(100));
    tap.accepted('0-99');
    assert.equal((await t.spool()).length, 1);
    t.advance(10_001);
    assert.ok(t.sessions.start(route, 'c'), 'idle sessions dropped to make room');
    assert.equal(t.sessions.has(route, 'a'), false);
    assert.equal(t.sessions.has(route, 'b'), false);
    await t.sessions.settle();
    assert.deepEqual(await t.spool(), [], 'the idle session\'s spool removed');
  } finally {
    await t.close();
  }
});

test('a blob the read rules refuse is not kept; a mount links only content relais holds', async () => {
  const t = await setup({ mayKeep: false });
  try {
    const data = randomBytes(3000);
    const m = t.sessions.monolithic(route);
    assert.ok(m);
    await send(m, data);
    m.completed(201, sha(data));
    await t.sessions.settle();
    assert.equal(await t.index.getContent(sha(data)), undefined);
    assert.equal(t.sessions.stats.refused, 1);
    assert.equal(await t.sessions.mounted({ upstream: route.upstream, repo: 'other/repo' }, sha(data)), false, 'not held: nothing linked');
  } finally {
    await t.close();
  }
});
