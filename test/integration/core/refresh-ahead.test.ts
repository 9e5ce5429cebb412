// Refresh-ahead of hot tags against a real distribution upstream and a real client (skopeo): a tag pulled
// often is revalidated before its TTL ends; when it moved upstream, the new manifest and blobs are fetched
// in the background, so the next pull of the tag gets the new digest with no upstream request at all.
// A tag pulled once is left alone. Time is awaited through relais's metrics and answers, never slept.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pushIndex, pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { ACCEPT_ALL, http, skopeoPull } from './helpers.js';
import { metricValue, waitFor } from './refresh-helpers.js';

let upstream: RegistryPeer;
let relais: RelaisPeer;

const TAG_TTL = 3_000;

before(async () => {
  upstream = await startRegistry();
  relais = await startRelais({
    upstreams: { 'docker.io': upstream.url },
    config: {
      upstreams: { 'docker.io': { tagTtl: `${TAG_TTL}ms` } },
      refreshAhead: { enabled: true, minPulls: 3, window: '1m', lead: '1500ms', checkEvery: '100ms' },
    },
  });
});

after(async () => {
  await relais.close();
  await upstream.close();
});

const blobs = (img: BuiltImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];
const refreshes = (result: string): Promise<number> => metricValue(relais.url, 'relais_refresh_ahead_total', { upstream: 'docker.io', result });
/** Manifest requests relais sent (skopeo's pushes to the upstream are not counted). */
const manifestRequests = (repo: string): number => upstream.accessLog().filter((e) => e.userAgent === 'relais' && e.path.startsWith(`/v2/library/${repo}/manifests/`)).length;

test('a hot tag re-pushed upstream: the next pull gets the new digest warm (zero upstream requests); a cold tag is not refreshed', async () => {
  const v1 = await pushRandomImage(upstream.host, 'library/hot:v1', { layers: [1_500_000, 400_000] });
  const cold1 = await pushRandomImage(upstream.host, 'library/cold:v1', { layers: [300_000] });
  upstream.clearLog();
  // Three pulls make the tag hot (minPulls: 3): a full pull by skopeo, then two manifest lookups.
  const first = await skopeoPull(relais.host, 'library/hot:v1');
  for (const d of blobs(v1)) assert.ok(first.files.has(d));
  for (let i = 0; i < 2; i++) assert.equal((await http(`${relais.url}/v2/library/hot/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } })).status, 200);
  // One pull: not hot.
  await skopeoPull(relais.host, 'library/cold:v1');
  await upstream.settle();
  const coldBefore = manifestRequests('cold');
  assert.equal(coldBefore, 1, 'the cold pull: one manifest GET by relais');

  // Before the TTL ends, the hot tag is revalidated with a HEAD (nothing moved yet).
  await waitFor(async () => (await refreshes('unchanged')) >= 1, 15_000, 'a first refresh-ahead (unchanged)');
  assert.ok(upstream.count('HEAD', /^\/v2\/library\/hot\/manifests\/v1$/) >= 1, 'refresh-ahead asked the upstream with a HEAD');
  assert.equal(upstream.count('GET', /^\/v2\/library\/hot\/manifests\//), 1, 'no GET for an unchanged tag (the one GET is the first pull)');

  // Re-push both tags upstream with new layers.
  const v2 = await pushRandomImage(upstream.host, 'library/hot:v1', { layers: [1_200_000, 600_000] });
  const cold2 = await pushRandomImage(upstream.host, 'library/cold:v1', { layers: [250_000] });
  assert.notEqual(v2.manifestDigest, v1.manifestDigest);

  await waitFor(async () => (await refreshes('moved')) >= 1, 15_000, 'refresh-ahead of the moved tag');
  await upstream.settle();
  for (const d of blobs(v2)) assert.equal(upstream.blobGets(d), 1, `refresh-ahead fetched ${d} once, before any client asked`);
  assert.ok((await metricValue(relais.url, 'relais_refresh_ahead_bytes_total', { upstream: 'docker.io' })) >= v2.layers.reduce((n, l) => n + l.size, 0));
  const moved = relais.logs().find((l) => l.event === 'refresh-ahead' && l.result === 'moved');
  assert.equal(moved?.to, v2.manifestDigest, 'the log line names the new digest');

  // Clients see the new digest once the old one's freshness ends (awaited through relais's answers).
  await waitFor(async () => (await http(`${relais.url}/v2/library/hot/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } })).headers['docker-content-digest'] === v2.manifestDigest, 15_000, 'relais answering the new digest');

  // The pull itself: new digest, and nothing asked of the upstream while it ran.
  await upstream.settle();
  const coldDuringRefresh = manifestRequests('cold');
  upstream.clearLog();
  const pull = await skopeoPull(relais.host, 'library/hot:v1');
  for (const d of blobs(v2)) assert.ok(pull.files.has(d), `the pull got the new ${d}`);
  for (const d of v1.layers.map((l) => l.digest)) assert.ok(!pull.files.has(d), 'and none of the old layers');
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'zero synchronous upstream blob GETs during the pull');
  assert.equal(upstream.manifestGets() + upstream.manifestHeads(), 0, 'and no manifest request either');

  // The cold tag: never asked about in the background; its next pull fetches it then, as without refresh-ahead.
  assert.equal(coldDuringRefresh, coldBefore, 'no upstream request for the cold tag in the background');
  const coldPull = await skopeoPull(relais.host, 'library/cold:v1');
  for (const d of blobs(cold2)) assert.ok(coldPull.files.has(d));
  await upstream.settle();
  for (const d of cold2.layers.map((l) => l.digest)) assert.equal(upstream.blobGets(d), 1, 'the cold tag: its new layer fetched during its pull');
  assert.ok(cold1.manifestDigest !== cold2.manifestDigest);
});

test('a multi-platform tag: only the platforms clients pulled are warmed', async () => {
  const spec = (n: number) => [
    { os: 'linux', architecture: 'amd64', layers: [200_000 + n] },
    { os: 'linux', architecture: 'arm64', layers: [210_000 + n] },
  ];
  await pushIndex(upstream.host, 'library/multi:v1', spec(0));
  for (let i = 0; i < 3; i++) await skopeoPull(relais.host, 'library/multi:v1', ['--override-arch', 'arm64']);
  const movedBefore = await refreshes('moved');
  const next = await pushIndex(upstream.host, 'library/multi:v1', spec(1));
  await waitFor(async () => (await refreshes('moved')) > movedBefore, 15_000, 'refresh-ahead of the moved index');
  await upstream.settle();
  const arm = next.children.find((c) => c.platform.architecture === 'arm64');
  const amd = next.children.find((c) => c.platform.architecture === 'amd64');
  assert.ok(arm && amd);
  for (const d of blobs(arm)) assert.equal(upstream.blobGets(d), 1, `arm64 (pulled by clients): ${d} warmed`);
  for (const d of blobs(amd)) assert.equal(upstream.blobGets(d), 0, `amd64 (never pulled): ${d} left alone`);
  assert.equal(upstream.count('GET', new RegExp(`/manifests/${amd.manifestDigest}$`)), 0, 'nor its manifest');
});

test('bounds: a refresh that would need eviction, or go over maxBytesPerHour, is skipped whole', async () => {
  for (const c of [
    { result: 'skipped_space', config: { storage: { maxSize: '2500KB' } } },
    { result: 'skipped_bytes', config: { refreshAhead: { maxBytesPerHour: '500KB' } } },
  ]) {
    const repo = `library/bound-${c.result}`;
    await pushRandomImage(upstream.host, `${repo}:v1`, { layers: [1_000_000] });
    const bounded = await startRelais({
      upstreams: { 'docker.io': upstream.url },
      config: {
        ...c.config,
        upstreams: { 'docker.io': { tagTtl: `${TAG_TTL}ms` } },
        refreshAhead: { enabled: true, minPulls: 3, window: '1m', lead: '1500ms', checkEvery: '100ms', ...(c.config.refreshAhead ?? {}) },
      },
    });
    try {
      await skopeoPull(bounded.host, `${repo}:v1`);
      for (let i = 0; i < 2; i++) await http(`${bounded.url}/v2/${repo}/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
      const v2 = await pushRandomImage(upstream.host, `${repo}:v1`, { layers: [2_000_000] });
      await waitFor(async () => (await metricValue(bounded.url, 'relais_refresh_ahead_total', { upstream: 'docker.io', result: c.result })) >= 1, 15_000, c.result);
      await upstream.settle();
      for (const d of v2.layers.map((l) => l.digest)) assert.equal(upstream.blobGets(d), 0, `${c.result}: the new layer is not fetched in the background`);
      assert.equal(await metricValue(bounded.url, 'relais_evictions_total', { reason: 'size' }), 0, `${c.result}: nothing evicted`);
      assert.equal(await metricValue(bounded.url, 'relais_refresh_ahead_total', { upstream: 'docker.io', result: 'moved' }), 0);
      // The tag was left as it was: the pull after its TTL fetches the new digest, as without refresh-ahead.
      await waitFor(async () => (await http(`${bounded.url}/v2/${repo}/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } })).headers['docker-content-digest'] === v2.manifestDigest, 15_000, 'the new digest after the TTL');
    } finally {
      await bounded.close();
    }
  }
});
