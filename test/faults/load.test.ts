// Fault 8 of issue 4: load. relais (the real CLI, a child process, so its memory is its own) serves 500
// concurrent clients on cached content while 100 more ask for one uncached large blob at the same time.
// Every client's bytes are hashed; the upstream's access log must show one fetch of the large blob; the
// peak RSS (VmHWM) of relais is recorded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { pushRandomImage } from '../peers/images.js';
import { freePort } from '../peers/ports.js';
import { removeDir, tempDir } from '../peers/proc.js';
import { startRegistry } from '../peers/registry.js';
import { recordFault } from './report.js';
import { describeDisk, inspectDisk, memoryOf, spawnRelais } from './helpers.js';

const CACHED_CLIENTS = 500;
const COLD_CLIENTS = 100;
const LARGE = 32 * 1024 * 1024;
/** relais's peak RSS must stay below this: the large blob is streamed, never held per client. */
const RSS_LIMIT_MIB = 512;

async function fetchHashed(pool: Pool, path: string, accept?: string): Promise<{ status: number; digest: string; bytes: number }> {
  const res = await pool.request({ method: 'GET', path, headers: accept === undefined ? {} : { accept } });
  const h = createHash('sha256');
  let bytes = 0;
  for await (const c of res.body) {
    h.update(c as Buffer);
    bytes += (c as Buffer).byteLength;
  }
  return { status: res.statusCode, digest: `sha256:${h.digest('hex')}`, bytes };
}

test('8 load: 500 concurrent clients on cached content and 100 on one uncached 32 MiB blob: no errors, one upstream fetch, bounded memory', async (t) => {
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });
  const up = await startRegistry();
  cleanups.push(() => up.close());
  const dir = await tempDir('load');
  cleanups.push(() => removeDir(dir));
  const warm = await pushRandomImage(up.host, 'library/warm:v1', { layers: [512 * 1024] });
  const cold = await pushRandomImage(up.host, 'library/cold:v1', { layers: [LARGE] });
  const warmLayer = warm.layers[0];
  const coldLayer = cold.layers[0];
  assert.ok(warmLayer && coldLayer);
  const dataDir = `${dir}/data`;
  const relais = await spawnRelais(dataDir, await freePort(), up.url, dir);
  cleanups.push(() => relais.proc.stop());
  const fdsAtStart = (await readdir(`/proc/${relais.proc.pid}/fd`)).length;
  const pool = new Pool(relais.url, { connections: CACHED_CLIENTS + COLD_CLIENTS, pipelining: 1 });
  cleanups.push(() => pool.close());

  // Warm the cache: the small image's manifest and layer.
  assert.equal((await fetchHashed(pool, '/v2/library/warm/manifests/v1', warm.manifestMediaType)).digest, warm.manifestDigest);
  assert.equal((await fetchHashed(pool, `/v2/library/warm/blobs/${warmLayer.digest}`)).digest, warmLayer.digest);
  await up.settle();
  up.clearLog();
  const before = await memoryOf(relais.proc.pid);

  let peakRss = before.rssKiB;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakRss = Math.max(peakRss, (await memoryOf(relais.proc.pid)).rssKiB);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const started = Date.now();
  const cachedRuns = Array.from({ length: CACHED_CLIENTS }, async () => {
    const m = await fetchHashed(pool, '/v2/library/warm/manifests/v1', warm.manifestMediaType);
    const b = await fetchHashed(pool, `/v2/library/warm/blobs/${warmLayer.digest}`);
    return m.status === 200 && m.digest === warm.manifestDigest && b.status === 200 && b.digest === warmLayer.digest;
  });
  const coldRuns = Array.from({ length: COLD_CLIENTS }, async () => {
    const b = await fetchHashed(pool, `/v2/library/cold/blobs/${coldLayer.digest}`);
    return b.status === 200 && b.digest === coldLayer.digest && b.bytes === LARGE;
  });
  const settled = await Promise.allSettled([...cachedRuns, ...coldRuns]);
  const seconds = (Date.now() - started) / 1000;
  sampling = false;
  await sampler;
  const failures = settled.filter((s) => s.status === 'rejected' || !s.value);
  const reasons = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => String(s.reason));
  assert.equal(failures.length, 0, `clients failed: ${reasons.slice(0, 5).join('; ')}`);
  const mem = await memoryOf(relais.proc.pid);
  await up.settle();
  assert.equal(up.blobGets(coldLayer.digest), 1, 'one upstream fetch for 100 concurrent cold clients');
  assert.equal(up.blobGets(warmLayer.digest), 0, 'cached content: no upstream fetch');
  assert.equal(up.manifestGets() + up.manifestHeads(), 0, 'cached tag within its TTL: no upstream manifest request');
  // Every spool, storage reader and client socket is closed once the clients are gone: no fd leak.
  await pool.close();
  let fdsAfter = Infinity;
  for (let i = 0; i < 50 && fdsAfter > fdsAtStart + 2; i++) {
    await sleep(100);
    fdsAfter = (await readdir(`/proc/${relais.proc.pid}/fd`)).length;
  }
  assert.ok(fdsAfter <= fdsAtStart + 2, `relais holds ${fdsAfter} fds after the load, ${fdsAtStart} at start`);
  const peakMiB = Math.round(mem.peakKiB / 1024);
  assert.ok(peakMiB < RSS_LIMIT_MIB, `relais peak RSS ${peakMiB} MiB (limit ${RSS_LIMIT_MIB} MiB)`);
  const stopped = await relais.proc.stop();
  assert.equal(stopped.code, 0);
  const disk = await inspectDisk(dataDir);
  assert.deepEqual(disk.tmpFiles, []);
  assert.deepEqual(disk.rowsWithoutFile, []);
  assert.deepEqual(disk.corruptFiles, []);
  const servedMiB = Math.round((CACHED_CLIENTS * (warm.manifest.byteLength + warmLayer.size) + COLD_CLIENTS * LARGE) / 1024 / 1024);
  recordFault({
    group: '8 load',
    fault: `${CACHED_CLIENTS} concurrent clients on a cached manifest + 512 KiB layer, and ${COLD_CLIENTS} concurrent clients on one uncached 32 MiB blob, at once (relais as a CLI child process)`,
    client: `undici Pool (${CACHED_CLIENTS + COLD_CLIENTS} connections), every body hashed`,
    clientSaw: `${settled.length} clients, 0 errors, every digest verified; ${servedMiB} MiB served in ${seconds.toFixed(1)} s`,
    upstreamSaw: `1 GET of the 32 MiB blob, nothing for the cached content`,
    onDisk: `${describeDisk(disk)}; ${fdsAfter} open fds after the clients left (${fdsAtStart} at start); relais peak RSS (VmHWM) ${peakMiB} MiB (${Math.round(before.rssKiB / 1024)} MiB before the load, sampled VmRSS max ${Math.round(peakRss / 1024)} MiB)`,
  });
});
