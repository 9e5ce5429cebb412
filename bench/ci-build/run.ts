// Benchmark: a small project's image build in CI, three ways, cold and warm.
//
//   no cache      docker build, push (what a job does with no cache reuse at all)
//   blog recipe   pull :latest || true, build --cache-from :latest, push (no inline cache metadata)
//   relais job    the script lines `relais ci gitlab --mode inline` generates, run as-is
//
// Every run starts from a wiped daemon, as a fresh dind service does in each GitLab job. "cold"
// is the first build of a project (its registry repository is empty); "warm" is the next commit
// (one source file changed) on the same branch. The daemon pulls Docker Hub images through
// relais (its registry mirror); a distribution registry plays the GitLab registry.
// The project's RUN steps sleep to stand in for dependency installation (3 s) and compilation
// (1 s); its vendored dependencies are a 20 MiB file.
//
// Run on demand (not part of npm test):
//   npx tsc -p tsconfig.json && node dist/bench/ci-build/run.js [--builders buildkit,classic] [--json FILE]

import { randomBytes } from 'node:crypto';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseBuildOutput } from '../../src/products/ci/build-plan.js';
import { buildGitlabJob } from '../../src/products/ci/gitlab-yaml.js';
import { startDockerd, type Dockerd } from '../../test/peers/dockerd.js';
import { pushRunnableImage } from '../../test/peers/images.js';
import { removeDir, run, tempDir } from '../../test/peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../test/peers/registry.js';
import { startRelais } from '../../test/peers/relais.js';

type Way = 'no cache' | 'blog recipe' | 'relais job';
type Builder = 'buildkit' | 'classic';
const WAYS: readonly Way[] = ['no cache', 'blog recipe', 'relais job'];
const TOKEN = 'bench-token';

const DOCKERFILE = [
  'FROM busybox:bench',
  'COPY vendor.bin /deps/vendor.bin',
  'RUN sleep 3 && echo installed > /deps/ok',
  'COPY src/ /app/src/',
  'RUN sleep 1 && cat /app/src/* > /app/build.out',
  '',
].join('\n');

/** The job script of each way, as shell lines (variables as GitLab sets them). */
function scriptOf(way: Way): string[] {
  const login = 'echo "$CI_JOB_TOKEN" | docker login --username gitlab-ci-token --password-stdin "$CI_REGISTRY"';
  if (way === 'no cache') {
    return [
      login,
      'docker build --network=none --tag "$CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG" .',
      'docker push "$CI_REGISTRY_IMAGE:$CI_COMMIT_REF_SLUG"',
    ];
  }
  if (way === 'blog recipe') {
    return [
      login,
      'docker pull "$CI_REGISTRY_IMAGE:latest" || true',
      'docker build --network=none --cache-from "$CI_REGISTRY_IMAGE:latest" --tag "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA" --tag "$CI_REGISTRY_IMAGE:latest" .',
      'docker push "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA"',
      'docker push "$CI_REGISTRY_IMAGE:latest"',
    ];
  }
  const job = buildGitlabJob({ mode: 'inline', service: false, buildOptions: ['--network=none'] });
  return [...job.beforeScript, ...job.script].map((l) => l.run);
}

interface Measure {
  builder: Builder;
  way: Way;
  phase: 'cold' | 'warm';
  seconds: number;
  cachedSteps: number;
  steps: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      builders: { type: 'string', default: 'buildkit,classic' },
      repeat: { type: 'string', default: '1' },
      json: { type: 'string' },
    },
  });
  const repeat = Math.max(1, Number(values.repeat ?? '1') || 1);
  const builders = (values.builders ?? '').split(',').filter((b): b is Builder => b === 'buildkit' || b === 'classic');
  const dir = await tempDir('bench-ci-build');
  const stops: (() => Promise<unknown>)[] = [() => removeDir(dir)];
  try {
    const hub = await startRegistry();
    stops.push(() => hub.close());
    await pushRunnableImage(hub.host, 'library/busybox:bench');
    const gitlab = await startRegistry({ auth: { kind: 'htpasswd', users: { 'gitlab-ci-token': TOKEN } } });
    stops.push(() => gitlab.close());
    const relais = await startRelais({ upstreams: { 'docker.io': hub.url } });
    stops.push(() => relais.close());
    const dockerd = await startDockerd({ mirrors: [relais.url], insecureRegistries: [relais.host, gitlab.host] });
    stops.push(() => dockerd.stop());
    const binDir = join(dir, 'bin');
    await mkdir(binDir);
    await symlink('/usr/bin/docker', join(binDir, 'docker'));

    const results: Measure[] = [];
    for (let round = 1; round <= repeat; round++) {
      for (const builder of builders) {
        for (const way of WAYS) {
          const project = join(dir, `${builder}-${way.replace(' ', '-')}-${round}`);
          await mkdir(join(project, 'src'), { recursive: true });
          await writeFile(join(project, 'Dockerfile'), DOCKERFILE);
          await writeFile(join(project, 'vendor.bin'), randomBytes(20 * 1024 * 1024));
          for (const [phase, n] of [['cold', 1], ['warm', 2]] as const) {
            await writeFile(join(project, 'src', 'main.txt'), `commit ${n}\n`);
            await wipe(dockerd);
            const m = await runScript(scriptOf(way), project, {
              builder,
              dockerd,
              gitlab,
              binDir,
              repo: `bench/${builder}-${way.replace(' ', '-')}-${round}`,
              sha: `${n}`.repeat(40),
              configDir: join(dir, 'docker-config'),
            });
            results.push({ builder, way, phase, ...m });
            process.stderr.write(`round ${round}: ${builder} ${way} ${phase}: ${m.seconds.toFixed(1)} s, ${m.cachedSteps}/${m.steps} steps cached\n`);
          }
        }
      }
    }
    process.stdout.write(`${report(results)}\n`);
    if (values.json !== undefined) await writeFile(values.json, JSON.stringify(results, null, 2));
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  }
}

async function wipe(dockerd: Dockerd): Promise<void> {
  await dockerd.dockerOk(['system', 'prune', '--all', '--force']);
  await dockerd.dockerOk(['builder', 'prune', '--all', '--force']);
}

async function runScript(
  lines: string[],
  cwd: string,
  o: { builder: Builder; dockerd: Dockerd; gitlab: RegistryPeer; binDir: string; repo: string; sha: string; configDir: string },
): Promise<{ seconds: number; cachedSteps: number; steps: number }> {
  const env: NodeJS.ProcessEnv = {
    PATH: `${o.binDir}:${process.env['PATH'] ?? '/usr/bin:/bin'}`,
    HOME: process.env['HOME'] ?? '/root',
    DOCKER_HOST: o.dockerd.host,
    DOCKER_CONFIG: o.configDir,
    DOCKER_BUILDKIT: o.builder === 'buildkit' ? '1' : '0',
    IMAGE: `${o.gitlab.host}/${o.repo}`,
    CI_REGISTRY: o.gitlab.host,
    CI_REGISTRY_IMAGE: `${o.gitlab.host}/${o.repo}`,
    CI_JOB_TOKEN: TOKEN,
    CI_COMMIT_REF_NAME: 'main',
    CI_COMMIT_REF_SLUG: 'main',
    CI_DEFAULT_BRANCH: 'main',
    CI_COMMIT_SHA: o.sha,
  };
  const started = process.hrtime.bigint();
  const r = await run('sh', ['-e', '-c', lines.join('\n')], { cwd, env, timeoutMs: 300_000 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.code !== 0) throw new Error(`job failed (${r.code ?? '?'})\n${r.stdout}\n${r.stderr}`);
  const stats = parseBuildOutput(`${r.stdout}\n${r.stderr}`);
  return { seconds, cachedSteps: stats.cached, steps: stats.steps };
}

function report(results: readonly Measure[]): string {
  const rounds = Math.max(...results.map((r) => results.filter((x) => x.builder === r.builder && x.way === r.way && x.phase === r.phase).length));
  const lines = [
    '',
    `CI image build: time per job (fresh daemon each run; median of ${rounds} round(s)), ratio to "no cache" of the same column`,
    '',
  ];
  const builders = [...new Set(results.map((r) => r.builder))];
  for (const b of builders) {
    lines.push(`builder: ${b === 'buildkit' ? 'BuildKit (DOCKER_BUILDKIT=1)' : 'classic (DOCKER_BUILDKIT=0)'}`);
    lines.push(`  ${'way'.padEnd(12)} ${'cold'.padStart(16)} ${'warm'.padStart(16)}  ${'warm/cold'.padStart(9)}  cached steps (warm)`);
    const get = (way: Way, phase: 'cold' | 'warm'): Measure | undefined => {
      const all = results.filter((r) => r.builder === b && r.way === way && r.phase === phase).sort((x, y) => x.seconds - y.seconds);
      return all[Math.floor((all.length - 1) / 2)];
    };
    for (const way of WAYS) {
      const cold = get(way, 'cold');
      const warm = get(way, 'warm');
      const baseCold = get('no cache', 'cold');
      const baseWarm = get('no cache', 'warm');
      if (cold === undefined || warm === undefined || baseCold === undefined || baseWarm === undefined) continue;
      const cell = (m: Measure, base: Measure): string => `${m.seconds.toFixed(1)}s (${(m.seconds / base.seconds).toFixed(2)}x)`;
      lines.push(
        `  ${way.padEnd(12)} ${cell(cold, baseCold).padStart(16)} ${cell(warm, baseWarm).padStart(16)}  ${(warm.seconds / cold.seconds).toFixed(2).padStart(8)}x  ${warm.cachedSteps}/${warm.steps}`,
      );
    }
    lines.push('');
  }
  return lines.join('\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
