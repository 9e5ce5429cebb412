// Self-test of the image generators: what skopeo pushed is byte-for-byte what we computed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { MEDIA, pushBuiltImage, pushIndex, pushRandomImage, pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { MANIFEST_ACCEPT, registryFetch, sha256Digest } from '../../peers/registry-client.js';
import { removeDir, runOk, tempDir } from '../../peers/proc.js';

async function manifestByTag(reg: RegistryPeer, repo: string, ref: string) {
  const m = await registryFetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200, m.body.toString());
  return m;
}

async function assertServed(reg: RegistryPeer, img: BuiltImage, ref: string): Promise<void> {
  const m = await manifestByTag(reg, img.repo, ref);
  assert.equal(sha256Digest(m.body), img.manifestDigest);
  assert.ok(m.body.equals(img.manifest));
  assert.equal(m.headers.get('docker-content-digest'), img.manifestDigest);
  assert.equal(m.headers.get('content-type'), img.manifestMediaType);
  const parsed = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: { digest: string; size: number }[] };
  assert.equal(parsed.config.digest, img.configDigest);
  assert.deepEqual(parsed.layers.map((l) => [l.digest, l.size]), img.layers.map((l) => [l.digest, l.size]));
  for (const l of [...img.layers, { digest: img.configDigest, size: img.config.length }]) {
    const b = await registryFetch(`${reg.url}/v2/${img.repo}/blobs/${l.digest}`);
    assert.equal(b.status, 200);
    assert.equal(b.body.length, l.size);
    assert.equal(sha256Digest(b.body), l.digest);
  }
}

void test('pushRandomImage: OCI and Docker, random and tar layers, digests equal what the registry serves', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  const oci = await pushRandomImage(reg.host, 'lib/oci:v1', { layers: [1234, 300_000] });
  assert.equal(oci.manifestMediaType, MEDIA.ociManifest);
  assert.equal(oci.ref, `${reg.host}/lib/oci:v1`);
  assert.deepEqual(oci.layers.map((l) => l.size), [1234, 300_000]);
  assert.equal(oci.totalBytes, oci.config.length + 1234 + 300_000);
  await assertServed(reg, oci, 'v1');

  const docker = await pushRandomImage(reg.host, 'lib/docker:v2', { layers: [50_000], format: 'docker', layerKind: 'tar' });
  assert.equal(docker.manifestMediaType, MEDIA.dockerManifest);
  await assertServed(reg, docker, 'v2');
  // A 'tar' layer is a real gzip'd tar whose uncompressed digest is the config's diff_id.
  const layer = await registryFetch(`${reg.url}/v2/lib/docker/blobs/${docker.layers[0]?.digest ?? ''}`);
  const tar = gunzipSync(layer.body);
  assert.equal(sha256Digest(tar), docker.layers[0]?.diffId);
  const config = JSON.parse(docker.config.toString()) as { rootfs: { diff_ids: string[] } };
  assert.deepEqual(config.rootfs.diff_ids, [docker.layers[0]?.diffId]);
  // headers, padding and the end blocks: a few KiB over the file size at most.
  assert.ok(layer.body.length > 50_000 && layer.body.length < 50_000 + 4096, `layer size ${layer.body.length}`);
  const dir = await tempDir('images-test');
  t.after(() => removeDir(dir));
  await writeFile(join(dir, 'layer.tgz'), layer.body);
  const listing = await runOk('tar', ['-tzvf', join(dir, 'layer.tgz')]);
  assert.match(listing.stdout, /50000 .*data\/random\.bin/);

  // Shared layers and re-pushing a built image keep every digest.
  const child = await pushRandomImage(reg.host, 'lib/child:v1', { layers: [{ reuse: oci.layers[0] ?? assert.fail() }, 777] });
  assert.equal(child.layers[0]?.digest, oci.layers[0]?.digest);
  await assertServed(reg, child, 'v1');
  const copy = await pushBuiltImage(oci, reg.host, 'other/place:copy');
  assert.equal(copy.manifestDigest, oci.manifestDigest);
  assert.equal(copy.repo, 'other/place');
  await assertServed(reg, copy, 'copy');
});

void test('pushIndex: OCI index and Docker manifest list with their children', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  for (const format of ['oci', 'docker'] as const) {
    const idx = await pushIndex(
      reg.host,
      `multi/${format}:1.0`,
      [
        { os: 'linux', architecture: 'amd64', layers: [4000] },
        { os: 'linux', architecture: 'arm64', variant: 'v8', layers: [5000, 6000] },
      ],
      { format },
    );
    assert.equal(idx.indexMediaType, format === 'oci' ? MEDIA.ociIndex : MEDIA.dockerList);
    const m = await manifestByTag(reg, `multi/${format}`, '1.0');
    assert.equal(sha256Digest(m.body), idx.indexDigest);
    assert.equal(m.headers.get('content-type'), idx.indexMediaType);
    const parsed = JSON.parse(m.body.toString()) as { manifests: { digest: string; platform: { architecture: string; variant?: string } }[] };
    assert.deepEqual(parsed.manifests.map((x) => [x.digest, x.platform.architecture, x.platform.variant]), [
      [idx.children[0]?.manifestDigest, 'amd64', undefined],
      [idx.children[1]?.manifestDigest, 'arm64', 'v8'],
    ]);
    for (const c of idx.children) {
      assert.equal(c.tag, '');
      assert.equal(c.ref, `${reg.host}/multi/${format}@${c.manifestDigest}`);
      await assertServed(reg, c, c.manifestDigest);
    }
  }
});

void test('pushRunnableImage: one tar layer with busybox and /bin/sh', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  const img = await pushRunnableImage(reg.host, 'library/busybox:test');
  await assertServed(reg, img, 'test');
  const layer = await registryFetch(`${reg.url}/v2/library/busybox/blobs/${img.layers[0]?.digest ?? ''}`);
  const tar = gunzipSync(layer.body);
  assert.equal(`sha256:${createHash('sha256').update(tar).digest('hex')}`, img.layers[0]?.diffId);
  const dir = await tempDir('runnable-test');
  t.after(() => removeDir(dir));
  await writeFile(join(dir, 'layer.tar'), tar);
  await runOk('tar', ['-xf', join(dir, 'layer.tar'), '-C', dir]);
  // The extracted rootfs really runs: chroot into it and ask sh for something.
  const r = await runOk('chroot', [dir, '/bin/sh', '-c', 'echo ok from $(uname -s)']);
  assert.equal(r.stdout, 'ok from Linux\n');
});

void test('pushRandomImage with credentials to a token-auth registry', async (t) => {
  const reg = await startRegistry({ auth: { kind: 'token', users: { ci: 'pw' } } });
  t.after(() => reg.close());
  await assert.rejects(pushRandomImage(reg.host, 'priv/app:v1', { layers: [100] }), /skopeo[\s\S]*(unauthorized|denied|authentication required)/i);
  const img = await pushRandomImage(reg.host, 'priv/app:v1', { layers: [100], creds: { username: 'ci', password: 'pw' } });
  assert.ok(reg.token?.requests().some((r) => r.authorizedUser === 'ci' && r.scope.includes('priv/app:pull,push')));
  const m = await registryFetch(`${reg.url}/v2/priv/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(sha256Digest(m.body), img.manifestDigest);
});
