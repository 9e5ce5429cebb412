// relais as a cluster: three replicas on different ports sharing one S3 bucket (a real Ceph RGW) and one
// PostgreSQL database, in front of a real CNCF distribution. What the upstream saw comes from
// distribution's access log.
//   - 8 skopeo clients spread over the replicas cold-pull one image: each blob is fetched from the
//     upstream exactly once, cluster-wide.
//   - An object the index still lists is deleted from the bucket under a 12-client pull on 3 replicas: the
//     refetch goes through the download lease like any upstream fetch (one upstream GET, cluster-wide).
//   - The replica fetching a large blob is killed (SIGKILL, a real process) mid-download: another replica
//     takes the work over once the lease expires, clients retry and succeed, and nothing partial is ever
//     visible (no object in the bucket, no index row) until the verified blob is committed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { blobKey } from '../../../src/storage/driver.js';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { freePort } from '../../peers/ports.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { removeDir, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { startS3, type S3Peer } from '../../peers/s3.js';
import { skopeoPull } from '../core/helpers.js';

const SECRET = 'cluster-test-secret-0123456789';
const BUCKET = 'cluster';
const MAIN = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));

let upstream: RegistryPeer;
let s3: S3Peer;
let pg: PostgresPeer;
let dbUrl: string;
let throttle: ThrottleProxy;
const replicas: RelaisPeer[] = [];
let dir: string;

/**
 * A plain HTTP proxy in front of the upstream that slows blob bodies down to `bytesPerSecond` (so
 * downloads overlap, and one can be killed midway). Every request is passed on as is.
 */
interface ThrottleProxy {
  readonly url: string;
  bytesPerSecond: number;
  /** Delay before each manifest request is passed on (so that the replicas' misses overlap). */
  manifestDelayMs: number;
  close(): Promise<void>;
}

async function startThrottle(target: string): Promise<ThrottleProxy> {
  const t = new URL(target);
  const state = { bytesPerSecond: 0, manifestDelayMs: 0 };
  const server: Server = createServer((req, res) => {
    void (async () => {
      if (state.manifestDelayMs > 0 && /\/manifests\//.test(req.url ?? '')) await sleep(state.manifestDelayMs);
      passOn(req, res);
    })();
  });
  const passOn = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void => {
    const up = httpRequest({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      const slow = state.bytesPerSecond > 0 && /\/blobs\//.test(req.url ?? '');
      if (!slow) {
        ures.pipe(res);
        return;
      }
      const started = Date.now();
      let sent = 0;
      void (async () => {
        try {
          for await (const data of ures as AsyncIterable<Buffer>) {
            if (res.destroyed) throw new Error('client gone');
            res.write(data);
            sent += data.byteLength;
            // Hold the pace: sent bytes never run ahead of the rate.
            const due = started + (sent / state.bytesPerSecond) * 1000 - Date.now();
            if (due > 0) await sleep(due);
          }
          res.end();
        } catch {
          ures.destroy();
          res.destroy();
        }
      })();
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get bytesPerSecond() {
      return state.bytesPerSecond;
    },
    set bytesPerSecond(v: number) {
      state.bytesPerSecond = v;
    },
    get manifestDelayMs() {
      return state.manifestDelayMs;
    },
    set manifestDelayMs(v: number) {
      state.manifestDelayMs = v;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const clusterConfig = (): Record<string, unknown> => ({
  storage: { driver: 's3', s3: s3.storageConfig(BUCKET, 'relais/') },
  index: { driver: 'postgres', postgres: { url: dbUrl, poolSize: 5 } },
  cluster: { secret: SECRET, leaseTtl: '2s' },
  log: { level: 'info', requests: false },
});

before(async () => {
  [upstream, s3, pg, dir] = await Promise.all([startRegistry(), startS3(), startPostgres(), tempDir('cluster')]);
  await s3.createBucket(BUCKET);
  dbUrl = await pg.createDatabase('cluster');
  throttle = await startThrottle(upstream.url);
  for (let i = 0; i < 3; i++) {
    replicas.push(await startRelais({ upstreams: { 'docker.io': throttle.url }, config: clusterConfig() }));
  }
});

after(async () => {
  for (const r of replicas) await r.close().catch(() => undefined);
  await throttle.close();
  await Promise.all([upstream.close(), s3.close(), pg.close(), removeDir(dir)]);
});

const blobDigests = (img: BuiltImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];

async function objectSha(key: string): Promise<string | undefined> {
  try {
    const r = await s3.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    const bytes = await r.Body?.transformToByteArray();
    return bytes ? createHash('sha256').update(bytes).digest('hex') : undefined;
  } catch {
    return undefined;
  }
}

async function objectExists(key: string): Promise<boolean> {
  try {
    await s3.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    return true;
  } catch {
    return false;
  }
}

test('3 replicas, 8 clients cold-pull one image: every blob is fetched from the upstream exactly once, cluster-wide', async () => {
  const image = await pushRandomImage(upstream.host, 'library/clustered:v1', { layers: [6_000_000, 2_500_000, 900_000, 40_000] });
  // 4 MB/s: each blob takes long enough for the replicas' misses to overlap.
  throttle.bytesPerSecond = 4_000_000;
  upstream.clearLog();
  const pulls = await Promise.all(
    Array.from({ length: 8 }, (_, i) => skopeoPull((replicas[i % 3] as RelaisPeer).host, 'library/clustered:v1')),
  );
  for (const p of pulls) for (const d of blobDigests(image)) assert.ok(p.files.has(d), `client got ${d}`);
  await upstream.settle();
  for (const d of blobDigests(image)) assert.equal(upstream.blobGets(d), 1, `upstream GETs of ${d}`);

  // Everything is in the shared bucket, whole; no lease, spool file or multipart upload is left.
  for (const l of image.layers) assert.equal(await objectSha(`relais/${blobKey(l.digest)}`), l.digest.slice('sha256:'.length));
  assert.deepEqual(await pg.query('cluster', 'SELECT digest FROM download_leases'), []);
  assert.equal(await s3.pendingUploads(BUCKET), 0);
  for (const r of replicas) assert.deepEqual(await readdir(join(r.dataDir, 'spool')), []);

  // Warm: a client on any replica pulls with no blob GET upstream.
  upstream.clearLog();
  await skopeoPull((replicas[2] as RelaisPeer).host, 'library/clustered:v1');
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0);
});

test('a cached blob lost from the bucket, pulled by 4 clients on each of 3 replicas: fetched again from the upstream exactly once, under the lease', async () => {
  const image = await pushRandomImage(upstream.host, 'library/lost:v1', { layers: [8_000_000] });
  const layer = image.layers[0];
  assert.ok(layer);
  const key = `relais/${blobKey(layer.digest)}`;
  const blobUrl = (r: RelaisPeer): string => `${r.url}/v2/library/lost/blobs/${layer.digest}`;
  const sha = async (r: RelaisPeer): Promise<{ status: number; sha: string }> => {
    const res = await fetch(blobUrl(r));
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, sha: `sha256:${createHash('sha256').update(body).digest('hex')}` };
  };
  // Cached: in the index and in the bucket.
  assert.deepEqual(await sha(replicas[0] as RelaisPeer), { status: 200, sha: layer.digest });
  for (const r of replicas) await r.instance.blobs.settle();
  assert.equal(await objectSha(key), layer.digest.slice('sha256:'.length));

  // The object goes (by hand, or evicted by one replica while another serves it); the index still lists it.
  await s3.client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.equal(await objectExists(key), false);
  assert.equal((await pg.query('cluster', 'SELECT digest FROM content WHERE digest = $1', [layer.digest])).length, 1);

  // 4 MB/s: the refetch takes ~2 s, so every replica's clients arrive while it runs.
  throttle.bytesPerSecond = 4_000_000;
  try {
    upstream.clearLog();
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => sha(replicas[i % 3] as RelaisPeer)));
    for (const r of results) assert.deepEqual(r, { status: 200, sha: layer.digest });
    await upstream.settle();
    assert.equal(upstream.blobGets(layer.digest), 1, 'one upstream GET for 12 clients on 3 replicas');
  } finally {
    throttle.bytesPerSecond = 0;
  }
  for (const r of replicas) await r.instance.blobs.settle();
  assert.equal(await objectSha(key), layer.digest.slice('sha256:'.length), 'stored again, whole');
  assert.deepEqual(await pg.query('cluster', 'SELECT digest FROM download_leases WHERE digest = $1', [layer.digest]), []);
});

test('3 replicas, 9 concurrent requests for a new tag: one manifest GET upstream, cluster-wide; the others read it from the shared index', async () => {
  const image = await pushRandomImage(upstream.host, 'library/tagged:v1', { layers: [10_000] });
  throttle.manifestDelayMs = 300;
  try {
    upstream.clearLog();
    const results = await Promise.all(
      Array.from({ length: 9 }, async (_, i) => {
        const r = replicas[i % 3] as RelaisPeer;
        const res = await fetch(`${r.url}/v2/library/tagged/manifests/v1`, { headers: { accept: image.manifestMediaType } });
        return { status: res.status, body: Buffer.from(await res.arrayBuffer()), digest: res.headers.get('docker-content-digest') };
      }),
    );
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, image.manifest);
      assert.equal(r.digest, image.manifestDigest);
    }
    await upstream.settle();
    assert.equal(upstream.manifestGets(), 1, 'one manifest GET upstream for 3 replicas');
    assert.deepEqual(await pg.query('cluster', "SELECT digest FROM download_leases WHERE digest LIKE 'manifest:%'"), [], 'no manifest lease left');
  } finally {
    throttle.manifestDelayMs = 0;
  }
});

test('the replica fetching a blob is killed midway: another one takes over, clients retry and succeed, nothing partial is visible', async () => {
  const image = await pushRandomImage(upstream.host, 'library/crashy:v1', { layers: [10_000_000, 30_000] });
  const big = image.layers[0];
  assert.ok(big);
  const bigKey = `relais/${blobKey(big.digest)}`;

  // The victim: a real relais process on the same bucket and database, to be SIGKILLed.
  const port = await freePort();
  const victimDir = join(dir, 'victim');
  const configFile = join(dir, 'victim.json');
  await writeFile(configFile, JSON.stringify({ ...clusterConfig(), listen: `127.0.0.1:${port}`, dataDir: victimDir, upstreams: { 'docker.io': { url: throttle.url } } }));
  const victim: ManagedProcess = await startProcess(process.execPath, [MAIN, 'serve', '--config', configFile], { name: 'relais-victim' });
  try {
    await waitForHttp(`http://127.0.0.1:${port}/readyz`, 30_000, { accept: (s) => s === 200, process: victim });

    // 1 MB/s: the 10 MB layer takes ~10 s, the victim is killed after ~2 s of it.
    throttle.bytesPerSecond = 1_000_000;
    upstream.clearLog();
    const pull = async (host: string, fallback: string[]): Promise<Map<string, number>> => {
      // What a CI job does when its registry connection breaks: retry, via the load balancer (another replica).
      let lastError: unknown;
      for (const h of [host, ...fallback]) {
        try {
          return (await skopeoPull(h, 'library/crashy:v1', ['--retry-times', '2'])).files;
        } catch (e) {
          lastError = e;
        }
      }
      throw lastError;
    };
    const others = replicas.map((r) => r.host);
    const first = pull(`127.0.0.1:${port}`, others);
    // Wait until the victim holds the lease of the big layer (it is downloading it).
    const deadline = Date.now() + 20_000;
    for (;;) {
      const rows = await pg.query<{ owner_url: string }>('cluster', 'SELECT owner_url FROM download_leases WHERE digest = $1', [big.digest]);
      if (rows[0]?.owner_url === `http://127.0.0.1:${port}`) break;
      assert.ok(Date.now() < deadline, 'the victim never took the lease of the big layer');
      await sleep(50);
    }
    // 7 more clients on the surviving replicas: they join the victim's download and stream from it until it
    // dies. Killed once every surviving replica serves the big layer to a client (the 10 MB take ~10 s).
    const rest = Array.from({ length: 7 }, (_, i) => pull(others[i % 3] ?? '', others));
    const joinDeadline = Date.now() + 20_000;
    while (!replicas.every((r) => r.instance.blobs.isBusy(big.digest))) {
      assert.ok(Date.now() < joinDeadline, 'the other replicas never served the big layer');
      await sleep(50);
    }
    assert.equal(await objectExists(bigKey), false, 'mid-download: nothing in the bucket');
    victim.child.kill('SIGKILL');
    await victim.exited;

    // Nothing partial is visible: no object, no index row, while the blob is not complete.
    assert.equal(await objectExists(bigKey), false, 'after the kill: nothing in the bucket');
    assert.deepEqual(await pg.query('cluster', 'SELECT digest FROM content WHERE digest = $1', [big.digest]), []);

    // The dead victim renews nothing: its lease would expire within cluster.leaseTtl (2 s). Rather than wait
    // for that, advance the lease clock: leases are timed by the database's clock (src/cluster/leases.ts), so
    // the lease's expiry moves into the past in PostgreSQL. The survivors still have to notice the expiry and
    // take the work over themselves (no row is deleted, no owner changed here); if the victim's lease had
    // already expired and been taken over, nothing is touched. The takeover download may go faster (4 MB/s):
    // the survivors' clients still overlap it.
    await pg.query(
      'cluster',
      'UPDATE download_leases SET expires_at = (extract(epoch from clock_timestamp()) * 1000)::bigint - 1 WHERE digest = $1 AND owner_url = $2',
      [big.digest, `http://127.0.0.1:${port}`],
    );
    throttle.bytesPerSecond = 4_000_000;

    const results = await Promise.all([first, ...rest]);
    for (const files of results) for (const d of blobDigests(image)) assert.ok(files.has(d), `client got ${d}`);
    assert.equal(await objectSha(bigKey), big.digest.slice('sha256:'.length), 'the stored blob is whole and verified');
    await upstream.settle();
    // The victim's cut transfer, then exactly one replica's complete one.
    assert.equal(upstream.blobGets(big.digest), 2, 'upstream GETs of the big layer: the killed one and one takeover');
    assert.equal(upstream.blobGets(image.layers[1]?.digest), 1);
    assert.deepEqual(await pg.query('cluster', 'SELECT digest FROM download_leases WHERE digest = $1', [big.digest]), []);
    assert.equal(await s3.pendingUploads(BUCKET), 0);
  } finally {
    throttle.bytesPerSecond = 0;
    await victim.stop();
  }
});

test('the internal spool endpoint wants the cluster secret; without a download it answers 404', async () => {
  const r = replicas[0] as RelaisPeer;
  const digest = `sha256:${'0'.repeat(64)}`;
  const get = async (headers: Record<string, string>): Promise<number> => (await fetch(`${r.url}/_relais/cluster/spool/${digest}`, { headers })).status;
  assert.equal(await get({}), 401);
  assert.equal(await get({ authorization: 'Bearer wrong-secret-wrong-secret-wrong' }), 401);
  assert.equal(await get({ authorization: `Bearer ${SECRET}x` }), 401);
  assert.equal(await get({ authorization: `Bearer ${SECRET}` }), 404);
  assert.equal((await fetch(`${r.url}/_relais/cluster/spool/not-a-digest`, { headers: { authorization: `Bearer ${SECRET}` } })).status, 400);
});
