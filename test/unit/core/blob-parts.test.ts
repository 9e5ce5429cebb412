// The parts BlobService is made of, each on its own: admission (does a download fit), holds (blobs being
// served), and the cluster's wrapper around the core's blob source (who may fetch from the upstream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterBlobSource, type Claim } from '../../../src/cluster/peers.js';
import { RelaisError } from '../../../src/errors.js';
import { SpaceAdmission } from '../../../src/cache/admission.js';
import type { BlobHandle, Fetched, LocalBlobSource } from '../../../src/cache/blob-source.js';
import type { BlobDownload } from '../../../src/cache/download.js';
import { BlobHolds } from '../../../src/cache/holds.js';

const MiB = 1024 * 1024;

test('admission: a blob fits in free space minus what downloads in flight still need; else eviction is asked for the shortfall', async () => {
  let free = 10 * MiB;
  let pending = 0;
  const asked: number[] = [];
  const admission = new SpaceAdmission({
    storage: { freeSpace: () => Promise.resolve(free) },
    pending: () => pending,
    makeRoom: (bytes) => {
      asked.push(bytes);
      return Promise.resolve(0);
    },
  });
  await admission.admit('sha256:a', 5 * MiB);
  assert.deepEqual(asked, []);

  pending = 6 * MiB;
  await assert.rejects(admission.admit('sha256:a', 5 * MiB), (e: unknown) => e instanceof RelaisError && e.code === 'STORAGE_FULL' && e.status === 503);
  // 5 MiB + 6 MiB pending + the 1 MiB margin, minus 10 MiB free.
  assert.deepEqual(asked, [2 * MiB]);

  // Eviction that frees the room admits the download.
  const roomy = new SpaceAdmission({
    storage: { freeSpace: () => Promise.resolve(free) },
    pending: () => pending,
    makeRoom: (bytes) => {
      free += bytes;
      return Promise.resolve(bytes);
    },
  });
  await roomy.admit('sha256:a', 5 * MiB);
  assert.equal(free, 12 * MiB);
});

test('holds: counted per client, released once each, the digest let go when the last client is done', () => {
  const holds = new BlobHolds();
  const a = holds.hold('sha256:a');
  const b = holds.hold('sha256:a');
  assert.ok(holds.has('sha256:a'));
  a();
  a(); // idempotent
  assert.ok(holds.has('sha256:a'), 'one client left');
  b();
  assert.equal(holds.has('sha256:a'), false);
  assert.equal(holds.size, 0);
});

/** The core's own source, recording what it was asked. */
function localSource(inFlight: Set<string>): LocalBlobSource & { fetched: string[]; done: Promise<void>; finish(): void } {
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const fetched: string[] = [];
  return {
    fetched,
    done,
    finish,
    downloading: (digest) => inFlight.has(digest),
    fetch: (_route, digest): Promise<Fetched> => {
      fetched.push(digest);
      return Promise.resolve({ kind: 'local', download: { digest, done } as unknown as BlobDownload, started: !inFlight.has(digest) });
    },
  };
}

const route = { upstream: 'docker.io', repo: 'library/x' };

test('cluster wrapper: a download in flight here is joined without asking the cluster', async () => {
  const local = localSource(new Set(['sha256:a']));
  const claims: string[] = [];
  const source = new ClusterBlobSource(local, { claim: (d) => (claims.push(d), Promise.resolve<Claim>({ kind: 'stored' })) });
  const f = await source.fetch(route, 'sha256:a');
  assert.equal(f.kind, 'local');
  assert.deepEqual(claims, []);
  assert.deepEqual(local.fetched, ['sha256:a']);
});

test('cluster wrapper: the lease holder fetches here and binds the lease to the download; others stream or read storage', async () => {
  const local = localSource(new Set());
  const bound: Promise<unknown>[] = [];
  const remote: BlobHandle = { digest: 'sha256:r', size: 1, result: 'join', open: () => Promise.reject(new Error('unused')), openFile: () => Promise.resolve(undefined) };
  const answers: Record<string, Claim> = {
    'sha256:l': { kind: 'local', bind: (done) => bound.push(done) },
    'sha256:r': { kind: 'remote', handle: remote },
    'sha256:s': { kind: 'stored' },
  };
  const source = new ClusterBlobSource(local, { claim: (d) => Promise.resolve(answers[d] ?? { kind: 'stored' }) });

  const l = await source.fetch(route, 'sha256:l');
  assert.equal(l.kind, 'local');
  assert.deepEqual(bound, [local.done], 'the lease goes when the download ends');

  const r = await source.fetch(route, 'sha256:r');
  assert.deepEqual(r, { kind: 'remote', handle: remote });
  assert.deepEqual(await source.fetch(route, 'sha256:s'), { kind: 'stored' });
  assert.deepEqual(local.fetched, ['sha256:l'], 'only the lease holder reaches the core (and so the upstream)');
  local.finish();
});
