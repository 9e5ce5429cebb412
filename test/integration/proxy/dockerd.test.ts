// The HTTPS proxy door with the real dockerd 20.10 (issue 15): HTTPS_PROXY -> relais, relais's CA trusted
// with SSL_CERT_FILE (a bundle; never /etc), no registry-mirrors. Three registry names only relais knows,
// each mapped to a local distribution: docker pull, a BuildKit build (/usr/bin/docker 20.10, DOCKER_BUILDKIT=1)
// whose FROM lines come from two of them, and docker login + docker push to a token-auth upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { ctrPull } from '../../peers/ctr.js';
import { removeDir, run, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { registryFetch, MANIFEST_ACCEPT } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

let hub: RegistryPeer; // registry-1.docker.io
let ghcr: RegistryPeer; // ghcr.test
let gitlab: RegistryPeer & { token?: TokenIssuer }; // registry.gitlab.test, Docker-Hub-style tokens
let relais: RelaisPeer;
let dockerd: Dockerd;
let dir: string;
let alpine: BuiltImage;
let base: BuiltImage;
let tool: BuiltImage;

before(async () => {
  [hub, ghcr, gitlab] = await Promise.all([startRegistry(), startRegistry(), startRegistry({ auth: { kind: 'token' } })]);
  alpine = await pushRunnableImage(hub.host, 'library/alpine:3.20');
  base = await pushRunnableImage(ghcr.host, 'owner/base:1', { labels: { from: 'ghcr' } });
  tool = await pushRunnableImage(gitlab.host, 'team/tool:1', { labels: { from: 'gitlab' }, creds: { username: 'ci', password: 'secret' } });
  relais = await startRelais({
    upstreams: { 'docker.io': hub.url, 'ghcr.io': ghcr.url, 'registry.gitlab.test': gitlab.url },
    config: { upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] } }, proxy: { listen: '127.0.0.1:0' } },
  });
  const proxy = relais.instance.proxy;
  assert.ok(proxy, 'the proxy door is on');
  dir = await tempDir('proxy-dockerd');
  const bundle = join(dir, 'ca-bundle.crt');
  await writeFile(bundle, proxy.ca.certPem);
  dockerd = await startDockerd({ env: { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: bundle } });
});

after(async () => {
  await dockerd.stop();
  await relais.close();
  await Promise.all([hub.close(), ghcr.close(), gitlab.close()]);
  await removeDir(dir);
});

test('docker pull of three registries through the proxy door: each blob fetched from its upstream once', async () => {
  for (const r of [hub, ghcr, gitlab]) r.clearLog();
  await dockerd.dockerOk(['pull', 'alpine:3.20']);
  await dockerd.dockerOk(['pull', 'ghcr.test/owner/base:1']);
  await dockerd.dockerOk(['pull', 'registry.gitlab.test/team/tool:1']);
  const out = await dockerd.dockerOk(['run', '--rm', '--network', 'none', 'ghcr.test/owner/base:1', 'sh', '-c', 'echo ok-through-proxy']);
  assert.match(out.stdout, /ok-through-proxy/);
  // relais answered the reads itself: its request log has them, bound to the right upstream.
  const reqs = relais.logs().filter((l) => l.msg === 'request');
  assert.ok(reqs.some((l) => l.upstream === 'ghcr.io' && String(l.path) === '/v2/owner/base/manifests/1'), 'ghcr.test read served by relais');
  assert.ok(reqs.some((l) => l.upstream === 'docker.io' && String(l.path) === '/v2/library/alpine/manifests/3.20'), 'docker.io read served by relais');
  // The three images share their busybox layer (content-addressed: fetched once, from whichever came first);
  // each config is its own.
  for (const r of [hub, ghcr, gitlab]) await r.settle();
  for (const [r, img] of [
    [hub, alpine],
    [ghcr, base],
    [gitlab, tool],
  ] as const) {
    assert.equal(r.blobGets(img.configDigest), 1, `upstream GETs of the config ${img.configDigest}`);
  }
  const layer = alpine.layers[0]?.digest ?? '';
  assert.deepEqual([base, tool].map((i) => i.layers[0]?.digest), [layer, layer], 'one shared layer');
  assert.equal(hub.blobGets(layer) + ghcr.blobGets(layer) + gitlab.blobGets(layer), 1, 'the shared layer: one upstream GET in all');

  // Wiped images, pulled again: nothing from any upstream but the ping.
  await dockerd.dockerOk(['rmi', 'alpine:3.20', 'ghcr.test/owner/base:1', 'registry.gitlab.test/team/tool:1']);
  for (const r of [hub, ghcr, gitlab]) r.clearLog();
  await dockerd.dockerOk(['pull', 'alpine:3.20']);
  await dockerd.dockerOk(['pull', 'ghcr.test/owner/base:1']);
  await dockerd.dockerOk(['pull', 'registry.gitlab.test/team/tool:1']);
  for (const r of [hub, ghcr, gitlab]) {
    await r.settle();
    assert.equal(r.blobGets(), 0, 'warm pull: no blob from the upstream');
  }
});

test('BuildKit inside dockerd (DOCKER_BUILDKIT=1, /usr/bin/docker 20.10): FROM lines of two registries through the door', async () => {
  const ctx = join(dir, 'build');
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), 'FROM registry.gitlab.test/team/tool:1 AS tool\nFROM ghcr.test/owner/base:1\nCOPY --from=tool /etc/passwd /from-tool-passwd\n');
  // Not in the daemon's image store: BuildKit resolves and fetches them itself.
  await dockerd.docker(['rmi', 'ghcr.test/owner/base:1', 'registry.gitlab.test/team/tool:1']);
  ghcr.clearLog();
  gitlab.clearLog();
  const before = relais.logs().length;
  const r = await run('/usr/bin/docker', ['build', '--network', 'none', '-t', 'built:proxy', ctx], { timeoutMs: 180_000, extraEnv: { ...dockerd.env, DOCKER_BUILDKIT: '1' } });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${dockerd.log().slice(-3000)}`);
  const reqs = relais.logs().slice(before).filter((l) => l.msg === 'request');
  assert.ok(reqs.some((l) => l.upstream === 'ghcr.io' && String(l.path).startsWith('/v2/owner/base/manifests/')), 'BuildKit resolved ghcr.test through relais');
  assert.ok(reqs.some((l) => l.upstream === 'registry.gitlab.test' && String(l.path).startsWith('/v2/team/tool/manifests/')), 'BuildKit resolved registry.gitlab.test through relais');
  // Both images are cached already: their upstreams see no blob GET.
  await ghcr.settle();
  await gitlab.settle();
  assert.equal(ghcr.blobGets(), 0);
  assert.equal(gitlab.blobGets(), 0);
});

test('docker login + docker push to an intercepted token-auth upstream pass through the door verbatim', async () => {
  const issuer = gitlab.token;
  assert.ok(issuer);
  await dockerd.dockerOk(['login', '-u', 'ci', '--password-stdin', 'registry.gitlab.test'], { input: 'secret\n' });
  await dockerd.dockerOk(['tag', 'alpine:3.20', 'registry.gitlab.test/team/pushed:1']);
  gitlab.clearLog();
  const before = relais.logs().length;
  await dockerd.dockerOk(['push', 'registry.gitlab.test/team/pushed:1']);
  await gitlab.settle();
  // The upstream received the upload and the manifest, from the client's own token.
  assert.ok(gitlab.accessLog().some((e) => e.method === 'PUT' && e.path === '/v2/team/pushed/manifests/1' && e.status === 201), 'manifest PUT reached the upstream');
  assert.ok(issuer.requests().some((q) => q.scope.includes('repository:team/pushed:') && q.scope.includes('push') && q.authorizedUser === 'ci'), 'the client asked the token service for push with its own credentials');
  const forwarded = relais.logs().slice(before).filter((l) => l.msg === 'request' && l.upstream === 'registry.gitlab.test');
  assert.ok(forwarded.some((l) => l.method === 'PUT'), 'the push went through relais');
  // What was pushed is there for anyone with the upstream's credentials.
  const m = await registryFetch(`${gitlab.url}/v2/team/pushed/manifests/1`, { creds: { username: 'ci', password: 'secret' }, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200);
});

test("containerd's ctr through the same proxy (HTTPS_PROXY, relais CA in hosts.toml): pulled from relais's cache", async () => {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const caFile = join(dir, 'ca-bundle.crt');
  ghcr.clearLog();
  const before = relais.logs().length;
  const r = await ctrPull(dockerd.containerdSocket, 'ghcr.test/owner/base:1', {
    mirrors: { 'ghcr.test': { url: 'https://ghcr.test', ca: caFile } },
    servers: { 'ghcr.test': 'https://ghcr.test' },
    unpack: false,
    namespace: 'relais-proxy',
    env: { HTTPS_PROXY: proxy.url },
  });
  assert.equal(r.code, 0, r.stderr);
  const reqs = relais.logs().slice(before).filter((l) => l.msg === 'request' && l.upstream === 'ghcr.io');
  assert.ok(reqs.some((l) => String(l.path).startsWith('/v2/owner/base/manifests/1')), 'ctr came through the proxy door');
  await ghcr.settle();
  assert.equal(ghcr.blobGets(), 0, 'cached: no blob from the upstream');
});
