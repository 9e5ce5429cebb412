// Fault 6 of issue 4: the disk fills. relais's data dir is a 16 MiB tmpfs (mounted here: the suite runs
// as root, as CI does); a filler file leaves a few MiB free. A blob that cannot fit is refused with
// 503 STORAGE_FULL before any byte is stored; one whose size relais cannot know in advance (chunked,
// no Content-Length) hits ENOSPC mid-stream and is abandoned without a spool file; cached content keeps
// serving; after the filler is removed the same blob downloads. The index stays consistent throughout.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { open, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFaultProxy } from '../peers/fault-proxy.js';
import { pushRandomImage } from '../peers/images.js';
import { removeDir, run, runOk, tempDir } from '../peers/proc.js';
import { startRegistry } from '../peers/registry.js';
import { startRelais } from '../peers/relais.js';
import { skopeoPull } from '../integration/core/helpers.js';
import { recordFault } from './report.js';
import { FAST_UPSTREAM, blobPath, describeDisk, inspectDisk, ociErrorCode, openFilesUnder, sha256, undiciGet } from './helpers.js';

async function fill(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const block = Buffer.alloc(1024 * 1024, 7);
    for (let n = 0; n < bytes; n += block.byteLength) await fh.write(block, 0, Math.min(block.byteLength, bytes - n));
  } finally {
    await fh.close();
  }
}

/** Writes until the disk is full (ENOSPC), to the last block. */
async function fillUp(path: string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (const size of [1024 * 1024, 4096, 1]) {
      const block = Buffer.alloc(size, 7);
      try {
        for (;;) await fh.write(block);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      }
    }
  } finally {
    await fh.close();
  }
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * A 16 MiB tmpfs for a test's data dir, and the list of cleanups to run (in reverse) before it is
 * unmounted: one hook, in order, each step whatever the others did: relais, the peers, then the mount.
 */
async function smallDisk(t: TestContext): Promise<{ mnt: string; cleanups: (() => Promise<unknown>)[] }> {
  assert.equal(process.getuid?.(), 0, 'this test mounts a tmpfs as the data dir: run the fault suite as root (CI does)');
  const mnt = await tempDir('tmpfs');
  await runOk('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mnt]);
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await run('umount', [mnt]);
    await removeDir(mnt);
  });
  return { mnt, cleanups };
}

test('6 disk full: a blob that does not fit gets 503 STORAGE_FULL, ENOSPC mid-stream leaves no spool file, cached content serves, recovery after space returns', async (t) => {
  const { mnt, cleanups } = await smallDisk(t);
  const up = await startRegistry();
  cleanups.push(() => up.close());
  const px = await startFaultProxy(up.url);
  cleanups.push(() => px.close());
  const small = await pushRandomImage(up.host, 'library/small:v1', { layers: [1_000_000, 300_000] });
  await pushRandomImage(up.host, 'library/other:v1', { layers: [1000] });
  const big = await pushRandomImage(up.host, 'library/big:v1', { layers: [6_000_000] });
  const layer = big.layers[0];
  assert.ok(layer);
  const dataDir = join(mnt, 'data');
  const relais = await startRelais({ upstreams: { 'docker.io': px.url }, dataDir, config: { upstreams: { 'docker.io': FAST_UPSTREAM } } });
  cleanups.push(() => relais.stop());
  await skopeoPull(relais.host, 'library/small:v1');
  await undiciGet(`${relais.url}/v2/library/big/manifests/v1`);

  // Leave 4 MiB free: the 6 MB layer cannot fit.
  const filler = join(mnt, 'filler');
  await fill(filler, (await freeBytes(mnt)) - 4 * 1024 * 1024);
  const freeBefore = await freeBytes(mnt);
  const url = `${relais.url}/v2/library/big/blobs/${layer.digest}`;

  px.clear();
  const refused = await undiciGet(url);
  assert.equal(refused.status, 503, refused.body.toString());
  assert.equal(ociErrorCode(refused.body), 'STORAGE_FULL');
  assert.match(refused.body.toString(), /6000000 bytes needed/);
  const logLine = relais.logs().find((l) => l.event === 'failed' && l.code === 'STORAGE_FULL');
  assert.ok(logLine, 'a log line says the storage is full');
  assert.equal(px.requests().filter((r) => blobPath(layer.digest).test(r.path)).length, 1, 'one upstream GET, abandoned after the headers');

  // The same blob from an upstream that sends no Content-Length: relais learns the size too late, the disk fills.
  px.setRules([{ method: 'GET', path: blobPath(layer.digest), times: 1, action: { stripContentLength: true } }]);
  const midStream = await undiciGet(url);
  px.setRules([]);
  assert.equal(midStream.status, 200, 'headers went out before the disk filled');
  assert.ok(midStream.error !== undefined, 'the chunked transfer broke off');
  assert.ok(midStream.body.byteLength < layer.size);
  const enospcLine = relais.logs().filter((l) => l.event === 'failed' && l.code === 'STORAGE_FULL').length;
  assert.equal(enospcLine, 2, 'the ENOSPC is logged as STORAGE_FULL');
  const freeAfterEnospc = await freeBytes(mnt);
  assert.ok(freeAfterEnospc >= freeBefore - 64 * 1024, `the spool file was removed (${freeAfterEnospc} free, ${freeBefore} before)`);
  assert.equal(await relais.instance.index.getContent(layer.digest), undefined);

  // What is cached keeps serving while the disk is full, to the last byte: and past a flush of the
  // index's last-access times (every 5 s on a timer; run here at once), which now fails with SQLITE_FULL.
  const filler2 = join(mnt, 'filler2');
  await fillUp(filler2);
  assert.equal(await freeBytes(mnt), 0, 'the disk is full');
  const cachedPull = await skopeoPull(relais.host, 'library/small:v1');
  for (const l of small.layers) assert.ok(cachedPull.files.has(l.digest));
  const newManifest = await undiciGet(`${relais.url}/v2/library/other/manifests/v1`);
  assert.equal(newManifest.status, 503, newManifest.body.toString());
  assert.equal(ociErrorCode(newManifest.body), 'STORAGE_FULL', 'a manifest that cannot be stored: 503 STORAGE_FULL, not 500');
  await relais.instance.index.flush(); // what the timer runs: it must not throw on SQLITE_FULL
  const stillServing = await skopeoPull(relais.host, 'library/small:v1');
  assert.equal(stillServing.files.size, small.layers.length + 1, 'relais survived the failed index flush');
  await rm(filler2);

  // Space returns: the same blob downloads.
  await rm(filler);
  px.clear();
  const ok = await undiciGet(url);
  assert.equal(ok.status, 200);
  assert.equal(ok.error, undefined);
  assert.equal(sha256(ok.body), layer.digest);
  assert.equal(px.count('GET', blobPath(layer.digest)), 1);

  // The storage keeps idle fds of hot blobs for the next reader: released first, so a reader that never let go shows.
  // Streams close asynchronously after the response: poll (bounded) until they have.
  const openNow = async (): Promise<string[]> => {
    await relais.instance.storage.releaseIdle?.();
    return openFilesUnder(join(dataDir, 'storage'));
  };
  let open = await openNow();
  for (let i = 0; i < 50 && open.length > 0; i++) {
    await sleep(20);
    open = await openNow();
  }
  assert.deepEqual(open, [], 'no fd left open on storage or spool files');
  await relais.stop();
  const disk = await inspectDisk(dataDir);
  assert.deepEqual(disk.tmpFiles, []);
  assert.deepEqual(disk.rowsWithoutFile, []);
  assert.deepEqual(disk.corruptFiles, []);
  assert.equal(disk.rows.get(layer.digest), layer.size);
  await up.settle();
  recordFault({
    group: '6 disk full',
    fault: '16 MiB tmpfs data dir, 4 MiB free, a 6 MB layer requested; then the same from an upstream without Content-Length; then space freed',
    client: 'undici (the layer), skopeo (a cached image)',
    clientSaw: `503 STORAGE_FULL ("6000000 bytes needed"); chunked: 200 then the transfer broke off after ${midStream.body.byteLength} B; disk 100% full: cached image pulled before and after a failed index flush (relais stays up), an uncached manifest 503 STORAGE_FULL; after freeing space 200 with the right digest`,
    upstreamSaw: `3 layer GETs: one abandoned after the headers, one read until ENOSPC, one complete (distribution: ${up.blobGets(layer.digest)} blob GETs logged)`,
    onDisk: describeDisk(disk, `log lines: 2 x "blob download: failed" code STORAGE_FULL; free space back to ${Math.round(freeAfterEnospc / 1024)} KiB after the ENOSPC`),
  });
});

test('6 disk full with a budget configured: relais evicts least-recently-used images to make room, then downloads', async (t) => {
  const { mnt, cleanups } = await smallDisk(t);
  const up = await startRegistry();
  cleanups.push(() => up.close());
  const old = await pushRandomImage(up.host, 'library/old:v1', { layers: [5_000_000] });
  const big = await pushRandomImage(up.host, 'library/big:v1', { layers: [6_000_000] });
  const dataDir = join(mnt, 'data');
  // The budget (100 MB) is far above the disk: only the disk-full path can evict here.
  const relais = await startRelais({ upstreams: { 'docker.io': up.url }, dataDir, config: { upstreams: { 'docker.io': FAST_UPSTREAM }, storage: { maxSize: '100MB', evictInterval: 0, gcInterval: 0 } } });
  cleanups.push(() => relais.stop());
  await skopeoPull(relais.host, 'library/old:v1');
  await undiciGet(`${relais.url}/v2/library/big/manifests/v1`);
  await relais.instance.blobs.settle();
  // Leave 4 MiB free: the 6 MB layer fits only if the 5 MB image goes.
  const filler = join(mnt, 'filler');
  await fill(filler, (await freeBytes(mnt)) - 4 * 1024 * 1024);
  up.clearLog();
  const pulled = await skopeoPull(relais.host, 'library/big:v1');
  assert.ok(pulled.files.has(big.layers[0]?.digest ?? ''), 'the big image pulled');
  await up.settle();
  assert.equal(up.blobGets(big.layers[0]?.digest), 1);
  await relais.instance.blobs.settle();
  const usage = await relais.instance.index.usage();
  assert.ok(usage.bytes < 5_000_000 + 6_000_000, `the old image was evicted (index holds ${usage.bytes} bytes)`);
  assert.equal(await relais.instance.index.getContent(old.layers[0]?.digest ?? ''), undefined, 'old layer gone from the index');
  await relais.stop();
  const disk = await inspectDisk(dataDir);
  recordFault({
    group: '6 disk full',
    fault: 'a 6 MB layer with 4 MiB free and storage.maxSize set (far above the disk)',
    client: 'skopeo copy',
    clientSaw: 'pull completed: relais evicted the least-recently-used image (5 MB) to make room',
    upstreamSaw: '1 GET of the new layer',
    onDisk: describeDisk(disk),
  });
  await rm(filler, { force: true });
});
