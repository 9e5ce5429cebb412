// Faults 1-5 of issue 4: the upstream is down, stalls, resets, sends wrong bytes, rate-limits or fails.
// relais runs in-process against a real distribution, through the fault proxy (test/peers/fault-proxy.ts);
// clients are skopeo, curl and undici. Each test asserts what the client saw, what the upstream saw
// (distribution's access log and the proxy's record) and what was left on disk, then records a row.
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { testClock, type TestClock } from '../peers/clock.js';
import { startFaultProxy, type FaultProxy } from '../peers/fault-proxy.js';
import { pushRandomImage } from '../peers/images.js';
import { startRegistry, type RegistryPeer } from '../peers/registry.js';
import { startRelais, type RelaisPeer } from '../peers/relais.js';
import { skopeoPull } from '../integration/core/helpers.js';
import { recordFault } from './report.js';
import { FAST_UPSTREAM, blobPath, curlGet, describeDisk, inspectDisk, ociErrorCode, openFilesUnder, sha256, undiciGet } from './helpers.js';

let up: RegistryPeer;
let px: FaultProxy;

before(async () => {
  up = await startRegistry();
  px = await startFaultProxy(up.url);
});

after(async () => {
  await px.close();
  await up.close();
});

async function relaisFor(t: TestContext, url: string, upstreamExtra: Record<string, unknown> = {}, clock?: TestClock): Promise<RelaisPeer> {
  const r = await startRelais({ upstreams: { 'docker.io': url }, config: { upstreams: { 'docker.io': { ...FAST_UPSTREAM, ...upstreamExtra } } }, ...(clock ? { clock: () => clock.now() } : {}) });
  t.after(() => r.close());
  return r;
}

/** Stops relais and checks its data dir: no temp file, no index row without its file, no corrupt file. */
async function diskAfter(r: RelaisPeer, note = ''): Promise<string> {
  // Once the clients are gone no spool or blob file is held open (streams close asynchronously: settle),
  // besides the idle fds the storage keeps for the next reader (src/storage/open-files.ts): released first.
  await r.instance.storage.releaseIdle?.();
  const storage = join(r.dataDir, 'storage');
  let open = await openFilesUnder(storage);
  for (let i = 0; i < 20 && open.length > 0; i++) {
    await sleep(50);
    open = await openFilesUnder(storage);
  }
  assert.deepEqual(open, [], 'no file descriptor left open on storage or spool files');
  await r.stop();
  const d = await inspectDisk(r.dataDir);
  assert.deepEqual(d.tmpFiles, [], 'no spool or temp file left');
  assert.deepEqual(d.rowsWithoutFile, [], 'every index row has its file');
  assert.deepEqual(d.corruptFiles, [], 'every stored file hashes to its digest');
  return describeDisk(d, note);
}

const ANY_MANIFEST = /\/manifests\//;

test('1 upstream down: cached tags and blobs pull, uncached requests fail fast with 503 and an OCI error', async (t) => {
  const own = await startRegistry();
  t.after(() => own.close());
  const img = await pushRandomImage(own.host, 'library/down:v1', { layers: [600_000, 200_000] });
  const never = await pushRandomImage(own.host, 'library/never:v1', { layers: [100_000] });
  const clock = testClock();
  const relais = await relaisFor(t, own.url, { tagTtl: '200ms' }, clock);
  await skopeoPull(relais.host, 'library/down:v1');
  clock.advance(250); // the tag expires: the next pull has to ask the (dead) upstream

  await own.stop();
  own.clearLog();
  const pulled = await skopeoPull(relais.host, 'library/down:v1');
  for (const l of img.layers) assert.ok(pulled.files.has(l.digest), `cached layer ${l.digest} pulled`);
  assert.ok(relais.logs().some((l) => l.msg === 'request' && l.cache === 'stale'), 'the expired tag was served stale');

  // Budget: connect refused is immediate; the worst case is attempts x connect timeout + back-off.
  const budgetMs = 3 * 1000 + 50 + 100 + 500;
  const results = [];
  for (const path of ['/v2/library/never/manifests/v1', `/v2/library/never/blobs/${never.layers[0]?.digest ?? ''}`, `/v2/library/down/manifests/${never.manifestDigest}`]) {
    const r = await undiciGet(`${relais.url}${path}`);
    assert.equal(r.status, 503, `${path}: ${r.body.toString()}`);
    assert.equal(ociErrorCode(r.body), 'UPSTREAM_UNAVAILABLE', path);
    assert.ok(r.ms < budgetMs, `${path} answered in ${r.ms} ms (budget ${budgetMs} ms)`);
    results.push(r.ms);
  }
  assert.equal(own.accessLog().length, 0, 'nothing reached the stopped upstream');
  const disk = await diskAfter(relais);
  recordFault({
    group: '1 upstream down',
    fault: 'upstream process stopped (connection refused)',
    client: 'skopeo (cached image, expired tag), undici (uncached manifest, blob, digest)',
    clientSaw: `cached image pulled, all digests verified (tag served stale); uncached: 503 UPSTREAM_UNAVAILABLE in ${Math.max(...results)} ms max (budget ${budgetMs} ms)`,
    upstreamSaw: 'no request (process stopped)',
    onDisk: disk,
  });
});

test('1 upstream accepts connections but never answers: bounded by timeouts.headers per attempt', async (t) => {
  const img = await pushRandomImage(up.host, 'library/hang:v1', { layers: [1000] });
  const relais = await relaisFor(t, px.url, { timeouts: { connect: '1s', headers: '1s', idle: '1s' } });
  px.setRules([{ path: ANY_MANIFEST, action: { hang: true } }]);
  px.clear();
  up.clearLog();
  const r = await undiciGet(`${relais.url}/v2/library/hang/manifests/v1`);
  px.setRules([]);
  assert.equal(r.status, 504, r.body.toString());
  assert.equal(ociErrorCode(r.body), 'UPSTREAM_TIMEOUT');
  // 3 attempts x 1 s + back-off 50 + 100 ms; undici checks timeouts of a second and more every 500 ms.
  assert.ok(r.ms >= 3000 && r.ms < 3 * 1500 + 150 + 1000, `answered after ${r.ms} ms`);
  assert.equal(px.count('GET', ANY_MANIFEST), 3, 'one request per attempt');
  const ok = await undiciGet(`${relais.url}/v2/library/hang/manifests/v1`);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['docker-content-digest'], img.manifestDigest);
  const disk = await diskAfter(relais);
  recordFault({
    group: '1 upstream down',
    fault: 'upstream accepts the connection, never sends headers',
    client: 'undici',
    clientSaw: `504 UPSTREAM_TIMEOUT after ${r.ms} ms (3 attempts x timeouts.headers 1 s, undici's timer resolution 0.5 s); 200 once the upstream answers again`,
    upstreamSaw: `3 manifest GETs held by the proxy (none reached distribution), then 1 GET answered`,
    onDisk: disk,
  });
});

test('2 slow upstream (1 MB/s): clients get the first bytes at once and the whole blob, no timeout, one fetch', async (t) => {
  const img = await pushRandomImage(up.host, 'library/slow:v1', { layers: [2_500_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await relaisFor(t, px.url);
  const re = blobPath(layer.digest);
  px.setRules([{ method: 'GET', path: re, action: { throttle: 1_000_000 } }]);
  px.clear();
  up.clearLog();
  const url = `${relais.url}/v2/library/slow/blobs/${layer.digest}`;
  const firstByte = async (): Promise<{ ttfb: number; total: number; digest: string }> => {
    const started = Date.now();
    const res = await request(url);
    let ttfb = -1;
    const h = createHash('sha256');
    for await (const c of res.body) {
      if (ttfb < 0) ttfb = Date.now() - started;
      h.update(c as Buffer);
    }
    return { ttfb, total: Date.now() - started, digest: `sha256:${h.digest('hex')}` };
  };
  const [a, b] = await Promise.all([firstByte(), firstByte()]);
  px.setRules([]);
  for (const r of [a, b]) {
    assert.equal(r.digest, layer.digest);
    assert.ok(r.total >= 2000, `the transfer followed the upstream's pace (${r.total} ms)`);
    assert.ok(r.ttfb < 1000, `first bytes after ${r.ttfb} ms, not after the whole download`);
  }
  assert.equal(px.count('GET', re), 1, 'one upstream fetch for both clients, no timeout, no retry');
  assert.equal(relais.instance.blobs.stats.resumes, 0);
  const disk = await diskAfter(relais);
  recordFault({
    group: '2 upstream stalls mid-blob',
    fault: 'slow upstream: 1 MB/s for a 2.5 MB layer (timeouts.idle 1 s)',
    client: 'undici x 2 concurrently',
    clientSaw: `both complete with the right digest in ${Math.max(a.total, b.total)} ms; first bytes after ${Math.max(a.ttfb, b.ttfb)} ms`,
    upstreamSaw: '1 GET, streamed at 1 MB/s, no retry',
    onDisk: disk,
  });
});

test('2 upstream stalls mid-blob: relais times out (timeouts.idle) and resumes with Range; skopeo gets every digest', async (t) => {
  const img = await pushRandomImage(up.host, 'library/stall:v1', { layers: [4_000_000, 300_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await relaisFor(t, px.url);
  const freezeAt = 1_000_000;
  px.setRules([{ method: 'GET', path: blobPath(layer.digest), times: 1, action: { freezeAfter: freezeAt } }]);
  px.clear();
  up.clearLog();
  const started = Date.now();
  const pulled = await skopeoPull(relais.host, 'library/stall:v1');
  const ms = Date.now() - started;
  assert.equal(pulled.files.get(layer.digest), layer.size, 'skopeo verified the stalled layer');
  assert.ok(ms >= 1000, `the stall cost at least timeouts.idle (took ${ms} ms)`);
  await up.settle();
  const gets = up.accessLog().filter((e) => e.method === 'GET' && blobPath(layer.digest).test(e.path));
  assert.equal(gets.length, 2, gets.map((g) => g.line).join('\n'));
  assert.equal(gets[1]?.status, 206, 'the resume was a Range request answered 206');
  assert.equal(gets[1]?.bytes, layer.size - freezeAt, 'the resume fetched only the missing bytes');
  const resume = px.requests().filter((r) => blobPath(layer.digest).test(r.path))[1];
  assert.equal(resume?.headers.range, `bytes=${freezeAt}-`);
  const forwarded = px.bytesForwarded('GET', blobPath(layer.digest));
  assert.equal(forwarded, layer.size, 'upstream bytes for the layer == its size');
  assert.equal(relais.instance.blobs.stats.resumes, 1);
  const disk = await diskAfter(relais);
  assert.equal(up.blobGets(layer.digest), 2);
  recordFault({
    group: '2 upstream stalls mid-blob',
    fault: `upstream freezes after ${freezeAt} of ${layer.size} bytes (Range supported)`,
    client: 'skopeo copy',
    clientSaw: `pull completed in ${ms} ms, every digest verified`,
    upstreamSaw: `GET 200 (frozen at ${freezeAt} B), then GET Range bytes=${freezeAt}- answered 206 with ${gets[1]?.bytes ?? 0} B; ${forwarded} B forwarded in all (= blob size)`,
    onDisk: disk,
  });
});

test('2 upstream stalls mid-blob without Range support: relais restarts the body and skips what it has', async (t) => {
  const img = await pushRandomImage(up.host, 'library/stallnr:v1', { layers: [3_000_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await relaisFor(t, px.url);
  const freezeAt = 1_200_000;
  const re = blobPath(layer.digest);
  px.setRules([
    { method: 'GET', path: re, times: 1, action: { freezeAfter: freezeAt, ignoreRange: true } },
    { method: 'GET', path: re, action: { ignoreRange: true } },
  ]);
  px.clear();
  up.clearLog();
  const r = await curlGet(`${relais.url}/v2/library/stallnr/blobs/${layer.digest}`);
  px.setRules([]);
  assert.equal(r.exit, 0, r.stderr);
  assert.equal(r.status, 200);
  assert.equal(r.digest, layer.digest);
  await up.settle();
  const gets = up.accessLog().filter((e) => e.method === 'GET' && re.test(e.path));
  assert.deepEqual(gets.map((g) => g.status), [200, 200], 'no Range reached the upstream: two full GETs');
  const forwarded = px.bytesForwarded('GET', re);
  assert.equal(forwarded, freezeAt + layer.size);
  const disk = await diskAfter(relais);
  recordFault({
    group: '2 upstream stalls mid-blob',
    fault: `upstream freezes after ${freezeAt} of ${layer.size} bytes, ignores Range`,
    client: 'curl',
    clientSaw: `200, ${r.bytes} B, digest verified, exit 0 (${r.ms} ms)`,
    upstreamSaw: `two GETs answered 200 (no Range); ${forwarded} B forwarded (the first ${freezeAt} B of the retry skipped)`,
    onDisk: disk,
  });
});

test('2 upstream stalls on every attempt: the client transfer is aborted, nothing is stored', async (t) => {
  const img = await pushRandomImage(up.host, 'library/stallall:v1', { layers: [4_000_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await relaisFor(t, px.url);
  const re = blobPath(layer.digest);
  px.setRules([{ method: 'GET', path: re, action: { freezeAfter: 700_000 } }]);
  px.clear();
  up.clearLog();
  const [c, u] = await Promise.all([curlGet(`${relais.url}/v2/library/stallall/blobs/${layer.digest}`), undiciGet(`${relais.url}/v2/library/stallall/blobs/${layer.digest}`)]);
  px.setRules([]);
  assert.notEqual(c.exit, 0, 'curl saw a failed transfer');
  assert.ok(c.bytes < layer.size, `curl got ${c.bytes} of ${layer.size} bytes`);
  assert.ok(u.error !== undefined || u.status >= 500, 'undici saw a failed transfer');
  assert.ok(u.body.byteLength < layer.size);
  assert.equal(px.count('GET', re), 3, 'one upstream request per attempt (retries.attempts = 3)');
  assert.equal(await relais.instance.index.getContent(layer.digest), undefined, 'no index row');
  const disk = await diskAfter(relais);
  assert.ok(!disk.startsWith('1 '), disk);
  recordFault({
    group: '2 upstream stalls mid-blob',
    fault: 'upstream freezes after 700000 bytes on every attempt',
    client: 'curl + undici concurrently',
    clientSaw: `status ${c.status}, transfer aborted after ${c.bytes} of ${layer.size} B (curl exit ${c.exit ?? '?'}; undici: ${u.error ?? `status ${u.status}`})`,
    upstreamSaw: `3 GETs (1 + 2 Range resumes), each frozen; ${px.bytesForwarded('GET', re)} B forwarded`,
    onDisk: disk,
  });
});

test('3 upstream resets the connection mid-blob: a Range retry finishes it; upstream bytes counted once', async (t) => {
  const img = await pushRandomImage(up.host, 'library/reset:v1', { layers: [3_000_000, 100_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await relaisFor(t, px.url);
  const re = blobPath(layer.digest);
  const resetAt = 1_500_000;
  px.setRules([{ method: 'GET', path: re, times: 1, action: { resetAfter: resetAt } }]);
  px.clear();
  up.clearLog();
  const pulled = await skopeoPull(relais.host, 'library/reset:v1');
  px.setRules([]);
  assert.equal(pulled.files.get(layer.digest), layer.size);
  await up.settle();
  const reqs = px.requests().filter((r) => re.test(r.path));
  assert.equal(reqs.length, 2);
  assert.equal(reqs[0]?.outcome, 'reset');
  const m = /^bytes=(\d+)-$/.exec(String(reqs[1]?.headers.range));
  assert.ok(m?.[1] !== undefined, `resume with Range (got ${String(reqs[1]?.headers.range)})`);
  const resumeAt = Number(m[1]);
  // Relais resumes at what it received: bytes the proxy wrote just before closing may never arrive
  // (seen under load: 1,473,536 of 1,500,000), so the resume point is at most the cut, never past it.
  assert.ok(resumeAt > 0 && resumeAt <= resetAt, `resumed at ${resumeAt}, within what was sent before the cut (${resetAt})`);
  const gets = up.accessLog().filter((e) => e.method === 'GET' && re.test(e.path));
  assert.equal(gets[1]?.status, 206);
  assert.equal(gets[1]?.bytes, layer.size - resumeAt);
  const stats = relais.instance.blobs.stats;
  assert.equal(stats.resumes, 1);
  assert.equal(stats.upstreamBytes, img.totalBytes, 'relais counted each upstream byte once (no re-sent bytes)');
  const metrics = await metricsText(relais.url);
  assert.equal(metricValue(metrics ?? '', 'relais_upstream_fetched_bytes_total', { upstream: 'docker.io' }), img.totalBytes, 'relais_upstream_fetched_bytes_total');
  const disk = await diskAfter(relais);
  recordFault({
    group: '3 upstream resets mid-blob',
    fault: `connection destroyed after ${resetAt} of ${layer.size} bytes`,
    client: 'skopeo copy',
    clientSaw: 'pull completed, every digest verified',
    upstreamSaw: `GET reset after ${reqs[0]?.bytes ?? 0} B; GET Range bytes=${resumeAt}- answered 206 with ${gets[1]?.bytes ?? 0} B; relais counted ${stats.upstreamBytes} upstream blob bytes for ${img.totalBytes} B of blobs (relais_upstream_fetched_bytes_total too)`,
    onDisk: disk,
  });
});

/** The value of one sample of a Prometheus text exposition, whatever the order of its labels. */
function metricValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (m?.[1] !== name || m[2] === undefined) continue;
    const have = new Map<string, string>();
    for (const x of m[2].matchAll(/(\w+)="([^"]*)"/g)) have.set(x[1] ?? '', x[2] ?? '');
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

async function metricsText(url: string): Promise<string | undefined> {
  const r = await undiciGet(`${url}/metrics`).catch(() => undefined);
  return r?.status === 200 ? r.body.toString('utf8') : undefined;
}

test('4 upstream sends a flipped byte: digest mismatch, nothing stored, every client aborted, counted; the next request succeeds', async (t) => {
  const img = await pushRandomImage(up.host, 'library/flip:v1', { layers: [2_000_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await relaisFor(t, px.url);
  const re = blobPath(layer.digest);
  // Throttled so both clients join the same download before it ends.
  px.setRules([{ method: 'GET', path: re, times: 1, action: { flipAt: 1_234_567, throttle: 4_000_000 } }]);
  px.clear();
  up.clearLog();
  const url = `${relais.url}/v2/library/flip/blobs/${layer.digest}`;
  const [c, u] = await Promise.all([curlGet(url), undiciGet(url)]);
  assert.notEqual(c.exit, 0, `curl must not see a complete transfer (exit ${c.exit ?? '?'}, ${c.bytes} B)`);
  assert.ok(c.bytes < layer.size, `curl got ${c.bytes} of ${layer.size} B: the last byte is held until verified`);
  assert.ok(u.error !== undefined, 'undici saw the body break off');
  assert.ok(u.body.byteLength < layer.size);
  assert.equal(relais.instance.blobs.stats.digestMismatches, 1);
  assert.equal(await relais.instance.index.getContent(layer.digest), undefined, 'nothing indexed');
  const metrics = await metricsText(relais.url);
  assert.ok(metrics !== undefined, '/metrics answers');
  assert.equal(metricValue(metrics, 'relais_upstream_errors_total', { upstream: 'docker.io', kind: 'digest_mismatch' }), 1);
  const metricNote = 'relais_upstream_errors_total{kind="digest_mismatch"} 1 at /metrics';
  assert.ok(relais.logs().some((l) => l.event === 'digest_mismatch'), 'a log line names the mismatch');

  const again = await curlGet(url);
  assert.equal(again.exit, 0, again.stderr);
  assert.equal(again.digest, layer.digest);
  await up.settle();
  assert.equal(up.blobGets(layer.digest), 2, 'the next request fetched again');
  const disk = await diskAfter(relais);
  recordFault({
    group: '4 upstream sends wrong bytes',
    fault: 'one blob byte flipped (offset 1234567 of 2000000)',
    client: 'curl + undici concurrently, then curl',
    clientSaw: `transfer aborted before the last byte (curl exit ${c.exit ?? '?'} with ${c.bytes} B; undici ${u.error ?? '?'}); next request 200 with the right digest`,
    upstreamSaw: `2 blob GETs (the corrupted one, then a fresh fetch); ${metricNote}`,
    onDisk: disk,
  });
});

test('4 upstream sends a corrupted manifest: 502 UPSTREAM_DIGEST_MISMATCH, nothing stored, next request fetches again', async (t) => {
  const img = await pushRandomImage(up.host, 'library/flipm:v1', { layers: [1000] });
  const relais = await relaisFor(t, px.url);
  px.setRules([{ method: 'GET', path: /\/manifests\/v1$/, times: 1, action: { flipAt: 20 } }]);
  px.clear();
  up.clearLog();
  const bad = await undiciGet(`${relais.url}/v2/library/flipm/manifests/v1`);
  assert.equal(bad.status, 502);
  assert.equal(ociErrorCode(bad.body), 'UPSTREAM_DIGEST_MISMATCH');
  assert.equal(await relais.instance.index.getTag('docker.io', 'library/flipm', 'v1'), undefined);
  const good = await undiciGet(`${relais.url}/v2/library/flipm/manifests/v1`);
  assert.equal(good.status, 200);
  assert.equal(sha256(good.body), img.manifestDigest);
  await up.settle();
  assert.equal(up.manifestGets(), 2);
  const disk = await diskAfter(relais);
  recordFault({
    group: '4 upstream sends wrong bytes',
    fault: 'one manifest byte flipped (Docker-Content-Digest kept)',
    client: 'undici',
    clientSaw: '502 UPSTREAM_DIGEST_MISMATCH; next request 200 with the right digest',
    upstreamSaw: '2 manifest GETs',
    onDisk: disk,
  });
});

test('5 429 with a short Retry-After: relais waits that long, then retries once; 503 Retry-After likewise', async (t) => {
  const images = { 429: await pushRandomImage(up.host, 'library/limited:a', { layers: [1000] }), 503: await pushRandomImage(up.host, 'library/limited:b', { layers: [1000] }) };
  const relais = await relaisFor(t, px.url);
  const rows: string[] = [];
  for (const [status, tag] of [[429, 'a'], [503, 'b']] as const) {
    const re = new RegExp(`/manifests/${tag}$`);
    px.setRules([{ method: 'GET', path: re, times: 1, action: { status, headers: { 'retry-after': '1' } } }]);
    px.clear();
    const r = await undiciGet(`${relais.url}/v2/library/limited/manifests/${tag}`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['docker-content-digest'], images[status].manifestDigest);
    const reqs = px.requests().filter((q) => re.test(q.path));
    assert.equal(reqs.length, 2);
    const gap = (reqs[1]?.at ?? 0) - (reqs[0]?.at ?? 0);
    assert.ok(gap >= 990, `the retry came ${gap} ms after the ${status} (Retry-After: 1)`);
    rows.push(`${status}: retried after ${gap} ms`);
  }
  px.setRules([]);
  const disk = await diskAfter(relais);
  recordFault({
    group: '5 429 / 5xx from upstream',
    fault: '429 and 503 with Retry-After: 1 (under retries.maxRetryAfter)',
    client: 'undici',
    clientSaw: '200 with the right manifest after ~1 s',
    upstreamSaw: `no request during the back-off (${rows.join('; ')})`,
    onDisk: disk,
  });
});

test('5 429 with a long Retry-After: stale-if-error serves cached tags; the upstream sees nothing until Retry-After passed', async (t) => {
  const cached = await pushRandomImage(up.host, 'library/rl:v1', { layers: [20_000] });
  await pushRandomImage(up.host, 'library/rl:v2', { layers: [1000] });
  const clock = testClock();
  const relais = await relaisFor(t, px.url, { tagTtl: '100ms' }, clock);
  await skopeoPull(relais.host, 'library/rl:v1');
  clock.advance(150); // the tag expires
  px.setRules([{ path: ANY_MANIFEST, action: { status: 429, headers: { 'retry-after': '3' } } }]);
  px.clear();
  const first = await undiciGet(`${relais.url}/v2/library/rl/manifests/v1`);
  assert.equal(first.status, 200, 'stale-if-error: the cached tag is served');
  assert.equal(first.headers['docker-content-digest'], cached.manifestDigest);
  assert.equal(px.count('*', ANY_MANIFEST), 1);
  // The back-off started at the 429, on relais's clock: no later than now.
  const t0 = clock.now();
  // During the back-off: stale tags keep serving, uncached ones fail fast with Retry-After; nothing goes out.
  let uncachedStatus = 0;
  let retryAfter: string | string[] | undefined;
  let staleServed = 0;
  for (let round = 0; round < 3 && clock.now() - t0 < 2500; round++) {
    const s = await undiciGet(`${relais.url}/v2/library/rl/manifests/v1`);
    assert.equal(s.status, 200);
    staleServed++;
    const u = await undiciGet(`${relais.url}/v2/library/rl/manifests/v2`);
    uncachedStatus = u.status;
    retryAfter = u.headers['retry-after'];
    assert.equal(u.status, 503);
    assert.ok(u.ms < 1000, `failed fast (${u.ms} ms)`);
    const pulled = await skopeoPull(relais.host, 'library/rl:v1');
    assert.ok(pulled.files.has(cached.layers[0]?.digest ?? ''));
  }
  assert.equal(px.count('*', /.*/), 1, 'the proxy saw no request during the back-off');
  assert.ok(retryAfter !== undefined, 'the 503 tells the client when to come back');
  px.setRules([]);
  clock.advance(Math.max(0, t0 + 3100 - clock.now())); // Retry-After (3 s) has passed, for relais
  const after = await undiciGet(`${relais.url}/v2/library/rl/manifests/v2`);
  assert.equal(after.status, 200);
  assert.ok(px.count('*', ANY_MANIFEST) >= 2, 'after Retry-After, relais asks again');
  const disk = await diskAfter(relais);
  recordFault({
    group: '5 429 / 5xx from upstream',
    fault: '429 with Retry-After: 3 (over retries.maxRetryAfter 2 s)',
    client: 'undici + skopeo',
    clientSaw: `cached tag 200 (stale) ${staleServed + 1} times, skopeo pulls complete; uncached tag ${uncachedStatus} with Retry-After ${String(retryAfter ?? '-')}; 200 after the back-off`,
    upstreamSaw: '1 request (the 429), then none for 3 s, then requests again',
    onDisk: disk,
  });
});

test('5 5xx: the circuit breaker stops hammering a failing upstream, stale tags keep serving, one probe after the cooldown, then recovery', async (t) => {
  const cached = await pushRandomImage(up.host, 'library/cb:v1', { layers: [1000] });
  for (let i = 0; i < 6; i++) await pushRandomImage(up.host, `library/cb:u${i}`, { layers: [1000] });
  const clock = testClock();
  const relais = await relaisFor(t, px.url, { tagTtl: '100ms' }, clock);
  const warm = await undiciGet(`${relais.url}/v2/library/cb/manifests/v1`);
  assert.equal(warm.status, 200);
  clock.advance(150); // the tag expires
  px.setRules([{ path: /^\/v2\/.+/, action: { status: 500 } }]);
  px.clear();
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) statuses.push((await undiciGet(`${relais.url}/v2/library/cb/manifests/u${i % 6}`)).status);
  assert.ok(statuses.every((s) => s === 502 || s === 503), statuses.join(','));
  const hammered = px.count('*', /.*/);
  assert.equal(hammered, 5, `circuitBreaker.failures = 5: 10 client requests, ${hammered} upstream requests`);
  const stale = await undiciGet(`${relais.url}/v2/library/cb/manifests/v1`);
  assert.equal(stale.status, 200, 'stale-if-error with the circuit open');
  assert.equal(stale.headers['docker-content-digest'], cached.manifestDigest);
  assert.equal(px.count('*', /.*/), 5);
  // After the cooldown, one probe; it fails, the circuit opens again.
  clock.advance(2100);
  const probes = await Promise.all([0, 1, 2, 3].map((i) => undiciGet(`${relais.url}/v2/library/cb/manifests/u${i}`)));
  assert.ok(probes.every((p) => p.status >= 500));
  assert.equal(px.count('*', /.*/), 6, 'half-open: exactly one probe for four concurrent requests');
  // Upstream healthy again: after the cooldown the probe succeeds and the circuit closes.
  px.setRules([]);
  clock.advance(2100);
  const ok = await undiciGet(`${relais.url}/v2/library/cb/manifests/u5`);
  assert.equal(ok.status, 200);
  const more = await Promise.all([0, 1, 2].map((i) => undiciGet(`${relais.url}/v2/library/cb/manifests/u${i}`)));
  assert.ok(more.every((m) => m.status === 200));
  const disk = await diskAfter(relais);
  recordFault({
    group: '5 429 / 5xx from upstream',
    fault: 'upstream answers 500 to everything, then recovers',
    client: 'undici',
    clientSaw: `10 uncached requests: ${statuses.join(',')}; cached expired tag 200 (stale); after recovery 200`,
    upstreamSaw: `5 requests for the 10 client requests (breaker opened at 5 failures), 1 probe after the 2 s cooldown for 4 concurrent requests, then normal traffic`,
    onDisk: disk,
  });
});

test('5 a half-open probe answered 401 settles the breaker: the next request reaches the upstream', async (t) => {
  const img = await pushRandomImage(up.host, 'library/probe:v1', { layers: [1000] });
  const clock = testClock();
  const relais = await relaisFor(t, px.url, {}, clock);
  px.setRules([{ path: /^\/v2\/.+/, action: { status: 500 } }]);
  px.clear();
  for (const ref of ['a', 'b']) assert.ok((await undiciGet(`${relais.url}/v2/library/probe/manifests/${ref}`)).status >= 502);
  assert.equal(px.count('*', /.*/), 5, 'the circuit opened');
  clock.advance(2100);
  // The probe meets a registry that refuses anonymous access (no credentials configured): a 404 to the client.
  px.setRules([{ path: /^\/v2\/.+/, times: 1, action: { status: 401 } }]);
  const probe = await undiciGet(`${relais.url}/v2/library/probe/manifests/v1`);
  assert.equal(probe.status, 404);
  assert.equal(ociErrorCode(probe.body), 'NAME_UNKNOWN');
  const next = await undiciGet(`${relais.url}/v2/library/probe/manifests/v1`);
  assert.equal(next.status, 200, `the circuit closed after the probe's answer: ${next.body.toString()}`);
  assert.equal(next.headers['docker-content-digest'], img.manifestDigest);
  assert.equal(px.count('*', /.*/), 7);
  px.setRules([]);
  const disk = await diskAfter(relais);
  recordFault({
    group: '5 429 / 5xx from upstream',
    fault: 'circuit open after 500s; the half-open probe is answered 401',
    client: 'undici',
    clientSaw: '404 NAME_UNKNOWN for the probe, then 200: the answer closed the circuit',
    upstreamSaw: '5 requests (500), the probe (401), then the next request (200)',
    onDisk: disk,
  });
});
