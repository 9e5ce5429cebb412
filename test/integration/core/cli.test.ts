// `relais serve` as users run it: the real CLI in a child process, flags, config errors, TLS, SIGTERM drain.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { freePort } from '../../peers/ports.js';
import { removeDir, run, runOk, startProcess, tempDir, waitForHttp } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { sha256 } from './helpers.js';

const CLI = join(process.cwd(), 'dist/src/cli/main.js');
let upstream: RegistryPeer;
let image: BuiltImage;
let dir: string;

before(async () => {
  dir = await tempDir('relais-cli');
  upstream = await startRegistry();
  image = await pushRandomImage(upstream.host, 'library/big:v1', { layers: [24_000_000] });
});

after(async () => {
  await upstream.close();
  await removeDir(dir);
});

test('--help documents every flag of serve', async () => {
  const r = await runOk(process.execPath, [CLI, 'serve', '--help']);
  for (const flag of ['--config', '--listen', '--data', '--upstream']) assert.ok(r.stdout.includes(flag), flag);
  assert.match(r.stdout, /0\.0\.0\.0:5000/);
  assert.match(r.stdout, /registry-1\.docker\.io/);
});

test('a config mistake names the field, and relais refuses to start', async () => {
  const cfg = join(dir, 'bad.yaml');
  await writeFile(cfg, 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    tagTtl: later\n');
  const r = await run(process.execPath, [CLI, 'serve', '--config', cfg, '--listen', '127.0.0.1:0'], { timeoutMs: 20_000 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /upstreams\["docker\.io"\]\.tagTtl: expected a duration/);
  assert.match(r.stderr, /hint: /);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
  const r2 = await run(process.execPath, [CLI, 'serve', '--upstream', 'nourl'], { timeoutMs: 20_000 });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /expected NAME=URL/);
});

test('SIGTERM drains an in-flight download, refuses new connections, then exits 0', async () => {
  const port = await freePort();
  const data = join(dir, 'data-drain');
  const proc = await startProcess(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data', data, '--upstream', `docker.io=${upstream.url}`]);
  await waitForHttp(`http://127.0.0.1:${port}/v2/`, 20_000);
  const layer = image.layers[0];
  assert.ok(layer);
  // warm the cache, then read slowly so the transfer is still running when SIGTERM arrives
  const warm = await request(`http://127.0.0.1:${port}/v2/library/big/blobs/${layer.digest}`);
  await warm.body.dump({ limit: Infinity });
  // Request lines are buffered (4 KiB or 1 s, src/observability/logger.ts): this one shows within the second.
  const requestLines = (): Record<string, unknown>[] =>
    proc
      .output()
      .split('\n')
      .filter((l) => l.includes('"msg":"request"'))
      .map((l) => JSON.parse(l.slice(l.indexOf('{'))) as Record<string, unknown>);
  const deadline = Date.now() + 3000;
  while (!requestLines().some((l) => l.path === `/v2/library/big/blobs/${layer.digest}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(requestLines().filter((l) => l.path === `/v2/library/big/blobs/${layer.digest}`).length, 1, `the request line was written within the flush period:\n${proc.output()}`);
  const res = await request(`http://127.0.0.1:${port}/v2/library/big/blobs/${layer.digest}`, { highWaterMark: 16 * 1024 });
  const chunks: Buffer[] = [];
  let first = true;
  const reading = (async () => {
    for await (const c of res.body as AsyncIterable<Buffer>) {
      chunks.push(c);
      if (first) {
        first = false;
        proc.child.kill('SIGTERM');
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  })();
  await reading;
  const exit = await proc.exited;
  assert.equal(exit.code, 0, proc.output());
  assert.equal(sha256(Buffer.concat(chunks)), layer.digest, 'the in-flight download completed intact');
  await assert.rejects(request(`http://127.0.0.1:${port}/v2/`), 'no new connections after the drain');
  assert.match(proc.output(), /"msg":"draining"/);
  // The drained transfer's request line was flushed before the exit.
  assert.equal(requestLines().filter((l) => l.path === `/v2/library/big/blobs/${layer.digest}` && l.status === 200).length, 2, proc.output());
});

test('tls: {cert, key} serves HTTPS', async () => {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await runOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const port = await freePort();
  const cfg = join(dir, 'tls.yaml');
  await writeFile(cfg, `listen: 127.0.0.1:${port}\ndataDir: ${join(dir, 'data-tls')}\ntls:\n  cert: ${cert}\n  key: ${key}\nupstreams:\n  docker.io:\n    url: ${upstream.url}\n`);
  const proc = await startProcess(process.execPath, [CLI, 'serve', '--config', cfg]);
  try {
    const { readFile } = await import('node:fs/promises');
    const ca = await readFile(cert);
    const agent = new Agent({ connect: { ca } });
    let res;
    for (let i = 0; i < 100; i++) {
      try {
        res = await request(`https://127.0.0.1:${port}/v2/library/big/manifests/v1`, { dispatcher: agent });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.ok(res, proc.output());
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], image.manifestDigest);
    await res.body.dump();
    await agent.close();
  } finally {
    await proc.stop();
  }
});
