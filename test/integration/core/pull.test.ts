// relais serve against a real CNCF distribution upstream and a real client (skopeo):
// what the client sees, and what the upstream saw (its access log).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { pushIndex, pushRandomImage, type BuiltImage, type BuiltIndex } from '../../peers/images.js';
import { testClock } from '../../peers/clock.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { ACCEPT_ALL, errorCode, http, sha256, skopeoPull } from './helpers.js';

let upstream: RegistryPeer;
let relais: RelaisPeer;
let image: BuiltImage;
let index: BuiltIndex;

before(async () => {
  upstream = await startRegistry();
  image = await pushRandomImage(upstream.host, 'library/multi:v1', { layers: [3_000_000, 1_500_000, 700_000, 200_000] });
  index = await pushIndex(upstream.host, 'library/multiarch:v1', [
    { os: 'linux', architecture: 'amd64', layers: [300_000] },
    { os: 'linux', architecture: 'arm64', layers: [310_000] },
  ], { format: 'docker' });
  relais = await startRelais({ upstreams: { 'docker.io': upstream.url } });
});

after(async () => {
  await relais.close();
  await upstream.close();
});

const blobDigests = (img: BuiltImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];

test('8 concurrent cold pulls: every blob fetched from the upstream exactly once; a second pull fetches nothing', async () => {
  upstream.clearLog();
  const pulls = await Promise.all(Array.from({ length: 8 }, () => skopeoPull(relais.host, 'library/multi:v1')));
  for (const p of pulls) {
    for (const d of blobDigests(image)) assert.ok(p.files.has(d), `client got ${d}`);
  }
  await upstream.settle();
  for (const d of blobDigests(image)) assert.equal(upstream.blobGets(d), 1, `upstream GETs of ${d}`);
  assert.equal(upstream.manifestGets(), 1, 'one manifest GET upstream for 8 concurrent tag lookups');

  upstream.clearLog();
  const again = await skopeoPull(relais.host, 'library/multi:v1');
  assert.equal(again.files.size, blobDigests(image).length);
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'warm pull: no blob GET upstream');
  assert.equal(upstream.manifestGets() + upstream.manifestHeads(), 0, 'within the tag TTL: no manifest request upstream');
});

test('short names get Docker Hub\'s library/ rule on the default upstream; manifests are served byte for byte', async () => {
  for (const name of ['multi', 'library/multi', 'docker.io/library/multi']) {
    const r = await http(`${relais.url}/v2/${name}/manifests/v1`, { headers: { accept: ACCEPT_ALL } });
    assert.equal(r.status, 200, name);
    assert.deepEqual(r.body, image.manifest);
    assert.equal(r.headers['docker-content-digest'], image.manifestDigest);
    assert.equal(r.headers['content-type'], image.manifestMediaType);
  }
  const byDigest = await http(`${relais.url}/v2/library/multi/manifests/${image.manifestDigest}`);
  assert.equal(byDigest.status, 200);
  assert.equal(sha256(byDigest.body), image.manifestDigest);
  const head = await http(`${relais.url}/v2/library/multi/manifests/v1`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], String(image.manifest.byteLength));
  assert.equal(head.body.byteLength, 0);
});

test('multi-arch: a Docker manifest list and its children, unconverted', async () => {
  const list = await http(`${relais.url}/v2/library/multiarch/manifests/v1`, { headers: { accept: ACCEPT_ALL } });
  assert.equal(list.status, 200);
  assert.equal(list.headers['content-type'], 'application/vnd.docker.distribution.manifest.list.v2+json');
  assert.deepEqual(list.body, index.index);
  for (const child of index.children) {
    const m = await http(`${relais.url}/v2/library/multiarch/manifests/${child.manifestDigest}`);
    assert.equal(m.status, 200);
    assert.deepEqual(m.body, child.manifest);
    assert.equal(m.headers['content-type'], 'application/vnd.docker.distribution.manifest.v2+json');
  }
  // skopeo picks the host platform from the list and pulls it
  const p = await skopeoPull(relais.host, 'library/multiarch:v1', ['--override-arch', 'arm64']);
  const arm = index.children.find((c) => c.platform.architecture === 'arm64');
  assert.ok(arm);
  assert.ok(p.files.has(arm.layers[0]?.digest ?? ''), 'the arm64 layer');
});

test('blobs: Range answers 206 with the right bytes; HEAD answers the size without fetching', async () => {
  const layer = image.layers[0];
  assert.ok(layer);
  const full = await http(`${relais.url}/v2/library/multi/blobs/${layer.digest}`);
  assert.equal(full.status, 200);
  assert.equal(sha256(full.body), layer.digest);
  const part = await http(`${relais.url}/v2/library/multi/blobs/${layer.digest}`, { headers: { range: 'bytes=100-199' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers['content-range'], `bytes 100-199/${layer.size}`);
  assert.deepEqual(part.body, full.body.subarray(100, 200));
  const bad = await http(`${relais.url}/v2/library/multi/blobs/${layer.digest}`, { headers: { range: `bytes=${layer.size}-` } });
  assert.equal(bad.status, 416);
  assert.equal(errorCode(bad), 'RANGE_INVALID');

  const fresh = await pushRandomImage(upstream.host, 'library/headonly:v1', { layers: [50_000] });
  upstream.clearLog();
  const head = await http(`${relais.url}/v2/library/headonly/blobs/${fresh.layers[0]?.digest ?? ''}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], String(fresh.layers[0]?.size));
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'HEAD of an uncached blob does not download it');
});

test('a Range request on a cold blob is served from the download in flight, once', async () => {
  const img = await pushRandomImage(upstream.host, 'library/rangecold:v1', { layers: [2_000_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  await http(`${relais.url}/v2/library/rangecold/manifests/v1`);
  upstream.clearLog();
  const [a, b] = await Promise.all([
    http(`${relais.url}/v2/library/rangecold/blobs/${layer.digest}`, { headers: { range: 'bytes=1000000-1000009' } }),
    http(`${relais.url}/v2/library/rangecold/blobs/${layer.digest}`),
  ]);
  assert.equal(a.status, 206);
  assert.deepEqual(a.body, b.body.subarray(1_000_000, 1_000_010));
  await upstream.settle();
  assert.equal(upstream.blobGets(layer.digest), 1);
});

test('the download belongs to no client: the first client disconnecting does not stop the others or the cache', async () => {
  const img = await pushRandomImage(upstream.host, 'library/abandon:v1', { layers: [8_000_000] });
  const layer = img.layers[0];
  assert.ok(layer);
  await http(`${relais.url}/v2/library/abandon/manifests/v1`);
  upstream.clearLog();
  const url = `${relais.url}/v2/library/abandon/blobs/${layer.digest}`;
  const ac = new AbortController();
  const first = await request(url, { signal: ac.signal });
  const second = http(url);
  // read a little, then walk away
  for await (const _chunk of first.body) break;
  ac.abort();
  const b = await second;
  assert.equal(b.status, 200);
  assert.equal(sha256(b.body), layer.digest);
  upstream.clearLog();
  const c = await http(url);
  assert.equal(sha256(c.body), layer.digest);
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'the abandoned download was committed to the cache');
});

test('errors are the spec\'s JSON bodies with the right status', async () => {
  const cases: [string, Parameters<typeof http>[1], number, string][] = [
    ['/v2/library/nope/manifests/v1', {}, 404, 'MANIFEST_UNKNOWN'],
    ['/v2/library/multi/manifests/nope', {}, 404, 'MANIFEST_UNKNOWN'],
    [`/v2/library/multi/blobs/sha256:${'0'.repeat(64)}`, {}, 404, 'BLOB_UNKNOWN'],
    ['/v2/library/multi/blobs/md5:abc', {}, 400, 'DIGEST_INVALID'],
    ['/v2/Library/Multi/manifests/v1', {}, 400, 'NAME_INVALID'],
    ['/v2/ghcr.io/owner/img/manifests/v1', {}, 404, 'NAME_UNKNOWN'],
    ['/v2/owner/img/manifests/v1?ns=quay.io', {}, 404, 'NAME_UNKNOWN'],
    ['/v2/library/multi/manifests/v1', { method: 'PUT' }, 405, 'UNSUPPORTED'],
    ['/v2/library/multi/manifests/v1', { method: 'DELETE' }, 405, 'UNSUPPORTED'],
    ['/v2/library/multi/blobs/uploads/', { method: 'POST' }, 405, 'UNSUPPORTED'],
    ['/v2/_catalog', {}, 405, 'UNSUPPORTED'],
  ];
  for (const [path, opts, status, code] of cases) {
    const r = await http(`${relais.url}${path}`, opts);
    assert.equal(r.status, status, path);
    assert.equal(errorCode(r), code, path);
    assert.match(String(r.headers['content-type']), /application\/json/);
  }
  const base = await http(`${relais.url}/v2/`);
  assert.equal(base.status, 200);
  assert.equal(base.headers['docker-distribution-api-version'], 'registry/2.0');
});

test('404s are remembered for notFoundTtl: a missing tag asked twice costs one upstream request', async () => {
  upstream.clearLog();
  const a = await http(`${relais.url}/v2/library/multi/manifests/not-yet`);
  const b = await http(`${relais.url}/v2/library/multi/manifests/not-yet`);
  assert.equal(a.status, 404);
  assert.equal(b.status, 404);
  assert.equal(errorCode(b), 'MANIFEST_UNKNOWN');
  await upstream.settle();
  assert.equal(upstream.count('*', /\/manifests\/not-yet$/), 1);
});

test('tags/list with n, last and a Link to the next page in the client\'s name space', async () => {
  for (const t of ['a1', 'b2', 'c3']) await pushRandomImage(upstream.host, `library/tagged:${t}`, { layers: [1000] });
  const all = await http(`${relais.url}/v2/tagged/tags/list`);
  assert.equal(all.status, 200);
  assert.deepEqual(JSON.parse(all.body.toString()), { name: 'tagged', tags: ['a1', 'b2', 'c3'] });
  const p1 = await http(`${relais.url}/v2/library/tagged/tags/list?n=2`);
  assert.deepEqual((JSON.parse(p1.body.toString()) as { tags: string[] }).tags, ['a1', 'b2']);
  assert.match(String(p1.headers.link), /^<\/v2\/library\/tagged\/tags\/list\?n=2&last=b2>; rel="next"$/);
  const p2 = await http(`${relais.url}/v2/library/tagged/tags/list?n=2&last=b2`);
  assert.deepEqual((JSON.parse(p2.body.toString()) as { tags: string[] }).tags, ['c3']);
  assert.equal(p2.headers.link, undefined);
  const bad = await http(`${relais.url}/v2/library/tagged/tags/list?n=-1`);
  assert.equal(bad.status, 400);
});

test('tags expire after tagTtl and are revalidated with HEAD; upstream stopped -> stale tags and cached blobs still pull', async () => {
  const up2 = await startRegistry();
  const img = await pushRandomImage(up2.host, 'library/stale:v1', { layers: [400_000, 100_000] });
  // The tags' clock is moved past the TTL instead of sleeping through it.
  const clock = testClock();
  const r2 = await startRelais({ upstreams: { 'docker.io': up2.url }, clock: () => clock.now(), config: { upstreams: { 'docker.io': { tagTtl: '300ms', retries: { attempts: 1 } } } } });
  try {
    await skopeoPull(r2.host, 'library/stale:v1');
    clock.advance(400);
    up2.clearLog();
    await skopeoPull(r2.host, 'library/stale:v1');
    await up2.settle();
    assert.equal(up2.manifestHeads(), 1, 'expired tag revalidated with one HEAD');
    assert.equal(up2.manifestGets(), 0, 'unchanged digest: no GET (no pull counted by Docker Hub)');
    assert.equal(up2.blobGets(), 0);

    clock.advance(400);
    await up2.stop();
    const pulled = await skopeoPull(r2.host, 'library/stale:v1');
    assert.ok(pulled.files.has(img.layers[0]?.digest ?? ''));
    const uncached = await http(`${r2.url}/v2/library/never/manifests/v1`);
    assert.equal(uncached.status, 503);
    assert.equal(errorCode(uncached), 'UPSTREAM_UNAVAILABLE');
    const logs = r2.logs().filter((l) => l.msg === 'request' && l.cache === 'stale');
    assert.ok(logs.length >= 1, 'the request log says stale');

    // A restart keeps the whole cache: still pulls with the upstream down.
    const r3 = await r2.restart();
    try {
      const again = await skopeoPull(r3.host, 'library/stale:v1');
      assert.ok(again.files.has(img.layers[1]?.digest ?? ''));
    } finally {
      await r3.close();
    }
  } finally {
    await r2.close().catch(() => undefined);
    await up2.close();
  }
});

test('a changed tag is picked up after its TTL', async () => {
  const up = await startRegistry();
  const clock = testClock();
  const r = await startRelais({ upstreams: { 'docker.io': up.url }, clock: () => clock.now(), config: { upstreams: { 'docker.io': { tagTtl: '2s' } } } });
  try {
    const v1 = await pushRandomImage(up.host, 'library/moving:latest', { layers: [1000] });
    const a = await http(`${r.url}/v2/library/moving/manifests/latest`);
    assert.equal(a.headers['docker-content-digest'], v1.manifestDigest);
    const v2 = await pushRandomImage(up.host, 'library/moving:latest', { layers: [2000] });
    const b = await http(`${r.url}/v2/library/moving/manifests/latest`);
    assert.equal(b.headers['docker-content-digest'], v1.manifestDigest, 'within the TTL the cached digest is served');
    clock.advance(2100);
    const c = await http(`${r.url}/v2/library/moving/manifests/latest`);
    assert.equal(c.headers['docker-content-digest'], v2.manifestDigest);
  } finally {
    await r.close();
    await up.close();
  }
});

test('a fresh tag is answered from a prepared response: same bytes and headers, logged and counted, never past its TTL', async () => {
  const up = await startRegistry();
  const clock = testClock();
  const r = await startRelais({ upstreams: { 'docker.io': up.url }, clock: () => clock.now(), config: { upstreams: { 'docker.io': { tagTtl: '1500ms' } } } });
  try {
    const img = await pushRandomImage(up.host, 'library/hot:v1', { layers: [1000] });
    const url = `${r.url}/v2/library/hot/manifests/v1`;
    const miss = await http(url, { headers: { accept: ACCEPT_ALL } });
    assert.equal(r.instance.hotManifests.size, 0, 'a miss prepares nothing');
    const full = await http(url, { headers: { accept: ACCEPT_ALL } });
    assert.equal(r.instance.hotManifests.size, 1, 'a fresh hit prepares the response');
    up.clearLog();
    const hot = await http(url, { headers: { accept: ACCEPT_ALL } });
    const head = await http(url, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
    for (const res of [miss, full, hot]) {
      assert.equal(res.status, 200);
      assert.equal(sha256(res.body), img.manifestDigest);
      assert.equal(res.headers['docker-content-digest'], img.manifestDigest);
      assert.equal(res.headers['etag'], `"${img.manifestDigest}"`);
      assert.equal(res.headers['content-type'], full.headers['content-type']);
      assert.equal(res.headers['content-length'], String(img.manifest.byteLength));
      assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    }
    assert.equal(head.status, 200);
    assert.equal(head.body.byteLength, 0);
    assert.equal(head.headers['content-length'], String(img.manifest.byteLength));
    assert.equal(head.headers['docker-content-digest'], img.manifestDigest);
    await up.settle();
    assert.equal(up.accessLog().length, 0, 'the prepared answers asked the upstream nothing');

    // Logged and counted like any other hit.
    const lines = r.logs().filter((l) => l.msg === 'request' && l.path === '/v2/library/hot/manifests/v1');
    assert.deepEqual(lines.map((l) => [l.method, l.status, l.cache, l.upstream]), [
      ['GET', 200, 'miss', 'docker.io'],
      ['GET', 200, 'hit', 'docker.io'],
      ['GET', 200, 'hit', 'docker.io'],
      ['HEAD', 200, 'hit', 'docker.io'],
    ]);
    const metrics = (await http(`${r.url}/metrics`)).body.toString('utf8');
    assert.match(metrics, /relais_requests_total\{upstream="docker.io",kind="manifest",result="hit"\} 3/);

    // Past the TTL the full path answers again, and revalidates with the upstream.
    clock.advance(1600);
    up.clearLog();
    const after = await http(url, { headers: { accept: ACCEPT_ALL } });
    assert.equal(after.status, 200);
    await up.settle();
    assert.equal(up.manifestHeads(), 1, 'the expired tag was revalidated, not served from the prepared response');

    // Eviction and gc forget manifests: their prepared responses go with them.
    await http(url, { headers: { accept: ACCEPT_ALL } });
    assert.equal(r.instance.hotManifests.size, 1);
    r.instance.manifests.forget([img.manifestDigest]);
    assert.equal(r.instance.hotManifests.size, 0);
  } finally {
    await r.close();
    await up.close();
  }
});

/**
 * A blob pulled through relais and stored, then its file deleted behind relais's back (the index still lists
 * it), with the upstream's log cleared: what the lost-blob tests start from. Returns the blob's URL at relais.
 */
async function cacheThenLose(up: RegistryPeer, r: RelaisPeer, repo: string, size: number): Promise<{ layer: { digest: string; size: number }; url: string; key: string; file: string }> {
  const img = await pushRandomImage(up.host, `${repo}:v1`, { layers: [size] });
  const layer = img.layers[0];
  assert.ok(layer);
  const url = `${r.url}/v2/${repo}/blobs/${layer.digest}`;
  assert.equal(sha256((await http(url)).body), layer.digest);
  // The client has the blob once its digest verified; the cache stores it a moment later.
  await r.instance.blobs.settle();
  const key = `blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}`;
  const file = join(r.dataDir, 'storage', key);
  await rm(file);
  await r.instance.storage.releaseIdle?.();
  // The first GET's access-log line may be written after relais has the bytes: let it land before clearing.
  await up.settle();
  up.clearLog();
  return { layer, url, key, file };
}

test('a refetch that ends while another client is between its failed read and its own refetch: that client reads the object back, no second GET', async () => {
  const up = await startRegistry();
  const r = await startRelais({ upstreams: { 'docker.io': up.url } });
  try {
    const { layer, url, key } = await cacheThenLose(up, r, 'library/lostrace', 400_000);
    // The first read of the lost object (client C's) fails at once, but its failure reaches relais only after
    // client A's refetch has committed and left the downloads table: the interleaving a loaded machine makes.
    // The door reads a stored blob through openLocal (a file descriptor) where the driver has it, else reader.
    const storage = r.instance.storage;
    const openLocal = storage.openLocal?.bind(storage);
    assert.ok(openLocal, 'the filesystem driver opens local files');
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let cFailed!: () => void;
    const cHasFailed = new Promise<void>((resolve) => (cFailed = resolve));
    let held = false;
    storage.openLocal = async (k) => {
      if (k !== key || held) return openLocal(k);
      held = true;
      try {
        return await openLocal(k);
      } catch (e) {
        cFailed();
        await released;
        throw e;
      }
    };
    const c = http(url);
    await cHasFailed;
    const a = await http(url);
    assert.equal(sha256(a.body), layer.digest);
    await r.instance.blobs.settle();
    release();
    const cRes = await c;
    assert.equal(cRes.status, 200);
    assert.equal(sha256(cRes.body), layer.digest);
    await up.settle();
    assert.equal(up.blobGets(layer.digest), 1, 'one refetch for both clients');
  } finally {
    await r.close();
    await up.close();
  }
});

test('a cached blob whose file was deleted is fetched again (once, for concurrent clients), not answered 404', async () => {
  for (const sendfile of [true, false]) {
    const up = await startRegistry();
    const r = await startRelais({ upstreams: { 'docker.io': up.url }, config: { server: { sendfile } } });
    try {
      const { layer, url, file } = await cacheThenLose(up, r, 'library/lost', 600_000);
      const [a, b, range] = await Promise.all([http(url), http(url), http(url, { headers: { range: 'bytes=10-19' } })]);
      for (const res of [a, b]) {
        assert.equal(res.status, 200, `sendfile ${sendfile}`);
        assert.equal(sha256(res.body), layer.digest);
      }
      assert.equal(range.status, 206);
      assert.equal(range.body.byteLength, 10);
      await up.settle();
      assert.equal(up.blobGets(layer.digest), 1, 'fetched again once for all three clients');
      assert.equal((await stat(file)).size, layer.size, 'the file is back');
      assert.ok(r.logs().some((l) => l.event === 'cached blob missing from storage, fetching it again'), 'logged');
    } finally {
      await r.close();
      await up.close();
    }
  }
});
