// The shared storage driver suite against the S3 driver on a real S3 server (Ceph RGW), plus what only
// S3 has: a commit (upload) aborted midway leaves no object and no parts; a multipart upload left open is a
// stale write (found, sized and aborted; the driver's own upload in flight never is), which gc reports and
// removes with a dead writer's staged file; the key prefix keeps relais's objects apart in a shared bucket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateMultipartUploadCommand, ListObjectsV2Command, UploadPartCommand } from '@aws-sdk/client-s3';
import { runGc } from '../../../src/eviction/gc.js';
import { SqliteIndex } from '../../../src/index/sqlite.js';
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

const driverFor = async (peer: S3Peer, bucket: string, prefix?: string, more: { stagingDir?: string; foreignUploadMs?: number } = {}): Promise<S3Driver> => {
  const stagingDir = more.stagingDir ?? (await tempDir(`s3-staging-${bucket}`));
  stagingDirs.push(stagingDir);
  return new S3Driver({
    foreignUploadMs: more.foreignUploadMs,
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

const stale = async (driver: S3Driver, olderThan: number): Promise<{ id: string; size: number }[]> => {
  const out: { id: string; size: number }[] = [];
  for await (const w of driver.staleWrites(olderThan)) out.push({ id: w.id, size: w.size });
  return out;
};

registerDriverSuite('s3 (Ceph RGW)', async () => {
  const peer = await server();
  const bucket = `suite-${++buckets}`;
  await peer.createBucket(bucket);
  const driver = await driverFor(peer, bucket, 'relais/');
  const siblings: S3Driver[] = [];
  return {
    driver,
    pendingUploads: () => peer.pendingUploads(bucket),
    stagedFiles: () => readdir(driver.stagingDir),
    sibling: async () => {
      const s = await driverFor(peer, bucket, 'relais/', { stagingDir: driver.stagingDir });
      siblings.push(s);
      return s;
    },
    cleanup: () => {
      for (const s of [driver, ...siblings]) s.close();
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
      assert.equal((await readdir(d.stagingDir)).length, 1, 'the caller cancels a failed commit');
      assert.deepEqual(await stale(d, Date.now() + 60_000), [], 'a failed writer not cancelled yet is still live');
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

  test('the prefix keeps relais to its own keys; a multipart upload left open below it is a stale write, found and aborted', async () => {
    const bucket = 'shared-bucket';
    await peer.createBucket(bucket);
    const d = await driverFor(peer, bucket, 'cache');
    // The replica that comes after: it takes another replica's upload for stale at once (foreignUploadMs 0).
    const next = await driverFor(peer, bucket, 'cache', { foreignUploadMs: 0 });
    try {
      await d.putContent('blobs/a', Buffer.from('a'));
      const raw = await peer.client.send(new ListObjectsV2Command({ Bucket: bucket }));
      assert.deepEqual(raw.Contents?.map((o) => o.Key), ['cache/blobs/a']);
      const keys: string[] = [];
      for await (const e of d.list('')) keys.push(e.key);
      assert.deepEqual(keys, ['blobs/a']);

      // A replica that died mid-upload leaves a multipart upload with a part; another app's upload is not ours.
      const dead = await peer.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'cache/blobs/dead' }));
      await peer.client.send(new UploadPartCommand({ Bucket: bucket, Key: 'cache/blobs/dead', UploadId: dead.UploadId, PartNumber: 1, Body: randomBytes(5 * 1024 * 1024), ContentLength: 5 * 1024 * 1024 }));
      await peer.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'other-app/file' }));
      assert.deepEqual(await stale(d, Date.now() + 60_000), [], 'another replica\'s young upload may still be running (foreignUploadMs, 24 h by default)');
      assert.deepEqual(await stale(next, Date.now() - 3_600_000), [], 'nor one younger than the caller\'s cutoff');
      const found = await stale(next, Date.now() + 60_000);
      assert.equal(found.length, 1, JSON.stringify(found));
      const [upload] = found;
      assert.ok(upload);
      assert.equal(upload.id, `s3://${bucket}/cache/blobs/dead?uploadId=${dead.UploadId ?? ''}`);
      assert.equal(upload.size, 5 * 1024 * 1024, 'its parts\' bytes');
      assert.equal(await next.dropStaleWrite(`s3://${bucket}/other-app/file?uploadId=${dead.UploadId ?? ''}`), false, 'nothing outside the prefix');
      assert.equal(await next.dropStaleWrite(upload.id), true);
      assert.equal(await next.dropStaleWrite(upload.id), false, 'aborted already');
      assert.deepEqual(await stale(next, Date.now() + 60_000), []);
      assert.equal(await peer.pendingUploads(bucket), 1, 'the other application\'s upload is left alone');
    } finally {
      d.close();
      next.close();
    }
  });

  test('the driver\'s own multipart upload in flight is never a stale write, its staged file neither; another replica sees the upload', async () => {
    const bucket = 'own-upload';
    await peer.createBucket(bucket);
    const d = await driverFor(peer, bucket, undefined, { foreignUploadMs: 0 });
    const other = await driverFor(peer, bucket, undefined, { foreignUploadMs: 0 });
    let seen: { own: string[]; other: string[] } | undefined;
    // Look while the first part goes out: an event, not a timer.
    d.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'UploadPartCommand' && seen === undefined) {
          seen = { own: [], other: [] };
          seen.own = (await stale(d, Date.now() + 60_000)).map((w) => w.id);
          seen.other = (await stale(other, Date.now() + 60_000)).map((w) => w.id);
        }
        return next(args);
      },
      { step: 'initialize', name: 'lookDuringUpload' },
    );
    try {
      const w = await d.writer('blobs/big');
      for (let i = 0; i < 2; i++) await w.write(randomBytes(5 * 1024 * 1024));
      await w.write(randomBytes(10));
      await w.commit();
      assert.ok(seen, 'a multipart upload ran');
      assert.deepEqual(seen.own, [], 'the driver\'s own upload and staged file are live');
      assert.equal(seen.other.length, 1, `another replica sees the upload (its own staging directory is elsewhere): ${JSON.stringify(seen.other)}`);
      assert.match(seen.other[0] ?? '', /^s3:\/\/own-upload\/blobs\/big\?uploadId=/);
      assert.equal((await d.stat('blobs/big'))?.size, 10 * 1024 * 1024 + 10);
      assert.equal(await peer.pendingUploads(bucket), 0);
    } finally {
      d.close();
      other.close();
    }
  });

  test('gc on S3 reports a dead writer\'s staged file and a dead replica\'s upload as temp files, removes them on apply, not in a dry run', async () => {
    const bucket = 'gc-stale';
    await peer.createBucket(bucket);
    // The replica that died: a writer never committed nor cancelled, and a multipart upload left open.
    const dead = await driverFor(peer, bucket, 'relais/');
    const d = await driverFor(peer, bucket, 'relais/', { stagingDir: dead.stagingDir, foreignUploadMs: 0 });
    const dir = await tempDir('gc-stale-index');
    stagingDirs.push(dir);
    const index = new SqliteIndex(join(dir, 'index.db'));
    try {
      const w = await dead.writer('blobs/sha256/ab/abcd');
      await w.write(randomBytes(4096));
      const upload = await peer.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'relais/blobs/sha256/cd/cdef' }));
      await peer.client.send(new UploadPartCommand({ Bucket: bucket, Key: 'relais/blobs/sha256/cd/cdef', UploadId: upload.UploadId, PartNumber: 1, Body: randomBytes(1000), ContentLength: 1000 }));
      const dry = await runGc({ index, storage: d, dryRun: true, graceMs: 0, now: Date.now() + 60_000 });
      assert.deepEqual(
        dry.tempFiles.map((t) => [t.id.startsWith('s3://') ? t.id : t.id.slice(d.stagingDir.length + 1).replace(/\.[0-9a-f]{8}\.part$/, ''), t.size]).sort(),
        [['abcd', 4096], [`s3://${bucket}/relais/blobs/sha256/cd/cdef?uploadId=${upload.UploadId ?? ''}`, 1000]],
      );
      assert.equal(dry.freedBytes, 5096);
      assert.equal((await readdir(d.stagingDir)).length, 1, 'a dry run removes nothing');
      assert.equal(await peer.pendingUploads(bucket), 1);
      const young = await runGc({ index, storage: d, dryRun: false, graceMs: 3_600_000 });
      assert.deepEqual(young.tempFiles, [], 'within the grace period: left alone');
      const applied = await runGc({ index, storage: d, dryRun: false, graceMs: 0, now: Date.now() + 60_000 });
      assert.equal(applied.tempFiles.length, 2);
      assert.deepEqual(await readdir(d.stagingDir), []);
      assert.equal(await peer.pendingUploads(bucket), 0);
      await w.cancel();
    } finally {
      await index.close();
      dead.close();
      d.close();
    }
  });
});
