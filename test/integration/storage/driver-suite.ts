// One test suite for every storage driver: registerDriverSuite(name, factory) adds the same tests for a
// driver made by the factory (filesystem, S3 on a real Ceph RGW, ...), after distribution's
// registry/storage/driver/testsuites. What is checked is the contract of src/storage/driver.ts, and so what
// production does with it (every blob download writes through writer(): src/cache/download.ts): bytes
// round-trip, Range reads, a write readable while it grows (readWritten: what a download's clients follow)
// and invisible until commit, commit atomic, cancel leaves nothing (no staged file, no upload), concurrent
// writers, multi-part writes, list pages through everything below a prefix, keys cannot escape; and the stale
// writes gc asks of the driver (staleWrites, dropStaleWrite): what a dead process's writer left is found once
// older than the cutoff and dropped, a live writer's never, a finished write leaves none.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readSync } from 'node:fs';
import { StorageNotFound, type StorageDriver, type StorageWriter } from '../../../src/storage/driver.js';

export interface DriverUnderTest {
  readonly driver: StorageDriver;
  /** Uploads started but neither completed nor aborted (S3 multipart), when the backend has such a thing. */
  pendingUploads?(): Promise<number>;
  /** The files the driver's writers have staged locally and not yet published or dropped. */
  stagedFiles(): Promise<string[]>;
  /**
   * Another driver on the same storage and staging directory, as the next process makes after a crash (or
   * `relais gc` beside a serving relais): none of the first driver's writers is live to it. Closed by cleanup.
   */
  sibling(): Promise<StorageDriver>;
  cleanup(): Promise<void>;
}

/** Bytes large enough to need several parts on S3 (the suite's S3 driver uses 5 MiB parts). */
export const LARGE = 11 * 1024 * 1024 + 12_345;

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function writeAllOf(w: StorageWriter, size: number, chunk = 700_001): Promise<string> {
  const hash = createHash('sha256');
  let left = size;
  while (left > 0) {
    // Odd chunk sizes, as a network would deliver them.
    const c = randomBytes(Math.min(left, chunk));
    hash.update(c);
    await w.write(c);
    left -= c.byteLength;
  }
  return hash.digest('hex');
}

export function registerDriverSuite(name: string, factory: () => Promise<DriverUnderTest>): void {
  describe(`storage driver: ${name}`, () => {
    let dut: DriverUnderTest;
    let d: StorageDriver;

    before(async () => {
      dut = await factory();
      d = dut.driver;
    });
    after(async () => {
      await dut.cleanup();
    });

    const noPendingUploads = async (): Promise<void> => {
      if (dut.pendingUploads) assert.equal(await dut.pendingUploads(), 0, 'no multipart upload left behind');
      assert.deepEqual(await dut.stagedFiles(), [], 'no staged file left behind');
    };

    test('small objects round-trip; absent keys are undefined; overwrite replaces; delete is idempotent', async () => {
      assert.equal(await d.getContent('small/absent'), undefined);
      assert.equal(await d.stat('small/absent'), undefined);
      const a = randomBytes(1000);
      const before = Date.now();
      await d.putContent('small/a', a);
      assert.deepEqual(await d.getContent('small/a'), a);
      const st = await d.stat('small/a');
      assert.equal(st?.size, 1000);
      // Clocks: S3 keeps whole seconds; allow for that and a little skew.
      assert.ok(st !== undefined && Math.abs(st.modTime.getTime() - before) < 5_000, `modTime ${st?.modTime.toISOString() ?? '-'} near now`);
      const b = randomBytes(10);
      await d.putContent('small/a', b);
      assert.deepEqual(await d.getContent('small/a'), b);
      await d.putContent('small/empty', new Uint8Array(0));
      assert.equal((await d.getContent('small/empty'))?.byteLength, 0);
      assert.equal((await d.stat('small/empty'))?.size, 0);
      await d.delete('small/a');
      assert.equal(await d.getContent('small/a'), undefined);
      await d.delete('small/a');
      await d.delete('small/never-was');
    });

    test('reader: whole object and byte ranges; a missing key throws StorageNotFound', async () => {
      const data = randomBytes(300_000);
      await d.putContent('read/obj', data);
      assert.equal(sha(await readAll(await d.reader('read/obj'))), sha(data));
      for (const [start, end] of [[0, 0], [1, 1], [12_345, 99_999], [299_999, 299_999], [250_000, 299_999]] as const) {
        const got = await readAll(await d.reader('read/obj', { start, end }));
        assert.deepEqual(got, data.subarray(start, end + 1), `range ${start}-${end}`);
      }
      await assert.rejects(d.reader('read/missing'), (e: unknown) => e instanceof StorageNotFound && e.key === 'read/missing');
    });

    test('openLocal (drivers that keep local files): the fd reads the object; a missing key throws StorageNotFound', async (t) => {
      if (!d.openLocal) {
        t.skip(`${name} keeps no local files (no openLocal capability): relais streams its committed blobs, no sendfile`);
        return;
      }
      const data = randomBytes(100_000);
      await d.putContent('local/obj', data);
      const f = await d.openLocal('local/obj');
      try {
        const buf = Buffer.alloc(data.length + 10);
        const n = readSync(f.fd, buf, 0, buf.length, 0);
        assert.deepEqual(buf.subarray(0, n), data);
      } finally {
        await f.close();
      }
      await assert.rejects(d.openLocal('local/missing'), (e: unknown) => e instanceof StorageNotFound && e.key === 'local/missing');
    });

    test('writer: nothing is visible before commit; a multi-part stream arrives whole', async () => {
      const old = randomBytes(100);
      await d.putContent('write/big', old);
      const w = await d.writer('write/big');
      const digest = await writeAllOf(w, LARGE);
      assert.equal(w.size, LARGE);
      assert.deepEqual(await d.getContent('write/big'), old, 'readers still see the previous object');
      await d.delete('write/big');
      assert.equal(await d.stat('write/big'), undefined, 'a write in progress is not an object');
      const listed: string[] = [];
      for await (const e of d.list('write/')) listed.push(e.key);
      assert.deepEqual(listed, [], 'nor is it listed');
      await w.commit();
      assert.equal((await d.stat('write/big'))?.size, LARGE);
      assert.equal(sha(await readAll(await d.reader('write/big'))), digest);
      // Range reads across the parts' boundaries (5 MiB on the suite's S3).
      for (const [start, end] of [[5 * 1024 * 1024 - 3, 5 * 1024 * 1024 + 2], [LARGE - 1, LARGE - 1], [0, LARGE - 1]] as const) {
        const got = await readAll(await d.reader('write/big', { start, end }));
        assert.equal(got.byteLength, end - start + 1, `range ${start}-${end}`);
      }
      const whole = await readAll(await d.reader('write/big'));
      assert.deepEqual(await readAll(await d.reader('write/big', { start: 5 * 1024 * 1024 - 3, end: 5 * 1024 * 1024 + 2 })), whole.subarray(5 * 1024 * 1024 - 3, 5 * 1024 * 1024 + 3));
      await noPendingUploads();
    });

    test('writer: what is written can be read while the write grows (a download\'s followers), through commit', async () => {
      const w = await d.writer('grow/obj');
      const f = await w.readWritten();
      assert.ok(f, 'a writer in progress has staged bytes to read');
      const buf = Buffer.alloc(300_000);
      assert.equal(await f.read(buf, 0), 0, 'nothing written yet');
      const a = randomBytes(100_000);
      await w.write(a);
      assert.equal(w.size, 100_000);
      assert.equal(await f.read(buf, 0), 100_000);
      assert.deepEqual(buf.subarray(0, 100_000), a);
      // Several chunks in one write (one writev), appended after the first.
      const b1 = randomBytes(50_000);
      const b2 = randomBytes(7);
      await w.write([b1, b2]);
      assert.equal(w.size, 150_007);
      const n = await f.read(buf, 100_000);
      assert.equal(n, 50_007);
      assert.deepEqual(buf.subarray(0, n), Buffer.concat([b1, b2]));
      // The fd (what sendfile(2) sends from) reads the same bytes; a second follower shares it.
      const g = await w.readWritten();
      assert.ok(g);
      assert.equal(g.fd, f.fd, 'one fd shared by every follower');
      const viaFd = Buffer.alloc(10);
      assert.equal(readSync(g.fd, viaFd, 0, 10, 100_000), 10);
      assert.deepEqual(viaFd, b1.subarray(0, 10));
      assert.equal(await d.stat('grow/obj'), undefined, 'not visible before commit');
      await w.commit();
      assert.equal((await d.stat('grow/obj'))?.size, 150_007);
      // The handles outlive the commit (the staged file was renamed or uploaded and removed).
      const after = Buffer.alloc(150_007);
      assert.equal(await f.read(after, 0), 150_007);
      assert.deepEqual(after, Buffer.concat([a, b1, b2]));
      await g.close();
      const h = await w.readWritten();
      assert.ok(h, 'still shared while one handle is open');
      await h.close();
      await f.close();
      await f.close();
      assert.equal(await w.readWritten(), undefined, 'finished and released: read the committed object');
      assert.deepEqual(await readAll(await d.reader('grow/obj')), Buffer.concat([a, b1, b2]));
      await noPendingUploads();
    });

    test('writer: after commit, writes and a second commit are refused and cancel keeps the object', async () => {
      const w = await d.writer('done/obj');
      await w.write(Buffer.from('done'));
      await w.commit();
      await assert.rejects(w.write(Buffer.from('more')), /write after commit/);
      await assert.rejects(w.commit(), /commit after/);
      await w.cancel();
      assert.deepEqual(await d.getContent('done/obj'), Buffer.from('done'));
      const empty = await d.writer('done/empty');
      await empty.commit();
      assert.equal((await d.stat('done/empty'))?.size, 0, 'an empty write is an empty object');
      await noPendingUploads();
    });

    test('writer: cancel leaves the key as it was, with no upload left behind', async () => {
      const keep = randomBytes(64);
      await d.putContent('cancel/kept', keep);
      for (const key of ['cancel/kept', 'cancel/new']) {
        const w = await d.writer(key);
        const first = randomBytes(6 * 1024 * 1024);
        await w.write(first);
        const follower = await w.readWritten();
        assert.ok(follower);
        await w.write(randomBytes(1024));
        await w.cancel();
        await w.cancel();
        await assert.rejects(w.write(Buffer.from('x')), /write after/);
        await assert.rejects(w.commit(), /commit after/);
        // A follower that had the staged bytes open still reads them (its response fails on the download's error).
        const buf = Buffer.alloc(16);
        assert.equal(await follower.read(buf, 0), 16);
        assert.deepEqual(buf, first.subarray(0, 16));
        await follower.close();
        assert.equal(await w.readWritten(), undefined);
      }
      assert.deepEqual(await d.getContent('cancel/kept'), keep);
      assert.equal(await d.stat('cancel/new'), undefined);
      const listed: string[] = [];
      for await (const e of d.list('cancel/')) listed.push(e.key);
      assert.deepEqual(listed, ['cancel/kept']);
      await noPendingUploads();
    });

    const staleOf = async (driver: StorageDriver, olderThan: number): Promise<{ id: string; size: number; modTime: Date }[]> => {
      assert.equal(typeof driver.staleWrites, 'function', 'every driver lists its stale writes');
      const out: { id: string; size: number; modTime: Date }[] = [];
      for await (const w of driver.staleWrites?.(olderThan) ?? []) out.push(w);
      return out;
    };

    test('stale writes: a dead process\'s writer is found once older than the cutoff and dropped; a live writer\'s never', async () => {
      // `d` is the process that dies mid-write (its writer is never cancelled); `next` the one that comes after.
      const next = await dut.sibling();
      assert.equal(typeof next.dropStaleWrite, 'function', 'every driver drops its stale writes');
      const started = Date.now();
      const w = await d.writer('stale/killed');
      await w.write(randomBytes(300_000));
      await w.write(randomBytes(12_345));
      const written = Date.now();
      assert.deepEqual(await staleOf(next, started - 1000), [], 'written after the cutoff: not stale yet');
      const found = await staleOf(next, written + 1000);
      assert.equal(found.length, 1, `one stale write: ${JSON.stringify(found)}`);
      const [stale] = found;
      assert.ok(stale);
      assert.equal(stale.size, 312_345);
      assert.ok(Math.abs(stale.modTime.getTime() - written) < 5_000, `modTime ${stale.modTime.toISOString()} is when it was last written`);
      // The writer's own driver knows it is live: never listed, never dropped, even past any cutoff.
      assert.deepEqual(await staleOf(d, Date.now() + 3_600_000), [], 'a live writer\'s file is never listed');
      assert.equal(await d.dropStaleWrite?.(stale.id), false, 'nor dropped');
      assert.equal((await dut.stagedFiles()).length, 1);
      assert.equal(await next.dropStaleWrite?.(`${stale.id}x`), false, 'an id that is no stale write drops nothing');
      assert.equal((await dut.stagedFiles()).length, 1);
      // Dropping it frees it.
      assert.equal(await next.dropStaleWrite?.(stale.id), true);
      assert.deepEqual(await dut.stagedFiles(), [], 'the staged file is gone');
      assert.deepEqual(await staleOf(next, Date.now() + 60_000), []);
      assert.equal(await next.dropStaleWrite?.(stale.id), false, 'gone already');
      assert.equal(await d.stat('stale/killed'), undefined, 'nothing was ever visible under the key');
      await w.cancel();
      await noPendingUploads();
    });

    test('stale writes: a committed write and a cancelled one leave none; a writer in flight is live until it finishes', async () => {
      const next = await dut.sibling();
      const w = await d.writer('stale/committed');
      await w.write(randomBytes(1000));
      assert.deepEqual(await staleOf(d, Date.now() + 60_000), [], 'in flight: live');
      await w.commit();
      const c = await d.writer('stale/cancelled');
      await c.write(randomBytes(1000));
      await c.cancel();
      for (const driver of [d, next]) assert.deepEqual(await staleOf(driver, Date.now() + 60_000), [], 'nothing stale after commit and cancel');
      assert.equal((await d.stat('stale/committed'))?.size, 1000);
      await noPendingUploads();
    });

    test('list: every key below a prefix, with sizes, across pages', async () => {
      const want = new Map<string, number>();
      await Promise.all(
        Array.from({ length: 23 }, async (_, i) => {
          const key = `list/a/${String(i).padStart(2, '0')}/obj`;
          want.set(key, i);
          await d.putContent(key, randomBytes(i));
        }),
      );
      await d.putContent('list/b/other', randomBytes(5));
      await d.putContent('list/ab', randomBytes(3));
      const got = new Map<string, number>();
      for await (const e of d.list('list/a/')) got.set(e.key, e.size);
      assert.deepEqual(new Map([...got].sort()), new Map([...want].sort()));
      const all: string[] = [];
      for await (const e of d.list('list/')) all.push(e.key);
      assert.equal(all.length, 25);
      assert.ok(all.includes('list/b/other') && all.includes('list/ab'));
      const none: string[] = [];
      for await (const e of d.list('list/zzz/')) none.push(e.key);
      assert.deepEqual(none, []);
    });

    test('two writers of one key: the last commit wins and the object is never a mix', async () => {
      const a = randomBytes(6 * 1024 * 1024);
      const b = randomBytes(6 * 1024 * 1024);
      const wa = await d.writer('race/key');
      const wb = await d.writer('race/key');
      await Promise.all([wa.write(a), wb.write(b)]);
      await wa.commit();
      assert.equal(sha(await readAll(await d.reader('race/key'))), sha(a));
      await wb.commit();
      assert.equal(sha(await readAll(await d.reader('race/key'))), sha(b));
      await noPendingUploads();
    });

    test('concurrent multi-part writers of different keys each commit their own bytes', async () => {
      const keys = ['many/a', 'many/b', 'many/c'];
      const digests = await Promise.all(
        keys.map(async (key) => {
          const w = await d.writer(key);
          const digest = await writeAllOf(w, LARGE, 1_048_573);
          await w.commit();
          return digest;
        }),
      );
      for (const [i, key] of keys.entries()) {
        assert.equal((await d.stat(key))?.size, LARGE);
        assert.equal(sha(await readAll(await d.reader(key))), digests[i], key);
      }
      for (const key of keys) await d.delete(key);
      for (const key of keys) assert.equal(await d.stat(key), undefined, `${key} deleted`);
      await noPendingUploads();
    });

    test('keys cannot escape: empty, absolute, dot and empty segments are refused', async () => {
      for (const key of ['', '/abs', '../up', 'a/../b', 'a//b', 'a/./b', 'trailing/']) {
        await assert.rejects(d.putContent(key, Buffer.from('x')), /invalid key/, JSON.stringify(key));
        await assert.rejects(d.reader(key), /invalid key/, JSON.stringify(key));
      }
    });
  });
}
