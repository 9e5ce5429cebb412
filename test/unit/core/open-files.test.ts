// Read-only fds of hot objects kept open between requests (src/storage/open-files.ts), on real files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OpenFiles } from '../../../src/storage/open-files.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relais-open-files-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An OpenFiles over files of `dir`, counting open() calls and the fds still open. */
function counted(opts: { maxIdle?: number; idleMs?: number; now?: () => number } = {}) {
  const stats = { opens: 0, open: 0 };
  const files = new OpenFiles(
    async (key) => {
      stats.opens++;
      const fh = await open(join(dir, key), 'r');
      stats.open++;
      const close = fh.close.bind(fh);
      fh.close = async () => {
        stats.open--;
        await close();
      };
      return fh;
    },
    { maxIdle: opts.maxIdle ?? 8, idleMs: opts.idleMs ?? 60_000, ...(opts.now ? { now: opts.now } : {}) },
  );
  return { files, stats };
}

const readAll = (fd: number, n: number): string => {
  const b = Buffer.alloc(n);
  const got = readSync(fd, b, 0, n, 0);
  return b.subarray(0, got).toString();
};

test('one open per key: concurrent and later readers share the fd, which stays open while idle', async () => {
  await writeFile(join(dir, 'a'), 'alpha');
  const { files, stats } = counted();
  const [x, y] = await Promise.all([files.acquire('a'), files.acquire('a')]);
  assert.equal(stats.opens, 1, 'concurrent first readers share one open()');
  assert.equal(x.fd, y.fd);
  assert.equal(readAll(x.fd, 16), 'alpha');
  await x.close();
  await x.close(); // idempotent
  await y.close();
  assert.equal(stats.open, 1, 'idle, still open');
  const z = await files.acquire('a');
  assert.equal(stats.opens, 1, 'a later reader reuses it');
  await z.close();
  await files.closeAll();
  assert.equal(stats.open, 0);
});

test('invalidate: an idle fd closes at once; one in use closes with its last reader and is never handed out again', async () => {
  await writeFile(join(dir, 'b'), 'old');
  const { files, stats } = counted();
  const r1 = await files.acquire('b');
  await files.invalidate('b');
  assert.equal(stats.open, 1, 'still in use');
  assert.equal(readAll(r1.fd, 16), 'old', 'the reader in flight keeps its bytes');
  // Replaced: a new reader opens the new file.
  await writeFile(join(dir, 'b.new'), 'new');
  await rm(join(dir, 'b'));
  await writeFile(join(dir, 'b'), await readFile(join(dir, 'b.new')));
  const r2 = await files.acquire('b');
  assert.equal(stats.opens, 2);
  assert.equal(readAll(r2.fd, 16), 'new');
  await r1.close();
  assert.equal(stats.open, 1, 'the stale fd closed with its last reader');
  await r2.close();
  await files.invalidate('b');
  assert.equal(stats.open, 0, 'idle: closed at once');
  await files.closeAll();
});

test('a missing key rejects with ENOENT and is not remembered', async () => {
  const { files, stats } = counted();
  await assert.rejects(files.acquire('missing'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  await writeFile(join(dir, 'missing'), 'here now');
  const r = await files.acquire('missing');
  assert.equal(readAll(r.fd, 16), 'here now');
  assert.equal(stats.opens, 2);
  await r.close();
  await files.closeAll();
});

test('bounded: beyond maxIdle the least recently used idle fds close; in-use fds are never closed', async () => {
  for (const k of ['c1', 'c2', 'c3', 'c4']) await writeFile(join(dir, k), k);
  const { files, stats } = counted({ maxIdle: 2 });
  const busy = await files.acquire('c1');
  for (const k of ['c2', 'c3', 'c4']) await (await files.acquire(k)).close();
  assert.equal(stats.open, 3, 'c1 in use + 2 idle');
  assert.equal(files.size, 3);
  assert.equal(readAll(busy.fd, 16), 'c1');
  // c2 was the least recently used idle one: reopened on the next acquire.
  const opens = stats.opens;
  await (await files.acquire('c4')).close();
  assert.equal(stats.opens, opens, 'c4 still open');
  await (await files.acquire('c2')).close();
  assert.equal(stats.opens, opens + 1, 'c2 had been closed');
  await busy.close();
  await files.closeAll();
  assert.equal(stats.open, 0);
});

test('an fd idle for idleMs is closed by the sweep', async () => {
  await writeFile(join(dir, 'd'), 'd');
  let now = 1_000_000;
  const { files, stats } = counted({ idleMs: 50, now: () => now });
  const busy = await files.acquire('d');
  now += 10_000;
  await files.sweep();
  assert.equal(stats.open, 1, 'in use: kept');
  await busy.close();
  now += 49;
  await files.sweep();
  assert.equal(stats.open, 1, 'idle for less than idleMs: kept');
  now += 1;
  await files.sweep();
  assert.equal(stats.open, 0, 'idle past idleMs: closed');
  assert.equal(files.size, 0);
  await files.closeAll();
});
