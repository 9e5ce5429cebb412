// relais serve on S3 (a real Ceph RGW): skopeo pulls through it, the blobs land in the bucket under the
// configured prefix, a restart serves them from S3 without asking the upstream, nothing is left behind
// (no spool file, no multipart upload), and /readyz follows the S3 service.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { blobKey } from '../../../src/storage/driver.js';
import { testClock } from '../../peers/clock.js';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { startS3, type S3Peer } from '../../peers/s3.js';
import { http, skopeoPull } from '../core/helpers.js';

let upstream: RegistryPeer;
let s3: S3Peer;
let image: BuiltImage;
let dataDir: string;
let relais: RelaisPeer | undefined;
const bucket = 'relais-serve';

before(async () => {
  [upstream, s3, dataDir] = await Promise.all([startRegistry(), startS3(), tempDir('relais-s3')]);
  await s3.createBucket(bucket);
  image = await pushRandomImage(upstream.host, 'library/ons3:v1', { layers: [12_000_000, 900_000, 1000] });
});

after(async () => {
  await relais?.close();
  await Promise.all([upstream.close(), s3.close(), removeDir(dataDir)]);
});

const clock = testClock();
const start = (): Promise<RelaisPeer> =>
  startRelais({
    upstreams: { 'docker.io': upstream.url },
    dataDir,
    config: { storage: { driver: 's3', s3: s3.storageConfig(bucket, 'cache/') } },
    clock: () => clock.now(),
  });

test('blobs pulled through relais are stored in S3 under the prefix, once, and served from there after a restart', async () => {
  relais = await start();
  const blobs = [image.configDigest, ...image.layers.map((l) => l.digest)];
  upstream.clearLog();
  const pulls = await Promise.all([1, 2, 3].map(() => skopeoPull(relais?.host ?? '', 'library/ons3:v1')));
  for (const p of pulls) for (const d of blobs) assert.ok(p.files.has(d), `client got ${d}`);
  await upstream.settle();
  for (const d of blobs) assert.equal(upstream.blobGets(d), 1, `one upstream GET of ${d}`);
  // The clients have every blob once its digest verified; the uploads to S3 may still be finishing.
  await relais.instance.blobs.settle();

  const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: bucket }));
  const keys = new Map((listed.Contents ?? []).map((o) => [o.Key ?? '', o.Size ?? -1]));
  for (const l of image.layers) assert.equal(keys.get(`cache/${blobKey(l.digest)}`), l.size, `layer ${l.digest} in the bucket`);
  assert.ok(keys.has(`cache/${blobKey(image.manifestDigest)}`), 'the manifest too');
  assert.ok([...keys.keys()].every((k) => k.startsWith('cache/')), 'nothing outside the prefix');
  assert.equal(await s3.pendingUploads(bucket), 0, 'every multipart upload completed');
  assert.deepEqual(await readdir(join(dataDir, 'spool')), [], 'no spool file left');

  relais = await relais.restart();
  upstream.clearLog();
  const warm = await skopeoPull(relais.host, 'library/ons3:v1');
  assert.equal(warm.files.size, blobs.length);
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'served from S3: no blob GET upstream');
  const range = await http(`${relais.url}/v2/library/ons3/blobs/${image.layers[0]?.digest ?? ''}`, { headers: { range: 'bytes=100-199' } });
  assert.equal(range.status, 206);
  assert.equal(range.body.byteLength, 100);
});

test('a cold client gets its last byte once the digest verified, not after the upload to S3', async () => {
  assert.ok(relais);
  const big = await pushRandomImage(upstream.host, 'library/ons3big:v1', { layers: [48_000_000] });
  const layer = big.layers[0];
  assert.ok(layer);
  const res = await fetch(`${relais.url}/v2/library/ons3big/blobs/${layer.digest}`);
  const hash = createHash('sha256');
  for await (const chunk of res.body ?? []) hash.update(chunk as Uint8Array);
  assert.equal(`sha256:${hash.digest('hex')}`, layer.digest, 'every byte, verified');
  // The client is done while relais is still storing the blob (a 48 MB multipart upload to RGW).
  assert.equal([...relais.instance.blobs.downloadsInFlight()].length, 1, 'the download is still committing when the client has everything');
  await relais.instance.blobs.settle();
  assert.equal([...relais.instance.blobs.downloadsInFlight()].length, 0);
  const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: bucket }));
  assert.equal(listed.Contents?.find((o) => o.Key === `cache/${blobKey(layer.digest)}`)?.Size, layer.size, 'then it is in the bucket');
});

test('a bucket that does not exist, or wrong credentials: relais refuses to start and names the real cause', async () => {
  const tryStart = (s3cfg: Record<string, unknown>): Promise<RelaisPeer> =>
    startRelais({ upstreams: { 'docker.io': upstream.url }, config: { storage: { driver: 's3', s3: s3cfg } } });
  await assert.rejects(tryStart(s3.storageConfig('no-such-bucket-here', '')), (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.match(e.message, /^cannot use S3 bucket no-such-bucket-here at http:\/\/\S+ \((NoSuchBucket|NotFound)[^)]*HTTP 404/);
    assert.doesNotMatch(e.message, /\(Error\)/);
    return true;
  });
  await assert.rejects(tryStart({ ...s3.storageConfig(bucket, ''), secretAccessKey: 'not-the-secret-key' }), (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.match(e.message, /^cannot use S3 bucket relais-serve at http:\/\/\S+ \(\w+: HTTP 403/);
    return true;
  });
});

test('/readyz is 200 while S3 answers and 503 once it is gone', async () => {
  assert.ok(relais);
  assert.equal((await http(`${relais.url}/readyz`)).status, 200);
  await s3.close();
  clock.advance(2100); // readiness answers are reused for 2 s
  assert.equal((await http(`${relais.url}/readyz`)).status, 503);
  assert.equal((await http(`${relais.url}/healthz`)).status, 200, 'liveness does not depend on S3');
});
