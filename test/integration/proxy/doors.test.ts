// Both doors share one cache: a blob pulled through the HTTP door and the proxy door at once is fetched from
// the upstream once; the CA is served at /_relais/ca.crt and printed by `relais ca`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { run, runOk } from '../../peers/proc.js';
import { mkdir } from 'node:fs/promises';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { fetchThrough } from '../../peers/proxy-client.js';
import { skopeoCopyToDir, writeCertDir, writeRegistriesConf } from '../../peers/skopeo.js';
import { podmanPull } from '../../peers/podman.js';
import { startDockerd } from '../../peers/dockerd.js';
import { readFile } from 'node:fs/promises';

let up: RegistryPeer;
let relais: RelaisPeer;
let img: BuiltImage;

before(async () => {
  up = await startRegistry();
  img = await pushRandomImage(up.host, 'owner/big:1', { layers: [8_000_000] });
  relais = await startRelais({ upstreams: { 'ghcr.io': up.url }, config: { upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] } }, proxy: { listen: '127.0.0.1:0' } } });
});

after(async () => {
  await relais.close();
  await up.close();
});

test('one blob, pulled through the HTTP door and the proxy door concurrently: one upstream GET, both verified', async () => {
  const p = relais.instance.proxy;
  assert.ok(p);
  const layer = img.layers[0]?.digest ?? '';
  up.clearLog();
  const [a, b, c] = await Promise.all([
    fetch(`${relais.url}/v2/ghcr.io/owner/big/blobs/${layer}`).then(async (r) => Buffer.from(await r.arrayBuffer())),
    fetchThrough(p.port, 'ghcr.test', p.ca.certPem, `/v2/owner/big/blobs/${layer}`).then((r) => r.body),
    fetchThrough(p.port, 'ghcr.test', p.ca.certPem, `/v2/owner/big/blobs/${layer}`).then((r) => r.body),
  ]);
  for (const body of [a, b, c]) assert.equal(`sha256:${createHash('sha256').update(body).digest('hex')}`, layer);
  await up.settle();
  assert.equal(up.blobGets(layer), 1, 'one upstream GET for both doors');
});

test('the CA: GET /_relais/ca.crt (no admin needed) and `relais ca` print the same certificate', async () => {
  const p = relais.instance.proxy;
  assert.ok(p);
  const served = await (await fetch(`${relais.url}/_relais/ca.crt`)).text();
  assert.equal(served, p.ca.certPem);
  const cfg = join(relais.dataDir, 'relais-ca-test.yaml');
  await writeFile(cfg, `upstreams:\n  ghcr.io:\n    url: ${up.url}\n    hosts: [ghcr.test]\n`);
  const cli = await runOk(process.execPath, ['dist/src/cli/main.js', 'ca', '--config', cfg, '--data', relais.dataDir]);
  assert.equal(cli.stdout, p.ca.certPem);
  assert.doesNotMatch(served + cli.stdout, /PRIVATE KEY/);
});

test('skopeo through the same proxy (HTTPS_PROXY, relais CA in --src-cert-dir): copy verified, no extra upstream blob GET', async () => {
  const p = relais.instance.proxy;
  assert.ok(p);
  const certs = join(relais.dataDir, 'skopeo-certs');
  await mkdir(certs, { recursive: true });
  await writeFile(join(certs, 'relais-ca.crt'), p.ca.certPem);
  up.clearLog();
  const out = join(relais.dataDir, 'skopeo-out');
  const r = await run('skopeo', ['copy', '--src-cert-dir', certs, 'docker://ghcr.test/owner/big:1', `dir:${out}`], { timeoutMs: 120_000, extraEnv: { HTTPS_PROXY: p.url } });
  assert.equal(r.code, 0, r.stderr);
  const reqs = relais.logs().filter((l) => l.msg === 'request' && l.upstream === 'ghcr.io' && String(l.path) === '/v2/owner/big/manifests/1');
  assert.ok(reqs.length > 0, 'skopeo came through the proxy door');
  await up.settle();
  assert.equal(up.blobGets(img.layers[0]?.digest ?? ''), 0, 'the layer was cached by the first test');
});

test('mixed load on one new image: HTTP-door clients (dockerd registry-mirrors, skopeo mirror, curl) and proxy-door clients (skopeo, podman, curl) at once: one upstream GET per blob', async (t) => {
  const p = relais.instance.proxy;
  assert.ok(p);
  // A new image: nothing of it cached yet. 'tar' layers, so podman can unpack them.
  const mixed = await pushRandomImage(up.host, 'owner/mixed:1', { layers: [{ size: 6_000_000, kind: 'tar' }, { size: 3_000_000, kind: 'tar' }, { size: 1_000_000, kind: 'tar' }] });
  const blobs = [mixed.configDigest, ...mixed.layers.map((l) => l.digest)];
  const big = mixed.layers[0]?.digest ?? '';
  const work = join(relais.dataDir, 'mixed');
  await mkdir(work, { recursive: true });
  // HTTP door: registries.conf mirror with a path prefix (relais.example:5000/ghcr.io), plain HTTP.
  const conf = await writeRegistriesConf(work, [{ prefix: 'ghcr.io', mirror: `${relais.host}/ghcr.io` }]);
  // Proxy door: HTTPS_PROXY and relais's CA, image names unchanged (ghcr.test).
  const certs = await writeCertDir(join(work, 'certs'), p.ca.certPem);
  const caFile = join(certs, 'ca.crt');
  const proxyEnv = { HTTPS_PROXY: p.url };
  const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const curl = async (name: string, args: string[], env: Record<string, string> = {}): Promise<string> => {
    const out = join(work, `${name}.blob`);
    const r = await run('curl', ['-fsS', '-o', out, ...args], { timeoutMs: 120_000, extraEnv: env });
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    return sha(await readFile(out));
  };
  const skopeo = async (name: string, ref: string, opts: Parameters<typeof skopeoCopyToDir>[2]): Promise<string> => {
    const r = await skopeoCopyToDir(ref, join(work, name), opts);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    return sha(r.manifest ?? Buffer.alloc(0));
  };
  // dockerd with registry-mirrors (what docker:dind --registry-mirror does): Docker Hub names, which relais
  // routes to its default upstream (here the only one).
  const dockerd = await startDockerd({ mirrors: [relais.url], insecureRegistries: [relais.host] });
  t.after(() => dockerd.stop());
  up.clearLog();
  const started = performance.now();
  const results = await Promise.all([
    dockerd.dockerOk(['pull', 'owner/mixed:1']).then((r) => /Digest: (sha256:[0-9a-f]{64})/.exec(r.stdout)?.[1] ?? r.stdout),
    skopeo('http-skopeo-1', 'ghcr.io/owner/mixed:1', { registriesConf: conf }),
    skopeo('http-skopeo-2', 'ghcr.io/owner/mixed:1', { registriesConf: conf }),
    curl('http-curl', [`${relais.url}/v2/ghcr.io/owner/mixed/blobs/${big}`]),
    skopeo('proxy-skopeo-1', 'ghcr.test/owner/mixed:1', { certDir: certs, env: proxyEnv }),
    skopeo('proxy-skopeo-2', 'ghcr.test/owner/mixed:1', { certDir: certs, env: proxyEnv }),
    podmanPull('ghcr.test/owner/mixed:1', { certDir: certs, env: proxyEnv }).then((r) => {
      assert.equal(r.code, 0, `podman: ${r.stderr}`);
      return r.repoDigests?.some((d) => d.endsWith(`@${mixed.manifestDigest}`)) === true ? mixed.manifestDigest : `podman: ${JSON.stringify(r.repoDigests)}`;
    }),
    curl('proxy-curl-1', ['--proxy', p.url, '--cacert', caFile, `https://ghcr.test/v2/owner/mixed/blobs/${big}`]),
    curl('proxy-curl-2', ['--proxy', p.url, '--cacert', caFile, `https://ghcr.test/v2/owner/mixed/blobs/${big}`]),
  ]);
  t.diagnostic(`9 clients (4 via the HTTP door, 5 via the proxy door), ${((mixed.totalBytes / 1e6)).toFixed(1)} MB image: ${(performance.now() - started).toFixed(0)} ms`);
  // Every client got the image (skopeo and podman verify every digest themselves) or the big layer.
  assert.deepEqual(results, [mixed.manifestDigest, mixed.manifestDigest, mixed.manifestDigest, big, mixed.manifestDigest, mixed.manifestDigest, mixed.manifestDigest, big, big]);
  // Both doors' requests reached relais's cache...
  const reqs = relais.logs().filter((l) => l.msg === 'request' && l.upstream === 'ghcr.io' && String(l.path).startsWith('/v2/'));
  assert.ok(reqs.some((l) => String(l.path).startsWith('/v2/ghcr.io/owner/mixed/')), 'HTTP door used');
  assert.ok(reqs.some((l) => String(l.path).startsWith('/v2/owner/mixed/')), 'proxy door used');
  // ...and the upstream saw exactly one GET per blob.
  await up.settle();
  for (const d of blobs) assert.equal(up.blobGets(d), 1, `upstream GETs of ${d}`);
});
