// A cluster sees its own writes (docs/cluster.md, "What each replica remembers"): three replicas, each with its
// own proxy door, on one S3 bucket (a real Ceph RGW) and one PostgreSQL, in front of a real CNCF distribution.
// Pushes go through replica A's proxy door (skopeo, and a hand-made client for single manifest PUTs and a
// DELETE); pulls go to replicas B and C, whose memories (a remembered 404, a tag fresh for tagTtl, a prepared
// response) would otherwise answer for up to notFoundTtl / tagTtl. What the upstream saw comes from
// distribution's access log.
//   - a `pull || true` of a tag not pushed yet (404 remembered on B and C), then a skopeo push via A: B and C
//     answer the pushed digest, from the shared index (no manifest GET upstream);
//   - a tag pushed again with another digest via A: B answers the new digest, its prepared response is gone;
//   - a DELETE via A: B forgets the tag (asks the upstream, which says 404);
//   - B's listening connection killed (pg_terminate_backend): B listens again, drops its memory (a 404 it
//     remembered is gone) and says so in its log, and the next push via A is seen by B again.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProxyAgent, request } from 'undici';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { removeDir, run, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { MANIFEST_ACCEPT, registryFetch } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { startS3, type S3Peer } from '../../peers/s3.js';

const HOST = 'registry.cluster.test';
const SECRET = 'cluster-pushes-secret-0123456789';
const BUCKET = 'pushes';

let upstream: RegistryPeer;
let s3: S3Peer;
let pg: PostgresPeer;
let dir: string;
const replicas: RelaisPeer[] = [];

const replica = (i: number): RelaisPeer => {
  const r = replicas[i];
  assert.ok(r);
  return r;
};
const A = (): RelaisPeer => replica(0);
const B = (): RelaisPeer => replica(1);
const C = (): RelaisPeer => replica(2);

before(async () => {
  [upstream, s3, pg, dir] = await Promise.all([startRegistry(), startS3(), startPostgres(), tempDir('cluster-pushes')]);
  await s3.createBucket(BUCKET);
  const dbUrl = await pg.createDatabase('pushes');
  for (let i = 0; i < 3; i++) {
    replicas.push(
      await startRelais({
        upstreams: { [HOST]: upstream.url },
        config: {
          storage: { driver: 's3', s3: s3.storageConfig(BUCKET, 'relais/') },
          index: { driver: 'postgres', postgres: { url: dbUrl, poolSize: 5 } },
          cluster: { secret: SECRET, leaseTtl: '2s' },
          proxy: { listen: '127.0.0.1:0' },
          // Long enough that nothing in this file outlives a remembered 404 or a fresh tag by itself.
          upstreams: { [HOST]: { notFoundTtl: '10m', tagTtl: '10m' } },
          log: { level: 'info', requests: false },
        },
      }),
    );
  }
  for (const r of replicas) assert.equal(r.instance.cluster?.invalidations.connected, true, 'every replica listens');
});

after(async () => {
  for (const r of replicas) await r.close().catch(() => undefined);
  await Promise.all([upstream.close(), s3.close(), pg.close(), removeDir(dir)]);
});

function invalidations(r: RelaisPeer) {
  const inv = r.instance.cluster?.invalidations;
  assert.ok(inv, 'cluster mode');
  return inv;
}

/** Awaits a condition polled every 10 ms; fails after `ms`. Returns how long it took. */
async function until(what: string, cond: () => boolean, ms = 10_000): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting for: ${what}`);
    await sleep(10);
  }
  return Date.now() - start;
}

/**
 * Runs a write through A and waits until every other replica received every message A sent for it (A's
 * pushes settled first: a kept manifest is sent once it is stored). Returns the slowest delivery in ms.
 */
async function throughA(write: () => Promise<void>, others: RelaisPeer[] = [B(), C()]): Promise<number> {
  const sentBefore = invalidations(A()).counts.sent;
  const receivedBefore = others.map((r) => invalidations(r).counts.received);
  await write();
  await A().instance.pushes?.settle();
  const sent = invalidations(A()).counts.sent - sentBefore;
  assert.ok(sent > 0, 'A told the others');
  let slowest = 0;
  for (const [i, r] of others.entries()) {
    const ms = await until(`replica ${r.port} received ${sent} message(s) from A`, () => invalidations(r).counts.received - (receivedBefore[i] ?? 0) >= sent);
    slowest = Math.max(slowest, ms);
  }
  return slowest;
}

/** A client of A's proxy door: HTTPS to the intercepted host through A's proxy port. */
async function doorOfA(method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer } = {}) {
  const proxy = A().instance.proxy;
  assert.ok(proxy, 'A has a proxy door');
  const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: proxy.ca.certPem, servername: HOST } });
  try {
    const res = await request(`https://${HOST}${path}`, { method: method as 'GET', headers: opts.headers ?? {}, body: opts.body ?? null, dispatcher: agent });
    return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) };
  } finally {
    await agent.close();
  }
}

/** A pull of a manifest by tag from a replica's HTTP door: status and digest. */
async function pull(r: RelaisPeer, repo: string, tag: string): Promise<{ status: number; digest: string | null; body: Buffer }> {
  const res = await registryFetch(`${r.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, digest: res.headers.get('docker-content-digest'), body: res.body };
}

/** Manifest GETs the upstream saw for a repository since its log was cleared. */
const manifestGets = (repo: string): number => upstream.count('GET', new RegExp(`^/v2/${repo}/manifests/`));

/** An image whose blobs the upstream holds in `repo` (pushed straight to it under a scratch tag). */
const imageIn = (repo: string, scratchTag: string, size: number): Promise<BuiltImage> => pushRandomImage(upstream.host, `${repo}:${scratchTag}`, { layers: [size] });

/** A manifest PUT under `tag` through A's door (the blobs are upstream already). */
async function putThroughA(repo: string, tag: string, image: BuiltImage): Promise<void> {
  const r = await doorOfA('PUT', `/v2/${repo}/manifests/${tag}`, { body: image.manifest, headers: { 'content-type': image.manifestMediaType } });
  assert.equal(r.status, 201, r.body.toString());
}

test('pull || true via B and C (404 remembered), skopeo push via A: B and C answer the pushed digest from the shared index, no manifest GET upstream', async () => {
  await pushRandomImage(upstream.host, 'src/app:1', { layers: [300_000, 40_000] });
  // The job's `docker pull $IMAGE || true`: the tag is not there yet; B and C remember the 404.
  upstream.clearLog();
  for (const r of [B(), C()]) assert.equal((await pull(r, 'team/app', '1')).status, 404);
  await upstream.settle();
  assert.equal(manifestGets('team/app'), 2, 'each replica asked once');
  upstream.clearLog();
  for (const r of [B(), C()]) assert.equal((await pull(r, 'team/app', '1')).status, 404, 'remembered');
  await upstream.settle();
  assert.equal(manifestGets('team/app'), 0, 'the 404 is answered from memory (notFoundTtl)');

  // The push, through A's proxy door, with skopeo (reads the source through the door too).
  const proxy = A().instance.proxy;
  assert.ok(proxy);
  const certDir = join(dir, 'certs');
  await mkdir(certDir, { recursive: true });
  await writeFile(join(certDir, 'ca.crt'), proxy.ca.certPem);
  const authfile = join(dir, 'auth.json');
  await writeFile(authfile, '{}');
  const delivered = await throughA(async () => {
    const r = await run('skopeo', ['copy', '--authfile', authfile, '--src-cert-dir', certDir, '--dest-cert-dir', certDir, `docker://${HOST}/src/app:1`, `docker://${HOST}/team/app:1`], {
      timeoutMs: 120_000,
      extraEnv: { HTTPS_PROXY: proxy.url },
    });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  });
  // What the upstream holds now (skopeo may have written the manifest in another form than the source's).
  const pushed = await registryFetch(`${upstream.url}/v2/team/app/manifests/1`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(pushed.status, 200);
  const pushedDigest = pushed.headers.get('docker-content-digest');
  assert.ok(pushedDigest);
  assert.equal((await A().instance.index.getTag(HOST, 'team/app', '1'))?.digest, pushedDigest, 'A kept the push in the shared index');

  // The next job's pull via B (and C): the pushed image, from the shared index and bucket.
  upstream.clearLog();
  for (const r of [B(), C()]) {
    const got = await pull(r, 'team/app', '1');
    assert.equal(got.status, 200, `replica ${r.port} forgot its 404`);
    assert.equal(got.digest, pushedDigest);
    assert.deepEqual(got.body, pushed.body);
  }
  await upstream.settle();
  assert.equal(manifestGets('team/app'), 0, 'no manifest GET upstream: the index had it');
  assert.equal(upstream.count('HEAD', /^\/v2\/team\/app\/manifests\//), 0, 'nor a HEAD: the push counts as a confirmation');
  // Said for the lead's report: how long A's change took to reach the slowest replica.
  console.log(`# invalidation delivered to B and C within ${delivered} ms`);
});

test('a tag pushed again with another digest via A: B answers the new digest and its prepared response is gone', async () => {
  const first = await imageIn('team/web', 'scratch-1', 50_000);
  const second = await imageIn('team/web', 'scratch-2', 60_000);
  await throughA(() => putThroughA('team/web', 'stable', first));
  // B serves the tag from memory, then from a prepared response (fresh for tagTtl).
  const hot = B().instance.hotManifests;
  const prepared = hot.size;
  for (let i = 0; i < 3; i++) assert.equal((await pull(B(), 'team/web', 'stable')).digest, first.manifestDigest);
  assert.equal(hot.size, prepared + 1, 'B prepared a response for the tag');

  await throughA(() => putThroughA('team/web', 'stable', second));
  assert.equal(hot.size, prepared, 'B dropped the prepared response of the old digest');
  upstream.clearLog();
  const got = await pull(B(), 'team/web', 'stable');
  assert.equal(got.status, 200);
  assert.equal(got.digest, second.manifestDigest, 'B answers the new digest');
  assert.deepEqual(got.body, second.manifest);
  await upstream.settle();
  assert.equal(manifestGets('team/web'), 0, 'from the shared index');
});

test('a DELETE via A: B forgets the tag and asks the upstream, which no longer has it', async () => {
  const image = await imageIn('team/gone', 'scratch', 30_000);
  await throughA(() => putThroughA('team/gone', 'v1', image));
  for (let i = 0; i < 2; i++) assert.equal((await pull(B(), 'team/gone', 'v1')).digest, image.manifestDigest, 'B has the tag in memory');

  await throughA(async () => {
    const del = await doorOfA('DELETE', `/v2/team/gone/manifests/${image.manifestDigest}`);
    assert.equal(del.status, 202, del.body.toString());
  });
  upstream.clearLog();
  assert.equal((await pull(B(), 'team/gone', 'v1')).status, 404, 'B forgot the tag');
  await upstream.settle();
  assert.equal(manifestGets('team/gone'), 1, 'B asked the upstream');
});

test('B\'s listening connection killed: B listens again, drops its memory and says so; the next push via A is seen by B', async () => {
  const inv = invalidations(B());
  // A tag B remembers as missing, then pushed straight to the upstream (no replica hears of it).
  assert.equal((await pull(B(), 'team/quiet', '1')).status, 404);
  const quiet = await pushRandomImage(upstream.host, 'team/quiet:1', { layers: [20_000] });
  assert.equal((await pull(B(), 'team/quiet', '1')).status, 404, 'B still remembers the 404');

  const resyncs = inv.counts.resyncs;
  const t0 = Date.now();
  const name = `relais-listen ${B().instance.cluster?.id ?? ''}`;
  const killed = await pg.query<{ ok: boolean }>('pushes', 'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1', [name]);
  assert.deepEqual(killed, [{ ok: true }], 'B\'s listening backend terminated');
  await until('B listens again', () => inv.counts.resyncs > resyncs && inv.connected);
  const ms = Date.now() - t0;
  assert.ok(B().logs().some((l) => l.event === 'cluster-listen-lost'), 'B logged the loss');
  const line = B().logs().find((l) => l.event === 'cluster-resync');
  assert.ok(line, 'B logged that it dropped its memory');
  assert.equal(typeof line.downMs, 'number');
  console.log(`# B listened again ${ms} ms after its backend was terminated`);

  // The 404 B remembered before is gone: B asks the index and the upstream again.
  upstream.clearLog();
  const got = await pull(B(), 'team/quiet', '1');
  assert.equal(got.status, 200);
  assert.equal(got.digest, quiet.manifestDigest);
  await upstream.settle();
  assert.equal(manifestGets('team/quiet'), 1);

  // The next push via A reaches B again: a 404 B remembers after listening again, then the push.
  assert.equal((await pull(B(), 'team/next', '1')).status, 404);
  const next = await imageIn('team/next', 'scratch', 20_000);
  await throughA(() => putThroughA('team/next', '1', next), [B()]);
  upstream.clearLog();
  const after = await pull(B(), 'team/next', '1');
  assert.equal(after.status, 200);
  assert.equal(after.digest, next.manifestDigest);
  await upstream.settle();
  assert.equal(manifestGets('team/next'), 0);
});
