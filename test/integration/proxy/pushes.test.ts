// Pushes through the proxy door, kept in the cache (issue 16 items 2-3), against a token-auth CNCF distribution:
// - dockerd 20.10 (HTTPS_PROXY -> relais, its CA as SSL_CERT_FILE) builds and pushes a multi-layer image; a
//   second, wiped dockerd pulls it through the door and the upstream serves no blob and no manifest GET;
// - skopeo copies it to another repository through the door (cross-repository mounts);
// - a hand-made client (undici's ProxyAgent) does a chunked upload with several PATCHes over different
//   connections, a mount and a monolithic POST; a digest mismatch and uploads the upstream refuses leave nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { blobKey } from '../../../src/storage/driver.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { removeDir, run, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { registryFetch, MANIFEST_ACCEPT, pushBlob, sha256Digest } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

const HOST = 'registry.gitlab.test';
const CREDS = { username: 'ci', password: 'push-secret-4711' };

let gitlab: RegistryPeer & { token?: TokenIssuer };
let issuer: TokenIssuer;
let relais: RelaisPeer;
let dir: string;
let dataDir: string;
let bundle: string;
const daemons: Dockerd[] = [];

before(async () => {
  gitlab = await startRegistry({ auth: { kind: 'token', users: { [CREDS.username]: CREDS.password } } });
  assert.ok(gitlab.token);
  issuer = gitlab.token;
  // What a crash left in the kept pushes' spool (DATA/pushes): emptied at start.
  dataDir = await tempDir('proxy-pushes-data');
  await mkdir(join(dataDir, 'pushes'));
  await writeFile(join(dataDir, 'pushes', 'push-crashed.part'), randomBytes(1000));
  relais = await startRelais({ dataDir, upstreams: { [HOST]: gitlab.url }, config: { proxy: { listen: '127.0.0.1:0' } } });
  const proxy = relais.instance.proxy;
  assert.ok(proxy, 'the proxy door is on');
  dir = await tempDir('proxy-pushes');
  bundle = join(dir, 'ca-bundle.crt');
  await writeFile(bundle, proxy.ca.certPem);
});

after(async () => {
  for (const d of daemons) await d.stop();
  await relais.close();
  await gitlab.close();
  await removeDir(dir);
  await removeDir(dataDir);
});

function pushes() {
  const p = relais.instance.pushes;
  assert.ok(p, 'keeping pushes is on by default with the door');
  return p;
}

/** A client of the door: HTTPS to the intercepted host through relais's proxy port, a new connection each time. */
async function door(method: string, path: string, opts: { token?: string; headers?: Record<string, string>; body?: Buffer } = {}) {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: proxy.ca.certPem, servername: HOST } });
  try {
    const url = path.startsWith('https://') ? path : `https://${HOST}${path}`;
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    const res = await request(url, { method: method as 'GET', headers, body: opts.body ?? null, dispatcher: agent });
    const body = Buffer.from(await res.body.arrayBuffer());
    const h = (k: string): string | undefined => {
      const v = res.headers[k];
      return Array.isArray(v) ? v[0] : v;
    };
    return { status: res.statusCode, header: h, body };
  } finally {
    await agent.close();
  }
}

function tokenFor(repos: Record<string, string[]>): string {
  return issuer.mint(CREDS.username, Object.entries(repos).map(([name, actions]) => ({ type: 'repository', name, actions })));
}

async function cached(digest: string): Promise<boolean> {
  const row = await relais.instance.index.getContent(digest);
  const file = await relais.instance.storage.stat(blobKey(digest));
  assert.equal(row !== undefined, file !== undefined, `index and storage agree about ${digest}`);
  return row !== undefined;
}

/** The kept pushes' spool files (DATA/pushes: src/cache/pushes.ts), and any that strayed into storage. */
async function spoolLeftovers(): Promise<string[]> {
  const spool = await readdir(join(relais.dataDir, 'pushes'));
  const stray = await readdir(join(relais.dataDir, 'storage'), { recursive: true }).catch(() => [] as string[]);
  return [...spool, ...stray.filter((f) => /push-[^/]*\.part$/.test(f))];
}

test('the kept pushes\' spool a crash left is emptied at start', async () => {
  assert.deepEqual(await readdir(join(dataDir, 'pushes')), []);
});

test('docker push of a multi-layer image is kept; a second, wiped dockerd pulls it with no blob and no manifest GET upstream', async () => {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const env = { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: bundle };
  const a = await startDockerd({ env });
  daemons.push(a);
  // FROM scratch + three files: three layers of random (incompressible) bytes and a config.
  const ctx = join(dir, 'ctx');
  await mkdir(ctx, { recursive: true });
  for (const [name, size] of [['a.bin', 700_000], ['b.bin', 1_300_000], ['c.bin', 200_000]] as const) await writeFile(join(ctx, name), randomBytes(size));
  await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY a.bin /a.bin\nCOPY b.bin /b.bin\nCOPY c.bin /c.bin\n');
  const image = `${HOST}/team/app:1`;
  const built = await run('/usr/bin/docker', ['build', '--network', 'none', '-t', image, ctx], { timeoutMs: 180_000, extraEnv: { ...a.env, DOCKER_BUILDKIT: '0' } });
  assert.equal(built.code, 0, `${built.stdout}\n${built.stderr}`);
  await a.dockerOk(['login', '-u', CREDS.username, '--password-stdin', HOST], { input: `${CREDS.password}\n` });
  const before = { ...pushes().stats };
  gitlab.clearLog();
  await a.dockerOk(['push', image]);
  await pushes().settle();
  await gitlab.settle();

  // What the upstream holds, asked directly.
  const m = await registryFetch(`${gitlab.url}/v2/team/app/manifests/1`, { creds: CREDS, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200);
  const manifestDigest = m.headers.get('docker-content-digest');
  const doc = JSON.parse(m.body.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  const blobs = [doc.config.digest, ...doc.layers.map((l) => l.digest)];
  assert.equal(doc.layers.length, 3, 'three layers');
  // docker push uploads with POST + PATCH + PUT ?digest= (the forms relais tracks).
  assert.ok(gitlab.accessLog().some((e) => e.method === 'PATCH' && e.path.startsWith('/v2/team/app/blobs/uploads/') && e.status === 202), 'chunked PATCH seen upstream');
  // Kept: every blob in storage and index, linked to the repository; the tag recorded with the pushed digest.
  for (const d of blobs) {
    assert.ok(await cached(d), `pushed blob ${d} kept`);
    assert.ok(await relais.instance.index.isLinked(HOST, 'team/app', d), `${d} linked to team/app`);
  }
  const tag = await relais.instance.index.getTag(HOST, 'team/app', '1');
  assert.equal(tag?.digest, manifestDigest, 'the pushed tag recorded');
  const stats = pushes().stats;
  assert.equal(stats.kept - before.kept, 4, 'config and three layers kept');
  assert.equal(stats.mismatches - before.mismatches, 0);
  assert.deepEqual(await spoolLeftovers(), [], 'no spool file left');

  // A second daemon with a new data root pulls through the door: everything from relais's cache.
  const b = await startDockerd({ env });
  daemons.push(b);
  gitlab.clearLog();
  const requestsBefore = relais.logs().length;
  await b.dockerOk(['pull', image]);
  await gitlab.settle();
  assert.equal(gitlab.blobGets(), 0, `no blob GET upstream:\n${gitlab.accessLog().map((e) => e.line).join('\n')}`);
  assert.equal(gitlab.manifestGets(), 0, 'the manifest came from the cache (pushed moments ago: fresh)');
  const served = relais.logs().slice(requestsBefore).filter((l) => l.msg === 'request' && String(l.path).startsWith('/v2/team/app/'));
  assert.ok(served.some((l) => String(l.path) === '/v2/team/app/manifests/1' && l.status === 200), 'relais answered the manifest');
  const ids = await Promise.all([a, b].map((d) => d.dockerOk(['image', 'inspect', '--format', '{{.Id}}', image]).then((r) => r.stdout.trim())));
  assert.equal(ids[1], ids[0], 'the same image on both daemons');
  assert.equal(ids[0], doc.config.digest);

  // Nothing of the client's credentials in relais's data directory or logs.
  const grep = await run('grep', ['-rIl', '-e', CREDS.password, '-e', 'eyJhbGciOiJFUzI1Ni', relais.dataDir]);
  assert.equal(grep.stdout, '', `credentials found in ${grep.stdout}`);
  const binGrep = await run('grep', ['-rl', '-a', '-e', CREDS.password, '-e', 'eyJhbGciOiJFUzI1Ni', relais.dataDir]);
  assert.equal(binGrep.stdout, '', `credentials found in ${binGrep.stdout}`);
  const logs = JSON.stringify(relais.logs());
  assert.ok(!logs.includes(CREDS.password) && !logs.includes('eyJhbGciOiJFUzI1Ni') && !/bearer /i.test(logs), 'no credential in the logs');
});

test('skopeo copy to another repository through the door: its uploads kept as links to the new repository', async () => {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const certDir = join(dir, 'skopeo-certs');
  await mkdir(certDir, { recursive: true });
  await writeFile(join(certDir, 'ca.crt'), proxy.ca.certPem);
  const authfile = join(dir, 'skopeo-auth.json');
  await writeFile(authfile, '{}');
  gitlab.clearLog();
  const creds = `${CREDS.username}:${CREDS.password}`;
  const r = await run(
    'skopeo',
    ['copy', '--authfile', authfile, '--src-cert-dir', certDir, '--dest-cert-dir', certDir, '--src-creds', creds, '--dest-creds', creds, `docker://${HOST}/team/app:1`, `docker://${HOST}/team/copy:1`],
    { timeoutMs: 180_000, extraEnv: { HTTPS_PROXY: proxy.url } },
  );
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  await pushes().settle();
  await gitlab.settle();
  const tag = await relais.instance.index.getTag(HOST, 'team/copy', '1');
  assert.ok(tag, 'the copied tag recorded');
  const appTag = await relais.instance.index.getTag(HOST, 'team/app', '1');
  assert.equal(tag.digest, appTag?.digest, 'same manifest');
  const m = await relais.instance.storage.getContent(blobKey(tag.digest));
  assert.ok(m);
  const doc = JSON.parse(m.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) assert.ok(await relais.instance.index.isLinked(HOST, 'team/copy', d), `${d} linked to team/copy`);
  // skopeo reads the source through the cache (no blob GET upstream) and uploads to the new repository with
  // several sessions at once (POST, PATCH, PUT ?digest=): blobs relais holds already are linked, not stored twice.
  assert.equal(gitlab.blobGets(), 0);
  assert.ok(gitlab.accessLog().filter((e) => e.method === 'PUT' && e.path.startsWith('/v2/team/copy/blobs/uploads/') && e.status === 201).length >= 4, 'skopeo uploaded the blobs');
});

test('hand-made chunked upload: several PATCHes on separate connections, final PUT without body; then a mount and a monolithic POST', async () => {
  const data = randomBytes(300_000);
  const digest = sha256Digest(data);
  const token = tokenFor({ 'team/hand': ['pull', 'push'], 'team/mounted': ['pull', 'push'] });
  const start = await door('POST', '/v2/team/hand/blobs/uploads/', { token });
  assert.equal(start.status, 202);
  let location = start.header('location');
  assert.ok(location?.startsWith(`https://${HOST}/v2/team/hand/blobs/uploads/`), `Location on the host the client asked for: ${location}`);
  const parts = [data.subarray(0, 100_000), data.subarray(100_000, 250_000), data.subarray(250_000)];
  let at = 0;
  for (const part of parts) {
    assert.ok(location);
    const r = await door('PATCH', location, { token, body: part, headers: { 'content-type': 'application/octet-stream', 'content-range': `${at}-${at + part.byteLength - 1}` } });
    assert.equal(r.status, 202, r.body.toString());
    at += part.byteLength;
    assert.equal(r.header('range'), `0-${at - 1}`);
    location = r.header('location');
  }
  assert.ok(location);
  const put = new URL(location);
  put.searchParams.set('digest', digest);
  const done = await door('PUT', put.href, { token });
  assert.equal(done.status, 201, done.body.toString());
  await pushes().settle();
  assert.ok(await cached(digest), 'the chunked upload kept');
  assert.deepEqual(await relais.instance.storage.getContent(blobKey(digest)), data, 'the bytes kept are the bytes pushed');
  assert.ok(await relais.instance.index.isLinked(HOST, 'team/hand', digest));

  // A cross-repository mount the upstream accepts: the blob is linked to the target repository.
  assert.equal(await relais.instance.index.isLinked(HOST, 'team/mounted', digest), false);
  const mount = await door('POST', `/v2/team/mounted/blobs/uploads/?mount=${digest}&from=team/hand`, { token: tokenFor({ 'team/mounted': ['pull', 'push'], 'team/hand': ['pull'] }) });
  assert.equal(mount.status, 201, mount.body.toString());
  await pushes().settle();
  assert.ok(await relais.instance.index.isLinked(HOST, 'team/mounted', digest), 'mounted blob linked to the target repository');

  // A monolithic upload: POST ?digest= with the body, or (where the upstream ignores that) one PUT with the body.
  const mono = randomBytes(50_000);
  const monoDigest = sha256Digest(mono);
  const m = await door('POST', `/v2/team/hand/blobs/uploads/?digest=${monoDigest}`, { token, body: mono, headers: { 'content-type': 'application/octet-stream' } });
  // distribution 2.8 ignores a POST's body and opens a session (202): the client then PUTs the whole blob.
  if (m.status === 202) {
    const loc = m.header('location');
    assert.ok(loc);
    const whole = new URL(loc);
    whole.searchParams.set('digest', monoDigest);
    const w = await door('PUT', whole.href, { token, body: mono, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(w.status, 201, w.body.toString());
  } else assert.equal(m.status, 201, m.body.toString());
  await pushes().settle();
  assert.ok(await cached(monoDigest), 'the monolithic upload kept');

  // DELETE of a manifest is forwarded and its answer relayed (distribution has delete enabled).
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: monoDigest, size: mono.byteLength }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: data.byteLength }] }));
  // Asked before it exists: relais remembers the 404 (notFoundTtl); the push makes it untrue at once.
  assert.equal((await registryFetch(`${relais.url}/v2/team/hand/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } })).status, 404);
  const mput = await door('PUT', '/v2/team/hand/manifests/v1', { token, body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(mput.status, 201, mput.body.toString());
  await pushes().settle();
  const pulled = await registryFetch(`${relais.url}/v2/team/hand/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(pulled.status, 200, 'the pushed tag is served at once');
  assert.deepEqual(pulled.body, manifest);
  assert.equal((await relais.instance.index.getTag(HOST, 'team/hand', 'v1'))?.digest, sha256Digest(manifest), `pushed manifest recorded for its tag ${JSON.stringify(relais.logs().filter((l) => typeof l.event === 'string' && l.event.startsWith('push')))}`);
  const del = await door('DELETE', `/v2/team/hand/manifests/${sha256Digest(manifest)}`, { token: tokenFor({ 'team/hand': ['pull', 'push', 'delete'] }) });
  assert.equal(del.status, 202, del.body.toString());
  // relais forgets the tag at once: the next pull asks the upstream, which has no such manifest any more.
  await pushes().settle();
  assert.equal(await relais.instance.index.getTag(HOST, 'team/hand', 'v1'), undefined, 'tag forgotten');
  gitlab.clearLog();
  assert.equal((await registryFetch(`${relais.url}/v2/team/hand/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } })).status, 404);
  assert.ok(gitlab.manifestGets() + gitlab.manifestHeads() >= 1, 'asked the upstream');
});

test('a digest mismatch is never committed: the bytes stay out of the cache and a later pull fetches them upstream', async () => {
  const token = tokenFor({ 'team/bad': ['pull', 'push'] });
  const sent = randomBytes(80_000);
  const claimed = randomBytes(80_000);
  const claimedDigest = sha256Digest(claimed);
  const before = { ...pushes().stats };
  const start = await door('POST', '/v2/team/bad/blobs/uploads/', { token });
  assert.equal(start.status, 202);
  const loc = start.header('location');
  assert.ok(loc);
  const patch = await door('PATCH', loc, { token, body: sent, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(patch.status, 202);
  const next = patch.header('location');
  assert.ok(next);
  const put = new URL(next);
  put.searchParams.set('digest', claimedDigest);
  const done = await door('PUT', put.href, { token });
  assert.equal(done.status, 400, `distribution refuses the wrong digest: ${done.body.toString()}`);
  await pushes().settle();
  assert.equal(await cached(claimedDigest), false, 'the claimed digest is not in the cache');
  assert.equal(await cached(sha256Digest(sent)), false, 'nor are the bytes sent');
  assert.equal(pushes().stats.kept, before.kept, 'nothing kept');
  assert.ok(pushes().stats.rejected + pushes().stats.mismatches > before.rejected + before.mismatches);
  assert.deepEqual(await spoolLeftovers(), [], 'spool removed');

  // The right bytes pushed straight to the upstream, then pulled through relais: a GET upstream.
  await pushBlob(gitlab.url, 'team/bad', claimed, CREDS);
  gitlab.clearLog();
  const got = await registryFetch(`${relais.url}/v2/team/bad/blobs/${claimedDigest}`);
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, claimed);
  await gitlab.settle();
  assert.equal(gitlab.blobGets(claimedDigest), 1, 'relais had to fetch it');
});

test('uploads the upstream refuses leave nothing: a final PUT it rejects with matching bytes, and a user without push', async () => {
  const token = tokenFor({ 'team/refused': ['pull', 'push'] });
  const data = randomBytes(60_000);
  const digest = sha256Digest(data);
  const before = { ...pushes().stats };
  const start = await door('POST', '/v2/team/refused/blobs/uploads/', { token });
  assert.equal(start.status, 202);
  const loc = start.header('location');
  assert.ok(loc);
  const patch = await door('PATCH', loc, { token, body: data, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(patch.status, 202);
  const next = patch.header('location');
  assert.ok(next);
  // The bytes match the digest, but the upload state the upstream signed is broken: it refuses the PUT.
  const put = new URL(next);
  put.searchParams.set('digest', digest);
  put.searchParams.set('_state', 'tampered');
  const done = await door('PUT', put.href, { token });
  assert.ok(done.status >= 400 && done.status < 500, `the upstream refused the PUT: ${done.status} ${done.body.toString()}`);
  await pushes().settle();
  assert.equal(await cached(digest), false, 'a refused upload is not kept');
  assert.equal(pushes().stats.kept, before.kept);
  assert.equal(pushes().stats.rejected, before.rejected + 1);
  assert.deepEqual(await spoolLeftovers(), [], 'spool removed');

  // A user whose token has no push: the upstream answers 401 to the POST, the answer is relayed, nothing tracked.
  const readOnly = tokenFor({ 'team/refused': ['pull'] });
  const tracked = pushes().stats.tracked;
  const denied = await door('POST', '/v2/team/refused/blobs/uploads/', { token: readOnly });
  assert.equal(denied.status, 401, denied.body.toString());
  assert.ok(denied.header('www-authenticate')?.includes('push'), 'the upstream\'s challenge relayed unchanged');
  assert.equal(pushes().stats.tracked, tracked, 'no upload session');
  // A manifest PUT the upstream refuses (it references a blob it does not have) records nothing either.
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: data.byteLength }, layers: [] }));
  const mput = await door('PUT', '/v2/team/refused/manifests/v1', { token, body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(mput.status, 400, mput.body.toString());
  await pushes().settle();
  assert.equal(await relais.instance.index.getTag(HOST, 'team/refused', 'v1'), undefined, 'no tag recorded');
  assert.equal(await relais.instance.index.getContent(sha256Digest(manifest)), undefined, 'no manifest stored');
});
