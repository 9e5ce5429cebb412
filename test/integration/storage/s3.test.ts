// The shared storage driver suite against the S3 driver on a real S3 server (Ceph RGW), plus what only
// S3 has: a commit (upload) aborted midway leaves no object and no parts; stale multipart uploads are cleaned
// up; the key prefix keeps relais's objects apart in a shared bucket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { CreateMultipartUploadCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { S3Driver } from '../../../src/storage/s3.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startS3, type S3Peer } from '../../peers/s3.js';
import { registerDriverSuite } from './driver-suite.js';

let s3: S3Peer | undefined;
let started: Promise<S3Peer> | undefined;
let buckets = 0;
/** The drivers' local staging directories (removed at the end). */
const stagingDirs: string[] = [];
const server = (): Promise<S3Peer> => {
  started ??= startS3().then((p) => (s3 = p));
  return started;
};
after(async () => {
  await s3?.close();
  for (const dir of stagingDirs) await removeDir(dir);
});

const driverFor = async (peer: S3Peer, bucket: string, prefix?: string): Promise<S3Driver> => {
  const stagingDir = await tempDir(`s3-staging-${bucket}`);
  stagingDirs.push(stagingDir);
  return new S3Driver({
    stagingDir,
    bucket,
    endpoint: peer.endpoint,
    region: peer.region,
    accessKeyId: peer.accessKeyId,
    secretAccessKey: peer.secretAccessKey,
    prefix,
    partSize: 5 * 1024 * 1024,
    listPageSize: 7,
  });
};

registerDriverSuite('s3 (Ceph RGW)', async () => {
  const peer = await server();
  const bucket = `suite-${++buckets}`;
  await peer.createBucket(bucket);
  const driver = await driverFor(peer, bucket, 'relais/');
  return {
    driver,
    pendingUploads: () => peer.pendingUploads(bucket),
    stagedFiles: () => readdir(driver.stagingDir),
    cleanup: () => {
      driver.close();
      return Promise.resolve();
    },
  };
});

describe('storage driver: s3 specifics', () => {
  let peer: S3Peer;
  before(async () => {
    peer = await server();
  });

  test('a commit aborted midway (its first part in flight) leaves no object and no multipart upload; cancel drops the staged file', async () => {
    const bucket = 'abort-midway';
    await peer.createBucket(bucket);
    const ac = new AbortController();
    const d = await driverFor(peer, bucket);
    // Abort as the first part goes out: an event, not a timer.
    d.client.middlewareStack.add(
      (next, context) => (args) => {
        if (context.commandName === 'UploadPartCommand') ac.abort();
        return next(args);
      },
      { step: 'initialize', name: 'abortOnFirstPart' },
    );
    try {
      const w = await d.writer('blobs/x', ac.signal);
      for (let i = 0; i < 12; i++) await w.write(randomBytes(5 * 1024 * 1024));
      await assert.rejects(w.commit());
      assert.equal(ac.signal.aborted, true, 'the upload had started');
      assert.equal(await d.stat('blobs/x'), undefined);
      assert.equal(await peer.pendingUploads(bucket), 0);
      assert.deepEqual(await readdir(d.stagingDir), [w.localPath.slice(d.stagingDir.length + 1)], 'the caller cancels a failed commit');
      await w.cancel();
      assert.deepEqual(await readdir(d.stagingDir), []);
    } finally {
      d.close();
    }
  });

  test('a commit with an aborted signal uploads nothing; freeSpace is the staging disk\'s', async () => {
    const bucket = 'abort-before';
    await peer.createBucket(bucket);
    const d = await driverFor(peer, bucket);
    try {
      const ac = new AbortController();
      ac.abort();
      const w = await d.writer('blobs/y', ac.signal);
      await w.write(randomBytes(1000));
      await assert.rejects(w.commit());
      await w.cancel();
      assert.equal(await d.stat('blobs/y'), undefined);
      assert.deepEqual(await readdir(d.stagingDir), []);
      const free = await d.freeSpace();
      assert.ok(free !== undefined && free > 0, `free space ${String(free)}`);
    } finally {
      d.close();
    }
  });

  test('the prefix keeps relais to its own keys; abortStaleUploads drops only old uploads below it', async () => {
    const bucket = 'shared-bucket';
    await peer.createBucket(bucket);
    const d = await driverFor(peer, bucket, 'cache');
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
