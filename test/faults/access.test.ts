// Item 11 of the fault issue: optional client authentication (htpasswd bcrypt users, static bearer tokens),
// per-upstream read permissions, admin endpoints guarded, private upstream credentials never reachable by
// anonymous clients. Real htpasswd (apache2-utils) and a real client (skopeo with --src-creds).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage, type BuiltImage } from '../peers/images.js';
import { runOk, tempDir, removeDir, run } from '../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../peers/registry.js';
import { startRelais, type RelaisPeer } from '../peers/relais.js';
import { errorCode, http, skopeoPull } from '../integration/core/helpers.js';
import { recordFault } from './report.js';

const CI_TOKEN = 'ci-token-0123456789abcdef';
let publicUp: RegistryPeer;
let privateUp: RegistryPeer;
let pubImg: BuiltImage;
let privImg: BuiltImage;
let relais: RelaisPeer;
let dir: string;

before(async () => {
  dir = await tempDir('relais-access');
  const htpasswd = join(dir, 'htpasswd');
  await runOk('htpasswd', ['-B', '-b', '-c', htpasswd, 'alice', 'alice-pw']);
  await runOk('htpasswd', ['-B', '-b', htpasswd, 'ops', 'ops-pw']);
  publicUp = await startRegistry();
  privateUp = await startRegistry({ auth: { kind: 'htpasswd', users: { robot: 'robot-secret' } } });
  pubImg = await pushRandomImage(publicUp.host, 'library/pub:v1', { layers: [50_000] });
  privImg = await pushRandomImage(privateUp.host, 'corp/secret:v1', { layers: [50_000], creds: { username: 'robot', password: 'robot-secret' } });
  relais = await startRelais({
    upstreams: { 'docker.io': publicUp.url, 'private.example': privateUp.url },
    config: {
      upstreams: { 'private.example': { username: 'robot', password: 'robot-secret' } },
      auth: {
        htpasswd,
        tokens: { 'ci-runner': CI_TOKEN },
        anonymous: ['docker.io'],
        permissions: { alice: ['docker.io'], 'ci-runner': ['*'], ops: ['*'] },
        admins: ['ops'],
      },
    },
  });
});

after(async () => {
  await relais.close();
  await publicUp.close();
  await privateUp.close();
  await removeDir(dir);
});

const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

test('anonymous clients pull from the public upstream but never reach the private one (and its credentials)', async () => {
  const ok = await skopeoPull(relais.host, 'library/pub:v1');
  assert.ok(ok.files.has(pubImg.layers[0]?.digest ?? ''));
  privateUp.clearLog();
  const denied = await http(`${relais.url}/v2/private.example/corp/secret/manifests/v1`);
  assert.equal(denied.status, 401);
  assert.equal(errorCode(denied), 'UNAUTHORIZED');
  assert.match(String(denied.headers['www-authenticate']), /^Basic realm="relais"$/);
  const byDigest = await http(`${relais.url}/v2/private.example/corp/secret/blobs/${privImg.layers[0]?.digest ?? ''}`);
  assert.equal(byDigest.status, 401);
  await privateUp.settle();
  assert.equal(privateUp.accessLog().length, 0, 'the private upstream saw nothing from an anonymous client');
  recordFault({ group: '11 access control', fault: 'anonymous client asks for a private upstream (tag and digest)', client: 'undici; skopeo for the public pull', clientSaw: '401 UNAUTHORIZED with Basic challenge; public upstream pulls', upstreamSaw: 'private upstream: 0 requests', onDisk: 'nothing' });
});

test('htpasswd users and bearer tokens, with per-upstream permissions', async () => {
  const alice = await http(`${relais.url}/v2/private.example/corp/secret/manifests/v1`, { headers: { authorization: basic('alice', 'alice-pw') } });
  assert.equal(alice.status, 403);
  assert.equal(errorCode(alice), 'DENIED');
  const wrong = await http(`${relais.url}/v2/library/pub/manifests/v1`, { headers: { authorization: basic('alice', 'nope') } });
  assert.equal(wrong.status, 401);
  const badToken = await http(`${relais.url}/v2/library/pub/manifests/v1`, { headers: { authorization: 'Bearer not-the-token' } });
  assert.equal(badToken.status, 401);
  const token = await http(`${relais.url}/v2/private.example/corp/secret/manifests/v1`, { headers: { authorization: `Bearer ${CI_TOKEN}` } });
  assert.equal(token.status, 200);
  assert.equal(token.headers['docker-content-digest'], privImg.manifestDigest);
  // a real client with credentials (skopeo logs in with Basic after the /v2/ challenge)
  const pulled = await skopeoPull(relais.host, 'private.example/corp/secret:v1', ['--src-creds', 'ops:ops-pw']);
  assert.ok(pulled.files.has(privImg.layers[0]?.digest ?? ''));
  const denied = await run('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', '--creds', 'alice:alice-pw', `docker://${relais.host}/private.example/corp/secret:v1`]);
  assert.notEqual(denied.code, 0, 'alice may not pull from the private upstream');
  recordFault({ group: '11 access control', fault: 'users (htpasswd -B) and static tokens with per-upstream permissions', client: 'undici, skopeo --creds', clientSaw: 'wrong password/token 401; user without permission 403 DENIED; permitted token and user pull', upstreamSaw: 'private upstream contacted only for permitted principals', onDisk: '-' });
});

test('prepared responses for hot tags never skip an access decision', async () => {
  // A private tag pulled (and so made hot) with a token stays closed to anonymous clients.
  for (let i = 0; i < 3; i++) {
    const ok = await http(`${relais.url}/v2/private.example/corp/secret/manifests/v1`, { headers: { authorization: `Bearer ${CI_TOKEN}` } });
    assert.equal(ok.status, 200);
  }
  const anon = await http(`${relais.url}/v2/private.example/corp/secret/manifests/v1`);
  assert.equal(anon.status, 401);
  // A public tag that anonymous clients get from the prepared response still refuses wrong credentials.
  for (let i = 0; i < 3; i++) assert.equal((await http(`${relais.url}/v2/library/pub/manifests/v1`)).status, 200);
  assert.ok(relais.instance.hotManifests.size >= 1, 'the public tag is answered from a prepared response');
  const wrong = await http(`${relais.url}/v2/library/pub/manifests/v1`, { headers: { authorization: basic('alice', 'nope') } });
  assert.equal(wrong.status, 401);
  recordFault({ group: '11 access control', fault: 'hot tags (prepared responses) and access control', client: 'undici', clientSaw: 'private tag made hot by a token: anonymous 401; public hot tag with a wrong password: 401', upstreamSaw: '-', onDisk: '-' });
});

test('admin endpoints: anonymous 401, non-admin 403, admin allowed; metrics public', async () => {
  const anon = await http(`${relais.url}/_relais/status`);
  assert.equal(anon.status, 401);
  const user = await http(`${relais.url}/_relais/status`, { headers: { authorization: basic('alice', 'alice-pw') } });
  assert.equal(user.status, 403);
  const admin = await http(`${relais.url}/_relais/status`, { headers: { authorization: basic('ops', 'ops-pw') } });
  assert.notEqual(admin.status, 401);
  assert.notEqual(admin.status, 403);
  const page = await http(`${relais.url}/`);
  assert.equal(page.status, 401);
  const metrics = await http(`${relais.url}/metrics`);
  assert.notEqual(metrics.status, 401);
  const health = await http(`${relais.url}/healthz`);
  assert.equal(health.status, 200);
  recordFault({ group: '11 access control', fault: 'admin endpoints (/, /_relais/*) and /metrics with auth configured', client: 'undici', clientSaw: 'anonymous 401, non-admin 403, admin allowed; /metrics and /healthz public', upstreamSaw: '-', onDisk: '-' });
});

test('bad auth configuration refuses to start with a clear message', async () => {
  const htpasswd = join(dir, 'md5');
  await writeFile(htpasswd, 'bob:$apr1$abc$def\n');
  await assert.rejects(
    startRelais({ upstreams: { 'docker.io': publicUp.url }, config: { auth: { htpasswd } } }),
    /only bcrypt entries are supported/,
  );
  await assert.rejects(startRelais({ upstreams: { 'docker.io': publicUp.url }, config: { auth: { anonymous: ['quay.io'] } } }), /auth\.anonymous: "quay\.io" is not one of the upstreams/);
  await assert.rejects(startRelais({ upstreams: { 'docker.io': publicUp.url }, config: { auth: { tokens: { x: 'short' } } } }), /at least 16 characters/);
});
