// The operator's first hour (issue 18) with the real clients: a private dockerd (registry-mirrors and
// path-prefix pulls, docker login), containerd's ctr (hosts.toml, ?ns=), the status page in Chromium.
// - ghcr.io listed before docker.io: dockerd's mirror traffic goes to docker.io (and with no docker.io
//   upstream at all, relais warns at start);
// - "Most pulled images" counts dockerd's and ctr's pulls (HEAD by tag, then GET by digest) once each;
// - logging in never takes away what anonymous clients may pull.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { chromium } from 'playwright-core';
import { ctrPull } from '../../peers/ctr.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { freePort } from '../../peers/ports.js';
import { removeDir, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { ACCEPT_ALL, http } from '../core/helpers.js';
import { CLI } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';

let hub: RegistryPeer; // plays docker.io (and quay.io for the access test)
let ghcr: RegistryPeer;
let app: BuiltImage;
let tool: BuiltImage;
let priv: BuiltImage;
let work: string;
let dockerd: Dockerd;
let mirrorPort: number;
let authPort: number;
let mirror: ManagedProcess;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (run 'sudo bash scripts/setup-peers.sh')`);
  hub = await startRegistry();
  ghcr = await startRegistry();
  app = await pushRunnableImage(hub.host, 'library/app:v1');
  priv = await pushRunnableImage(hub.host, 'org/private:v1', { labels: { which: 'private' } });
  tool = await pushRunnableImage(ghcr.host, 'owner/tool:v1', { labels: { which: 'tool' } });
  work = await tempDir('first-hour-clients');
  mirrorPort = await freePort();
  authPort = await freePort();
  // As a user writes it: ghcr.io first, docker.io second, no defaultUpstream.
  mirror = await startProcess(
    process.execPath,
    [CLI, 'serve', '--listen', `127.0.0.1:${mirrorPort}`, '--data', join(work, 'mirror-data'), '--upstream', `ghcr.io=${ghcr.url}`, '--upstream', `docker.io=${hub.url}`],
    { name: 'relais-mirror' },
  );
  await waitForHttp(`http://127.0.0.1:${mirrorPort}/healthz`, 30_000, { process: mirror });
  dockerd = await startDockerd({ mirrors: [`http://127.0.0.1:${mirrorPort}`], insecureRegistries: [`127.0.0.1:${mirrorPort}`, `127.0.0.1:${authPort}`] });
});

after(async () => {
  await dockerd.stop();
  await mirror.stop();
  await ghcr.close();
  await hub.close();
  await removeDir(work);
});

function logLines(p: ManagedProcess): Record<string, unknown>[] {
  return p
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('ghcr.io listed before docker.io: dockerd mirror pulls go to docker.io; without docker.io relais warns at start', async () => {
  assert.ok(logLines(mirror).some((l) => l.msg === 'relais serving' && l.defaultUpstream === 'docker.io'));
  assert.equal(logLines(mirror).filter((l) => /not Docker Hub/.test(String(l.msg))).length, 0, 'no warning with docker.io configured');
  hub.clearLog();
  ghcr.clearLog();
  await dockerd.dockerOk(['pull', 'app:v1']);
  const ran = await dockerd.dockerOk(['run', '--rm', '--network', 'none', 'app:v1', 'sh', '-c', 'echo from the mirror']);
  assert.equal(ran.stdout, 'from the mirror\n');
  await hub.settle();
  await ghcr.settle();
  assert.ok(hub.count('*', /^\/v2\/library\/app\/manifests\//) >= 1, hub.accessLog().map((e) => e.line).join('\n'));
  assert.equal(hub.blobGets(app.layers[0]?.digest), 1);
  assert.equal(ghcr.count('*', /^\/v2\/(library\/)?app\//), 0, 'nothing of it went to ghcr.io');

  // Only ghcr.io: dockerd's mirror traffic would go to a registry that is not Docker Hub. Said at start.
  const port = await freePort();
  const lone = await startProcess(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data', join(work, 'lone-data'), '--upstream', `ghcr.io=${ghcr.url}`], { name: 'relais-lone' });
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000, { process: lone });
    const w = logLines(lone).find((l) => /not Docker Hub/.test(String(l.msg)));
    assert.ok(w, lone.stdout());
    assert.equal(w.level, 40);
    assert.match(String(w.msg), /unprefixed requests \(dockerd's registry-mirrors, which carry Docker Hub images\) go to ghcr\.io, which is not Docker Hub/);
    assert.match(String(w.hint), /add a docker\.io upstream/);
  } finally {
    await lone.stop();
  }
});

test('the status page in Chromium counts dockerd and ctr pulls once each', async () => {
  // dockerd: through registry-mirrors (docker.io) and by path prefix (ghcr.io); ctr: hosts.toml (?ns=).
  await dockerd.dockerOk(['pull', `127.0.0.1:${mirrorPort}/ghcr.io/owner/tool:v1`]);
  for (const [registry, ref] of [
    ['docker.io', 'docker.io/library/app:v1'],
    ['ghcr.io', 'ghcr.io/owner/tool:v1'],
  ] as const) {
    const r = await ctrPull(dockerd.containerdSocket, ref, { mirrors: { [registry]: `http://127.0.0.1:${mirrorPort}` } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
  }
  // Both clients got tool:v1 from relais, which fetched it from ghcr.io once.
  await ghcr.settle();
  assert.equal(ghcr.blobGets(tool.configDigest), 1);
  // What the clients sent: manifests by tag with HEAD (dockerd and ctr), never a GET by tag from them.
  const requests = logLines(mirror).filter((l) => l.msg === 'request' && /\/manifests\//.test(String(l.path)));
  assert.ok(requests.some((l) => l.method === 'HEAD' && /\/manifests\/v1(\?|$)/.test(String(l.path))), JSON.stringify(requests));

  // An upstream that is down: after one failure the breaker refuses calls for a minute; the page says so in words.
  const down = await startRelais({ upstreams: { 'docker.io': 'http://127.0.0.1:1' }, config: { upstreams: { 'docker.io': { circuitBreaker: { failures: 1, cooldown: '60s' }, retries: { attempts: 1 } } } } });
  const failed = await http(`${down.url}/v2/library/gone/manifests/v1`);
  assert.equal(failed.status, 503);
  const profile = await tempDir('chromium-profile');
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${mirrorPort}/`);
    await page.locator('#top tr').first().waitFor({ timeout: 15_000 });
    const rows = (await page.locator('#top tr').allInnerTexts()).map((t) => t.replace(/\s+/g, ' ').trim());
    // app:v1: dockerd (earlier test, through the mirror) + ctr; tool:v1: dockerd (path prefix) + ctr.
    assert.ok(rows.some((r) => /^docker\.io\/library\/app:v1 2 /.test(r)), JSON.stringify(rows));
    assert.ok(rows.some((r) => /^ghcr\.io\/owner\/tool:v1 2 /.test(r)), JSON.stringify(rows));
    assert.equal(rows.length, 2, JSON.stringify(rows));
    assert.match(await page.locator('tr[data-upstream="docker.io"] .pill').innerText(), /^healthy$/);
    const downPage = await browser.newPage();
    await downPage.goto(`${down.url}/`);
    const pill = downPage.locator('tr[data-upstream="docker.io"] .pill');
    await pill.waitFor({ timeout: 15_000 });
    const words = /^failing, retrying in (\d+) s$/.exec(await pill.innerText());
    assert.ok(words, await pill.innerText());
    const seconds = Number(words[1]);
    assert.ok(seconds >= 1 && seconds <= 60, `within the 60 s cooldown: ${seconds}`);
  } finally {
    await down.close();
    await browser.close();
    await removeDir(profile);
  }
});

test('after docker login, alice pulls what anonymous may (ghcr.io) and her own (quay.io)', async () => {
  const htpasswd = join(work, 'htpasswd');
  await writeFile(htpasswd, `alice:${bcrypt.hashSync('alice-pass', 10)}\n`);
  let relais: RelaisPeer | undefined;
  try {
    relais = await startRelais({
      port: authPort,
      upstreams: { 'ghcr.io': ghcr.url, 'quay.io': hub.url },
      config: { auth: { htpasswd, anonymous: ['ghcr.io'], permissions: { alice: ['quay.io'] } } },
    });
    const host = relais.host;
    // Anonymous (a plain HTTP client; dockerd without credentials gives up at the challenged /v2/ ping):
    // ghcr.io yes, quay.io no.
    const anonGhcr = await http(`${relais.url}/v2/ghcr.io/owner/tool/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
    assert.equal(anonGhcr.status, 200);
    const anonQuay = await http(`${relais.url}/v2/quay.io/org/private/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
    assert.equal(anonQuay.status, 401);

    const login = await dockerd.docker(['login', host, '-u', 'alice', '--password-stdin'], { input: 'alice-pass\n' });
    assert.equal(login.code, 0, login.stdout + login.stderr);
    assert.match(login.stdout, /Login Succeeded/);
    // Logged in: both. (The bug: "alice may not pull from ghcr.io".)
    await dockerd.dockerOk(['pull', `${host}/ghcr.io/owner/tool:v1`]);
    await dockerd.dockerOk(['pull', `${host}/quay.io/org/private:v1`]);
    const label = await dockerd.dockerOk(['image', 'inspect', '--format', '{{.Config.Labels.which}}', `${host}/quay.io/org/private:v1`]);
    assert.equal(label.stdout.trim(), 'private');
    await hub.settle();
    assert.equal(hub.blobGets(priv.configDigest), 1, 'the registry playing quay.io saw the pull once');
    const denied = relais.logs().filter((l) => l.msg === 'request' && l.status === 403);
    assert.deepEqual(denied, [], 'no 403 for alice');
  } finally {
    await dockerd.docker(['logout', `127.0.0.1:${authPort}`]);
    await relais?.close();
  }
});
