// /metrics as Prometheus scrapes it: names follow the conventions, and the numbers agree with what a real
// client (skopeo) did and what the real upstream (distribution, behind a proxy that adds Docker Hub's
// rate-limit headers) saw.
import { test, before, after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { http, skopeoPull } from '../core/helpers.js';
import { parseMetrics, startUpstreamProxy, type ParsedMetrics, type UpstreamProxy } from './helpers.js';

let upstream: RegistryPeer;
let proxy: UpstreamProxy;
let relais: RelaisPeer;
let image: BuiltImage;
let remaining = 100;

before(async () => {
  upstream = await startRegistry();
  image = await pushRandomImage(upstream.host, 'library/metered:v1', { layers: [900_000, 400_000, 100_000] });
  // Docker Hub sends these on manifest requests; every answer here counts one pull down.
  proxy = await startUpstreamProxy(upstream.url, { extraHeaders: () => ({ 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': `${--remaining};w=21600` }) });
  relais = await startRelais({ upstreams: { 'docker.io': proxy.url } });
});

after(async () => {
  await relais.close();
  await proxy.close();
  await upstream.close();
});

/**
 * Scrapes until `ready` holds (a request is counted when its response has closed on relais's side, which
 * can be a moment after the client has its last byte), at most 5 s; returns the last scrape.
 */
async function scrapeWhen(ready: (m: ParsedMetrics) => boolean): Promise<ParsedMetrics> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const m = await scrape();
    if (ready(m) || Date.now() > deadline) return m;
    await sleep(50);
  }
}

async function scrape(): Promise<ParsedMetrics> {
  const r = await http(`${relais.url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return parseMetrics(r.body.toString('utf8'));
}

const blobCount = (img: BuiltImage): number => 1 + img.layers.length;

test('a cold then a warm pull: misses, hits, bytes and upstream traffic agree with the upstream access log', async () => {
  upstream.clearLog();
  await skopeoPull(relais.host, 'library/metered:v1');
  await upstream.settle();
  const upstreamBlobGets = upstream.blobGets();
  let m = await scrapeWhen((x) => x.sum('relais_requests_total', { kind: 'blob' }) >= upstreamBlobGets);
  assert.equal(upstreamBlobGets, blobCount(image), 'the upstream served every blob once');
  assert.equal(m.sum('relais_requests_total', { upstream: 'docker.io', kind: 'blob', result: 'miss' }), upstreamBlobGets, `one blob miss per upstream blob GET: ${JSON.stringify(m.samples.filter((s) => s.name === 'relais_requests_total'))}`);
  assert.equal(m.sum('relais_requests_total', { kind: 'blob', result: 'hit' }), 0);
  assert.equal(m.sum('relais_upstream_fetched_bytes_total', { upstream: 'docker.io' }), image.totalBytes, 'blob bytes received from the upstream');
  assert.equal(m.sum('relais_served_bytes_total', { upstream: 'docker.io', result: 'miss' }) >= image.totalBytes, true);
  assert.equal(m.sum('relais_downloads_total', { upstream: 'docker.io', outcome: 'committed' }), blobCount(image));
  assert.equal(m.sum('relais_downloads_in_flight'), 0);
  // Every exchange with the upstream is counted and timed: the proxy saw exactly these.
  assert.equal(m.sum('relais_upstream_requests_total'), proxy.seen.length);
  assert.equal(m.sum('relais_upstream_request_duration_seconds_count'), proxy.seen.length);
  assert.equal(m.sum('relais_upstream_ratelimit_remaining', { upstream: 'docker.io', credential: 'anonymous' }), remaining, 'the last ratelimit-remaining the upstream sent');
  assert.equal(m.sum('relais_upstream_ratelimit_limit', { upstream: 'docker.io', credential: 'anonymous' }), 100);
  const cacheBytes = m.sum('relais_cache_size_bytes');
  assert.ok(cacheBytes >= image.totalBytes && cacheBytes <= image.totalBytes + 10_000, `cache size ${cacheBytes}`);
  assert.equal(m.sum('relais_cache_items', { kind: 'blob' }), blobCount(image));
  assert.equal(m.sum('relais_cache_items', { kind: 'tag' }), 1);

  const seenBefore = proxy.seen.length;
  upstream.clearLog();
  await skopeoPull(relais.host, 'library/metered:v1');
  await upstream.settle();
  m = await scrapeWhen((x) => x.sum('relais_requests_total', { kind: 'blob', result: 'hit' }) >= blobCount(image));
  assert.equal(upstream.blobGets(), 0);
  assert.equal(proxy.seen.length, seenBefore, 'a warm pull within the tag TTL does not reach the upstream');
  assert.equal(m.sum('relais_requests_total', { kind: 'blob', result: 'hit' }), blobCount(image));
  assert.equal(m.sum('relais_served_bytes_total', { upstream: 'docker.io', result: 'hit' }), image.totalBytes + image.manifest.byteLength, 'blobs and the manifest served from the cache');
  assert.equal(m.sum('relais_upstream_fetched_bytes_total'), image.totalBytes, 'nothing more fetched');
});

test('errors are counted by result; a request for an unknown manifest is an error result', async () => {
  const before = (await scrape()).sum('relais_requests_total', { kind: 'manifest', result: 'error' });
  const r = await http(`${relais.url}/v2/library/nope/manifests/v1`);
  assert.equal(r.status, 404);
  const after = (await scrape()).sum('relais_requests_total', { kind: 'manifest', result: 'error' });
  assert.equal(after - before, 1);
});

test('metric names follow Prometheus conventions', async () => {
  const m = await scrape();
  const names = [...m.types.keys()];
  const expected = [
    'relais_requests_total',
    'relais_request_duration_seconds',
    'relais_served_bytes_total',
    'relais_upstream_fetched_bytes_total',
    'relais_downloads_in_flight',
    'relais_downloads_total',
    'relais_cache_size_bytes',
    'relais_cache_items',
    'relais_evictions_total',
    'relais_evicted_bytes_total',
    'relais_upstream_errors_total',
    'relais_upstream_requests_total',
    'relais_upstream_request_duration_seconds',
    'relais_upstream_ratelimit_remaining',
    'relais_gc_runs_total',
  ];
  for (const e of expected) assert.ok(m.types.has(e), `${e} is exported`);
  for (const name of names) {
    const type = m.types.get(name);
    assert.match(name, /^relais_[a-z][a-z0-9_]*$/, `${name}: relais_ prefix, snake_case`);
    assert.ok(m.help.get(name)?.length, `${name} has HELP`);
    if (type === 'counter') assert.match(name, /_total$/, `counter ${name} ends in _total`);
    else assert.doesNotMatch(name, /_total$/, `${type ?? '?'} ${name} does not end in _total`);
    if (type === 'histogram') assert.match(name, /_(seconds|bytes)$/, `histogram ${name} has a base unit`);
    assert.doesNotMatch(name, /(milli|micro|_ms$|_ms_|_kb|_mb|_kib|_mib|minutes|hours)/, `${name} uses base units`);
    if (name.includes('bytes')) assert.match(name, /_bytes(_total)?$/, `${name}: bytes are the unit suffix`);
    if (name.includes('seconds')) assert.match(name, /_seconds(_total)?$/, `${name}: seconds are the unit suffix`);
  }
  for (const s of m.samples) {
    const base = s.name.replace(/_(bucket|sum|count)$/, '');
    assert.ok(m.types.has(s.name) || m.types.has(base), `sample ${s.name} belongs to a declared metric`);
    for (const k of Object.keys(s.labels)) assert.match(k, /^[a-z_][a-z0-9_]*$/, `label ${k} of ${s.name}`);
  }
});
