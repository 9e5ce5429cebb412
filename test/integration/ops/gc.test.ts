// gc against a serving relais: an orphan file, a layer file lost from storage, and an old temp file are
// found by `relais gc --dry-run` (the CLI, while relais runs), removed by the online gc, and the image
// whose layer was lost is pulled whole again (the layer fetched from the upstream again).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { http, skopeoPull } from '../core/helpers.js';
import { filesIn, parseMetrics, relaisCli } from './helpers.js';

let upstream: RegistryPeer;
let relais: RelaisPeer;
let image: BuiltImage;

before(async () => {
  upstream = await startRegistry();
  image = await pushRandomImage(upstream.host, 'library/fragile:v1', { layers: [500_000, 200_000] });
  relais = await startRelais({ upstreams: { 'docker.io': upstream.url } });
});

after(async () => {
  await relais.close();
  await upstream.close();
});

const hex = (d: string): string => d.slice(d.indexOf(':') + 1);

test('orphans, lost files and crash leftovers: found while relais serves, cleaned online, the image pulled whole again', async () => {
  await skopeoPull(relais.host, 'library/fragile:v1');
  await relais.instance.blobs.settle(); // stored, not only delivered
  const storage = join(relais.dataDir, 'storage');
  const hourAgo = new Date(Date.now() - 3600_000);
  // An orphan: a blob file the index does not know (old enough to be past the grace period).
  const orphanHex = 'f'.repeat(64);
  const orphan = join(storage, 'blobs', 'sha256', 'ff', orphanHex);
  await mkdir(join(storage, 'blobs', 'sha256', 'ff'), { recursive: true });
  await writeFile(orphan, Buffer.alloc(12_345, 1));
  await utimes(orphan, hourAgo, hourAgo);
  // A fresh orphan (as if being committed right now): left alone.
  const fresh = join(storage, 'blobs', 'sha256', 'ff', 'e'.repeat(64));
  await writeFile(fresh, Buffer.alloc(100, 2));
  // A layer file lost from storage.
  const lost = image.layers[0];
  assert.ok(lost);
  await rm(join(storage, 'blobs', 'sha256', hex(lost.digest).slice(0, 2), hex(lost.digest)));
  // A temp file left by a crash.
  const temp = join(storage, '_tmp', 'sha256-deadbeef.12345678.part');
  await writeFile(temp, Buffer.alloc(4096, 3));
  await utimes(temp, hourAgo, hourAgo);

  const dry = await relaisCli(['gc', '--dry-run', '--data', relais.dataDir]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^relais \(pid \d+\) serves this directory: files younger than 15m are left alone$/m);
  assert.match(dry.stdout, new RegExp(`^orphan file\\s+blobs/sha256/ff/${orphanHex} \\(12\\.1 KiB\\)$`, 'm'));
  assert.doesNotMatch(dry.stdout, /eeeeeeee/, 'a file younger than the grace period is not an orphan');
  assert.match(dry.stdout, new RegExp(`^missing file\\s+${lost.digest} \\(index says ${lost.size} bytes, no file\\)$`, 'm'));
  assert.match(dry.stdout, new RegExp(`^broken manifest\\s+${image.manifestDigest}`, 'm'));
  assert.match(dry.stdout, /^temp file\s+.*sha256-deadbeef\.12345678\.part \(4\.0 KiB\)$/m);
  assert.match(dry.stdout, /1 orphan files, 1 index entries without their file, 1 manifests depending on them, 1 temp files; would remove/);

  const report = await relais.instance.evictor.gc(false);
  assert.equal(report.orphanFiles.length, 1);
  assert.deepEqual(report.missingFiles.map((m) => m.digest), [lost.digest]);
  assert.deepEqual(report.dependentManifests, [image.manifestDigest]);
  assert.equal(report.tempFiles.length, 1);
  assert.deepEqual(await filesIn(join(storage, '_tmp')), []);
  assert.deepEqual((await filesIn(join(storage, 'blobs', 'sha256', 'ff'))).map((f) => f.name), ['e'.repeat(64)]);
  assert.equal(await relais.instance.index.getContent(image.manifestDigest), undefined, 'the manifest that needs the lost layer is dropped');
  assert.deepEqual(await relais.instance.index.listAllTags(), [], 'and its tag');
  const m = parseMetrics((await http(`${relais.url}/metrics`)).body.toString('utf8'));
  assert.equal(m.sum('relais_gc_runs_total', { mode: 'online' }), 1);
  assert.equal(m.sum('relais_gc_freed_bytes_total'), report.freedBytes);

  upstream.clearLog();
  const again = await skopeoPull(relais.host, 'library/fragile:v1');
  assert.equal(again.files.get(lost.digest), lost.size);
  await upstream.settle();
  assert.equal(upstream.blobGets(lost.digest), 1, 'the lost layer came from the upstream again');
  assert.equal(upstream.manifestGets(), 1, 'the dropped manifest too');
  await rm(fresh);
  const clean = await relaisCli(['gc', '--dry-run', '--grace', '0', '--data', relais.dataDir]);
  assert.match(clean.stdout, /nothing to do/);
});
