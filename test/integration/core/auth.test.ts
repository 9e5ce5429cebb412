// Upstream authentication against real distribution registries: htpasswd Basic and Bearer tokens.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { startRelais } from '../../peers/relais.js';
import { errorCode, http, sha256, skopeoPull } from './helpers.js';

const users = { ci: 'pa55-w0rd!' };
let basic: RegistryPeer;
let tokenReg: RegistryPeer & { token?: TokenIssuer };
let basicImg: BuiltImage;
let tokenImg: BuiltImage;

before(async () => {
  basic = await startRegistry({ auth: { kind: 'htpasswd', users } });
  tokenReg = await startRegistry({ auth: { kind: 'token', users } });
  basicImg = await pushRandomImage(basic.host, 'team/app:v1', { layers: [200_000], creds: { username: 'ci', password: users.ci } });
  tokenImg = await pushRandomImage(tokenReg.host, 'team/app:v1', { layers: [200_000, 100_000], creds: { username: 'ci', password: users.ci } });
});

after(async () => {
  await basic.close();
  await tokenReg.close();
});

test('Basic auth upstream: configured credentials pull; without them the client gets NAME_UNKNOWN and no secret leaks', async () => {
  const r = await startRelais({
    upstreams: { 'docker.io': 'http://127.0.0.1:1', 'private.example': basic.url },
    config: { upstreams: { 'private.example': { username: 'ci', password: users.ci } } },
  });
  const anon = await startRelais({ upstreams: { 'private.example': basic.url } });
  try {
    const pulled = await skopeoPull(r.host, 'private.example/team/app:v1');
    assert.ok(pulled.files.has(basicImg.layers[0]?.digest ?? ''));
    const denied = await http(`${anon.url}/v2/team/app/manifests/v1`);
    assert.equal(denied.status, 404);
    assert.equal(errorCode(denied), 'NAME_UNKNOWN');
    assert.ok(!denied.body.toString().includes(users.ci));
    // The client's own Authorization never goes upstream: sending the right password to relais does not help.
    const withClientAuth = await http(`${anon.url}/v2/team/app/manifests/v1`, { headers: { authorization: `Basic ${Buffer.from(`ci:${users.ci}`).toString('base64')}` } });
    assert.equal(withClientAuth.status, 404);
    const allLogs = JSON.stringify([...r.logs(), ...anon.logs()]);
    assert.ok(!allLogs.includes(users.ci), 'password never logged');
    assert.ok(!allLogs.includes(Buffer.from(`ci:${users.ci}`).toString('base64')), 'basic credentials never logged');
  } finally {
    await r.close();
    await anon.close();
  }
});

test('Bearer token upstream: anonymous and with credentials; tokens cached per scope', async () => {
  const issuer = tokenReg.token;
  assert.ok(issuer, 'token registry has an issuer');
  const r = await startRelais({
    upstreams: { 'tok.example': tokenReg.url },
    config: { upstreams: { 'tok.example': { username: 'ci', password: users.ci } } },
  });
  try {
    issuer.clearRequests();
    tokenReg.clearLog();
    const pulls = await Promise.all([1, 2, 3].map(() => skopeoPull(r.host, 'team/app:v1')));
    for (const p of pulls) for (const l of tokenImg.layers) assert.ok(p.files.has(l.digest));
    const scopes = issuer.requests().map((q) => q.scope);
    assert.ok(scopes.length >= 1 && scopes.length <= 2, `token requests: ${JSON.stringify(scopes)}`);
    assert.ok(scopes.every((s) => s === 'repository:team/app:pull'), `scopes ${JSON.stringify(scopes)}`);
    assert.equal(issuer.requests()[0]?.authorizedUser, 'ci');
    const m = await http(`${r.url}/v2/team/app/manifests/${tokenImg.manifestDigest}`);
    assert.equal(sha256(m.body), tokenImg.manifestDigest);
    const again = issuer.requests().length;
    await skopeoPull(r.host, 'team/app:v1');
    assert.equal(issuer.requests().length, again, 'cached token reused');
  } finally {
    await r.close();
  }
  const anon = await startRelais({ upstreams: { 'tok.example': tokenReg.url } });
  try {
    issuer.clearRequests();
    const p = await skopeoPull(anon.host, 'team/app:v1');
    assert.ok(p.files.has(tokenImg.layers[1]?.digest ?? ''));
    assert.ok(issuer.requests().length >= 1);
    assert.equal(issuer.requests()[0]?.authorizedUser, undefined, 'anonymous token');
  } finally {
    await anon.close();
  }
});
