// One test suite for every storage driver: registerDriverSuite(name, factory) adds the same tests for a
// driver made by the factory (filesystem, S3 on a real Ceph RGW, ...). What is checked is the contract of
// src/storage/driver.ts: bytes round-trip, Range reads, writes invisible until commit, cancel and abort
// leave nothing, list pages through everything below a prefix, keys cannot escape.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readSync } from 'node:fs';
import { access, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageNotFound, type StorageDriver } from '../../../src/storage/driver.js';
import { removeDir, tempDir } from '../../peers/proc.js';

export interface DriverUnderTest {
  readonly driver: StorageDriver;
  /** Uploads started but neither completed nor aborted (S3 multipart), when the backend has such a thing. */
  pendingUploads?(): Promise<number>;
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

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

export function registerDriverSuite(name: string, factory: () => Promise<DriverUnderTest>): void {
  describe(`storage driver: ${name}`, () => {
    let dut: DriverUnderTest;
    let d: StorageDriver;
    let local: string;

    before(async () => {
      dut = await factory();
      d = dut.driver;
      local = await tempDir('driver-suite');
    });
    after(async () => {
      await dut.cleanup();
      await removeDir(local);
    });

    const noPendingUploads = async (): Promise<void> => {
      if (dut.pendingUploads) assert.equal(await dut.pendingUploads(), 0, 'no multipart upload left behind');
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
        t.diagnostic(`${name} keeps no local files: relais streams its blobs (no sendfile)`);
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
      const hash = createHash('sha256');
      let left = LARGE;
      while (left > 0) {
        // Odd chunk sizes, as a network would deliver them.
        const chunk = randomBytes(Math.min(left, 700_001));
        hash.update(chunk);
        await w.write(chunk);
        left -= chunk.byteLength;
      }
      assert.equal(w.size, LARGE);
      assert.deepEqual(await d.getContent('write/big'), old, 'readers still see the previous object');
      await d.delete('write/big');
      assert.equal(await d.stat('write/big'), undefined, 'a write in progress is not an object');
      const listed: string[] = [];
      for await (const e of d.list('write/')) listed.push(e.key);
      assert.deepEqual(listed, [], 'nor is it listed');
      await w.commit();
      assert.equal((await d.stat('write/big'))?.size, LARGE);
      assert.equal(sha(await readAll(await d.reader('write/big'))), hash.digest('hex'));
      await noPendingUploads();
    });

    test('writer: cancel leaves the key as it was, with no upload left behind', async () => {
      const keep = randomBytes(64);
      await d.putContent('cancel/kept', keep);
      for (const key of ['cancel/kept', 'cancel/new']) {
        const w = await d.writer(key);
        await w.write(randomBytes(6 * 1024 * 1024));
        await w.write(randomBytes(1024));
        await w.cancel();
      }
      assert.deepEqual(await d.getContent('cancel/kept'), keep);
      assert.equal(await d.stat('cancel/new'), undefined);
      await noPendingUploads();
    });

    test('importFile: large and small local files move in whole; the local file is consumed', async () => {
      for (const [key, size] of [['import/large', LARGE], ['import/small', 4096], ['import/empty', 0]] as const) {
        const data = randomBytes(size);
        const path = join(local, key.replace('/', '-'));
        await writeFile(path, data);
        await d.importFile(key, path);
        assert.equal(await exists(path), false, `${path} consumed`);
        assert.equal((await d.stat(key))?.size, size);
        assert.equal(sha(await readAll(await d.reader(key))), sha(data), key);
      }
      await noPendingUploads();
    });

    test('importFile with an aborted signal stores nothing and keeps the local file', async () => {
      const path = join(local, 'aborted');
      await writeFile(path, randomBytes(LARGE));
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(d.importFile('import/aborted', path, ac.signal));
      assert.equal(await d.stat('import/aborted'), undefined);
      assert.equal(await exists(path), true, 'the caller still owns its file');
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

    test('keys cannot escape: empty, absolute, dot and empty segments are refused', async () => {
      for (const key of ['', '/abs', '../up', 'a/../b', 'a//b', 'a/./b', 'trailing/']) {
        await assert.rejects(d.putContent(key, Buffer.from('x')), /invalid key/, JSON.stringify(key));
        await assert.rejects(d.reader(key), /invalid key/, JSON.stringify(key));
      }
    });
  });
}
