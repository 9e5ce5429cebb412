// Real clients through one relais: dockerd as registry mirror (docker pull, docker run), containerd's ctr
// with hosts.toml for TWO upstreams (?ns=), podman and skopeo with a registries.conf path-prefix mirror.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pushRandomImage, pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { ctrPull } from '../../peers/ctr.js';
import { podmanPull } from '../../peers/podman.js';
import { skopeoCopyToDir, writeRegistriesConf } from '../../peers/skopeo.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

let hub: RegistryPeer; // stands in for Docker Hub
let ghcr: RegistryPeer; // stands in for ghcr.io
let relais: RelaisPeer;
let dockerd: Dockerd;
let alpine: BuiltImage;
let tool: BuiltImage;

before(async () => {
  [hub, ghcr] = await Promise.all([startRegistry(), startRegistry()]);
  alpine = await pushRunnableImage(hub.host, 'library/alpine:3.20');
  tool = await pushRandomImage(ghcr.host, 'owner/tool:v1', { layers: [600_000, 300_000] });
  relais = await startRelais({ upstreams: { 'docker.io': hub.url, 'ghcr.io': ghcr.url } });
  dockerd = await startDockerd({ mirrors: [relais.url], insecureRegistries: [relais.host] });
});

after(async () => {
  await dockerd.stop();
  await relais.close();
  await hub.close();
  await ghcr.close();
});

const blobs = (img: BuiltImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];

test('dockerd with registry-mirrors: docker pull and docker run through relais; second pull fetches nothing upstream', async () => {
  hub.clearLog();
  await dockerd.dockerOk(['pull', 'alpine:3.20']);
  const out = await dockerd.dockerOk(['run', '--rm', '--network', 'none', 'alpine:3.20', 'sh', '-c', 'echo ok-from-relais']);
  assert.match(out.stdout, /ok-from-relais/);
  const seen = relais.logs().filter((l) => l.msg === 'request').map((l) => String(l.path));
  assert.ok(seen.some((p) => p.startsWith('/v2/library/alpine/manifests/3.20')), 'dockerd asked the mirror');
  await hub.settle();
  for (const d of blobs(alpine)) assert.equal(hub.blobGets(d), 1, d);

  await dockerd.dockerOk(['rmi', 'alpine:3.20']);
  hub.clearLog();
  await dockerd.dockerOk(['pull', 'alpine:3.20']);
  await hub.settle();
  assert.equal(hub.blobGets(), 0, 'warm pull: nothing from the upstream');
});

test('upstream stopped: the cached image still pulls and runs with docker', async () => {
  await dockerd.dockerOk(['rmi', 'alpine:3.20']);
  await hub.stop();
  try {
    await dockerd.dockerOk(['pull', 'alpine:3.20']);
    const out = await dockerd.dockerOk(['run', '--rm', '--network', 'none', 'alpine:3.20', 'sh', '-c', 'echo still-here']);
    assert.match(out.stdout, /still-here/);
  } finally {
    await hub.start();
  }
});

test('containerd (ctr --hosts-dir): two upstreams through one relais, routed by ?ns=', async () => {
  hub.clearLog();
  ghcr.clearLog();
  const mirrors = { 'docker.io': relais.url, 'ghcr.io': relais.url };
  const a = await ctrPull(dockerd.containerdSocket, 'docker.io/library/alpine:3.20', { mirrors, unpack: false, namespace: 'relais-ctr' });
  assert.equal(a.code, 0, a.stderr);
  const b = await ctrPull(dockerd.containerdSocket, 'ghcr.io/owner/tool:v1', { mirrors, unpack: false, namespace: 'relais-ctr' });
  assert.equal(b.code, 0, b.stderr);
  const paths = relais.logs().filter((l) => l.msg === 'request').map((l) => String(l.path));
  assert.ok(paths.some((p) => p.includes('/v2/owner/tool/manifests/v1?ns=ghcr.io')), 'ghcr.io request routed by ns');
  assert.ok(paths.some((p) => p.includes('?ns=docker.io')), 'docker.io request carries ns');
  await ghcr.settle();
  for (const d of blobs(tool)) assert.equal(ghcr.blobGets(d), 1, `ghcr.io upstream GETs of ${d}`);
  const toolLayer = tool.layers[0]?.digest ?? '';
  assert.equal(hub.accessLog().filter((e) => e.path.includes(toolLayer)).length, 0, 'the other upstream was never asked');
});

test('podman and skopeo with a registries.conf path-prefix mirror (/v2/ghcr.io/...)', async () => {
  const dir = await tempDir('regconf');
  try {
    const conf = await writeRegistriesConf(dir, [{ prefix: 'ghcr.io', location: 'ghcr.io', mirror: `${relais.host}/ghcr.io`, insecure: true }]);
    const img = await pushRandomImage(ghcr.host, 'owner/other:v2', { layers: [200_000] });
    ghcr.clearLog();
    const out = await tempDir('skopeo-out');
    const s = await skopeoCopyToDir('ghcr.io/owner/other:v2', out, { registriesConf: conf });
    await removeDir(out);
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual(s.manifest, img.manifest);
    // podman unpacks layers, so this image has real tar layers
    const tarImg = await pushRandomImage(ghcr.host, 'owner/unpackable:v1', { layers: [100_000], layerKind: 'tar' });
    const p = await podmanPull('ghcr.io/owner/unpackable:v1', { registriesConf: conf });
    assert.equal(p.code, 0, p.stderr);
    assert.ok(p.repoDigests?.some((d) => d.endsWith(tarImg.manifestDigest)), `podman got ${JSON.stringify(p.repoDigests)}`);
    const paths = relais.logs().filter((l) => l.msg === 'request').map((l) => String(l.path));
    assert.ok(paths.some((x) => x.startsWith('/v2/ghcr.io/owner/other/manifests/v2')), 'path-prefixed request');
    await ghcr.settle();
    assert.equal(ghcr.blobGets(img.layers[0]?.digest), 1);
  } finally {
    await removeDir(dir);
  }
});
