// The job `relais ci gitlab` generates, run for real: gitlab-ci-local 4.65 (shell executor)
// runs it against a private dockerd 20.10 whose registry mirror is relais (in-process), with
// a distribution registry as "Docker Hub" behind relais and another, with htpasswd auth, as
// the GitLab registry. Proves on two branches, under the classic builder and BuildKit, that
// after a wipe of the daemon the build reuses the pushed image as cache, and that a change
// rebuilds only the steps after it. Also runs `relais ci build` as the job's build step.
//
// The job is generated with --no-service (dind provided by the runner): gitlab-ci-local
// would start `services:` as containers, which this machine cannot pull; the test dockerd
// stands in for the runner's dind. Registry (buildx) mode cannot run here: see
// test/unit/ci/gitlab-yaml.test.ts and docs/gitlab-ci.md.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { parseBuildOutput, formatBytes } from '../../../src/products/ci/build-plan.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { removeDir, run, runOk, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

const root = fileURLToPath(new URL('../../../../', import.meta.url));
const GITLAB_CI_LOCAL = join(root, 'node_modules/gitlab-ci-local/src/index.js');
const RELAIS_CLI = join(root, 'dist/src/cli/main.js');
const TOKEN = 'glcbt-test-job-token';
const DOCKERFILE = [
  'FROM busybox:ci',
  'COPY base.txt /app/base.txt',
  'RUN echo two > /app/two.txt',
  'COPY app.txt /app/app.txt',
  'RUN cat /app/app.txt > /app/out.txt',
  '',
].join('\n');

interface Peers {
  hub: RegistryPeer;
  gitlab: RegistryPeer;
  relais: RelaisPeer;
  dockerd: Dockerd;
  busybox: BuiltImage;
  dir: string;
  binDir: string;
}

let peers: Peers | undefined;
const cleanups: (() => Promise<unknown>)[] = [];

function p(): Peers {
  assert.ok(peers !== undefined, 'peers started');
  return peers;
}

before(async () => {
  for (const f of [GITLAB_CI_LOCAL, RELAIS_CLI]) {
    assert.ok(existsSync(f), `${f} is missing (npm install; npx tsc -p tsconfig.json)`);
  }
  const dir = await tempDir('ci-pipeline');
  cleanups.push(() => removeDir(dir));
  const hub = await startRegistry();
  cleanups.push(() => hub.close());
  const busybox = await pushRunnableImage(hub.host, 'library/busybox:ci');
  const gitlab = await startRegistry({ auth: { kind: 'htpasswd', users: { 'gitlab-ci-token': TOKEN } } });
  cleanups.push(() => gitlab.close());
  const relais = await startRelais({ upstreams: { 'docker.io': hub.url } });
  cleanups.push(() => relais.close());
  const dockerd = await startDockerd({ mirrors: [relais.url], insecureRegistries: [relais.host, gitlab.host] });
  cleanups.push(() => dockerd.stop());
  // The job's `docker` is Debian's 20.10 client: it builds with BuildKit itself (the newer
  // client in /usr/local/bin needs the buildx plugin for that, which this machine lacks).
  const binDir = join(dir, 'bin');
  await mkdir(binDir);
  await symlink('/usr/bin/docker', join(binDir, 'docker'));
  hub.clearLog();
  peers = { hub, gitlab, relais, dockerd, busybox, dir, binDir };
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function git(repo: string, ...args: string[]): Promise<string> {
  return (await runOk('git', args, { cwd: repo })).stdout.trim();
}

/** A project repo with the Dockerfile, its sources and the pipeline file committed on main. */
async function makeProject(name: string, pipeline: string): Promise<string> {
  const repo = join(p().dir, name);
  await mkdir(repo);
  await git(repo, 'init', '-q', '-b', 'main');
  await git(repo, 'config', 'user.email', 'ci@example.com');
  await git(repo, 'config', 'user.name', 'CI');
  await git(repo, 'remote', 'add', 'origin', `https://gitlab.example.com/group/${name}.git`);
  await writeFile(join(repo, 'Dockerfile'), DOCKERFILE);
  await writeFile(join(repo, 'base.txt'), 'base\n');
  await writeFile(join(repo, 'app.txt'), 'app v1\n');
  await writeFile(join(repo, '.gitlab-ci.yml'), pipeline);
  await git(repo, 'add', '-A');
  await git(repo, 'commit', '-q', '-m', 'initial');
  return repo;
}

interface JobRun {
  code: number | null;
  output: string;
  /** The job's own output lines, without gitlab-ci-local's "job > " prefix. */
  log: string;
}

/** Runs one job with gitlab-ci-local's shell executor against the test dockerd. */
async function runJob(repo: string, job: string, vars: Record<string, string>): Promise<JobRun> {
  const { dockerd, gitlab, binDir, dir } = p();
  const name = repo.slice(repo.lastIndexOf('/') + 1);
  const variables: Record<string, string> = {
    DOCKER_HOST: dockerd.host,
    DOCKER_CONFIG: join(dir, `docker-config-${name}`),
    // The generated job talks TLS to dind's tcp://docker:2376; here the daemon is a local socket.
    DOCKER_TLS_VERIFY: '',
    DOCKER_CERT_PATH: '',
    CI_REGISTRY: gitlab.host,
    CI_REGISTRY_IMAGE: `${gitlab.host}/group/${name}`,
    CI_JOB_TOKEN: TOKEN,
    ...vars,
  };
  const args = [
    GITLAB_CI_LOCAL,
    '--force-shell-executor',
    '--no-color',
    '--ignore-predefined-vars',
    'CI_REGISTRY,CI_REGISTRY_IMAGE,CI_JOB_TOKEN',
    ...Object.entries(variables).flatMap(([k, v]) => ['--variable', `${k}=${v}`]),
    job,
  ];
  const r = await run(process.execPath, args, {
    cwd: repo,
    extraEnv: { PATH: `${binDir}:${process.env['PATH'] ?? '/usr/bin:/bin'}`, HOME: dir },
    timeoutMs: 120_000,
  });
  const output = `${r.stdout}${r.stderr}`;
  if (process.env['RELAIS_CI_TEST_DUMP'] !== undefined) {
    await writeFile(join(process.env['RELAIS_CI_TEST_DUMP'], `${name}-${Date.now()}.log`), output);
  }
  const prefix = `${job} > `;
  const log = output
    .split('\n')
    .filter((l) => l.startsWith(prefix))
    .map((l) => l.slice(prefix.length))
    .join('\n');
  return { code: r.code, output, log };
}

/** Removes every image, container and build cache entry from the daemon. */
async function wipeDaemon(): Promise<void> {
  const { dockerd } = p();
  await dockerd.dockerOk(['system', 'prune', '--all', '--force']);
  await dockerd.dockerOk(['builder', 'prune', '--all', '--force']);
  const left = await dockerd.dockerOk(['images', '--all', '--quiet']);
  assert.equal(left.stdout.trim(), '', 'daemon has no images after the wipe');
}

function manifestPuts(registry: RegistryPeer, repo: string, tag: string): number {
  return registry.accessLog().filter((e) => e.method === 'PUT' && e.path === `/v2/group/${repo}/manifests/${tag}` && e.status === 201)
    .length;
}

async function generatedPipeline(): Promise<string> {
  const r = await runOk(process.execPath, [
    RELAIS_CLI,
    'ci',
    'gitlab',
    '--mode',
    'inline',
    '--no-service',
    '--build-option=--network=none',
  ]);
  return r.stdout;
}

for (const builder of ['classic', 'buildkit'] as const) {
  describe(`generated inline-mode job under the ${builder} builder`, () => {
    const name = `proj-${builder}`;
    const vars = { DOCKER_BUILDKIT: builder === 'classic' ? '0' : '1' };
    let repo = '';

    it('main, first build: green, every step built, slug + sha + latest pushed', async () => {
      repo = await makeProject(name, await generatedPipeline());
      const sha = await git(repo, 'rev-parse', 'HEAD');
      await wipeDaemon();
      const job = await runJob(repo, 'build', vars);
      assert.equal(job.code, 0, job.output);
      assert.match(job.output, /PASS {2}build/);
      const stats = parseBuildOutput(job.log);
      assert.equal(stats.builder, builder);
      assert.deepEqual({ steps: stats.steps, cached: stats.cached }, { steps: 4, cached: 0 }, job.log);
      const { gitlab } = p();
      assert.equal(manifestPuts(gitlab, name, 'main'), 1);
      assert.equal(manifestPuts(gitlab, name, sha), 1);
      assert.equal(manifestPuts(gitlab, name, 'latest'), 1);
    });

    it('main again after wiping the daemon: every step comes from the pushed image', async () => {
      await wipeDaemon();
      const job = await runJob(repo, 'build', vars);
      assert.equal(job.code, 0, job.output);
      const stats = parseBuildOutput(job.log);
      assert.deepEqual({ steps: stats.steps, cached: stats.cached, rebuilt: stats.rebuilt }, { steps: 4, cached: 4, rebuilt: [] }, job.log);
      assert.equal(manifestPuts(p().gitlab, name, 'latest'), 2, 'latest follows the default branch');
    });

    it('a feature branch with one changed file, after a wipe: cache from the default branch, only later steps rebuilt, no latest', async () => {
      await git(repo, 'checkout', '-q', '-b', 'feature/Login');
      await writeFile(join(repo, 'app.txt'), 'app v2\n');
      await git(repo, 'commit', '-q', '-am', 'change app');
      const sha = await git(repo, 'rev-parse', 'HEAD');
      await wipeDaemon();
      const { gitlab } = p();
      const latestBefore = manifestPuts(gitlab, name, 'latest');
      const job = await runJob(repo, 'build', vars);
      assert.equal(job.code, 0, job.output);
      const stats = parseBuildOutput(job.log);
      assert.deepEqual(
        { cached: stats.cachedSteps, rebuilt: stats.rebuilt },
        {
          cached: ['COPY base.txt /app/base.txt', 'RUN echo two > /app/two.txt'],
          rebuilt: ['COPY app.txt /app/app.txt', 'RUN cat /app/app.txt > /app/out.txt'],
        },
        job.log,
      );
      // The branch image did not exist yet: its pull failed and the job went on.
      const missing = gitlab.accessLog().filter((e) => e.path === `/v2/group/${name}/manifests/feature-login` && e.status === 404);
      assert.ok(missing.length >= 1, 'the branch image was looked up first');
      assert.equal(manifestPuts(gitlab, name, 'feature-login'), 1, 'pushed under CI_COMMIT_REF_SLUG');
      assert.equal(manifestPuts(gitlab, name, sha), 1);
      assert.equal(manifestPuts(gitlab, name, 'latest'), latestBefore, 'no latest from a feature branch');
    });
  });
}

describe('relais as the mirror', () => {
  it('dockerd pulled the Docker Hub base image through relais: the upstream sent each blob once', async () => {
    const { hub, busybox, relais } = p();
    await hub.settle();
    // Every wiped run pulled busybox:ci again through the mirror (no internet, no other
    // mirror: only relais could answer). Its layer also comes with the project's image from the
    // GitLab registry, so dockerd fetched that from relais once; its config on every pull.
    const servedByRelais = (digest: string): number =>
      relais.logs().filter((l) => l['msg'] === 'request' && l['method'] === 'GET' && l['status'] === 200 && l['path'] === `/v2/library/busybox/blobs/${digest}`)
        .length;
    assert.ok(servedByRelais(busybox.configDigest) >= 3, `relais served the config ${servedByRelais(busybox.configDigest)} times`);
    assert.ok(servedByRelais(busybox.layers[0]?.digest ?? '') >= 1);
    // relais fetched each blob from the upstream once.
    const upstreamLog = hub.accessLog().map((e) => e.line).join('\n');
    assert.equal(hub.blobGets(busybox.configDigest), 1, upstreamLog);
    assert.equal(hub.blobGets(busybox.layers[0]?.digest ?? ''), 1, upstreamLog);
  });
});

describe('relais ci build as the build step', () => {
  const name = 'proj-cli';
  let repo = '';
  const vars = { DOCKER_BUILDKIT: '1' };

  async function manifestLayerBytes(tag: string): Promise<number> {
    const { gitlab } = p();
    const auth = `Basic ${Buffer.from(`gitlab-ci-token:${TOKEN}`).toString('base64')}`;
    const res = await fetch(`${gitlab.url}/v2/group/${name}/manifests/${tag}`, {
      headers: { authorization: auth, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    assert.equal(res.status, 200);
    const m = (await res.json()) as { layers: { size: number }[] };
    return m.layers.reduce((a, l) => a + l.size, 0);
  }

  it('first build: streams docker output, no cache source yet, all steps built, bytes pushed', async () => {
    const pipeline = stringify({
      'relais-build': { script: [`node ${RELAIS_CLI} ci build -- --network=none .`] },
    });
    repo = await makeProject(name, pipeline);
    await wipeDaemon();
    const job = await runJob(repo, 'relais-build', vars);
    assert.equal(job.code, 0, job.output);
    // docker's own output reached the job log...
    assert.match(job.log, /#\d+ \[2\/5\] COPY base\.txt \/app\/base\.txt/);
    // ...and the summary says what happened.
    assert.match(job.log, /cache source: {2}none found/);
    assert.match(job.log, /cached steps: {2}0 of 4 \(BuildKit\)/);
    assert.match(job.log, /pushed: {8}\d/);
    assert.match(job.log, /time: {10}login \d+\.\ds, pull \d+\.\ds, build \d+\.\ds, push \d+\.\ds/);
    assert.equal(manifestPuts(p().gitlab, name, 'latest'), 1);
  });

  it('after a wipe: the branch image is the cache source, 4 of 4 cached, bytes pulled = its layers, nothing new pushed', async () => {
    await wipeDaemon();
    const job = await runJob(repo, 'relais-build', vars);
    assert.equal(job.code, 0, job.output);
    const { gitlab } = p();
    assert.match(job.log, new RegExp(`cache source: {2}${gitlab.host.replace(/\./g, '\\.')}/group/${name}:main \\(this branch\\)`));
    assert.match(job.log, /cached steps: {2}4 of 4 \(BuildKit\)/);
    const expectedPulled = formatBytes(await manifestLayerBytes('main'));
    assert.match(job.log, new RegExp(`pulled: {8}${expectedPulled.replace('.', '\\.')}\\n`));
    assert.match(job.log, /pushed: {8}0 B/);
  });
});
