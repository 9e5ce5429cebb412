// The shared storage driver suite against the S3 driver on a real S3 server (Ceph RGW), plus what only
// S3 has: an upload aborted midway leaves no object and no parts; stale multipart uploads are cleaned up;
// the key prefix keeps relais's objects apart in a shared bucket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateMultipartUploadCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { S3Driver } from '../../../src/storage/s3.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startS3, type S3Peer } from '../../peers/s3.js';
import { registerDriverSuite } from './driver-suite.js';

let s3: S3Peer | undefined;
let started: Promise<S3Peer> | undefined;
let buckets = 0;
const server = (): Promise<S3Peer> => {
  started ??= startS3().then((p) => (s3 = p));
  return started;
};
after(async () => {
  await s3?.close();
});

const driverFor = (peer: S3Peer, bucket: string, prefix?: string): S3Driver =>
  new S3Driver({
    bucket,
    endpoint: peer.endpoint,
    region: peer.region,
    accessKeyId: peer.accessKeyId,
    secretAccessKey: peer.secretAccessKey,
    prefix,
    partSize: 5 * 1024 * 1024,
    listPageSize: 7,
  });

registerDriverSuite('s3 (Ceph RGW)', async () => {
  const peer = await server();
  const bucket = `suite-${++buckets}`;
  await peer.createBucket(bucket);
  const driver = driverFor(peer, bucket, 'relais/');
  return {
    driver,
    pendingUploads: () => peer.pendingUploads(bucket),
    cleanup: () => {
      driver.close();
      return Promise.resolve();
    },
  };
});

describe('storage driver: s3 specifics', () => {
  let peer: S3Peer;
  let local: string;
  before(async () => {
    peer = await server();
    local = await tempDir('s3-specific');
  });
  after(() => removeDir(local));

  test('an import aborted midway leaves no object and no multipart upload', async () => {
    const bucket = 'abort-midway';
    await peer.createBucket(bucket);
    const d = driverFor(peer, bucket);
    try {
      const path = join(local, 'big');
      await writeFile(path, randomBytes(60 * 1024 * 1024));
      const ac = new AbortController();
      const p = d.importFile('blobs/x', path, ac.signal);
      // Abort once the upload is under way (the first parts are in flight).
      setTimeout(() => {
        ac.abort();
      }, 150);
      await assert.rejects(p);
      assert.equal(await d.stat('blobs/x'), undefined);
      assert.equal(await peer.pendingUploads(bucket), 0);
    } finally {
      d.close();
    }
  });

  test('the prefix keeps relais to its own keys; abortStaleUploads drops only old uploads below it', async () => {
    const bucket = 'shared-bucket';
    await peer.createBucket(bucket);
    const d = driverFor(peer, bucket, 'cache');
    try {
      await d.putContent('blobs/a', Buffer.from('a'));
      const raw = await peer.client.send(new ListObjectsV2Command({ Bucket: bucket }));
      assert.deepEqual(raw.Contents?.map((o) => o.Key), ['cache/blobs/a']);
      const keys: string[] = [];
      for await (const e of d.list('')) keys.push(e.key);
      assert.deepEqual(keys, ['blobs/a']);

      // A replica that died mid-upload leaves a multipart upload; another app's upload is not ours.
      await peer.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'cache/blobs/dead' }));
      await peer.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'other-app/file' }));
      assert.equal(await d.abortStaleUploads(Date.now() - 3_600_000), 0, 'a young upload may still be running');
      assert.equal(await d.abortStaleUploads(Date.now() + 60_000), 1);
      assert.equal(await peer.pendingUploads(bucket), 1, 'the other application\'s upload is left alone');
    } finally {
      d.close();
    }
  });
});
