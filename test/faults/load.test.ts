// Fault 8 of issue 4: load. relais (the real CLI, a child process, so its memory is its own) serves 500
// concurrent clients on cached content while 100 more ask for one uncached large blob at the same time.
// Every client's bytes are hashed; the upstream's access log must show one fetch of the large blob; the
// peak RSS (VmHWM) of relais is recorded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, readlink } from 'node:fs/promises';
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
  const atStart = await heldFds(relais.proc.pid, dataDir, new URL(relais.url).port);
  const fdsAtStart = atStart.other;
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
  // Every spool, storage reader and client socket is closed once the clients are gone: no fd leak. What may
  // stay: the fds of hot blobs (kept open for the next reader, src/storage/open-files.ts) and keep-alive
  // connections to the upstream.
  await pool.close();
  let held: HeldFds | undefined;
  for (let i = 0; i < 50; i++) {
    held = await heldFds(relais.proc.pid, dataDir, new URL(relais.url).port);
    if (held.spool.length === 0 && held.clientSockets <= atStart.clientSockets && held.other <= fdsAtStart) break;
    await sleep(100);
  }
  assert.ok(held);
  assert.deepEqual(held.spool, [], 'no spool file left open');
  // (The connection relais's readiness check left open was there before the load.)
  assert.ok(held.clientSockets <= atStart.clientSockets, `no client connection of the load left open (${held.clientSockets}, ${atStart.clientSockets} at start)`);
  assert.ok(held.blobFiles <= 2, `at most the two hot blobs' fds stay open (${held.blobFiles})`);
  assert.ok(held.other <= fdsAtStart, `relais holds ${held.other} other fds after the load, ${fdsAtStart} at start: ${held.links.join(', ')}`);
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
    onDisk: `${describeDisk(disk)}; after the clients left: no spool file or client connection open, ${held.blobFiles} hot blob fds kept, ${held.other} other fds (${fdsAtStart} at start, upstream connections aside); relais peak RSS (VmHWM) ${peakMiB} MiB (${Math.round(before.rssKiB / 1024)} MiB before the load, sampled VmRSS max ${Math.round(peakRss / 1024)} MiB)`,
  });
});

interface HeldFds {
  readonly spool: string[];
  readonly blobFiles: number;
  /** Established connections on relais's listening port. */
  readonly clientSockets: number;
  /** Everything else except connections to other ports (the upstream's keep-alive pool). */
  readonly other: number;
  readonly links: string[];
}

/** What a process's fds point at: files under dataDir by kind, and TCP sockets by local port (from /proc/PID/net/tcp*). */
async function heldFds(pid: number, dataDir: string, listenPort: string): Promise<HeldFds> {
  const sockets = new Map<string, { localPort: number; state: string }>();
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      const inode = f[9];
      if (local === undefined || inode === undefined) continue;
      sockets.set(inode, { localPort: parseInt(local.slice(local.lastIndexOf(':') + 1), 16), state: f[3] ?? '' });
    }
  }
  const links = await Promise.all((await readdir(`/proc/${pid}/fd`)).map(async (fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '?')));
  let blobFiles = 0;
  let clientSockets = 0;
  let other = 0;
  const spool: string[] = [];
  for (const l of links) {
    const socket = /^socket:\[(\d+)\]$/.exec(l);
    const s = socket?.[1] === undefined ? undefined : sockets.get(socket[1]);
    if (l.startsWith(`${dataDir}/spool/`)) spool.push(l);
    else if (l.startsWith(`${dataDir}/storage/`)) blobFiles++;
    // 01 = ESTABLISHED: a connection accepted on the listening port (the listening socket itself is 0A).
    else if (s !== undefined && s.localPort === Number(listenPort) && s.state === '01') clientSockets++;
    else if (s !== undefined && s.localPort !== Number(listenPort)) continue; // to the upstream
    else other++;
  }
  return { spool, blobFiles, clientSockets, other, links: links.sort() };
}
