// The status page in a real headless Chromium (Debian's chromium, driven by playwright-core): loaded while a
// pull runs it shows the download in flight; once the pulls are done its numbers are the ones /metrics
// reports. Screenshots are kept in test-output/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { http, skopeoPull } from '../core/helpers.js';
import { parseMetrics, startUpstreamProxy, type ParsedMetrics, type UpstreamProxy } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const OUT = join(process.cwd(), 'test-output');
const FROM_CACHE = ['hit', 'revalidated', 'stale', 'join'];

let upstream: RegistryPeer;
let proxy: UpstreamProxy;
let relais: RelaisPeer;
let small: BuiltImage;
let big: BuiltImage;
let browser: BrowserContext;
let profile: string;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (run 'sudo bash scripts/setup-peers.sh')`);
  upstream = await startRegistry();
  small = await pushRandomImage(upstream.host, 'library/small:v1', { layers: [300_000, 100_000] });
  big = await pushRandomImage(upstream.host, 'library/big:v1', { layers: [16_000_000] });
  // 4 MB/s from the upstream: the big layer takes about 4 s, so the page can see it in flight.
  proxy = await startUpstreamProxy(upstream.url, { bytesPerSecond: 4_000_000 });
  relais = await startRelais({ upstreams: { 'docker.io': proxy.url }, config: { storage: { maxSize: '1GiB', pin: ['docker:*-dind'] } } });
  profile = await tempDir('chromium-profile');
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 1000 },
  });
  await mkdir(OUT, { recursive: true });
});

after(async () => {
  await browser.close();
  await relais.close();
  await proxy.close();
  await upstream.close();
  await removeDir(profile);
});

async function scrape(): Promise<ParsedMetrics> {
  return parseMetrics((await http(`${relais.url}/metrics`)).body.toString('utf8'));
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    assert.ok(Date.now() < deadline, `timed out waiting: ${what}`);
    await sleep(50);
  }
}

async function dataValue(page: Page, selector: string): Promise<number> {
  const v = await page.locator(selector).first().getAttribute('data-value');
  assert.ok(v !== null && v !== '', `${selector} has a value`);
  return Number(v);
}

test('the status page shows a pull in flight, and then the numbers /metrics reports', async () => {
  await skopeoPull(relais.host, 'library/small:v1');
  await skopeoPull(relais.host, 'library/small:v1');
  const put = await http(`${relais.url}/v2/library/small/manifests/v1`, { method: 'PUT' });
  assert.equal(put.status, 405);

  const page = await browser.newPage();
  const consoleErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  const offsite: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(relais.url)) offsite.push(r.url());
  });

  const bigPull = skopeoPull(relais.host, 'library/big:v1');
  await page.goto(`${relais.url}/?refresh=1`);
  const layer = big.layers[0];
  assert.ok(layer);
  // The download in flight, with its progress.
  const row = page.locator(`#downloads tr[data-digest="${layer.digest}"]`);
  await row.waitFor({ timeout: 15_000 });
  assert.match(await row.innerText(), /docker\.io\/library\/big@sha256:/);
  // (polled from here: the page's Content-Security-Policy forbids evaluating strings in it, rightly)
  await waitUntil(async () => Number((await row.locator('td[data-value]').first().getAttribute('data-value')) ?? '0') > 1_000_000, 15_000, 'progress shown');
  await page.screenshot({ path: join(OUT, 'status-page-during-pull.png'), fullPage: true });
  await bigPull;

  // Once every request is counted, wait for a refresh of the page after that, and compare with /metrics.
  const blobRequests = 2 * (1 + small.layers.length) + 1 + big.layers.length;
  for (let i = 0; (await scrape()).sum('relais_requests_total', { kind: 'blob' }) < blobRequests; i++) {
    assert.ok(i < 100, 'all blob requests counted');
    await sleep(50);
  }
  const settled = Date.now();
  await waitUntil(async () => Number((await page.locator('body').getAttribute('data-updated')) ?? '0') > settled, 10_000, 'the page refreshed');
  assert.equal(await page.locator('#downloads tr[data-digest]').count(), 0, 'nothing in flight any more');

  const up = 'tr[data-upstream="docker.io"]';
  const shown = {
    hits: await dataValue(page, `${up} td.hits`),
    misses: await dataValue(page, `${up} td.misses`),
    errors: await dataValue(page, `${up} td.errors`),
    served: await dataValue(page, `${up} td.served`),
    saved: await dataValue(page, `${up} td.saved`),
    fetched: await dataValue(page, `${up} td.fetched`),
    requests: await dataValue(page, '#requests'),
    size: await dataValue(page, '#size'),
    blobs: await dataValue(page, '#items'),
    hitRatio: await dataValue(page, '#hit-ratio'),
  };
  const m = await scrape();
  const hits = m.sum('relais_requests_total', { upstream: 'docker.io', result: FROM_CACHE });
  const misses = m.sum('relais_requests_total', { upstream: 'docker.io', result: 'miss' });
  assert.deepEqual(shown, {
    hits,
    misses,
    errors: m.sum('relais_requests_total', { upstream: 'docker.io', result: 'error' }),
    served: m.sum('relais_served_bytes_total', { upstream: 'docker.io' }),
    saved: m.sum('relais_served_bytes_total', { upstream: 'docker.io', result: FROM_CACHE }),
    fetched: m.sum('relais_upstream_fetched_bytes_total', { upstream: 'docker.io' }),
    requests: m.sum('relais_requests_total'),
    size: m.sum('relais_cache_size_bytes'),
    blobs: m.sum('relais_cache_items', { kind: 'blob' }),
    hitRatio: hits / (hits + misses),
  });
  // And the numbers are the real ones: what the upstream sent, what the second pull of small reused.
  assert.equal(shown.fetched, small.totalBytes + big.totalBytes);
  assert.equal(
    shown.saved,
    small.totalBytes + small.manifest.byteLength,
    `bytes of the second pull of small: ${JSON.stringify(relais.logs().filter((l) => l.msg === 'request').map((l) => [l.method, String(l.path).slice(-12), l.cache, l.bytes, l.status, l.aborted]))}`,
  );
  assert.equal(shown.blobs, 1 + small.layers.length + 1 + big.layers.length);
  assert.match(await page.locator('#hit-ratio').innerText(), /^\d+\.\d%$/);
  assert.match((await page.locator('#size-label').textContent()) ?? '', /of 1\.0 GiB/);
  assert.match(await page.locator('#budget').innerText(), /pinned: docker:\*-dind/);
  assert.match(await page.locator(`${up} .pill`).innerText(), /healthy/);
  const top = await page.locator('#top tr').allInnerTexts();
  assert.match(top[0] ?? '', /docker\.io\/library\/small:v1\s+2/, 'the most pulled image first, pulled twice');
  assert.match(await page.locator('#errors').innerText(), /PUT \/v2\/library\/small\/manifests\/v1\s+405 UNSUPPORTED/);
  await page.screenshot({ path: join(OUT, 'status-page.png'), fullPage: true });
  assert.deepEqual(consoleErrors, [], 'no script errors');
  assert.deepEqual(offsite, [], 'the page loads nothing from anywhere else');
  await page.close();
});
