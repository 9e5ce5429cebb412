// What the core says it changed and how another process applies it (ManifestService.onChange / applyChange /
// dropMemory), with two services on one index and one storage, as two replicas share PostgreSQL and S3, and
// one's changes handed to the other as src/cluster/invalidations.ts hands them. No upstream is configured: a
// lookup that leaves memory and finds nothing in the index fails, which is how the tests see that memory went.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestService, type ManifestChange } from '../../../src/cache/manifests.js';
import { SqliteIndex } from '../../../src/index/sqlite.js';
import { FilesystemDriver } from '../../../src/storage/fs.js';

const UPSTREAM = 'registry.test';
const route = { upstream: UPSTREAM, repo: 'team/app' };

function manifest(n: number): { body: Buffer; digest: string } {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { digest: `sha256:${String(n).padStart(64, '0')}`, size: 1 }, layers: [] }));
  return { body, digest: `sha256:${createHash('sha256').update(body).digest('hex')}` };
}

async function replicas(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'relais-manifest-changes-'));
  const index = new SqliteIndex(join(dir, 'index.db'));
  const storage = new FilesystemDriver(join(dir, 'storage'));
  t.after(async () => {
    await index.close();
    await rm(dir, { recursive: true, force: true });
  });
  const make = (): ManifestService =>
    new ManifestService({ storage, index, upstreams: new Map(), settings: () => ({ tagTtl: 600_000, maxStale: 0, notFoundTtl: 600_000 }), maxManifestSize: 1 << 20 });
  const a = make();
  const b = make();
  const sent: ManifestChange[] = [];
  a.onChange((c) => sent.push(c));
  const forgotten: (ReadonlySet<string> | 'all')[] = [];
  b.onForget((d) => forgotten.push(d));
  return { a, b, index, sent, forgotten };
}

test('a push kept on A: A says which tag moved and from which digest; B, told, answers the new digest', async (t) => {
  const { a, b, sent, forgotten } = await replicas(t);
  const one = manifest(1);
  const two = manifest(2);
  assert.equal((await a.keepPushed(route, 'v1', one.body, undefined, one.digest)).kept, true);
  assert.deepEqual(sent, [{ kind: 'references', upstream: UPSTREAM, repo: 'team/app', references: ['v1'], digests: [] }]);
  assert.equal((await b.get(route, 'v1')).digest, one.digest, 'B reads it from the shared index and remembers it');

  sent.length = 0;
  await a.keepPushed(route, 'v1', two.body, undefined, two.digest);
  assert.deepEqual(sent, [{ kind: 'references', upstream: UPSTREAM, repo: 'team/app', references: ['v1'], digests: [one.digest] }]);
  // Not told: B still answers from its memory (fresh for tagTtl).
  assert.equal((await b.get(route, 'v1')).digest, one.digest, 'B, not told, answers from memory');
  for (const c of sent) b.applyChange(c);
  assert.equal((await b.get(route, 'v1')).digest, two.digest, 'B, told, reads the index');
  assert.ok(forgotten.some((d) => d !== 'all' && d.has(one.digest)), 'B\'s prepared responses of the old digest are dropped');
});

test('eviction on A forgets manifests: B, told, no longer serves them from memory', async (t) => {
  const { a, b, index, sent } = await replicas(t);
  const one = manifest(3);
  await a.keepPushed(route, 'v1', one.body, undefined, one.digest);
  assert.equal((await b.get(route, 'v1')).digest, one.digest);
  // What the evictor does: the index rows go, then the service forgets them.
  await index.deleteContent([one.digest]);
  sent.length = 0;
  a.forget([one.digest]);
  assert.deepEqual(sent, [{ kind: 'forgotten', digests: [one.digest] }]);
  assert.equal((await b.get(route, 'v1')).digest, one.digest, 'B, not told, still answers from memory');
  for (const c of sent) b.applyChange(c);
  // Out of memory and out of the index: B would ask the upstream (none here).
  await assert.rejects(b.get(route, 'v1'));
});

test('a DELETE forgets the tags naming the digest, and says so; applying a change emits nothing again', async (t) => {
  const { a, b, sent } = await replicas(t);
  const one = manifest(4);
  await a.keepPushed(route, 'v1', one.body, undefined, one.digest);
  await a.keepPushed(route, 'latest', one.body, undefined, one.digest);
  sent.length = 0;
  assert.deepEqual((await a.forgetDeleted(route, one.digest)).sort(), ['latest', 'v1']);
  assert.equal(sent.length, 1);
  const change = sent[0];
  assert.ok(change?.kind === 'references');
  assert.deepEqual([...change.references].sort(), ['latest', 'v1']);
  assert.deepEqual(change.digests, [one.digest]);
  const echoed: ManifestChange[] = [];
  b.onChange((c) => echoed.push(c));
  b.applyChange(change);
  assert.deepEqual(echoed, [], 'B does not pass it on');
});

test('dropMemory forgets every tag mapping and prepared response, and says how many', async (t) => {
  const { a, b, forgotten } = await replicas(t);
  const one = manifest(5);
  await a.keepPushed(route, 'v1', one.body, undefined, one.digest);
  await b.get(route, 'v1');
  assert.deepEqual(b.dropMemory(), { tags: 1, notFound: 0 });
  assert.deepEqual(forgotten.at(-1), 'all');
  assert.deepEqual(b.dropMemory(), { tags: 0, notFound: 0 });
});
