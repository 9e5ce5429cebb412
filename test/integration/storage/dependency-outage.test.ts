// Dependency outages against the REAL peers: relais on PostgreSQL (index) and Ceph RGW (storage). While
// PostgreSQL, then S3, is stopped mid-test, a warm blob and a manifest answer 503 UNAVAILABLE with
// Retry-After and a hint (not 500 INTERNAL), /readyz says 503, and the upstream is not asked instead; once
// the peer is back, the same requests answer 200 with the verified bytes and /readyz says 200.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { OUTAGE_RETRY_AFTER_S } from '../../../src/errors.js';
import { testClock } from '../../peers/clock.js';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { startS3, type S3Peer } from '../../peers/s3.js';
import { errorCode, http, type HttpResult } from '../core/helpers.js';

let upstream: RegistryPeer;
let pg: PostgresPeer;
let s3: S3Peer;
let relais: RelaisPeer;
let image: BuiltImage;
const clock = testClock();
const bucket = 'relais-outage';

before(async () => {
  [upstream, pg, s3] = await Promise.all([startRegistry(), startPostgres(), startS3()]);
  await s3.createBucket(bucket);
  const url = await pg.createDatabase('outage');
  image = await pushRandomImage(upstream.host, 'library/outage:v1', { layers: [3_000_000, 5000] });
  relais = await startRelais({
    upstreams: { 'docker.io': upstream.url },
    config: { index: { driver: 'postgres', postgres: { url } }, storage: { driver: 's3', s3: s3.storageConfig(bucket) } },
    clock: () => clock.now(),
  });
  // Warm: the blob is cached (index row + S3 object) before the outages.
  const warm = await http(`${relais.url}/v2/library/outage/blobs/${layer()}`);
  assert.equal(warm.status, 200);
  await relais.instance.blobs.settle();
});

after(async () => {
  await relais.close();
  await Promise.all([upstream.close(), pg.close(), s3.close()]);
});

function layer(): string {
  const d = image.layers[0]?.digest;
  assert.ok(d !== undefined);
  return d;
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function assertOutage(r: HttpResult, what: RegExp | undefined, label: string): void {
  assert.equal(r.status, 503, `${label}: 503, not 500 (${r.body.toString('utf8').slice(0, 300)})`);
  assert.equal(r.headers['retry-after'], String(OUTAGE_RETRY_AFTER_S), `${label}: Retry-After`);
  if (what === undefined) return; // HEAD: no body
  assert.equal(errorCode(r), 'UNAVAILABLE', label);
  const e = (JSON.parse(r.body.toString('utf8')) as { errors: { message: string; hint?: string }[] }).errors[0];
  assert.match(e?.message ?? '', what, label);
  assert.ok((e?.hint ?? '') !== '', `${label}: a hint`);
}

async function readyz(): Promise<number> {
  // Readiness answers of a remote backend are reused for 2 s.
  clock.advance(2100);
  return (await http(`${relais.url}/readyz`)).status;
}

test('PostgreSQL down: blob and manifest requests answer 503 with Retry-After, /readyz 503; back once it is', async () => {
  assert.equal(await readyz(), 200);
  await pg.stop();
  upstream.clearLog();
  assertOutage(await http(`${relais.url}/v2/library/outage/blobs/${layer()}`), /cache index \(PostgreSQL\) is unavailable/, 'GET blob');
  assertOutage(await http(`${relais.url}/v2/library/outage/blobs/${layer()}`, { method: 'HEAD' }), undefined, 'HEAD blob');
  assertOutage(await http(`${relais.url}/v2/library/outage/manifests/v1`), /cache index \(PostgreSQL\) is unavailable/, 'GET manifest');
  assert.equal(await readyz(), 503, '/readyz says 503 while PostgreSQL is down');
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'the upstream is not asked for the blob instead');

  await pg.start();
  const back = await http(`${relais.url}/v2/library/outage/blobs/${layer()}`);
  assert.equal(back.status, 200, 'served again once PostgreSQL is back');
  assert.equal(sha(back.body), layer());
  assert.equal((await http(`${relais.url}/v2/library/outage/manifests/v1`)).status, 200);
  assert.equal(await readyz(), 200);
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'from the cache, not the upstream');
});

test('S3 down: a cached blob answers 503 with Retry-After, /readyz 503; back once the gateway is', async () => {
  assert.equal(await readyz(), 200);
  await s3.stopGateway();
  upstream.clearLog();
  assertOutage(await http(`${relais.url}/v2/library/outage/blobs/${layer()}`), /cache storage \(S3\) is unavailable/, 'GET blob');
  assert.equal(await readyz(), 503, '/readyz says 503 while S3 is down');
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'the upstream is not asked for the blob instead');

  await s3.startGateway();
  const back = await http(`${relais.url}/v2/library/outage/blobs/${layer()}`);
  assert.equal(back.status, 200, 'served again once S3 is back');
  assert.equal(sha(back.body), layer());
  assert.equal(await readyz(), 200);
});
