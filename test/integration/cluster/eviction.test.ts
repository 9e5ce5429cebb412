// Cluster-wide eviction: two replicas share one budget (storage.maxSize) on one S3 bucket and one
// PostgreSQL index; a run happens only on the replica holding the "job:evict" lease. While another
// holder keeps the lease nobody evicts; once it is free, exactly one replica evicts the least recently
// used image from the shared storage (objects and index rows), and the other finds the budget met and
// forgets the evicted manifest it remembered (the cluster's invalidations: no answer from stale memory).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterEvictor, EVICT_JOB } from '../../../src/eviction/cluster-evictor.js';
import { blobKey } from '../../../src/storage/driver.js';
import { pushRandomImage } from '../../peers/images.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { startS3, type S3Peer } from '../../peers/s3.js';
import { skopeoPull } from '../core/helpers.js';

const BUCKET = 'evict';
let upstream: RegistryPeer;
let s3: S3Peer;
let pg: PostgresPeer;
const replicas: RelaisPeer[] = [];

before(async () => {
  [upstream, s3, pg] = await Promise.all([startRegistry(), startS3(), startPostgres()]);
  await s3.createBucket(BUCKET);
  const url = await pg.createDatabase('evict');
  for (let i = 0; i < 2; i++) {
    replicas.push(
      await startRelais({
        upstreams: { 'docker.io': upstream.url },
        config: {
          storage: { driver: 's3', s3: s3.storageConfig(BUCKET), maxSize: 3_000_000, evictInterval: '500ms', gcInterval: 0 },
          index: { driver: 'postgres', postgres: { url } },
          cluster: { secret: 'eviction-test-secret-42', leaseTtl: '2s' },
          log: { requests: false },
        },
      }),
    );
  }
});

after(async () => {
  for (const r of replicas) await r.close();
  await Promise.all([upstream.close(), s3.close(), pg.close()]);
});

async function stored(digest: string): Promise<boolean> {
  try {
    await s3.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: blobKey(digest) }));
    return true;
  } catch {
    return false;
  }
}

const evictions = (): number => replicas.reduce((n, r) => n + r.logs().filter((l) => l.event === 'eviction').length, 0);

test('one shared budget, evicted by one replica at a time (the holder of the job lease)', async () => {
  const [r0, r1] = replicas;
  assert.ok(r0 && r1);
  for (const r of replicas) assert.ok(r.instance.evictor instanceof ClusterEvictor);
  // Another (pretend) replica holds the eviction job for an hour.
  // (An upsert: a replica may hold the job for a moment right now, for its start-up check.)
  await pg.query(
    'evict',
    `INSERT INTO download_leases (digest, owner, owner_url, acquired_at, expires_at) VALUES ($1, 'elsewhere', 'http://192.0.2.1:5000', 0, 9999999999999)
     ON CONFLICT (digest) DO UPDATE SET owner = excluded.owner, owner_url = excluded.owner_url, expires_at = excluded.expires_at`,
    [EVICT_JOB],
  );

  const old = await pushRandomImage(upstream.host, 'library/old:v1', { layers: [1_000_000, 900_000] });
  const recent = await pushRandomImage(upstream.host, 'library/recent:v1', { layers: [1_000_000, 900_000] });
  await skopeoPull(r0.host, 'library/old:v1');
  // The clients have their blobs once verified; the replicas store them a moment later. The old image's
  // rows and last accesses are in the shared index before the recent one is pulled.
  await r0.instance.blobs.settle();
  await r0.instance.index.flush();
  // The other replica reads the old tag too: both remember it, each in its own memory.
  assert.equal((await fetch(`${r1.url}/v2/library/old/manifests/v1`, { headers: { accept: old.manifestMediaType } })).status, 200);
  await skopeoPull(r1.host, 'library/recent:v1');
  for (const r of replicas) await r.instance.blobs.settle();
  for (const r of replicas) await r.instance.index.flush();
  const lastAccess = async (d: string): Promise<number> => (await r0.instance.index.getContent(d))?.lastAccess ?? Number.NaN;
  const oldest = Math.max(...(await Promise.all(old.layers.map((l) => lastAccess(l.digest)))));
  const newest = Math.min(...(await Promise.all(recent.layers.map((l) => lastAccess(l.digest)))));
  assert.ok(oldest < newest, `the old image was used less recently (${oldest} < ${newest})`);
  const usage = await r0.instance.index.usage();
  assert.ok(usage.bytes > 3_000_000, `over budget: ${usage.bytes}`);

  // Eviction runs come and go: both replicas want to run, neither may (awaited: two stand-backs each).
  const skippedNow = (): number[] =>
    replicas.map((r) => {
      const ev = r.instance.evictor;
      return ev instanceof ClusterEvictor ? ev.skipped.evict : 0;
    });
  const standBack = Date.now() + 15_000;
  while (!skippedNow().every((n) => n >= 2) && Date.now() < standBack) await sleep(50);
  assert.equal(evictions(), 0, 'no eviction while another replica holds the job');
  const skipped = skippedNow();
  assert.ok(skipped.every((n) => n >= 2), `both replicas tried (twice) and stood back: ${skipped.join(',')}`);
  for (const l of old.layers) assert.equal(await stored(l.digest), true);

  // The job is free: one replica evicts the least recently used image from the shared storage.
  await pg.query('evict', 'DELETE FROM download_leases WHERE digest = $1', [EVICT_JOB]);
  const deadline = Date.now() + 15_000;
  while (evictions() === 0 && Date.now() < deadline) await sleep(100);
  // A second (wrong) eviction would come from a run under way now or from a later one: wait for the
  // runs under way, run one more on each replica, and wait again.
  const evictors = replicas.map((r) => r.instance.evictor);
  await Promise.all(evictors.map((e) => e.idle()));
  await Promise.all(evictors.map((e) => e.runOnce()));
  await Promise.all(evictors.map((e) => e.idle()));
  assert.equal(evictions(), 1, 'exactly one eviction run in the cluster');
  for (const l of old.layers) {
    assert.equal(await stored(l.digest), false, `old layer ${l.digest} deleted from S3`);
    assert.equal(await r1.instance.index.getContent(l.digest), undefined, 'and from the shared index');
  }
  for (const l of recent.layers) assert.equal(await stored(l.digest), true, 'the recent image stays');
  assert.ok((await r0.instance.index.usage()).bytes <= 3_000_000);
  // The periodic runs (every 500 ms) take the job lease for a moment each: stop them (stop() waits for a run in
  // flight), so that a lease left now is one a run did not release.
  await Promise.all(evictors.map((e) => e.stop()));
  assert.deepEqual(await pg.query('evict', 'SELECT digest FROM download_leases'), [], 'the job lease was released');

  // The replica that did not evict was told (docs/cluster.md): it no longer answers the old tag from its
  // memory (fresh for tagTtl) but asks the upstream, as the shared index no longer has it.
  const other = replicas.find((r) => !r.logs().some((l) => l.event === 'eviction'));
  assert.ok(other);
  upstream.clearLog();
  const again = await fetch(`${other.url}/v2/library/old/manifests/v1`, { headers: { accept: old.manifestMediaType } });
  assert.equal(again.status, 200);
  await upstream.settle();
  assert.equal(upstream.manifestGets(), 1, 'the other replica forgot the evicted manifest');
});
