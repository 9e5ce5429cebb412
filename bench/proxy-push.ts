// Benchmark: the seed's CI job through the proxy door, twice, and what the upstream registry served on the
// second run (issue 16, "keep what was pushed").
//
// The job (the recipe relais exists for): docker login; docker pull $IMAGE:main || true;
// docker build --cache-from $IMAGE:main -t $IMAGE:main .; docker push $IMAGE:main. Its Dockerfile starts
// FROM busybox (Docker Hub, played by a local distribution) and adds a 20 MiB vendored-dependencies layer.
// dockerd 20.10 reaches both registries through relais's proxy door (HTTPS_PROXY, relais's CA as
// SSL_CERT_FILE); the project registry ("registry.gitlab.test") is a token-auth distribution. Each run starts
// from a new daemon (empty data root), as a fresh dind service does in each job; run 2 is the next commit
// (one source file changed).
//
// Two relais, same run: keepPushes on (the default) and off (the anchor: pushes only forwarded). Printed per
// run: bytes and requests each upstream served (from distribution's access logs) and the job's time.
//
// Run on demand (not part of npm test):
//   npx tsc -p tsconfig.json && node dist/bench/proxy-push.js [--json FILE]
// BENCH_VERBOSE=1 prints each job's output and relais's request lines.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startDockerd } from '../test/peers/dockerd.js';
import { pushRunnableImage } from '../test/peers/images.js';
import { removeDir, run, tempDir } from '../test/peers/proc.js';
import { startRegistry, type AccessLogEntry, type RegistryPeer } from '../test/peers/registry.js';
import { startRelais } from '../test/peers/relais.js';

const HOST = 'registry.gitlab.test';
const CREDS = { username: 'gitlab-ci-token', password: 'bench-token' };
const DOCKERFILE = ['FROM busybox:bench', 'COPY vendor.bin /deps/vendor.bin', 'RUN echo installed > /deps/ok', 'COPY src/ /app/src/', ''].join('\n');

interface Served {
  readonly bytes: number;
  readonly blobGets: number;
  readonly manifestGets: number;
  readonly requests: number;
}

interface RunResult {
  readonly keep: boolean;
  readonly run: 1 | 2;
  readonly seconds: number;
  readonly project: Served;
  readonly hub: Served;
}

function served(entries: readonly AccessLogEntry[], r: RegistryPeer): Served {
  return {
    bytes: entries.filter((e) => e.method === 'GET').reduce((n, e) => n + e.bytes, 0),
    blobGets: r.blobGets(),
    manifestGets: r.manifestGets(),
    requests: entries.length,
  };
}

async function oneSetup(keep: boolean, dir: string): Promise<RunResult[]> {
  const stops: (() => Promise<unknown>)[] = [];
  try {
    const hub = await startRegistry();
    stops.push(() => hub.close());
    await pushRunnableImage(hub.host, 'library/busybox:bench');
    const project = await startRegistry({ auth: { kind: 'token', users: { [CREDS.username]: CREDS.password } } });
    stops.push(() => project.close());
    const relais = await startRelais({
      upstreams: { [HOST]: project.url, 'docker.io': hub.url },
      config: { proxy: { listen: '127.0.0.1:0', keepPushes: { enabled: keep } } },
    });
    stops.push(() => relais.close());
    const proxy = relais.instance.proxy;
    if (!proxy) throw new Error('proxy door off');
    const bundle = join(dir, `ca-${String(keep)}.crt`);
    await writeFile(bundle, proxy.ca.certPem);
    const ctx = join(dir, `project-${String(keep)}`);
    await mkdir(join(ctx, 'src'), { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), DOCKERFILE);
    await writeFile(join(ctx, 'vendor.bin'), randomBytes(20 * 1024 * 1024));
    const image = `${HOST}/group/app`;
    const out: RunResult[] = [];
    for (const n of [1, 2] as const) {
      await writeFile(join(ctx, 'src', 'main.txt'), `commit ${n}\n`);
      const dockerd = await startDockerd({ env: { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: bundle } });
      try {
        hub.clearLog();
        project.clearLog();
        const env = { ...dockerd.env, DOCKER_BUILDKIT: '0', IMAGE: image, CI_REGISTRY: HOST, CI_JOB_TOKEN: CREDS.password };
        const script = [
          'echo "$CI_JOB_TOKEN" | docker login --username gitlab-ci-token --password-stdin "$CI_REGISTRY"',
          'docker pull "$IMAGE:main" || true',
          'docker build --network=none --cache-from "$IMAGE:main" --tag "$IMAGE:main" .',
          'docker push "$IMAGE:main"',
        ].join('\n');
        const started = process.hrtime.bigint();
        const r = await run('sh', ['-e', '-c', script], { cwd: ctx, extraEnv: { ...env, PATH: `/usr/bin:${process.env['PATH'] ?? '/bin'}` }, timeoutMs: 300_000 });
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        if (r.code !== 0) throw new Error(`job failed (${r.code ?? '?'})\n${r.stdout}\n${r.stderr}\n${dockerd.log().slice(-3000)}`);
        if (process.env['BENCH_VERBOSE'] === '1') process.stderr.write(`${r.stdout}\n${r.stderr}\n${relais.logs().filter((l) => l.msg === 'request').map((l) => `${String(l.method)} ${String(l.path)} ${String(l.status)} ${String(l.result)}`).join('\n')}\n`);
        await relais.instance.pushes?.settle();
        await hub.settle();
        await project.settle();
        out.push({ keep, run: n, seconds, project: served(project.accessLog(), project), hub: served(hub.accessLog(), hub) });
        process.stderr.write(`keepPushes ${keep ? 'on ' : 'off'} run ${n}: ${seconds.toFixed(1)} s, project registry served ${project.accessLog().filter((e) => e.method === 'GET').reduce((s, e) => s + e.bytes, 0)} bytes\n`);
      } finally {
        await dockerd.stop();
      }
    }
    return out;
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  }
}

function mib(n: number): string {
  return n < 1024 * 1024 ? `${n} B` : `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

function report(results: readonly RunResult[]): string {
  const lines = ['', 'The seed job through the proxy door, twice (fresh daemon each run): what the upstreams served', ''];
  lines.push(`  ${'keepPushes'.padEnd(10)} ${'run'.padStart(3)} ${'job'.padStart(7)}  ${'project registry: GET bytes'.padStart(28)} ${'blob GETs'.padStart(9)} ${'manifest GETs'.padStart(13)} ${'requests'.padStart(8)}  ${'Docker Hub: GET bytes'.padStart(22)}`);
  for (const r of results) {
    lines.push(
      `  ${(r.keep ? 'on' : 'off').padEnd(10)} ${String(r.run).padStart(3)} ${`${r.seconds.toFixed(1)}s`.padStart(7)}  ${mib(r.project.bytes).padStart(28)} ${String(r.project.blobGets).padStart(9)} ${String(r.project.manifestGets).padStart(13)} ${String(r.project.requests).padStart(8)}  ${mib(r.hub.bytes).padStart(22)}`,
    );
  }
  const on = results.find((r) => r.keep && r.run === 2);
  const off = results.find((r) => !r.keep && r.run === 2);
  if (on && off && off.project.bytes > 0) lines.push('', `  run 2, project registry GET bytes: keepPushes on / off = ${on.project.bytes} / ${off.project.bytes} = ${(on.project.bytes / off.project.bytes).toFixed(6)}`);
  lines.push('');
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'string' } } });
  const dir = await tempDir('bench-proxy-push');
  try {
    const results = [...(await oneSetup(true, dir)), ...(await oneSetup(false, dir))];
    process.stdout.write(`${report(results)}\n`);
    if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 2));
  } finally {
    await removeDir(dir);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
