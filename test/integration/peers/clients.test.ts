// Self-test of the client helpers (skopeo, podman, ctr) against a registry peer that plays the
// mirror: what the client got and what the registry saw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRegistry } from '../../peers/registry.js';
import { pushBuiltImage, pushIndex, pushRandomImage, pushRunnableImage } from '../../peers/images.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { sha256Digest } from '../../peers/registry-client.js';
import { skopeoCopyToDir, skopeoInspect, writeRegistriesConf } from '../../peers/skopeo.js';
import { podmanPull } from '../../peers/podman.js';
import { startDockerd } from '../../peers/dockerd.js';
import { ctrImages, ctrPull, hostsToml } from '../../peers/ctr.js';

void test('skopeo: direct copy, mirror by host and by host/path prefix, inspect --raw', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  const dir = await tempDir('skopeo-test');
  t.after(() => removeDir(dir));
  const app = await pushRandomImage(reg.host, 'team/app:1', { layers: [10_000, 20_000] });
  // The same image where a mirror would keep docker.io/library/app: at / and at /docker.io/.
  await pushBuiltImage(app, reg.host, 'library/app:1');
  await pushBuiltImage(app, reg.host, 'docker.io/library/app:1');
  reg.clearLog();

  const direct = await skopeoCopyToDir(app.ref, join(dir, 'direct'));
  assert.equal(direct.code, 0, direct.stderr);
  assert.equal(sha256Digest(direct.manifest ?? Buffer.alloc(0)), app.manifestDigest);
  const layer = await readFile(join(dir, 'direct', (app.layers[1]?.digest ?? '').slice('sha256:'.length)));
  assert.equal(sha256Digest(layer), app.layers[1]?.digest);
  await reg.settle();
  assert.equal(reg.blobGets(app.layers[1]?.digest), 1);

  for (const [i, [mirror, path]] of ([
    [reg.host, '/v2/library/app/manifests/1'],
    [`${reg.host}/docker.io`, '/v2/docker.io/library/app/manifests/1'],
  ] as const).entries()) {
    reg.clearLog();
    const conf = await writeRegistriesConf(dir, [{ prefix: 'docker.io', location: 'docker.io', mirror }]);
    const out = join(dir, `via-mirror-${i}`);
    const r = await skopeoCopyToDir('docker.io/library/app:1', out, { registriesConf: conf });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256Digest(r.manifest ?? Buffer.alloc(0)), app.manifestDigest);
    await reg.settle();
    assert.ok(reg.count('*', new RegExp(`^${path}$`)) >= 1, reg.accessLog().map((e) => e.line).join('\n'));
    assert.equal(reg.blobGets(app.layers[0]?.digest), 1);
  }

  const raw = await skopeoInspect(app.ref, { raw: true });
  assert.equal(raw.code, 0, raw.stderr);
  assert.equal(sha256Digest(raw.raw ?? Buffer.alloc(0)), app.manifestDigest);
  const summary = await skopeoInspect(app.ref);
  assert.equal((summary.json as { Digest?: string }).Digest, app.manifestDigest);
  const missing = await skopeoInspect(`${reg.host}/team/nope:1`);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /manifest unknown|not found/i);
});

void test('podman pulls docker.io names through a registries.conf mirror', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  const dir = await tempDir('podman-test');
  t.after(() => removeDir(dir));
  const img = await pushRunnableImage(reg.host, 'library/busybox:relais-test');
  const conf = await writeRegistriesConf(dir, [{ prefix: 'docker.io', mirror: reg.host }]);
  reg.clearLog();
  const r = await podmanPull('docker.io/library/busybox:relais-test', { registriesConf: conf });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.repoDigests?.includes(`docker.io/library/busybox@${img.manifestDigest}`), JSON.stringify(r.repoDigests));
  await reg.settle();
  assert.equal(reg.blobGets(img.layers[0]?.digest), 1);
  assert.ok(reg.count('*', /^\/v2\/library\/busybox\/manifests\//) >= 1);
});

void test('ctr pulls through hosts.toml mirrors and sends ?ns=<registry>', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  const runnable = await pushRunnableImage(reg.host, 'library/busybox:relais-test');
  const multi = await pushIndex(reg.host, 'team/multi:1', [
    { os: 'linux', architecture: 'amd64', layers: [3000] },
    { os: 'linux', architecture: 'arm64', layers: [4000] },
  ]);
  const dockerd = await startDockerd();
  t.after(() => dockerd.stop());
  reg.clearLog();

  assert.equal(
    hostsToml('docker.io', reg.url),
    `server = "https://registry-1.docker.io"\n\n[host."${reg.url}"]\n  capabilities = ["pull", "resolve"]\n`,
  );
  const pulled = await ctrPull(dockerd.containerdSocket, 'docker.io/library/busybox:relais-test', { mirrors: { 'docker.io': reg.url } });
  assert.equal(pulled.code, 0, pulled.stderr + pulled.stdout);
  await reg.settle();
  const log = reg.accessLog();
  const text = log.map((e) => e.line).join('\n');
  assert.ok(log.some((e) => e.path === '/v2/library/busybox/manifests/relais-test' && e.query === 'ns=docker.io'), text);
  assert.ok(log.some((e) => e.path.endsWith(`/blobs/${runnable.layers[0]?.digest ?? ''}`) && e.query === 'ns=docker.io' && e.status === 200), text);
  const images = await ctrImages(dockerd.containerdSocket);
  assert.deepEqual(images, [{ name: 'docker.io/library/busybox:relais-test', digest: runnable.manifestDigest }]);

  // Another registry name through the same mirror; random layers: fetch without unpacking.
  reg.clearLog();
  const fetched = await ctrPull(dockerd.containerdSocket, 'ghcr.io/team/multi:1', { mirrors: { 'ghcr.io': reg.url }, unpack: false, platform: 'linux/arm64' });
  assert.equal(fetched.code, 0, fetched.stderr + fetched.stdout);
  await reg.settle();
  const arm = multi.children[1];
  assert.ok(arm !== undefined);
  assert.ok(reg.accessLog().every((e) => e.query === 'ns=ghcr.io'), reg.accessLog().map((e) => e.line).join('\n'));
  assert.equal(reg.blobGets(arm.layers[0]?.digest), 1);
  assert.equal(reg.blobGets(multi.children[0]?.layers[0]?.digest), 0, 'only the requested platform');

  // An HTTPS mirror whose CA is given in hosts.toml.
  const secure = await startRegistry({ tls: true });
  t.after(() => secure.close());
  const app = await pushRandomImage(secure.host, 'org/app:2', { layers: [1500] });
  secure.clearLog();
  const viaTls = await ctrPull(dockerd.containerdSocket, 'quay.io/org/app:2', {
    mirrors: { 'quay.io': { url: secure.url, ca: secure.caFile ?? assert.fail() } },
    unpack: false,
  });
  assert.equal(viaTls.code, 0, viaTls.stderr + viaTls.stdout);
  assert.match(viaTls.hostsToml['quay.io'] ?? '', /ca = "/);
  await secure.settle();
  assert.equal(secure.blobGets(app.layers[0]?.digest), 1);
  assert.ok(secure.accessLog().every((e) => e.query === 'ns=quay.io'), secure.accessLog().map((e) => e.line).join('\n'));
});
