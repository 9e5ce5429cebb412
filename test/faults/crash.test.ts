// Fault 7 of issue 4: relais (the real CLI, a child process) is SIGKILLed while it downloads a blob from a
// throttled upstream, then restarted on the same data dir: the client's transfer failed (never a short
// success), the spool file is gone after the restart, the index has no row for the blob, and the next
// request fetches it again and serves the right bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFaultProxy } from '../peers/fault-proxy.js';
import { pushRandomImage } from '../peers/images.js';
import { freePort } from '../peers/ports.js';
import { removeDir, tempDir } from '../peers/proc.js';
import { startRegistry } from '../peers/registry.js';
import { skopeoPull } from '../integration/core/helpers.js';
import { recordFault } from './report.js';
import { blobPath, curlGet, describeDisk, inspectDisk, openFilesUnder, spawnRelais } from './helpers.js';

test('7 relais SIGKILLed mid-download and restarted: no partial blob served, spool removed, index consistent, next pull completes', async (t) => {
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });
  const up = await startRegistry();
  cleanups.push(() => up.close());
  const px = await startFaultProxy(up.url);
  cleanups.push(() => px.close());
  const dir = await tempDir('crash');
  cleanups.push(() => removeDir(dir));
  const img = await pushRandomImage(up.host, 'library/crash:v1', { layers: [8_000_000, 200_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const re = blobPath(layer.digest);
  const dataDir = `${dir}/data`;
  const port = await freePort();

  const first = await spawnRelais(dataDir, port, px.url, dir);
  cleanups.push(() => first.proc.stop());
  // 2 MB/s: the 8 MB layer takes 4 s; relais is killed after about 1.5 MB.
  px.setRules([{ method: 'GET', path: re, times: 1, action: { throttle: 2_000_000 } }]);
  const client = curlGet(`${first.url}/v2/library/crash/blobs/${layer.digest}`);
  const deadline = Date.now() + 10_000;
  while (px.bytesForwarded('GET', re) < 1_500_000) {
    assert.ok(Date.now() < deadline, 'the download did not start');
    await sleep(20);
  }
  process.kill(first.proc.pid, 'SIGKILL');
  const exit = await first.proc.exited;
  assert.equal(exit.signal, 'SIGKILL');
  const seen = await client;
  assert.notEqual(seen.exit, 0, 'curl saw a failed transfer');
  assert.ok(seen.bytes < layer.size, `curl got ${seen.bytes} of ${layer.size} B`);
  const killedAt = px.bytesForwarded('GET', re);

  const afterKill = await inspectDisk(dataDir);
  assert.equal(afterKill.tmpFiles.length, 1, `the spool file of the interrupted download is there before the restart: ${afterKill.tmpFiles.join(', ')}`);
  assert.equal(afterKill.rows.has(layer.digest), false, 'no index row for the interrupted blob');
  assert.equal(afterKill.files.has(layer.digest), false, 'no stored file for it either');
  assert.deepEqual(afterKill.rowsWithoutFile, []);

  px.setRules([]);
  up.clearLog();
  const second = await spawnRelais(dataDir, port, px.url, dir);
  cleanups.push(() => second.proc.stop());
  const afterRestart = await inspectDisk(dataDir);
  assert.deepEqual(afterRestart.tmpFiles, [], 'the restart removed the spool file');
  const again = await curlGet(`${second.url}/v2/library/crash/blobs/${layer.digest}`);
  assert.equal(again.exit, 0, again.stderr);
  assert.equal(again.status, 200);
  assert.equal(again.digest, layer.digest, 'the full, verified blob');
  const pulled = await skopeoPull(second.host, 'library/crash:v1');
  assert.equal(pulled.files.get(layer.digest), layer.size);
  await up.settle();
  assert.equal(up.blobGets(layer.digest), 1, 'fetched again once after the restart');
  // relais keeps one idle fd per hot blob for the next reader (src/storage/open-files.ts), never a spool file's,
  // and never two for one blob: an fd opened per request and not closed would show as a second one.
  // Streams close asynchronously after the responses: poll (bounded) until they have.
  const leaked = (fds: string[]): boolean => fds.some((f) => f.includes('/_tmp/')) || new Set(fds).size !== fds.length;
  let open = await openFilesUnder(`${dataDir}/storage`, second.proc.pid);
  for (let i = 0; i < 50 && leaked(open); i++) {
    await sleep(20);
    open = await openFilesUnder(`${dataDir}/storage`, second.proc.pid);
  }
  assert.deepEqual(open.filter((f) => f.includes('/_tmp/')), [], 'no fd left open on spool files');
  assert.equal(new Set(open).size, open.length, `at most one fd per blob file: ${open.join(', ')}`);
  const stopped = await second.proc.stop();
  assert.equal(stopped.code, 0, 'SIGTERM: a clean exit');
  const disk = await inspectDisk(dataDir);
  assert.deepEqual(disk.tmpFiles, []);
  assert.deepEqual(disk.rowsWithoutFile, []);
  assert.deepEqual(disk.corruptFiles, []);
  assert.equal(disk.rows.get(layer.digest), layer.size);
  recordFault({
    group: '7 SIGKILL mid-download',
    fault: `relais (CLI child) SIGKILLed about 1.5 MB into an 8 MB layer from a 2 MB/s upstream, restarted on the same data dir`,
    client: 'curl, then skopeo after the restart',
    clientSaw: `status ${seen.status}, transfer failed after ${seen.bytes} B (curl exit ${seen.exit ?? '?'}); after the restart 200 with the right digest, skopeo pull complete`,
    upstreamSaw: `one interrupted GET (${killedAt} B), one complete GET after the restart`,
    onDisk: `after the kill: 1 spool file, no index row or file for the layer; after the restart: ${describeDisk(disk)}`,
  });
});
