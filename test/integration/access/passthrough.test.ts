// Passthrough upstreams (issue 16 item 1; docs/access.md): a token-auth distribution whose token service grants
// `team/private` to alice (and ci, who pushed it) only. alice pulls through relais on the HTTP door (skopeo
// --src-creds) and on the proxy door (a Bearer token from the upstream's own token service); bob, whose token
// carries no right on team/private, and anonymous clients get 401/403 and zero bytes of what alice's pulls
// cached, and the token service saw bob's request. A shared upstream keeps serving cached content without an
// upstream round trip. Neither passwords nor tokens end up in the data directory, the logs or /metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fetch } from 'undici';
import { pushRunnableImage, pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { fetchThrough } from '../../peers/proxy-client.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { MANIFEST_ACCEPT, registryFetch } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { skopeoCopyToDir } from '../../peers/skopeo.js';

const ALICE = { username: 'alice', password: 'alice-Pw-7f3k2q9x' };
const BOB = { username: 'bob', password: 'bob-Pw-m4n8v1z6' };
const CI = { username: 'ci', password: 'ci-Pw-h2j5k8l0' };
const HOST = 'registry.gitlab.test';

let gitlab: RegistryPeer & { token?: TokenIssuer };
let shared: RegistryPeer;
let issuer: TokenIssuer;
let relais: RelaisPeer;
let dir: string;
let img: BuiltImage;
let pub: BuiltImage;
/** Every bearer token handed out in these tests: none may be stored or logged. */
const tokens: string[] = [];

before(async () => {
  [gitlab, shared] = await Promise.all([
    startRegistry({ auth: { kind: 'token', users: { alice: ALICE.password, bob: BOB.password, ci: CI.password }, repositories: { 'team/private': ['alice', 'ci'] } } }),
    startRegistry(),
  ]);
  assert.ok(gitlab.token);
  issuer = gitlab.token;
  img = await pushRunnableImage(gitlab.host, 'team/private:1', { creds: CI, labels: { secret: 'private' } });
  pub = await pushRandomImage(shared.host, 'owner/public:1', { layers: [4096] });
  relais = await startRelais({
    upstreams: { 'ghcr.io': shared.url, [HOST]: gitlab.url },
    config: { upstreams: { [HOST]: { access: 'passthrough' } }, proxy: { listen: '127.0.0.1:0' } },
  });
  dir = await tempDir('passthrough');
});

after(async () => {
  await relais.close();
  await Promise.all([gitlab.close(), shared.close()]);
  await removeDir(dir);
});

/** A token from the upstream's token service, as docker gets one before pulling through the proxy door. */
async function tokenFor(creds: { username: string; password: string } | undefined, repo = 'team/private'): Promise<string> {
  const u = new URL(issuer.realm);
  u.searchParams.set('service', issuer.service);
  u.searchParams.set('scope', `repository:${repo}:pull`);
  const res = await fetch(u, creds ? { headers: { authorization: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` } } : {});
  assert.equal(res.status, 200);
  const t = ((await res.json()) as { token: string }).token;
  tokens.push(t);
  return t;
}

const privateUrl = (kind: 'manifests' | 'blobs', ref: string): string => `${relais.url}/v2/${HOST}/team/private/${kind}/${ref}`;

/** A response that carries none of the private image's bytes. */
function assertNoPrivateBytes(body: Buffer, what: string): void {
  assert.ok(!body.includes(img.manifest), `${what}: no manifest bytes`);
  assert.ok(!body.includes(img.config), `${what}: no config bytes`);
  assert.ok(body.length < 2048, `${what}: an error body only (${body.length} bytes)`);
}

test('HTTP door: alice pulls with her own credentials (skopeo --src-creds); her second pull is served from the cache', async () => {
  gitlab.clearLog();
  issuer.clearRequests();
  const r = await skopeoCopyToDir(`${relais.host}/${HOST}/team/private:1`, join(dir, 'a1'), { creds: ALICE });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.manifest?.equals(img.manifest), 'the manifest as pushed');
  await gitlab.settle();
  assert.equal(gitlab.blobGets(img.configDigest), 1, 'config fetched once');
  assert.equal(gitlab.blobGets(img.layers[0]?.digest), 1, 'layer fetched once');
  // relais asked the token service with alice's credentials, never its own (it has none).
  const asked = issuer.requests().filter((q) => q.scope.includes('repository:team/private:pull'));
  assert.ok(asked.length > 0 && asked.every((q) => q.authorizedUser === 'alice'), JSON.stringify(asked));

  gitlab.clearLog();
  const again = await skopeoCopyToDir(`${relais.host}/${HOST}/team/private:1`, join(dir, 'a2'), { creds: ALICE });
  assert.equal(again.code, 0, again.stderr);
  await gitlab.settle();
  assert.equal(gitlab.blobGets(), 0, 'second pull: no blob from the upstream');
});

test('HTTP door: bob (no right on team/private) gets 403 and zero bytes, for the tag, the manifest digest and every blob (GET and HEAD)', async () => {
  issuer.clearRequests();
  const targets = [privateUrl('manifests', '1'), privateUrl('manifests', img.manifestDigest), privateUrl('blobs', img.configDigest), ...img.layers.map((l) => privateUrl('blobs', l.digest))];
  for (const url of targets) {
    for (const method of ['GET', 'HEAD']) {
      const r = await registryFetch(url, { method, creds: BOB, headers: { accept: MANIFEST_ACCEPT } });
      assert.equal(r.status, 403, `${method} ${url} as bob`);
      assertNoPrivateBytes(r.body, `${method} ${url}`);
      assert.equal(r.headers.get('docker-content-digest'), null, 'no digest confirmed');
      assert.equal(r.headers.get('content-length') === String(img.manifest.length), false);
    }
  }
  // The token service saw bob's own request, and granted him nothing on team/private.
  const bobs = issuer.requests().filter((q) => q.authorizedUser === 'bob' && q.scope.includes('repository:team/private:pull'));
  assert.ok(bobs.length > 0, 'the token service saw bob');
  assert.ok(bobs.every((q) => q.granted.every((g) => g.actions.length === 0)));
  // skopeo as bob fails.
  const sk = await skopeoCopyToDir(`${relais.host}/${HOST}/team/private:1`, join(dir, 'b1'), { creds: BOB });
  assert.notEqual(sk.code, 0);
});

test('HTTP door: a wrong password and anonymous clients are challenged (401 + WWW-Authenticate), with zero bytes', async () => {
  const wrong = await registryFetch(privateUrl('manifests', '1'), { creds: { username: 'alice', password: 'not-her-password' }, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(wrong.status, 401);
  assertNoPrivateBytes(wrong.body, 'wrong password');
  for (const url of [privateUrl('manifests', '1'), privateUrl('blobs', img.configDigest)]) {
    const anon = await registryFetch(url, { headers: { accept: MANIFEST_ACCEPT } });
    assert.equal(anon.status, 401, url);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    assertNoPrivateBytes(anon.body, `anonymous ${url}`);
  }
  // The ping challenges clients that sent nothing (so that they send their credentials), and lets the others on.
  const ping = await fetch(`${relais.url}/v2/`);
  assert.equal(ping.status, 401);
  const pingWith = await fetch(`${relais.url}/v2/`, { headers: { authorization: `Basic ${Buffer.from('bob:x').toString('base64')}` } });
  assert.equal(pingWith.status, 200);
});

test('proxy door: alice with a token of the upstream is served from the cache; bob and anonymous get 401 and zero bytes', async () => {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const ca = proxy.ca.certPem;
  const get = (path: string, authorization?: string, method = 'GET') =>
    fetchThrough(proxy.port, HOST, ca, path, { method, headers: { accept: MANIFEST_ACCEPT, ...(authorization === undefined ? {} : { authorization }) } });

  const alice = `Bearer ${await tokenFor(ALICE)}`;
  gitlab.clearLog();
  const m = await get('/v2/team/private/manifests/1', alice);
  assert.equal(m.status, 200, m.body.toString());
  assert.ok(m.body.equals(img.manifest));
  for (const d of [img.configDigest, ...img.layers.map((l) => l.digest)]) {
    const b = await get(`/v2/team/private/blobs/${d}`, alice);
    assert.equal(b.status, 200, d);
  }
  await gitlab.settle();
  assert.equal(gitlab.blobGets(), 0, 'cached: no blob from the upstream');
  assert.ok(gitlab.count('HEAD', /\/v2\/team\/private\/manifests\/1$/) >= 1, "the upstream confirmed alice's token (HEAD of the manifest)");

  issuer.clearRequests();
  const bob = `Bearer ${await tokenFor(BOB)}`;
  assert.ok(issuer.requests().some((q) => q.authorizedUser === 'bob'), 'the token service saw bob');
  for (const path of ['/v2/team/private/manifests/1', `/v2/team/private/manifests/${img.manifestDigest}`, `/v2/team/private/blobs/${img.configDigest}`, `/v2/team/private/blobs/${img.layers[0]?.digest ?? ''}`]) {
    for (const [who, authz] of [
      ['bob', bob],
      ['anonymous', undefined],
    ] as const) {
      const r = await get(path, authz);
      assert.equal(r.status, 401, `${who} GET ${path}`);
      assertNoPrivateBytes(r.body, `${who} GET ${path}`);
      // The upstream's own challenge, relayed: docker login / docker pull work as against the real registry.
      assert.match(r.headers['www-authenticate'] ?? '', new RegExp(`^Bearer realm="${issuer.realm}"`));
    }
  }
});

test('a shared upstream keeps its behaviour: cached requests cost no upstream round trip', async () => {
  const paths = [`/v2/ghcr.io/owner/public/manifests/1`, `/v2/ghcr.io/owner/public/blobs/${pub.configDigest}`, ...pub.layers.map((l) => `/v2/ghcr.io/owner/public/blobs/${l.digest}`)];
  for (const p of paths) assert.equal((await registryFetch(`${relais.url}${p}`, { headers: { accept: MANIFEST_ACCEPT } })).status, 200, p);
  await shared.settle();
  shared.clearLog();
  for (let i = 0; i < 3; i++) {
    for (const p of paths) {
      for (const method of ['GET', 'HEAD']) assert.equal((await registryFetch(`${relais.url}${p}`, { method, headers: { accept: MANIFEST_ACCEPT } })).status, 200, p);
    }
  }
  await shared.settle();
  assert.deepEqual(shared.accessLog().map((e) => `${e.method} ${e.path}`), [], 'no upstream request for cached content');
});

/** Every regular file under dir. */
async function files(d: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) out.push(...(await files(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

test('credentials never appear in the data directory, the logs or /metrics', async () => {
  assert.ok(tokens.length >= 2);
  const secrets = [ALICE.password, BOB.password, 'not-her-password', ...tokens, Buffer.from(`alice:${ALICE.password}`).toString('base64'), Buffer.from(`bob:${BOB.password}`).toString('base64')];
  const all = await files(relais.dataDir);
  assert.ok(all.length > 3, `the data directory holds files (${all.length})`);
  for (const f of all) {
    if ((await stat(f)).size > 64 * 1024 * 1024) continue;
    const bytes = await readFile(f);
    for (const s of secrets) assert.ok(!bytes.includes(s), `${f} holds a credential`);
  }
  const logs = JSON.stringify(relais.logs());
  assert.ok(logs.includes('team/private'), 'the logs cover the private pulls');
  for (const s of secrets) assert.ok(!logs.includes(s), 'the logs hold a credential');
  const metrics = await (await fetch(`${relais.url}/metrics`)).text();
  assert.ok(metrics.includes('relais_'), 'metrics served');
  // The gate's decisions are counted, by upstream and outcome only.
  for (const outcome of ['cached', 'confirmed', 'refused']) {
    assert.match(metrics, new RegExp(`relais_passthrough_checks_total\\{upstream="${HOST.replace(/\./g, '\\.')}",outcome="${outcome}"\\} [1-9]`), outcome);
  }
  for (const s of secrets) assert.ok(!metrics.includes(s), '/metrics holds a credential');
});
