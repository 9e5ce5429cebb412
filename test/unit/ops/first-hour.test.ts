// Unit tests of the operator's first hour (issue 18): access rights that add up, URL shape and default
// upstream rules, the data-directory lock, pull counting, and the words a person reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireDataLock, holderAlive, liveServerPid, LOCK_FILE, processStartTicks, readLock } from '../../../src/upkeep/pidfile.js';
import { humanLine, renderBanner } from '../../../src/cli/human.js';
import { defaultUpstreamWarning, normalizeListen, resolveConfig } from '../../../src/config/load.js';
import { describeCause, isRelaisError, RelaisError } from '../../../src/errors.js';
import { createAccessControl, type Principal } from '../../../src/doors/http/access.js';
import { RelaisMetrics } from '../../../src/observability/metrics.js';
import { describeHealth } from '../../../src/policy/circuit-breaker.js';
import { authSchema } from '../../../src/config/schema.js';

// --- access rights ---------------------------------------------------------------------------------

const anon: Principal = { kind: 'anonymous' };
const alice: Principal = { kind: 'user', name: 'alice' };
const bob: Principal = { kind: 'user', name: 'bob' };
const ci: Principal = { kind: 'token', name: 'ci' };

function may(auth: Record<string, unknown>, p: Principal, upstream: string): 'yes' | 401 | 403 {
  const a = createAccessControl(authSchema.parse({ tokens: { ci: 'a-token-of-16-chars-or-more' }, ...auth }));
  try {
    a.checkPull(p, upstream);
    return 'yes';
  } catch (e) {
    assert.ok(e instanceof RelaisError);
    return e.status as 401 | 403;
  }
}

test('access: rights add up — what anonymous may pull stays allowed after logging in', () => {
  const auth = { anonymous: ['ghcr.io'], permissions: { alice: ['quay.io'] } };
  assert.equal(may(auth, anon, 'ghcr.io'), 'yes');
  assert.equal(may(auth, anon, 'quay.io'), 401);
  assert.equal(may(auth, alice, 'ghcr.io'), 'yes', 'anonymous rights kept after login (the bug: 403)');
  assert.equal(may(auth, alice, 'quay.io'), 'yes');
  assert.equal(may(auth, alice, 'docker.io'), 403);
  assert.equal(may(auth, bob, 'ghcr.io'), 'yes', 'any authenticated user keeps the anonymous rights');
  assert.equal(may(auth, bob, 'quay.io'), 403, "alice's permission is not bob's");
  assert.equal(may(auth, ci, 'quay.io'), 403);
});

test('access: every combination of anonymous, per-principal and "*" permissions', () => {
  // No anonymous rights: anonymous gets 401 everywhere; the default permissions ({"*": ["*"]}) let every authenticated client pull.
  assert.equal(may({}, anon, 'docker.io'), 401);
  assert.equal(may({}, alice, 'docker.io'), 'yes');
  assert.equal(may({}, ci, 'ghcr.io'), 'yes');
  // anonymous: ["*"]: everyone everywhere, whatever the permissions say.
  assert.equal(may({ anonymous: ['*'], permissions: {} }, anon, 'quay.io'), 'yes');
  assert.equal(may({ anonymous: ['*'], permissions: {} }, alice, 'quay.io'), 'yes');
  // "*" principal: every authenticated client gets it, plus its own.
  const star = { permissions: { '*': ['docker.io'], alice: ['ghcr.io'] } };
  assert.equal(may(star, alice, 'docker.io'), 'yes');
  assert.equal(may(star, alice, 'ghcr.io'), 'yes');
  assert.equal(may(star, bob, 'docker.io'), 'yes');
  assert.equal(may(star, bob, 'ghcr.io'), 403);
  assert.equal(may(star, anon, 'docker.io'), 401, '"*" means authenticated, not anonymous');
  // A principal with "*": everything.
  assert.equal(may({ permissions: { ci: ['*'] } }, ci, 'anything.example'), 'yes');
  // An empty permission list adds nothing, takes nothing.
  assert.equal(may({ anonymous: ['ghcr.io'], permissions: { alice: [] } }, alice, 'ghcr.io'), 'yes');
  assert.equal(may({ anonymous: ['ghcr.io'], permissions: { alice: [] } }, alice, 'quay.io'), 403);
});

// --- config: URL shape, listen, default upstream -----------------------------------------------------

function configError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(isRelaisError(e));
    assert.equal(e.code, 'CONFIG_INVALID');
    return e.message;
  }
  assert.fail('expected a config error');
}

test('upstream URLs: a missing scheme and a /v2 suffix are refused with what to write instead', () => {
  assert.match(configError(() => resolveConfig({}, { upstreams: ['ghcr.io=ghcr.io'] })), /"ghcr\.io" has no scheme: write https:\/\/ghcr\.io \(or http:\/\/ghcr\.io/);
  assert.match(configError(() => resolveConfig({}, { upstreams: ['x=http://127.0.0.1:5000/v2'] })), /ends in \/v2, but relais adds \/v2\/ itself .*: write http:\/\/127\.0\.0\.1:5000$/m);
  assert.match(configError(() => resolveConfig({ upstreams: { x: { url: 'https://r.example/mirror/v2/' } } })), /upstreams\.x\.url: .*write https:\/\/r\.example\/mirror/);
  assert.match(configError(() => resolveConfig({ upstreams: { x: { url: 'https://u:p@r.example' } } })), /expected a URL without credentials in it: give them as username and password/);
  assert.match(configError(() => resolveConfig({ upstreams: { x: { url: 'ftp://r.example' } } })), /expected an http:\/\/ or https:\/\/ URL, got "ftp/);
  // Fine: a base URL, with or without a trailing slash, or a path prefix that is not /v2.
  for (const url of ['https://ghcr.io', 'http://127.0.0.1:5000/', 'https://r.example/mirror', 'https://r.example/v2x']) {
    assert.equal(resolveConfig({ upstreams: { x: { url } } }).upstreams.x?.url, url);
  }
});

test('--listen :PORT and a bare port mean every interface', () => {
  assert.equal(resolveConfig({}, { listen: ':5743' }).listen, '0.0.0.0:5743');
  assert.equal(resolveConfig({ listen: 5743 }).listen, '0.0.0.0:5743');
  assert.equal(normalizeListen('127.0.0.1:5000'), '127.0.0.1:5000');
  assert.equal(normalizeListen('[::1]:5000'), '[::1]:5000');
  assert.match(configError(() => resolveConfig({}, { listen: 'localhost' })), /expected HOST:PORT/);
});

test('the default upstream: docker.io when configured, else the first; a warning unless it is Docker Hub or chosen', () => {
  const ghcrFirst = resolveConfig({ upstreams: { 'ghcr.io': { url: 'https://ghcr.io' }, 'docker.io': { url: 'https://registry-1.docker.io' } } });
  assert.equal(ghcrFirst.defaultUpstream, 'docker.io');
  assert.equal(defaultUpstreamWarning(ghcrFirst), undefined);
  const lone = resolveConfig({ upstreams: { 'ghcr.io': { url: 'https://ghcr.io' } } });
  assert.equal(lone.defaultUpstream, 'ghcr.io');
  assert.match(defaultUpstreamWarning(lone)?.message ?? '', /go to ghcr\.io, which is not Docker Hub/);
  const chosen = resolveConfig({ defaultUpstream: 'hub.internal', upstreams: { 'hub.internal': { url: 'https://hub.internal' }, 'docker.io': { url: 'https://registry-1.docker.io' } } });
  assert.equal(chosen.defaultUpstream, 'hub.internal');
  assert.equal(defaultUpstreamWarning(chosen), undefined, 'an explicit defaultUpstream is a decision, not a trap');
  assert.equal(resolveConfig({}).startupChecks, 'warn');
  assert.match(configError(() => resolveConfig({ startupChecks: 'maybe' })), /startupChecks/);
});

// --- the data directory lock -------------------------------------------------------------------------

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid !== undefined);
  await new Promise((r) => child.once('exit', r));
  return pid;
}

test('lock: taken, refused to a second taker with the holder named, released only by its owner', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relais-lock-'));
  try {
    const lock = await acquireDataLock(dir, 'serve');
    assert.equal(lock.holder.pid, process.pid);
    assert.equal(await liveServerPid(dir), process.pid);
    await assert.rejects(acquireDataLock(dir, 'gc'), (e: unknown) => {
      assert.ok(isRelaisError(e));
      assert.equal(e.code, 'DATA_DIR_IN_USE');
      assert.match(e.message, new RegExp(`is in use by relais serve \\(pid ${process.pid}, since `));
      assert.match(e.hint ?? '', new RegExp(`kill ${process.pid}`));
      return true;
    });
    // Someone replaced the file: release leaves theirs alone.
    const other = `${JSON.stringify({ pid: 1, command: 'serve', since: 'x', host: hostname() })}\n`;
    await writeFile(join(dir, LOCK_FILE), other);
    await lock.release();
    assert.equal(await readFile(join(dir, LOCK_FILE), 'utf8'), other);
    await rm(join(dir, LOCK_FILE));
    const again = await acquireDataLock(dir, 'gc');
    assert.equal(await liveServerPid(dir), undefined, 'gc holds it: no server');
    await again.release();
    assert.equal(await readLock(dir), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lock: a dead holder, a reused pid and a half-written file are stale and taken over', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relais-lock-'));
  try {
    const dead = await deadPid();
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: dead, command: 'serve', since: 'then', host: hostname() }));
    assert.equal((await readLock(dir))?.alive, false);
    assert.equal(await liveServerPid(dir), undefined);
    const l1 = await acquireDataLock(dir, 'serve');
    assert.equal((await readLock(dir))?.holder.pid, process.pid);
    await l1.release();

    // Our own pid, but another start time: the pid was reused after the holder died.
    const ticks = processStartTicks(process.pid);
    assert.ok(ticks !== undefined, '/proc is there on Linux');
    const reused = { pid: process.pid, command: 'serve', since: 'then', host: hostname(), startTicks: ticks - 1 };
    assert.equal(holderAlive(reused), false);
    assert.equal(holderAlive({ ...reused, startTicks: ticks }), true);
    assert.equal(holderAlive({ ...reused, host: 'another-host' }), true, "another host's lock is never taken for dead");
    await writeFile(join(dir, LOCK_FILE), JSON.stringify(reused));
    const l2 = await acquireDataLock(dir, 'serve');
    await l2.release();

    // Empty: a process died between creating and writing it (a fresh one may still be writing: not taken).
    await writeFile(join(dir, LOCK_FILE), '');
    await utimes(join(dir, LOCK_FILE), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    const l3 = await acquireDataLock(dir, 'serve');
    await l3.release();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lock: of several processes racing for one stale lock, exactly one gets it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relais-lock-'));
  try {
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: await deadPid(), command: 'serve', since: 'then', host: hostname() }));
    const mod = new URL('../../../src/upkeep/pidfile.js', import.meta.url).href;
    const script = `import(${JSON.stringify(mod)}).then(async (m) => { try { await m.acquireDataLock(${JSON.stringify(dir)}, 'serve'); process.stdout.write('won'); setTimeout(() => {}, 1500); } catch (e) { process.stdout.write(e.code ?? String(e)); } });`;
    const outs = await Promise.all(
      Array.from({ length: 6 }, () => {
        const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        c.stdout.on('data', (b: Buffer) => (out += b.toString()));
        return new Promise<string>((r) => c.once('exit', () => r(out)));
      }),
    );
    assert.equal(outs.filter((o) => o === 'won').length, 1, JSON.stringify(outs));
    assert.equal(outs.filter((o) => o === 'DATA_DIR_IN_USE').length, 5, JSON.stringify(outs));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// --- pull counting -----------------------------------------------------------------------------------

function metrics(): RelaisMetrics {
  return new RelaisMetrics({ upstreams: ['docker.io', 'ghcr.io'], credential: () => 'anonymous' });
}

/**
 * A finished manifest request as the registry door reports it: its label step names the image
 * (`upstream/repo:tag`) of a manifest by tag and none by digest (the URL-to-image mapping is the door's,
 * tested with real dockerd and ctr pulls in test/integration/ops/first-hour-clients.test.ts).
 */
function req(m: RelaisMetrics, method: string, url: string, status = 200): void {
  const image = IMAGES[url.split('?')[0] ?? ''];
  m.request({ method, url, status, upstream: image?.split('/')[0] ?? 'docker.io', kind: 'manifest', image, result: 'hit', bytes: 10, seconds: 0.001, finished: true });
}

const IMAGES: Record<string, string> = {
  '/v2/library/alpine/manifests/3.20': 'docker.io/library/alpine:3.20',
  '/v2/alpine/manifests/3.20': 'docker.io/library/alpine:3.20',
  '/v2/ghcr.io/owner/tool/manifests/v1': 'ghcr.io/owner/tool:v1',
};

const DIGEST = `sha256:${'a'.repeat(64)}`;

test('pulls: dockerd/containerd (HEAD tag, GET digest), skopeo/podman (GET tag), HEAD+GET of a tag: one pull each', () => {
  const m = metrics();
  // dockerd through registry-mirrors, then containerd with ?ns=
  req(m, 'HEAD', '/v2/library/alpine/manifests/3.20');
  req(m, 'GET', `/v2/library/alpine/manifests/${DIGEST}`);
  req(m, 'HEAD', '/v2/alpine/manifests/3.20?ns=docker.io');
  req(m, 'GET', `/v2/alpine/manifests/${DIGEST}?ns=docker.io`);
  // skopeo, podman: GET by tag
  req(m, 'GET', '/v2/ghcr.io/owner/tool/manifests/v1');
  // a client resolving with HEAD then fetching the same tag with GET
  req(m, 'HEAD', '/v2/ghcr.io/owner/tool/manifests/v1');
  req(m, 'GET', '/v2/ghcr.io/owner/tool/manifests/v1');
  // failures are not pulls
  req(m, 'HEAD', '/v2/library/alpine/manifests/3.20', 404);
  assert.deepEqual(
    m
      .topImages(10)
      .map((t) => [t.image, t.pulls])
      .sort(),
    [
      ['docker.io/library/alpine:3.20', 2],
      ['ghcr.io/owner/tool:v1', 2],
    ],
  );
  // Two dockerd pulls of an image already up to date: HEAD only, each one a pull.
  req(m, 'HEAD', '/v2/library/alpine/manifests/3.20');
  req(m, 'HEAD', '/v2/library/alpine/manifests/3.20');
  assert.equal(m.topImages(1)[0]?.pulls, 4);
});

test('relais_cache_max_size_bytes is absent when unbounded, present with a budget', async () => {
  const sources = (max: number | undefined) => ({ downloads: () => [], usage: () => Promise.resolve({ bytes: 0, blobs: 0, manifests: 0, tags: 0, repositories: 0 }), maxSize: () => max, circuitOpen: () => false });
  const unbounded = metrics();
  unbounded.setSources(sources(undefined));
  assert.doesNotMatch(await unbounded.registry.metrics(), /relais_cache_max_size_bytes/);
  const bounded = metrics();
  bounded.setSources(sources(1024));
  assert.match(await bounded.registry.metrics(), /^relais_cache_max_size_bytes 1024$/m);
});

// --- words a person reads ----------------------------------------------------------------------------

test('health in words, causes named, log lines and the banner for a terminal', () => {
  assert.equal(describeHealth('closed', 0), 'healthy');
  assert.equal(describeHealth('open', 11_200), 'failing, retrying in 12 s');
  assert.equal(describeHealth('half-open', 0), 'failing, trying again now');

  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
  assert.equal(describeCause(new AggregateError([refused], '')), 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1');
  const sdk = Object.assign(new Error('The specified bucket does not exist'), { name: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } });
  assert.equal(describeCause(sdk), 'NoSuchBucket: HTTP 404: The specified bucket does not exist');
  assert.equal(describeCause(new Error('fetch failed', { cause: refused })), 'fetch failed (ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1)');

  const t = Date.UTC(2026, 0, 1, 12, 3, 4);
  assert.equal(humanLine(JSON.stringify({ level: 40, time: t, service: 'relais', upstream: 'x', hint: 'do this', msg: 'it failed' })), '12:03:04 WARN  it failed  upstream=x\n         hint: do this');
  assert.equal(humanLine(`{"level":30,"time":${t},"service":"relais","method":"GET","path":"/v2/a/manifests/1","status":200,"bytes":5,"ms":1.2,"cache":"hit","msg":"request"}`), '12:03:04 INFO  GET /v2/a/manifests/1 200 hit 1.2ms');
  assert.equal(humanLine('not json'), 'not json');

  const banner = renderBanner(
    { version: '1.2.3', listen: '0.0.0.0:5000', port: 5000, tls: false, dataDir: '/var/cache/relais', upstreams: { 'ghcr.io': 'https://ghcr.io', 'docker.io': 'https://registry-1.docker.io' }, defaultUpstream: 'docker.io', auth: false, statusPage: true },
    () => '10.0.0.5',
  );
  assert.match(banner, /^relais 1\.2\.3: a pull-through cache on http:\/\/10\.0\.0\.5:5000 \(listening on 0\.0\.0\.0:5000, every interface\)/);
  assert.match(banner, /"registry-mirrors": \["http:\/\/10\.0\.0\.5:5000"\], "insecure-registries": \["10\.0\.0\.5:5000"\]/);
  assert.match(banner, /certs\.d\/ghcr\.io\/: relais routes by \?ns=/);
  assert.match(banner, /location = "10\.0\.0\.5:5000\/docker\.io"/);
  assert.match(banner, /status page {5}http:\/\/10\.0\.0\.5:5000\//);
  assert.match(banner, /warning: listening on every interface without authentication/);
  const local = renderBanner({ version: '1', listen: '127.0.0.1:5000', port: 5000, tls: true, dataDir: '/d', upstreams: { 'docker.io': 'https://registry-1.docker.io' }, defaultUpstream: 'docker.io', auth: true, statusPage: true });
  assert.doesNotMatch(local, /warning|insecure/);
  assert.match(local, /status page {5}https:\/\/127\.0\.0\.1:5000\/ {3}\(admins only\)/);
});

test('npm start compiles only when a source is newer than dist/ (scripts/build-if-stale.mjs --check)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relais-stale-'));
  const script = join(process.cwd(), 'scripts', 'build-if-stale.mjs');
  const check = (): Promise<{ code: number | null; out: string }> =>
    new Promise((r) => {
      const c = spawn(process.execPath, [script, '--check'], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (b: Buffer) => (out += b.toString()));
      c.once('exit', (code) => r({ code, out }));
    });
  try {
    await mkdir(join(dir, 'src', 'cli'), { recursive: true });
    await mkdir(join(dir, 'dist', 'src', 'cli'), { recursive: true });
    assert.deepEqual(await check(), { code: 1, out: 'stale: dist/src/cli/main.js is missing\n' });
    const past = new Date(Date.now() - 3600_000);
    await writeFile(join(dir, 'src', 'cli', 'main.ts'), '');
    await utimes(join(dir, 'src', 'cli', 'main.ts'), past, past);
    await utimes(join(dir, 'src', 'cli'), past, past);
    await utimes(join(dir, 'src'), past, past);
    await writeFile(join(dir, 'dist', 'src', 'cli', 'main.js'), '');
    assert.deepEqual(await check(), { code: 0, out: 'current\n' });
    await writeFile(join(dir, 'src', 'cli', 'serve.ts'), '');
    const future = new Date(Date.now() + 60_000);
    await utimes(join(dir, 'src', 'cli', 'serve.ts'), future, future);
    assert.deepEqual(await check(), { code: 1, out: 'stale: sources changed since the last build\n' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
