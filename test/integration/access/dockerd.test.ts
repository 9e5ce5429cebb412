// A passthrough upstream through the proxy door with the real dockerd 20.10 (issue 16 item 1; docs/access.md):
// HTTPS_PROXY -> relais, relais's CA trusted with SSL_CERT_FILE. `docker login registry.gitlab.test` works as
// against the real registry (relais relays the upstream's own challenge); alice's pulls are served from relais,
// the second one with zero blob GETs upstream; bob, logged in on the same daemon, is refused with zero bytes,
// and the token service saw his request.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

const HOST = 'registry.gitlab.test';
const ALICE = { username: 'alice', password: 'alice-Dk-4r7t1y' };
const BOB = { username: 'bob', password: 'bob-Dk-9u3i5o' };
const CI = { username: 'ci', password: 'ci-Dk-2p6a8s' };

let gitlab: RegistryPeer & { token?: TokenIssuer };
let issuer: TokenIssuer;
let relais: RelaisPeer;
let dockerd: Dockerd;
let dir: string;
let img: BuiltImage;

before(async () => {
  gitlab = await startRegistry({ auth: { kind: 'token', users: { alice: ALICE.password, bob: BOB.password, ci: CI.password }, repositories: { 'team/private': ['alice', 'ci'] } } });
  assert.ok(gitlab.token);
  issuer = gitlab.token;
  img = await pushRunnableImage(gitlab.host, 'team/private:1', { creds: CI, labels: { secret: 'dockerd' } });
  relais = await startRelais({ upstreams: { [HOST]: gitlab.url }, config: { upstreams: { [HOST]: { access: 'passthrough' } }, proxy: { listen: '127.0.0.1:0' } } });
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  dir = await tempDir('passthrough-dockerd');
  const bundle = join(dir, 'ca-bundle.crt');
  await writeFile(bundle, proxy.ca.certPem);
  dockerd = await startDockerd({ env: { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: bundle } });
});

after(async () => {
  await dockerd.stop();
  await relais.close();
  await gitlab.close();
  await removeDir(dir);
});

test('docker login + docker pull of a private image through the proxy door: alice is served, her second pull from the cache; bob gets nothing', async () => {
  const ref = `${HOST}/team/private:1`;
  await dockerd.dockerOk(['login', '-u', ALICE.username, '--password-stdin', HOST], { input: `${ALICE.password}\n` });
  gitlab.clearLog();
  const before = relais.logs().length;
  await dockerd.dockerOk(['pull', ref]);
  const out = await dockerd.dockerOk(['run', '--rm', '--network', 'none', ref, 'sh', '-c', 'echo private-ok']);
  assert.match(out.stdout, /private-ok/);
  const served = relais.logs().slice(before).filter((l) => l.msg === 'request' && l.upstream === HOST && l.status === 200);
  assert.ok(served.some((l) => String(l.path) === '/v2/team/private/manifests/1'), 'relais served the manifest');
  await gitlab.settle();
  assert.equal(gitlab.blobGets(img.configDigest), 1);

  // Wiped, pulled again: the upstream confirms alice (a HEAD at most) and serves no blob.
  await dockerd.dockerOk(['rmi', ref]);
  gitlab.clearLog();
  await dockerd.dockerOk(['pull', ref]);
  await gitlab.settle();
  assert.equal(gitlab.blobGets(), 0, 'second pull: zero blob GETs upstream');
  assert.equal(gitlab.manifestGets(), 0, 'second pull: no manifest GET upstream');

  // bob logs in on the same daemon (his credentials are valid at the token service) and asks for the same image.
  await dockerd.dockerOk(['rmi', ref]);
  await dockerd.dockerOk(['logout', HOST]);
  await dockerd.dockerOk(['login', '-u', BOB.username, '--password-stdin', HOST], { input: `${BOB.password}\n` });
  issuer.clearRequests();
  const mark = relais.logs().length;
  const pull = await dockerd.docker(['pull', ref]);
  assert.notEqual(pull.code, 0, 'bob may not pull');
  assert.match(`${pull.stdout}\n${pull.stderr}`, /denied|unauthorized|authentication required/i);
  const bobs = relais.logs().slice(mark).filter((l) => l.msg === 'request' && l.upstream === HOST && /\/(manifests|blobs)\//.test(String(l.path)));
  assert.ok(bobs.length > 0, "bob's requests reached relais");
  for (const l of bobs) {
    assert.ok(l.status === 401 || l.status === 403, `${String(l.method)} ${String(l.path)}: ${String(l.status)}`);
    assert.ok(l.bytes === undefined || l.bytes === 0, `${String(l.path)}: zero bytes (${String(l.bytes)})`);
  }
  const seen = issuer.requests().filter((q) => q.authorizedUser === 'bob' && q.scope.includes('repository:team/private:pull'));
  assert.ok(seen.length > 0, 'the token service saw bob');
  const images = await dockerd.docker(['image', 'inspect', ref]);
  assert.notEqual(images.code, 0, 'no image for bob');
});
