// Self-test of the distribution peer: plain, htpasswd and token auth, access-log counts, restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Agent, fetch as undiciFetch } from 'undici';
import { pushRandomImage } from '../../peers/images.js';
import { runOk } from '../../peers/proc.js';
import { skopeoInspect, writeCertDir } from '../../peers/skopeo.js';
import { join } from 'node:path';
import { startRegistry, parseAccessLogLine } from '../../peers/registry.js';
import { MANIFEST_ACCEPT, pushBlob, putManifest, registryFetch, sha256Digest } from '../../peers/registry-client.js';

/** A scope with its actions sorted: repository:NAME:push,pull and repository:NAME:pull,push are one scope. */
function normalizeScope(scope: string | undefined): string | undefined {
  if (scope === undefined) return undefined;
  const i = scope.lastIndexOf(':');
  return `${scope.slice(0, i + 1)}${scope.slice(i + 1).split(',').sort().join(',')}`;
}


const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Pushes a one-layer OCI image with raw HTTP; returns its digests. */
async function pushTiny(url: string, repo: string, tag: string, creds?: { username: string; password: string }) {
  const layer = randomBytes(3000);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] } }));
  const layerDigest = await pushBlob(url, repo, layer, creds);
  const configDigest = await pushBlob(url, repo, config, creds);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
    }),
  );
  const manifestDigest = await putManifest(url, repo, tag, manifest, OCI_MANIFEST, creds);
  return { layer, layerDigest, manifest, manifestDigest };
}

void test('parseAccessLogLine reads distribution combined lines', () => {
  const e = parseAccessLogLine('127.0.0.1 - - [27/Nov/2026:20:56:52 +0000] "GET /v2/foo/manifests/x?ns=docker.io HTTP/1.1" 404 91 "" "curl/7.88.1"');
  assert.deepEqual(
    { ...e, line: undefined },
    { method: 'GET', path: '/v2/foo/manifests/x', uri: '/v2/foo/manifests/x?ns=docker.io', query: 'ns=docker.io', status: 404, bytes: 91, userAgent: 'curl/7.88.1', line: undefined },
  );
  assert.equal(parseAccessLogLine('time="..." level=error msg="x"'), null);
});

void test('plain registry: push, pull by tag, exact access-log counts, restart keeps data and log', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  assert.match(reg.host, /^127\.0\.0\.1:\d+$/);
  const img = await pushTiny(reg.url, 'library/tiny', 'v1');
  assert.equal(img.manifestDigest, sha256Digest(img.manifest));
  reg.clearLog();
  assert.deepEqual(reg.accessLog(), []);

  const m = await registryFetch(`${reg.url}/v2/library/tiny/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200);
  assert.equal(sha256Digest(m.body), img.manifestDigest);
  const head = await registryFetch(`${reg.url}/v2/library/tiny/manifests/v1`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(head.headers.get('docker-content-digest'), img.manifestDigest);
  for (let i = 0; i < 3; i++) {
    const b = await registryFetch(`${reg.url}/v2/library/tiny/blobs/${img.layerDigest}`);
    assert.equal(b.status, 200);
    assert.ok(b.body.equals(img.layer));
  }
  const missing = await registryFetch(`${reg.url}/v2/library/tiny/blobs/${sha256Digest('nope')}`);
  assert.equal(missing.status, 404);
  await reg.settle();
  assert.equal(reg.manifestGets(), 1);
  assert.equal(reg.manifestHeads(), 1);
  assert.equal(reg.blobGets(img.layerDigest), 3);
  assert.equal(reg.blobGets(), 3, 'the 404 is not a blob GET');
  assert.equal(reg.count('GET', /\/blobs\//), 4);
  assert.equal(reg.count('*', /^\/v2\/library\/tiny\//), 6);
  const blobEntry = reg.accessLog().find((e) => e.path.endsWith(img.layerDigest));
  assert.equal(blobEntry?.bytes, img.layer.length);

  // Restart on the same port with the same data; the log carries on.
  await reg.stop();
  assert.equal(reg.running(), false);
  await assert.rejects(fetch(`${reg.url}/v2/`));
  await reg.start();
  const again = await registryFetch(`${reg.url}/v2/library/tiny/manifests/${img.manifestDigest}`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(again.status, 200);
  assert.equal(reg.manifestGets(), 2);
  reg.clearLog();
  assert.equal(reg.manifestGets(), 0);
});

void test('htpasswd registry: 401 without credentials, 200 with them', async (t) => {
  const reg = await startRegistry({ auth: { kind: 'htpasswd', users: { alice: 'wonderland' } } });
  t.after(() => reg.close());
  const creds = { username: 'alice', password: 'wonderland' };
  const img = await pushTiny(reg.url, 'team/app', '1.0', creds);
  reg.clearLog();
  const anon = await registryFetch(`${reg.url}/v2/team/app/manifests/1.0`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic realm="relais-test"/);
  const wrong = await registryFetch(`${reg.url}/v2/team/app/manifests/1.0`, { headers: { accept: MANIFEST_ACCEPT }, creds: { username: 'alice', password: 'no' } });
  assert.equal(wrong.status, 401);
  const ok = await registryFetch(`${reg.url}/v2/team/app/manifests/1.0`, { headers: { accept: MANIFEST_ACCEPT }, creds });
  assert.equal(ok.status, 200);
  assert.equal(sha256Digest(ok.body), img.manifestDigest);
  const statuses = reg.accessLog().map((e) => `${e.method} ${e.status}`);
  // anonymous: 401; wrong password: 401 then 401 with Basic; right password: 401 then 200.
  assert.deepEqual(statuses, ['GET 401', 'GET 401', 'GET 401', 'GET 401', 'GET 200']);
});

void test('token registry: bearer flow, anonymous gets pull only, the issuer records what it served', async (t) => {
  const reg = await startRegistry({ auth: { kind: 'token', users: { bob: 'builder' } } });
  t.after(() => reg.close());
  const issuer = reg.token;
  assert.ok(issuer !== undefined);
  const creds = { username: 'bob', password: 'builder' };
  const img = await pushTiny(reg.url, 'library/tok', 'latest', creds);
  assert.ok(issuer.requests().some((r) => r.authorizedUser === 'bob' && r.granted.some((g) => g.actions.includes('push'))));
  issuer.clearRequests();
  reg.clearLog();

  // Anonymous pull works (pull granted), and the challenge names the scope.
  const first = await fetch(`${reg.url}/v2/library/tok/manifests/latest`, { headers: { accept: MANIFEST_ACCEPT } });
  await first.arrayBuffer();
  assert.equal(first.status, 401);
  assert.match(first.headers.get('www-authenticate') ?? '', new RegExp(`Bearer realm="${issuer.realm}",service="test-registry",scope="repository:library/tok:pull"`));
  const anon = await registryFetch(`${reg.url}/v2/library/tok/manifests/latest`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(anon.status, 200);
  assert.equal(anon.tokenRequests, 1);
  assert.equal(sha256Digest(anon.body), img.manifestDigest);

  // Anonymous push is refused: the token only carries pull.
  const push = await registryFetch(`${reg.url}/v2/library/tok/blobs/uploads/`, { method: 'POST' });
  assert.equal(push.status, 401);
  // Wrong password: the issuer itself says 401.
  const bad = await registryFetch(`${reg.url}/v2/library/tok/manifests/latest`, { creds: { username: 'bob', password: 'x' } });
  assert.equal(bad.status, 401);

  const reqs = issuer.requests();
  assert.deepEqual(
    // skopeo asks for push,pull or pull,push from run to run: compare the actions as a set.
    reqs.map((r) => [normalizeScope(r.scope), r.authorizedUser, r.status, r.granted.map((g) => g.actions.join(',')).join(' ')]),
    [
      ['repository:library/tok:pull', undefined, 200, 'pull'],
      [normalizeScope('repository:library/tok:pull,push'), undefined, 200, 'pull'],
      ['repository:library/tok:pull', undefined, 401, ''],
    ],
  );
  // The registry saw: 401, 200 (manifest), 401, 401 (upload twice), 401 (bad creds never got a token).
  assert.equal(reg.manifestGets(), 4);
  assert.deepEqual(reg.accessLog().map((e) => e.status), [401, 401, 200, 401, 401, 401]);

  // The OAuth2 POST form containerd uses when it has credentials, then a refresh.
  issuer.clearRequests();
  const form = new URLSearchParams({ grant_type: 'password', username: 'bob', password: 'builder', service: 'test-registry', scope: 'repository:library/tok:pull,push', client_id: 'test' });
  const posted = (await (await fetch(issuer.realm, { method: 'POST', body: form })).json()) as { access_token: string; refresh_token: string };
  const refreshed = await fetch(issuer.realm, { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: posted.refresh_token, service: 'test-registry', scope: 'repository:library/tok:pull' }) });
  assert.equal(refreshed.status, 200);
  await refreshed.arrayBuffer();
  const withToken = await fetch(`${reg.url}/v2/library/tok/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${posted.access_token}` } });
  await withToken.arrayBuffer();
  assert.equal(withToken.status, 202, 'a password-grant token carries push');
  assert.deepEqual(issuer.requests().map((r) => [r.method, r.authorizedUser, r.status]), [['POST', 'bob', 200], ['POST', 'bob', 200]]);
});

void test('proxy-mode registry fetches from its upstream', async (t) => {
  const up = await startRegistry();
  t.after(() => up.close());
  const img = await pushTiny(up.url, 'library/prox', 'v1');
  const proxy = await startRegistry({ proxy: { remoteUrl: up.url } });
  t.after(() => proxy.close());
  up.clearLog();
  for (let i = 0; i < 2; i++) {
    const b = await registryFetch(`${proxy.url}/v2/library/prox/blobs/${img.layerDigest}`);
    assert.equal(b.status, 200);
    assert.ok(b.body.equals(img.layer));
  }
  await proxy.settle();
  await up.settle();
  assert.equal(proxy.blobGets(img.layerDigest), 2);
  // distribution 2.8's proxy is not one-fetch-per-blob (it was seen to GET this blob 3 times for
  // 2 sequential client GETs): only assert that the upstream served it, to the proxy's Go client.
  assert.ok(up.blobGets(img.layerDigest) >= 1);
  assert.ok(up.accessLog().every((e) => e.userAgent.startsWith('Go-http-client')));
});

void test('proxy-mode registry authenticates to a token-auth upstream with its configured credentials', async (t) => {
  // distribution 2.8's proxy only sends credentials to Bearer realms it found when it started
  // (a Basic-auth upstream gets none), so the authenticated anchor is a token-auth upstream.
  const up = await startRegistry({ auth: { kind: 'token', users: { mirror: 'pw' } } });
  t.after(() => up.close());
  const img = await pushTiny(up.url, 'library/auth', 'v1', { username: 'mirror', password: 'pw' });
  const proxy = await startRegistry({ proxy: { remoteUrl: up.url, username: 'mirror', password: 'pw' } });
  t.after(() => proxy.close());
  up.clearLog();
  up.token?.clearRequests();
  const m = await registryFetch(`${proxy.url}/v2/library/auth/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200, m.body.toString());
  assert.equal(sha256Digest(m.body), img.manifestDigest);
  await up.settle();
  assert.ok(up.count('GET', /^\/v2\/library\/auth\/manifests\//) >= 1);
  const tokenRequests = up.token?.requests() ?? [];
  assert.ok(tokenRequests.length >= 1);
  assert.ok(tokenRequests.every((r) => r.authorizedUser === 'mirror'), JSON.stringify(tokenRequests));
});

void test('tls registry: HTTPS with a self-signed certificate that clients can be told to trust', async (t) => {
  const reg = await startRegistry({ tls: true });
  t.after(() => reg.close());
  assert.match(reg.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(reg.caFile !== undefined);
  // skopeo pushes with --dest-tls-verify=false; images.ts works the same against HTTPS.
  const img = await pushRandomImage(reg.host, 'secure/app:1', { layers: [2048] });
  const ca = await readFile(reg.caFile);
  const trusting = new Agent({ connect: { ca } });
  t.after(() => trusting.close());
  const res = await undiciFetch(`${reg.url}/v2/secure/app/manifests/1`, { dispatcher: trusting, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(res.status, 200);
  assert.equal(sha256Digest(Buffer.from(await res.arrayBuffer())), img.manifestDigest);
  // Without the CA the certificate is refused.
  await assert.rejects(fetch(`${reg.url}/v2/`), (err: Error) => /certificate/i.test((err.cause as Error | undefined)?.message ?? err.message));
  const viaClient = await registryFetch(`${reg.url}/v2/secure/app/manifests/1`, { dispatcher: trusting, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(sha256Digest(viaClient.body), img.manifestDigest);
  // skopeo trusts it through a cert dir, and refuses it when verifying without one.
  const certDir = await writeCertDir(join(reg.dir, 'client-certs'), ca);
  const inspected = await skopeoInspect(img.ref, { certDir, raw: true });
  assert.equal(inspected.code, 0, inspected.stderr);
  assert.equal(sha256Digest(inspected.raw ?? Buffer.alloc(0)), img.manifestDigest);
  const refused = await skopeoInspect(img.ref, { tlsVerify: true });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /certificate/i);
  const localhost = await runOk('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', reg.caFile, `https://localhost:${reg.port}/v2/`]);
  assert.equal(localhost.stdout, '200');
  await reg.settle();
  assert.ok(reg.manifestGets() >= 1);
});
