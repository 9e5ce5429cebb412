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
