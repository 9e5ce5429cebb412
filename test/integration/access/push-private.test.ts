// Pushed private content on a passthrough upstream (issue 16: "The next job's --cache-from pull of what was just
// pushed is then served from relais, under the same credential rules as item 1"; docs/access.md, docs/proxy.md
// "Pushes"). A token-auth distribution grants team/private to alice only. Through the proxy door (dockerd 20.10,
// HTTPS_PROXY -> relais, relais's CA as SSL_CERT_FILE) alice logs in and pushes a multi-layer image: relais keeps
// its blobs and tag. A second, wiped dockerd logged in as alice pulls it: the upstream serves no blob (it is only
// asked to confirm alice). bob, whose credentials the token service accepts but who has no right on team/private,
// asks for the tag, the manifest digest and every blob: 401 and zero bytes, and the token service saw him.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fetch } from 'undici';
import { blobKey } from '../../../src/storage/driver.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { removeDir, run, tempDir } from '../../peers/proc.js';
import { fetchThrough } from '../../peers/proxy-client.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { MANIFEST_ACCEPT, registryFetch } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

const HOST = 'registry.gitlab.test';
const ALICE = { username: 'alice', password: 'alice-Pp-3c8v5n1m' };
const BOB = { username: 'bob', password: 'bob-Pp-6x2z9q4w' };
const IMAGE = `${HOST}/team/private:cache`;

let gitlab: RegistryPeer & { token?: TokenIssuer };
let issuer: TokenIssuer;
let relais: RelaisPeer;
let dir: string;
let env: Record<string, string>;
const daemons: Dockerd[] = [];

/** What alice pushed, as the upstream holds it. */
let manifest: Buffer;
let manifestDigest: string;
let blobs: string[];
let blobBytes: Buffer[];

before(async () => {
  gitlab = await startRegistry({ auth: { kind: 'token', users: { alice: ALICE.password, bob: BOB.password }, repositories: { 'team/private': ['alice'] } } });
  assert.ok(gitlab.token);
  issuer = gitlab.token;
  relais = await startRelais({ upstreams: { [HOST]: gitlab.url }, config: { upstreams: { [HOST]: { access: 'passthrough' } }, proxy: { listen: '127.0.0.1:0' } } });
  const proxy = relais.instance.proxy;
  assert.ok(proxy, 'the proxy door is on');
  dir = await tempDir('push-private');
  const bundle = join(dir, 'ca-bundle.crt');
  await writeFile(bundle, proxy.ca.certPem);
  env = { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: bundle };
});

after(async () => {
  for (const d of daemons) await d.stop();
  await relais.close();
  await gitlab.close();
  await removeDir(dir);
});

async function cached(digest: string): Promise<boolean> {
  const row = await relais.instance.index.getContent(digest);
  const file = await relais.instance.storage.stat(blobKey(digest));
  assert.equal(row !== undefined, file !== undefined, `index and storage agree about ${digest}`);
  return row !== undefined;
}

/** A response that carries none of the pushed image's bytes. */
function assertNoPrivateBytes(body: Buffer, what: string): void {
  assert.ok(!body.includes(manifest), `${what}: no manifest bytes`);
  for (const b of blobBytes) assert.ok(b.length === 0 || !body.includes(b.subarray(0, Math.min(b.length, 256))), `${what}: no blob bytes`);
  assert.ok(body.length < 2048, `${what}: an error body only (${body.length} bytes)`);
}

test('alice: docker push of a private image through the door is kept; a wiped dockerd pulls it with zero blob GETs upstream', async () => {
  const pushes = relais.instance.pushes;
  assert.ok(pushes, 'keeping pushes is on with the door');
  const a = await startDockerd({ env });
  daemons.push(a);
  // FROM scratch + three files: three layers of random bytes and a config.
  const ctx = join(dir, 'ctx');
  await mkdir(ctx, { recursive: true });
  for (const [name, size] of [['a.bin', 400_000], ['b.bin', 900_000], ['c.bin', 150_000]] as const) await writeFile(join(ctx, name), randomBytes(size));
  await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY a.bin /a.bin\nCOPY b.bin /b.bin\nCOPY c.bin /c.bin\n');
  const built = await run('/usr/bin/docker', ['build', '--network', 'none', '-t', IMAGE, ctx], { timeoutMs: 180_000, extraEnv: { ...a.env, DOCKER_BUILDKIT: '0' } });
  assert.equal(built.code, 0, `${built.stdout}\n${built.stderr}`);
  await a.dockerOk(['login', '-u', ALICE.username, '--password-stdin', HOST], { input: `${ALICE.password}\n` });
  const before = { ...pushes.stats };
  await a.dockerOk(['push', IMAGE]);
  await pushes.settle();
  await gitlab.settle();

  // What the upstream holds, asked directly with alice's credentials.
  const m = await registryFetch(`${gitlab.url}/v2/team/private/manifests/cache`, { creds: ALICE, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200);
  manifest = m.body;
  manifestDigest = m.headers.get('docker-content-digest') ?? '';
  assert.match(manifestDigest, /^sha256:[0-9a-f]{64}$/);
  const doc = JSON.parse(manifest.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  assert.equal(doc.layers.length, 3, 'three layers');
  blobs = [doc.config.digest, ...doc.layers.map((l) => l.digest)];

  // Kept: every blob in storage and index, linked to the repository; the tag recorded with the pushed digest.
  blobBytes = [];
  for (const d of blobs) {
    assert.ok(await cached(d), `pushed blob ${d} kept`);
    assert.ok(await relais.instance.index.isLinked(HOST, 'team/private', d), `${d} linked to team/private`);
    const bytes = await relais.instance.storage.getContent(blobKey(d));
    assert.ok(bytes);
    blobBytes.push(bytes);
  }
  assert.ok(await cached(manifestDigest), 'the pushed manifest kept');
  assert.equal((await relais.instance.index.getTag(HOST, 'team/private', 'cache'))?.digest, manifestDigest, 'the pushed tag recorded');
  assert.equal(pushes.stats.kept - before.kept, 4, 'config and three layers kept');

  // The next job: a new daemon (new data root), logged in as alice, pulls what was just pushed.
  const b = await startDockerd({ env });
  daemons.push(b);
  await b.dockerOk(['login', '-u', ALICE.username, '--password-stdin', HOST], { input: `${ALICE.password}\n` });
  gitlab.clearLog();
  issuer.clearRequests();
  const mark = relais.logs().length;
  await b.dockerOk(['pull', IMAGE]);
  await gitlab.settle();
  const seen = gitlab.accessLog();
  const listing = seen.map((e) => `${e.method} ${e.path} ${e.status}`).join('\n');
  assert.equal(gitlab.count('GET', /\/blobs\//), 0, `zero blob GETs upstream:\n${listing}`);
  assert.equal(gitlab.manifestGets(), 0, `no manifest GET upstream:\n${listing}`);
  // All the upstream saw: alice's confirmations (HEADs of the manifest or blobs) and the token-service ping.
  const confirmations = seen.filter((e) => e.method === 'HEAD' && /^\/v2\/team\/private\/(manifests|blobs)\//.test(e.path));
  const pings = seen.filter((e) => e.path === '/v2/');
  assert.equal(confirmations.length + pings.length, seen.length, `only confirmations upstream:\n${listing}`);
  // One confirmation per (credential, repository): a HEAD of the tag docker asked for, answered 200; the blobs
  // that follow under the same token are served on it. docker's ping (/v2/, 401) is relayed at most once.
  assert.deepEqual(confirmations.map((e) => `${e.method} ${e.path} ${e.status}`), ['HEAD /v2/team/private/manifests/cache 200'], `one confirmation of alice:\n${listing}`);
  assert.ok(pings.length <= 1, `at most one ping:\n${listing}`);
  const asked = issuer.requests().filter((q) => q.scope.includes('repository:team/private:pull'));
  assert.ok(asked.length > 0 && asked.every((q) => q.authorizedUser === 'alice'), JSON.stringify(asked));
  const served = relais.logs().slice(mark).filter((l) => l.msg === 'request' && l.upstream === HOST && l.status === 200);
  assert.ok(served.some((l) => String(l.path) === '/v2/team/private/manifests/cache'), 'relais served the manifest');
  for (const d of blobs) assert.ok(served.some((l) => String(l.path) === `/v2/team/private/blobs/${d}`), `relais served ${d}`);
  const ids = await Promise.all([a, b].map((d) => d.dockerOk(['image', 'inspect', '--format', '{{.Id}}', IMAGE]).then((r) => r.stdout.trim())));
  assert.equal(ids[1], ids[0], 'the same image on both daemons');
  assert.equal(ids[0], doc.config.digest);
});

test('bob (valid credentials, no right on team/private) gets 401 and zero bytes for the tag, the manifest digest and every blob', async () => {
  assert.ok(manifest, 'the push test ran');
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  // bob's token, from the upstream's token service, as docker gets one.
  issuer.clearRequests();
  const u = new URL(issuer.realm);
  u.searchParams.set('service', issuer.service);
  u.searchParams.set('scope', 'repository:team/private:pull');
  const res = await fetch(u, { headers: { authorization: `Basic ${Buffer.from(`${BOB.username}:${BOB.password}`).toString('base64')}` } });
  assert.equal(res.status, 200);
  const token = ((await res.json()) as { token: string }).token;
  const paths = ['/v2/team/private/manifests/cache', `/v2/team/private/manifests/${manifestDigest}`, ...blobs.map((d) => `/v2/team/private/blobs/${d}`)];
  gitlab.clearLog();
  for (const path of paths) {
    for (const method of ['GET', 'HEAD']) {
      const r = await fetchThrough(proxy.port, HOST, proxy.ca.certPem, path, { method, headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${token}` } });
      assert.ok(r.status === 401 || r.status === 403, `bob ${method} ${path}: ${r.status}`);
      assertNoPrivateBytes(r.body, `bob ${method} ${path}`);
      assert.equal(r.headers['docker-content-digest'], undefined, `bob ${method} ${path}: no digest confirmed`);
    }
  }
  await gitlab.settle();
  assert.equal(gitlab.count('GET', /\/blobs\//), 0, 'no blob fetched for bob');
  // The token service saw bob, and granted him nothing on team/private.
  const bobs = issuer.requests().filter((q) => q.authorizedUser === 'bob' && q.scope.includes('repository:team/private:pull'));
  assert.ok(bobs.length > 0, 'the token service saw bob');
  assert.ok(bobs.every((q) => q.granted.every((g) => g.actions.length === 0)), JSON.stringify(bobs));

  // And as a user sees it: bob logged in on a fresh daemon, docker pull fails and leaves no image.
  const c = await startDockerd({ env });
  daemons.push(c);
  await c.dockerOk(['login', '-u', BOB.username, '--password-stdin', HOST], { input: `${BOB.password}\n` });
  issuer.clearRequests();
  const mark = relais.logs().length;
  const pull = await c.docker(['pull', IMAGE]);
  assert.notEqual(pull.code, 0, 'bob may not pull');
  assert.match(`${pull.stdout}\n${pull.stderr}`, /denied|unauthorized|authentication required/i);
  const reqs = relais.logs().slice(mark).filter((l) => l.msg === 'request' && l.upstream === HOST && /\/(manifests|blobs)\//.test(String(l.path)));
  assert.ok(reqs.length > 0, "bob's requests reached relais");
  for (const l of reqs) {
    assert.ok(l.status === 401 || l.status === 403, `${String(l.method)} ${String(l.path)}: ${String(l.status)}`);
    assert.ok(l.bytes === undefined || l.bytes === 0, `${String(l.path)}: zero bytes (${String(l.bytes)})`);
  }
  assert.ok(issuer.requests().some((q) => q.authorizedUser === 'bob' && q.scope.includes('repository:team/private:pull')), "the token service saw bob's docker pull");
  assert.notEqual((await c.docker(['image', 'inspect', IMAGE])).code, 0, 'no image for bob');
  await gitlab.settle();
  assert.equal(gitlab.count('GET', /\/blobs\//), 0, 'still no blob fetched upstream');
});
