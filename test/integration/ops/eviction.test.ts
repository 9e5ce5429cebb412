// Bounded disk with real clients: several skopeo pulls run while the cache goes past storage.maxSize.
// Disk usage ends under the budget, no pull fails, the pinned image stays (the upstream is not asked for it
// again), kept images are whole, `relais gc --dry-run` finds nothing, and ls/stats/prefetch tell the truth.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage, type BuiltImage, type BuiltLayer } from '../../peers/images.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { http, skopeoPull } from '../core/helpers.js';
import { diskBytes, parseMetrics, relaisCli } from './helpers.js';

const MAX = 12_000_000;
let upstream: RegistryPeer;
let relais: RelaisPeer;
let pinned: BuiltImage;
const images: BuiltImage[] = [];
let base: BuiltLayer;

before(async () => {
  upstream = await startRegistry();
  pinned = await pushRandomImage(upstream.host, 'library/docker:27-dind', { layers: [2_000_000, 500_000] });
  // Eight images of ~2.9 MB sharing one base layer: ~17 MB in all, past the 12 MB budget.
  const first = await pushRandomImage(upstream.host, 'library/app0:v1', { layers: [600_000, 1_500_000, 800_000] });
  images.push(first);
  const b = first.layers[0];
  assert.ok(b);
  base = b;
  for (let i = 1; i < 8; i++) images.push(await pushRandomImage(upstream.host, `library/app${i}:v1`, { layers: [{ reuse: base }, 1_500_000, 800_000] }));
  relais = await startRelais({
    upstreams: { 'docker.io': upstream.url },
    config: { storage: { maxSize: MAX, lowWatermark: '80%', pin: ['docker:*-dind'], evictInterval: '500ms' } },
  });
});

after(async () => {
  await relais.close();
  await upstream.close();
});

const storageDir = (): string => join(relais.dataDir, 'storage', 'blobs');

test('pulls running while the cache goes past maxSize all succeed; the cache ends under the budget; the pinned image stays', async () => {
  await skopeoPull(relais.host, 'library/docker:27-dind');
  // Two rounds over every image, three clients at a time: evictions happen between and during pulls.
  const refs = [...images, ...images].map((img) => `${img.repo}:${img.tag}`);
  let next = 0;
  const failures: string[] = [];
  let pulls = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const ref = refs[next++];
      if (ref === undefined) return;
      try {
        const p = await skopeoPull(relais.host, ref);
        const img = images.find((i) => `${i.repo}:${i.tag}` === ref);
        assert.ok(img);
        for (const l of img.layers) assert.equal(p.files.get(l.digest), l.size, `${ref}: ${l.digest}`);
        pulls++;
      } catch (e) {
        failures.push(`${ref}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  assert.deepEqual(failures, [], 'no pull failed');
  assert.equal(pulls, refs.length);

  // The last commit triggered a check; wait for it (and for the commits themselves), then measure.
  await relais.instance.blobs.settle();
  relais.instance.evictor.trigger();
  await relais.instance.evictor.idle();
  const onDisk = await diskBytes(storageDir());
  const usage = await relais.instance.index.usage();
  assert.ok(onDisk <= MAX, `disk usage ${onDisk} is under the budget ${MAX}`);
  assert.equal(onDisk, usage.bytes, 'the index accounts for exactly the files on disk');

  const m = parseMetrics((await http(`${relais.url}/metrics`)).body.toString('utf8'));
  assert.ok(m.sum('relais_evictions_total', { reason: 'size' }) >= 1, 'evictions happened');
  assert.ok(m.sum('relais_evicted_bytes_total', { reason: 'size' }) > 0);
  assert.equal(m.sum('relais_cache_size_bytes'), usage.bytes);
  assert.equal(m.sum('relais_cache_max_size_bytes'), MAX);
  const logs = relais.logs().filter((l) => l.event === 'eviction');
  assert.ok(logs.length >= 1, 'each eviction is logged');

  // The pinned image was never evicted: pulling it again asks the upstream for nothing.
  upstream.clearLog();
  const again = await skopeoPull(relais.host, 'library/docker:27-dind');
  assert.equal(again.files.size, 1 + pinned.layers.length);
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'pinned blobs are still cached');

  // Every image still tagged in the cache is whole: its manifest's blobs are all there.
  const content = new Map((await relais.instance.index.listContent()).map((c) => [c.digest, c]));
  const refsOf = new Map<string, string[]>();
  for (const r of await relais.instance.index.listReferences()) refsOf.set(r.manifest, [...(refsOf.get(r.manifest) ?? []), r.child]);
  const tags = await relais.instance.index.listAllTags();
  assert.ok(
    tags.length >= 2 && tags.length < 1 + images.length,
    `some images were evicted, some kept (${tags.length} tags; content: ${JSON.stringify([...content.values()].map((c) => [c.digest.slice(7, 15), c.size, c.mediaType !== undefined, c.lastAccess % 100000]))}; evictions: ${JSON.stringify(relais.logs().filter((l) => l.event === 'eviction').map((l) => l.evicted))}; manifests: ${JSON.stringify(relais.logs().filter((l) => l.msg === 'request' && String(l.path).includes('/manifests/')).map((l) => [l.time, l.path, l.cache]))})`,
  );
  for (const t of tags) {
    assert.ok(content.has(t.digest), `${t.repo}:${t.tag} has its manifest`);
    for (const child of refsOf.get(t.digest) ?? []) assert.ok(content.has(child), `${t.repo}:${t.tag} has ${child}`);
  }
  // The shared base layer goes only with the last image holding it: while any app image is kept, it is there.
  if (tags.some((t) => t.repo.startsWith('library/app'))) assert.ok(content.has(base.digest), 'shared base layer kept with its images');
});

test('an evicted image is fetched again on the next pull, and gc --dry-run then finds nothing', async () => {
  const tags = new Set((await relais.instance.index.listAllTags()).map((t) => `${t.repo}:${t.tag}`));
  const evicted = images.find((i) => !tags.has(`${i.repo}:${i.tag}`));
  assert.ok(evicted, 'at least one image was evicted');
  upstream.clearLog();
  const p = await skopeoPull(relais.host, `${evicted.repo}:${evicted.tag}`);
  assert.equal(p.files.get(evicted.layers[2]?.digest ?? ''), evicted.layers[2]?.size);
  await upstream.settle();
  assert.ok(upstream.blobGets((evicted.layers[2] ?? base).digest) === 1, 'the evicted layer came from the upstream again');
  relais.instance.evictor.trigger();
  await relais.instance.evictor.idle();
  assert.ok((await diskBytes(storageDir())) <= MAX);

  const gc = await relaisCli(['gc', '--dry-run', '--data', relais.dataDir]);
  assert.equal(gc.code, 0, gc.stderr);
  assert.match(gc.stdout, /nothing to do/);
  const json = await relaisCli(['gc', '--dry-run', '--json', '--grace', '0', '--data', relais.dataDir]);
  const report = JSON.parse(json.stdout) as { orphanFiles: unknown[]; missingFiles: unknown[]; tempFiles: unknown[]; freedBytes: number };
  assert.deepEqual([report.orphanFiles.length, report.missingFiles.length, report.tempFiles.length, report.freedBytes], [0, 0, 0, 0], 'even with no grace period');
});

test('relais ls and stats read the index of a running relais', async () => {
  const cfg = join(relais.dataDir, 'relais.yaml');
  await writeFile(cfg, `dataDir: ${relais.dataDir}\nstorage:\n  maxSize: ${MAX}\n  pin: ["docker:*-dind"]\n`);
  const ls = await relaisCli(['ls', '--config', cfg]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /^IMAGE\s+SIZE\s+LAST USED\s+DIGEST/);
  const dind = ls.stdout.split('\n').find((l) => l.startsWith('docker.io/library/docker:27-dind'));
  assert.ok(dind, ls.stdout);
  assert.match(dind, /pinned$/);
  assert.match(dind, /2\.\d MiB/);
  const rows = JSON.parse((await relaisCli(['ls', '--json', '--data', relais.dataDir])).stdout) as { name: string; bytes: number; digest: string }[];
  const tags = await relais.instance.index.listAllTags();
  assert.equal(rows.length, tags.length);
  const pinnedRow = rows.find((r) => r.name === 'docker.io/library/docker:27-dind');
  assert.equal(pinnedRow?.bytes, pinned.totalBytes + pinned.manifest.byteLength);
  assert.equal(pinnedRow.digest, pinned.manifestDigest);

  const stats = JSON.parse((await relaisCli(['stats', '--json', '--data', relais.dataDir])).stdout) as { usage: { bytes: number; tags: number }; images: number };
  const usage = await relais.instance.index.usage();
  assert.equal(stats.usage.bytes, usage.bytes);
  assert.equal(stats.usage.tags, tags.length);
  const text = await relaisCli(['stats', '--data', relais.dataDir]);
  assert.match(text.stdout, /^cache size\s+\S+ \S+ \(no storage.maxSize/m, 'without --config the budget is unknown');
  const withBudget = await relaisCli(['stats', '--config', cfg]);
  assert.match(withBudget.stdout, /^cache size\s+\S+ \S+ of 11\.4 MiB \(\d+\.\d%; eviction down to 90%\)/m);
  assert.match(withBudget.stdout, /^pinned\s+docker:\*-dind$/m);
  const missing = await relaisCli(['ls', '--data', join(relais.dataDir, 'nope')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no relais cache in .*nope/);
  assert.match(missing.stderr, /hint: /);
});

test('relais prefetch through the running relais: every blob fetched once, a summary of the bytes', async () => {
  const img = await pushRandomImage(upstream.host, 'library/warm:v1', { layers: [700_000, 300_000] });
  upstream.clearLog();
  const r = await relaisCli(['prefetch', '--server', relais.url, 'warm:v1', 'docker.io/library/docker:27-dind', 'library/missing:v1']);
  assert.equal(r.code, 1, 'one image could not be fetched');
  assert.match(r.stdout, /^ok\s+warm:v1 \(single\): 1 manifests, 3 blobs/m);
  assert.match(r.stdout, /^FAILED\s+library\/missing:v1: MANIFEST_UNKNOWN: manifest unknown/m);
  assert.match(r.stdout, /^ok\s+docker.io\/library\/docker:27-dind \(single\): 1 manifests, 3 blobs, 2\.4 MiB$/m, 'bytes of every blob counted');
  assert.match(r.stdout, /^prefetch: 2\/3 images, \d+ blobs, .* relais fetched (\d+\.\d KiB|\d+\.\d MiB) from upstreams/m);
  await upstream.settle();
  for (const d of [img.configDigest, ...img.layers.map((l) => l.digest)]) assert.equal(upstream.blobGets(d), 1, `${d} fetched once`);
  assert.equal(upstream.blobGets(pinned.layers[0]?.digest), 0, 'the pinned image was cached already');
  upstream.clearLog();
  const warm = await skopeoPull(relais.host, 'library/warm:v1');
  assert.equal(warm.files.size, 3);
  await upstream.settle();
  assert.equal(upstream.blobGets(), 0, 'after prefetch a pull is all hits');
});

test('relais prefetch without --server fills a data directory with a relais of its own for the run', async () => {
  const data = await tempDir('ops-prefetch');
  try {
    upstream.clearLog();
    const r = await relaisCli(['prefetch', '--data', data, '--upstream', `docker.io=${upstream.url}`, '--json', 'warm:v1']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { images: { ok: boolean; blobs: number; bytes: number }[]; upstreamBytes: number };
    const img = summary.images[0];
    assert.ok(img?.ok);
    assert.equal(img.blobs, 3);
    assert.equal(summary.upstreamBytes, img.bytes, 'everything came from the upstream: a new cache');
    await upstream.settle();
    assert.equal(upstream.blobGets(), 3);
    const ls = await relaisCli(['ls', '--data', data]);
    assert.match(ls.stdout, /^docker\.io\/library\/warm:v1\s+/m);
    assert.ok(!existsSync(join(data, 'relais.lock')), 'the relais of the run stopped cleanly');
  } finally {
    await removeDir(data);
  }
});
