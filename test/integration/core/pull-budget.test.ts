// The pull budget against real programs: nginx in front of a distribution upstream adds Docker Hub's
// rate-limit headers (ratelimit-limit / ratelimit-remaining), low then high, switched by reloading nginx.
// Under the reserve: no refresh-ahead GET (its HEAD, free, still goes), no revalidation GET (a moved tag is
// served stale), no scheduled prefetch; cached tags still pull, misses still fetch. Back above: all resume.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { freePort } from '../../peers/ports.js';
import { removeDir, runOk, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { ACCEPT_ALL, http, skopeoPull } from './helpers.js';
import { metricValue, waitFor } from './refresh-helpers.js';

let upstream: RegistryPeer;
let relais: RelaisPeer;
let nginx: ManagedProcess;
let ngDir: string;
let ngUrl: string;

const LIMIT = '100;w=21600';

/** Makes nginx answer `ratelimit-remaining: REMAINING;w=21600` from now on (config reload, awaited). */
async function setRemaining(remaining: number): Promise<void> {
  await writeFile(join(ngDir, 'ratelimit.conf'), `map $uri $rl_remaining { default "${remaining};w=21600"; }\n`);
  await runOk('nginx', ['-p', ngDir, '-c', join(ngDir, 'nginx.conf'), '-s', 'reload']);
  await waitFor(async () => (await http(`${ngUrl}/v2/`)).headers['ratelimit-remaining'] === `${remaining};w=21600`, 10_000, `nginx answering remaining=${remaining}`);
}

before(async () => {
  upstream = await startRegistry();
  ngDir = await tempDir('nginx-ratelimit');
  await mkdir(join(ngDir, 'logs'), { recursive: true });
  const port = await freePort();
  ngUrl = `http://127.0.0.1:${port}`;
  await writeFile(join(ngDir, 'ratelimit.conf'), 'map $uri $rl_remaining { default "80;w=21600"; }\n');
  await writeFile(
    join(ngDir, 'nginx.conf'),
    `worker_processes 1;
error_log ${ngDir}/logs/error.log warn;
pid ${ngDir}/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${ngDir}/body; proxy_temp_path ${ngDir}/proxy; fastcgi_temp_path ${ngDir}/fcgi;
  uwsgi_temp_path ${ngDir}/uwsgi; scgi_temp_path ${ngDir}/scgi;
  include ${ngDir}/ratelimit.conf;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass ${upstream.url};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      add_header ratelimit-limit "${LIMIT}" always;
      add_header ratelimit-remaining $rl_remaining always;
    }
  }
}
`,
  );
  nginx = await startProcess('nginx', ['-p', ngDir, '-c', join(ngDir, 'nginx.conf'), '-g', 'daemon off;'], { name: 'nginx-ratelimit' });
  await waitForHttp(`${ngUrl}/v2/`, 10_000, { accept: (s) => s === 200, process: nginx });
  relais = await startRelais({
    upstreams: { 'docker.io': ngUrl },
    config: {
      upstreams: { 'docker.io': { tagTtl: '3s', pullReserve: 20 } },
      refreshAhead: { enabled: true, minPulls: 2, window: '1m', lead: '1500ms', checkEvery: '100ms' },
    },
  });
});

after(async () => {
  await relais.close();
  await nginx.stop();
  await upstream.close();
  await removeDir(ngDir);
});

const blobs = (img: BuiltImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];
const refreshes = (result: string): Promise<number> => metricValue(relais.url, 'relais_refresh_ahead_total', { upstream: 'docker.io', result });
/** Requests relais sent upstream (skopeo's pushes straight to distribution are not counted). */
const fromRelais = (method: string, re: RegExp): number => upstream.accessLog().filter((e) => e.userAgent === 'relais' && e.method === method && re.test(e.path)).length;
const digestOf = async (): Promise<string | undefined> => {
  const r = await http(`${relais.url}/v2/library/app/manifests/v1`, { headers: { accept: ACCEPT_ALL } });
  assert.equal(r.status, 200);
  const d = r.headers['docker-content-digest'];
  return typeof d === 'string' ? d : undefined;
};
/** The status page's pull-budget cell for docker.io, as a real headless Chromium renders it. */
async function budgetCell(): Promise<string> {
  const CHROMIUM = '/usr/bin/chromium';
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (run 'sudo bash scripts/setup-peers.sh')`);
  const profile = await tempDir('chromium-profile');
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`${relais.url}/?refresh=0`);
    const cell = page.locator('tr[data-upstream="docker.io"] td.pullbudget');
    await cell.waitFor({ timeout: 15_000 });
    return await cell.innerText();
  } finally {
    await browser.close();
    await removeDir(profile);
  }
}

type BudgetJson = { remaining: number; reserve: number; underReserve: boolean; pullsPerHour: number | null; exhaustsAt: number | null };
const status = async (): Promise<{ upstreams: { name: string; budget: BudgetJson | null }[] }> =>
  JSON.parse((await http(`${relais.url}/_relais/status`)).body.toString('utf8')) as { upstreams: { name: string; budget: BudgetJson | null }[] };

test('under the reserve: no refresh-ahead GET, no revalidation GET, cached tags and misses still pull; above it, both resume', async () => {
  const v1 = await pushRandomImage(upstream.host, 'library/app:v1', { layers: [500_000] });
  // Hot (minPulls: 2), with the budget high.
  await skopeoPull(relais.host, 'library/app:v1');
  assert.equal(await digestOf(), v1.manifestDigest);
  await waitFor(async () => (await refreshes('unchanged')) >= 1, 15_000, 'refresh-ahead running while the budget is high');
  const high = (await status()).upstreams.find((u) => u.name === 'docker.io')?.budget;
  assert.deepEqual(high && { remaining: high.remaining, reserve: high.reserve, underReserve: high.underReserve }, { remaining: 80, reserve: 20, underReserve: false });

  // Low: 5 pulls left, under the reserve of 20. relais learns it from its next upstream answer: a real miss, which still fetches.
  await setRemaining(5);
  const miss = await pushRandomImage(upstream.host, 'library/other:v1', { layers: [300_000] });
  const v2 = await pushRandomImage(upstream.host, 'library/app:v1', { layers: [400_000] });
  upstream.clearLog();
  const missPull = await skopeoPull(relais.host, 'library/other:v1');
  for (const d of blobs(miss)) assert.ok(missPull.files.has(d));
  await upstream.settle();
  for (const d of blobs(miss)) assert.equal(upstream.blobGets(d), 1, 'a miss under the reserve still fetches');
  await waitFor(async () => (await metricValue(relais.url, 'relais_upstream_pull_budget_under_reserve', { upstream: 'docker.io', credential: 'anonymous' })) === 1, 10_000, 'the under-reserve gauge');
  const low = (await status()).upstreams.find((u) => u.name === 'docker.io')?.budget;
  assert.equal(low?.underReserve, true, 'the status JSON says so');
  assert.ok(low.pullsPerHour !== null && low.pullsPerHour > 0, 'with the rate (80 -> 5 left)');
  assert.ok(low.exhaustsAt !== null && low.exhaustsAt > Date.now(), 'and when the budget runs out at that rate');
  assert.match(await budgetCell(), /UNDER RESERVE \(20\).*pulls\/h.*runs out in/, 'the status page shows it');

  // The hot tag comes due: refresh-ahead's HEAD (free) finds it moved, and no GET follows.
  await waitFor(async () => (await refreshes('held_budget')) >= 1, 15_000, 'refresh-ahead held back by the budget');
  // Its TTL ends: a client's pull revalidates with a HEAD (free), sees the tag moved, and is served the cached digest.
  const heldRevalidations = (): Promise<number> => metricValue(relais.url, 'relais_pull_budget_held_back_total', { upstream: 'docker.io', what: 'revalidation' });
  await waitFor(async () => {
    assert.equal(await digestOf(), v1.manifestDigest, 'under the reserve, the moved tag is served as cached (fresh, then stale)');
    return (await heldRevalidations()) >= 1;
  }, 15_000, 'a revalidation of the expired tag held back by the budget');
  await upstream.settle();
  assert.ok(fromRelais('HEAD', /^\/v2\/library\/app\/manifests\/v1$/) >= 2, 'HEADs (free) from refresh-ahead and from the revalidation');
  const cached = await skopeoPull(relais.host, 'library/app:v1');
  for (const d of blobs(v1)) assert.ok(cached.files.has(d), 'the cached tag still pulls, whole');
  await upstream.settle();
  assert.equal(fromRelais('GET', /^\/v2\/library\/app\/manifests\//), 0, 'no manifest GET for the hot tag under the reserve');
  for (const d of blobs(v2)) assert.equal(upstream.blobGets(d), 0, 'nor any blob of the new digest');
  assert.ok((await metricValue(relais.url, 'relais_pull_budget_held_back_total', { upstream: 'docker.io', what: 'refresh' })) >= 1);

  // High again: the next revalidation learns it (its HEAD carries the header) and fetches the new digest.
  await setRemaining(90);
  await waitFor(async () => (await digestOf()) === v2.manifestDigest, 15_000, 'the new digest once above the reserve');
  // An answer nginx's old worker sent (a request in flight at the reload) may still say 5: the state follows the
  // upstream's latest answer, so it is awaited, not read once.
  await waitFor(async () => (await status()).upstreams.find((u) => u.name === 'docker.io')?.budget?.underReserve === false, 10_000, 'the status JSON back above the reserve');
  // And refresh-ahead resumes: a new re-push is fetched in the background before any client asks. A refresh of
  // v1 -> v2 may still be finishing when the counter is read, so what is awaited is v3's own blobs, fetched with
  // no client asking (no client request follows the push), and one more 'moved' refresh than before the push.
  const movedBefore = await refreshes('moved');
  const v3 = await pushRandomImage(upstream.host, 'library/app:v1', { layers: [450_000] });
  await waitFor(async () => blobs(v3).every((d) => upstream.blobGets(d) >= 1) && (await refreshes('moved')) > movedBefore, 15_000, 'refresh-ahead fetching the re-pushed tag');
  await upstream.settle();
  for (const d of blobs(v3)) assert.equal(upstream.blobGets(d), 1, `refresh-ahead fetched ${d} above the reserve`);
});

test('a scheduled prefetch is skipped under the reserve, and runs again above it', async () => {
  await setRemaining(5);
  const pf1 = await pushRandomImage(upstream.host, 'library/pf:v1', { layers: [200_000] });
  const other = await startRelais({
    upstreams: { 'docker.io': ngUrl },
    config: {
      upstreams: { 'docker.io': { tagTtl: '1s', pullReserve: 20 } },
      prefetch: { images: ['library/pf:v1'], every: '300ms' },
    },
  });
  try {
    const held = (): Promise<number> => metricValue(other.url, 'relais_pull_budget_held_back_total', { upstream: 'docker.io', what: 'prefetch' });
    // The first run knows no budget yet: it prefetches (a miss), and its answers put relais under the reserve.
    await waitFor(() => pf1.layers.every((l) => upstream.blobGets(l.digest) >= 1), 15_000, 'the first prefetch run');
    await waitFor(async () => (await held()) >= 2, 15_000, 'scheduled runs skipped under the reserve');
    assert.ok(other.logs().some((l) => l.event === 'prefetch' && typeof l.skipped === 'string' && l.skipped.includes('pull reserve')), 'the skip is logged');
    const pf2 = await pushRandomImage(upstream.host, 'library/pf:v1', { layers: [210_000] });
    const heldThen = await held();
    await waitFor(async () => (await held()) > heldThen, 15_000, 'another skipped run after the re-push');
    await upstream.settle();
    assert.equal(upstream.blobGets(pf2.layers[0]?.digest), 0, 'nothing of the re-pushed image fetched while under the reserve');

    // Above the reserve again: relais learns it from its next upstream answer (here a client's miss) and the schedule resumes.
    await setRemaining(90);
    const miss = await pushRandomImage(upstream.host, 'library/pfmiss:v1', { layers: [100_000] });
    await skopeoPull(other.host, 'library/pfmiss:v1');
    assert.equal(upstream.blobGets(miss.layers[0]?.digest), 1);
    await waitFor(() => upstream.blobGets(pf2.layers[0]?.digest) >= 1, 15_000, 'the re-pushed image fetched by a scheduled prefetch run');
  } finally {
    await other.close();
  }
});
