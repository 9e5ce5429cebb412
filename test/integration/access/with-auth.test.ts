// Passthrough upstreams next to relais's own `auth:` (docs/access.md, "How it combines"): on the HTTP door the
// Authorization header of a passthrough request is the upstream's (relais's permissions do not apply there,
// and a relais credential is never sent upstream); shared upstreams keep relais's rules; on the proxy door
// relais's auth is checked at CONNECT (Proxy-Authorization) and the upstream's inside the tunnel.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fetch } from 'undici';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { connectThrough, rawHttp } from '../../peers/proxy-client.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { MANIFEST_ACCEPT, registryFetch } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

const HOST = 'registry.gitlab.test';
const ALICE = { username: 'alice', password: 'alice-Wa-5g7h9j' };
const CI = { username: 'ci', password: 'ci-Wa-1q3w5e' };
const RELAIS_TOKEN = 'relais-runner-token-0123456789abcdef';
const OTHER_TOKEN = 'relais-other-token-fedcba9876543210';

let gitlab: RegistryPeer & { token?: TokenIssuer };
let issuer: TokenIssuer;
let shared: RegistryPeer;
let relais: RelaisPeer;
let img: BuiltImage;

before(async () => {
  [gitlab, shared] = await Promise.all([
    startRegistry({ auth: { kind: 'token', users: { alice: ALICE.password, ci: CI.password }, repositories: { 'team/private': ['alice', 'ci'] } } }),
    startRegistry(),
  ]);
  assert.ok(gitlab.token);
  issuer = gitlab.token;
  img = await pushRandomImage(gitlab.host, 'team/private:1', { layers: [2048], creds: CI });
  await pushRandomImage(shared.host, 'owner/public:1', { layers: [1024] });
  relais = await startRelais({
    upstreams: { 'ghcr.io': shared.url, [HOST]: gitlab.url },
    config: {
      upstreams: { [HOST]: { access: 'passthrough' } },
      auth: { tokens: { runner: RELAIS_TOKEN, other: OTHER_TOKEN }, anonymous: [], permissions: { runner: ['ghcr.io', HOST], other: ['ghcr.io'] } },
      proxy: { listen: '127.0.0.1:0' },
    },
  });
});

after(async () => {
  await relais.close();
  await Promise.all([gitlab.close(), shared.close()]);
});

const privateManifest = (): string => `${relais.url}/v2/${HOST}/team/private/manifests/1`;

test("HTTP door: the shared upstream keeps relais's auth; the passthrough one takes the upstream's credentials", async () => {
  // Shared: relais's token pulls, anonymous is challenged, an unknown credential is refused.
  const pub = `${relais.url}/v2/ghcr.io/owner/public/manifests/1`;
  assert.equal((await fetch(pub, { headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${RELAIS_TOKEN}` } })).status, 200);
  assert.equal((await fetch(pub, { headers: { accept: MANIFEST_ACCEPT } })).status, 401);
  assert.equal((await registryFetch(pub, { creds: ALICE, headers: { accept: MANIFEST_ACCEPT } })).status, 401, "alice's upstream credentials are not relais's");
  // Passthrough: alice's own credentials work although relais does not know her.
  const m = await registryFetch(privateManifest(), { creds: ALICE, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200);
  assert.ok(m.body.equals(img.manifest));
});

test('HTTP door: a relais credential is never sent upstream; with it the client is anonymous to the upstream (refused)', async () => {
  issuer.clearRequests();
  gitlab.clearLog();
  const r = await fetch(privateManifest(), { headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${RELAIS_TOKEN}` } });
  const body = Buffer.from(await r.arrayBuffer());
  assert.equal(r.status, 401);
  assert.ok(!body.includes(img.manifest));
  await gitlab.settle();
  const sent = gitlab.accessLog();
  assert.ok(sent.length > 0, 'the upstream was asked');
  // Every token request relais made for it was anonymous.
  assert.ok(issuer.requests().every((q) => q.authorizedUser === undefined), JSON.stringify(issuer.requests()));
});

/** One request inside a CONNECT tunnel that carried Proxy-Authorization. */
async function throughDoor(proxyAuthorization: string, path: string, authorization?: string): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const c = await connectThrough(proxy.port, `${HOST}:443`, { 'proxy-authorization': proxyAuthorization });
  assert.equal(c.status, 200, c.text);
  assert.ok(c.socket);
  const tunnel = c.socket;
  const t = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ socket: tunnel, servername: HOST, ca: proxy.ca.certPem, ALPNProtocols: ['http/1.1'] }, () => resolve(s));
    s.once('error', reject);
  });
  const extra = authorization === undefined ? '' : `Authorization: ${authorization}\r\n`;
  return rawHttp(t, `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nAccept: ${MANIFEST_ACCEPT}\r\n${extra}Connection: close\r\n\r\n`);
}

test("proxy door: relais's auth at CONNECT (407 without it, 403 without the permission), the upstream's inside the tunnel", async () => {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  assert.equal((await connectThrough(proxy.port, `${HOST}:443`)).status, 407);
  const other = await connectThrough(proxy.port, `${HOST}:443`, { 'proxy-authorization': `Basic ${Buffer.from(`other:${OTHER_TOKEN}`).toString('base64')}` });
  assert.equal(other.status, 403, 'relais permissions still apply at CONNECT');
  const runner = `Basic ${Buffer.from(`runner:${RELAIS_TOKEN}`).toString('base64')}`;
  // Inside: without the upstream's token, the upstream's own challenge; with alice's, the cached manifest.
  const anon = await throughDoor(runner, '/v2/team/private/manifests/1');
  assert.equal(anon.status, 401);
  assert.match(anon.headers['www-authenticate'] ?? '', /^Bearer realm=/);
  assert.ok(!anon.body.includes(img.manifest));
  const u = new URL(issuer.realm);
  u.searchParams.set('service', issuer.service);
  u.searchParams.set('scope', 'repository:team/private:pull');
  const tok = ((await (await fetch(u, { headers: { authorization: `Basic ${Buffer.from(`alice:${ALICE.password}`).toString('base64')}` } })).json()) as { token: string }).token;
  const m = await throughDoor(runner, '/v2/team/private/manifests/1', `Bearer ${tok}`);
  assert.equal(m.status, 200);
  assert.ok(m.body.equals(img.manifest));
});
