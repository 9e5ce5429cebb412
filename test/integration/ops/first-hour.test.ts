// The operator's first hour (issue 18), as a new user meets it, with the real relais CLI (dist/), real
// distribution registries and nginx as "a plain web server": two relais on one data directory, upstream
// URLs that cannot work, relais check, the start banner on a terminal (a real pty, via script -qc) and JSON
// lines when piped, and runtime errors with a hint.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { startNginx, type NginxPeer } from '../../peers/nginx.js';
import { freePort } from '../../peers/ports.js';
import { removeDir, run, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { http, skopeoPull } from '../core/helpers.js';
import { liveServerPid } from '../../../src/upkeep/pidfile.js';
import { CLI, relaisCli, startUpstreamProxy, type UpstreamProxy } from './helpers.js';

let upstream: RegistryPeer;
let basicUpstream: RegistryPeer;
let nginx: NginxPeer;
let proxy: UpstreamProxy;
let image: BuiltImage;
let work: string;

before(async () => {
  upstream = await startRegistry();
  basicUpstream = await startRegistry({ auth: { kind: 'htpasswd', users: { ci: 'secret-pass' } } });
  nginx = await startNginx();
  // A layer big enough to be in flight for ~2 s at 4 MB/s: the second relais starts meanwhile.
  image = await pushRandomImage(upstream.host, 'library/slow:v1', { layers: [8_000_000, 50_000] });
  proxy = await startUpstreamProxy(upstream.url, { bytesPerSecond: 4_000_000 });
  work = await tempDir('first-hour');
  // Reachable for the uid-nobody test below (mkdtemp makes 0700 directories).
  await chmod(work, 0o755);
});

after(async () => {
  await proxy.close();
  await nginx.close();
  await basicUpstream.close();
  await upstream.close();
  await removeDir(work);
});

async function serve(args: string[], name = 'relais'): Promise<ManagedProcess> {
  return startProcess(process.execPath, [CLI, 'serve', ...args], { name });
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function gcJson(data: string): Promise<{ liveServerPid: number | null; graceMs: number }> {
  const r = await relaisCli(['gc', '--data', data, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { liveServerPid: number | null; graceMs: number };
}

test('two relais on one data directory: the second refuses and names the first, whose download is cached; a stale lock is taken over', async () => {
  const data = join(work, 'shared-data');
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
  const first = await serve(['--listen', `127.0.0.1:${p1}`, '--data', data, '--upstream', `docker.io=${proxy.url}`], 'relais-first');
  try {
    await waitForHttp(`http://127.0.0.1:${p1}/healthz`, 30_000, { process: first });
    upstream.clearLog();
    const pull = skopeoPull(`127.0.0.1:${p1}`, 'library/slow:v1');
    // The big layer is downloading (its spool file exists) when the second relais starts on the directory.
    const big = image.layers[0];
    assert.ok(big);
    await upstream.waitForCount('GET', new RegExp(`/blobs/${big.digest}$`), 1, 20_000);
    const second = await run(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${p2}`, '--data', data, '--upstream', `docker.io=${proxy.url}`], { timeoutMs: 60_000 });
    assert.equal(second.code, 1, second.stdout + second.stderr);
    assert.match(second.stderr, new RegExp(`relais: the data directory ${data.replace(/[/.]/g, '\\$&')} is in use by relais serve \\(pid ${first.pid}, since `));
    assert.match(second.stderr, new RegExp(`hint: stop that process first \\(kill ${first.pid}\\)`));
    assert.equal((await http(`http://127.0.0.1:${p2}/healthz`).catch(() => undefined))?.status, undefined, 'the second relais never listened');

    // The first one's download was not disturbed: the pull completes, every blob fetched once and cached.
    const pulled = await pull;
    for (const l of image.layers) assert.equal(pulled.files.get(l.digest), l.size);
    for (const l of image.layers) assert.equal(upstream.blobGets(l.digest), 1, `one upstream fetch of ${l.digest}`);
    const warnings = jsonLines(first.stdout()).filter((l) => l.level === 50 || /ENOENT|download: failed/.test(String(l.msg)));
    assert.deepEqual(warnings, [], 'no failed download in the first relais');
    await skopeoPull(`127.0.0.1:${p1}`, 'library/slow:v1');
    for (const l of image.layers) assert.equal(upstream.blobGets(l.digest), 1, 'the second pull came from the cache');

    // gc sees the directory as served: the grace period applies.
    const gc = await gcJson(data);
    assert.equal(gc.liveServerPid, first.pid);
    assert.equal(gc.graceMs, 15 * 60_000);

    // kill -9: the lock stays behind, naming a dead process; the next relais takes it over.
    first.child.kill('SIGKILL');
    await first.exited;
    const stale = JSON.parse(await readFile(join(data, 'relais.lock'), 'utf8')) as { pid: number };
    assert.equal(stale.pid, first.pid);
    const third = await serve(['--listen', `127.0.0.1:${p3}`, '--data', data, '--upstream', `docker.io=${proxy.url}`], 'relais-third');
    try {
      await waitForHttp(`http://127.0.0.1:${p3}/healthz`, 30_000, { process: third });
      assert.equal((JSON.parse(await readFile(join(data, 'relais.lock'), 'utf8')) as { pid: number }).pid, third.pid);
      assert.equal((await gcJson(data)).liveServerPid, third.pid);
    } finally {
      await third.stop();
    }
    // A clean stop removes the lock; gc then knows nobody serves (grace 0) and leaves no lock behind.
    assert.equal(existsSync(join(data, 'relais.lock')), false);
    const idle = await gcJson(data);
    assert.deepEqual(idle, { ...idle, liveServerPid: null, graceMs: 0 });
    assert.equal(existsSync(join(data, 'relais.lock')), false);
  } finally {
    await first.stop();
  }
});

test('relais check: a registry passes; nginx, a /v2 suffix and a missing scheme fail with a hint', async () => {
  const data = join(work, 'check-data');
  const ok = await relaisCli(['check', '--data', data, '--listen', '127.0.0.1:0', '--upstream', `docker.io=${upstream.url}`, '--upstream', `private.example=${basicUpstream.url}`]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, new RegExp(`ok +upstream docker.io: ${upstream.url}: registry \\(open\\)`));
  assert.match(ok.stdout, /ok +upstream private\.example: .*registry \(Basic auth\)/);
  assert.match(ok.stdout, /no problems found/);
  assert.ok(upstream.accessLog().some((e) => e.method === 'GET' && e.path === '/v2/'), 'the registry saw the probe');

  const web = await relaisCli(['check', '--data', data, '--upstream', `docker.io=${nginx.url}`, '--json']);
  assert.equal(web.code, 1, web.stdout);
  const report = JSON.parse(web.stdout) as { ok: boolean; findings: { level: string; what: string; message: string; hint?: string }[] };
  assert.equal(report.ok, false);
  const f = report.findings.find((x) => x.what === 'upstream docker.io');
  assert.equal(f?.level, 'error');
  assert.match(f.message, /answers 404: no registry API there \(a plain web server, or a wrong path or port\)/);
  assert.match(f.hint ?? '', /relais adds \/v2\/ itself/);
  assert.ok((await nginx.accessLog()).includes('GET /v2/ 404'), 'nginx saw the probe');
  // The listen-everywhere lint is a warning, not an error.
  assert.equal(report.findings.find((x) => x.what === 'listen')?.level, 'warning');

  const doubled = await relaisCli(['check', '--upstream', `docker.io=${upstream.url}/v2`]);
  assert.equal(doubled.code, 1);
  assert.match(doubled.stderr, new RegExp(`ends in /v2, but relais adds /v2/ itself \\(requests would go to .../v2/v2/...\\): write ${upstream.url}`));

  const noScheme = await relaisCli(['check', '--upstream', 'ghcr.io=ghcr.io']);
  assert.equal(noScheme.code, 1);
  assert.match(noScheme.stderr, /"ghcr\.io" has no scheme: write https:\/\/ghcr\.io/);
  assert.doesNotMatch(noScheme.stderr, /credentials/);

  // The same in a config file: the field is named.
  const cfg = join(work, 'doubled.yaml');
  await writeFile(cfg, `upstreams:\n  docker.io: { url: "${upstream.url}/v2/" }\n`);
  const fromFile = await relaisCli(['check', '--config', cfg]);
  assert.equal(fromFile.code, 1);
  assert.match(fromFile.stderr, /upstreams\["docker\.io"\]\.url: ".*\/v2\/" ends in \/v2/);
});

test('relais serve probes its upstreams: refuse mode exits, warn mode serves and says what is wrong', async () => {
  const data = join(work, 'probe-data');
  const refused = await run(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--data', data, '--upstream', `docker.io=${nginx.url}`, '--startup-checks', 'refuse'], { timeoutMs: 60_000 });
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /relais: upstream check failed:\n {2}docker\.io: .*answers 404: no registry API there/);
  assert.match(refused.stderr, /hint: fix the upstream URLs \(relais check probes them without serving\)/);
  assert.equal(existsSync(join(data, 'relais.lock')), false, 'nothing held');

  const port = await freePort();
  const warned = await serve(['--listen', `127.0.0.1:${port}`, '--data', data, '--upstream', `docker.io=${nginx.url}`, '--upstream', `ghcr.io=${upstream.url}`]);
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000, { process: warned });
    await warned.waitForOutput(/"msg":"relais serving"/, 30_000);
    await warned.waitForOutput(/upstream check: docker\.io/, 30_000);
    const lines = jsonLines(warned.stdout());
    const w = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('upstream check: docker.io'));
    assert.ok(w, JSON.stringify(lines));
    assert.equal(w.level, 40);
    assert.match(String(w.msg), /answers 404: no registry API there \(a plain web server, or a wrong path or port\); pulls from it will fail until this is fixed/);
    assert.equal(lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('upstream check: ghcr.io')).length, 0, 'the real registry passes');
  } finally {
    await warned.stop();
  }
});

test('on a terminal: a start banner and human lines; piped: JSON lines only', async () => {
  const port = await freePort();
  const data = join(work, 'tty-data');
  const cmd = `${process.execPath} ${CLI} serve --listen :${port} --data ${data} --upstream ghcr.io=${upstream.url} --upstream docker.io=${upstream.url}`;
  const tty = await startProcess('script', ['-qfec', cmd, '/dev/null'], { name: 'relais-tty' });
  try {
    await tty.waitForOutput(/warning: listening on every interface without authentication/, 30_000);
    const out = tty.stdout().replace(/\r/g, '');
    assert.match(out, new RegExp(`relais \\d+\\.\\d+\\.\\d+: a pull-through cache on http://[^ ]+:${port} \\(listening on 0\\.0\\.0\\.0:${port}, every interface\\)`));
    assert.match(out, new RegExp(`status page {5}http://[^ ]+:${port}/`));
    assert.match(out, new RegExp(`dockerd {5}/etc/docker/daemon\\.json: "registry-mirrors": \\["http://[^"]+:${port}"\\], "insecure-registries"`));
    assert.match(out, /containerd {2}\/etc\/containerd\/certs\.d\/docker\.io\/hosts\.toml:/);
    assert.match(out, /podman {6}\/etc\/containers\/registries\.conf:/);
    // docker.io is the default upstream although ghcr.io was given first.
    assert.match(out, /docker\.io -> \S+ {3}\(default: unprefixed requests, dockerd mirror traffic\)/);
    assert.match(out, /^\d\d:\d\d:\d\d INFO {2}relais serving/m);
    assert.doesNotMatch(out, /^\{"level"/m, 'no JSON on a terminal');
  } finally {
    // script(1) runs relais in a session of its own (the pty): stopping script's group does not reach it, and
    // it would keep the port and the data directory a while. Stop it by the pid its lock names, and wait.
    const pid = await liveServerPid(data);
    await tty.stop({ group: true });
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const deadline = Date.now() + 30_000;
      while ((await liveServerPid(data)) !== undefined) {
        assert.ok(Date.now() <= deadline, `the terminal relais (pid ${pid}) did not exit`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  // Piped: JSON lines, each one parseable, nothing else on stdout.
  const piped = await serve(['--listen', `127.0.0.1:${port}`, '--data', data, '--upstream', `docker.io=${upstream.url}`]);
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000, { process: piped });
    // /healthz answers as soon as the socket listens; the start line is logged just after: await it, do not race it.
    await piped.waitForOutput(/"msg":"relais serving"/, 30_000);
    const lines = jsonLines(piped.stdout());
    assert.ok(lines.some((l) => l.msg === 'relais serving'));
    assert.doesNotMatch(piped.stdout(), /Point your clients/);
  } finally {
    await piped.stop();
  }
});

test('runtime errors come with a code and a hint: address in use, data directory not writable, --listen :PORT', async () => {
  const port = await freePort();
  const data = join(work, 'err-data');
  const holder = await serve(['--listen', `:${port}`, '--data', data, '--upstream', `docker.io=${upstream.url}`]);
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000, { process: holder });
    // /healthz answers as soon as the socket listens; the start line is logged just after: await it.
    await holder.waitForOutput(/"msg":"relais serving"/, 30_000);
    assert.ok(jsonLines(holder.stdout()).some((l) => l.msg === 'relais serving' && l.listen === `0.0.0.0:${port}`), '--listen :PORT is every interface');
    assert.ok(jsonLines(holder.stdout()).some((l) => l.level === 40 && /listening on all interfaces without authentication/.test(String(l.msg))));
    const inUse = await run(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data', join(work, 'err-data-2'), '--upstream', `docker.io=${upstream.url}`], { timeoutMs: 60_000 });
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, new RegExp(`relais: cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use \\(EADDRINUSE\\)\\nhint: another process listens there`));
    assert.equal(existsSync(join(work, 'err-data-2', 'relais.lock')), false, 'the lock is released when the start fails');
  } finally {
    await holder.stop();
  }

  // A data directory the user may not create (relais run as nobody under a root-owned directory).
  const parent = join(work, 'root-owned');
  await mkdir(parent, { mode: 0o755 });
  const denied = await run('runuser', ['-u', 'nobody', '--', process.execPath, CLI, 'serve', '--listen', '127.0.0.1:0', '--data', join(parent, 'sub'), '--startup-checks', 'off', '--upstream', `docker.io=${upstream.url}`], { timeoutMs: 60_000 });
  assert.equal(denied.code, 1, denied.stderr);
  assert.match(denied.stderr, new RegExp(`relais: cannot use the data directory ${parent}/sub \\(EACCES\\)\\nhint: the user running relais \\(uid \\d+\\) may not write there`));
  assert.deepEqual(await readdir(parent), []);
});
