import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  explainMissing,
  formatBytes,
  formatSummary,
  parseBuildOutput,
  planBuild,
  pulledLayerIds,
  pushedLayerIds,
  readCiContext,
  type CiContext,
} from '../../../src/products/ci/build-plan.js';
import { parseImageRef } from '../../../src/products/ci/build-run.js';
import { relaisCi } from './cli.js';

const root = fileURLToPath(new URL('../../../../', import.meta.url));
const output = (name: string): string => readFileSync(join(root, 'test/fixtures/ci/docker-output', name), 'utf8');

const env = {
  CI: 'true',
  GITLAB_CI: 'true',
  CI_REGISTRY_IMAGE: 'registry.example.com/group/app',
  CI_COMMIT_REF_NAME: 'feature/Login',
  CI_COMMIT_REF_SLUG: 'feature-login',
  CI_COMMIT_SHA: '0123456789abcdef0123456789abcdef01234567',
  CI_DEFAULT_BRANCH: 'Main',
  CI_REGISTRY: 'registry.example.com',
  CI_JOB_TOKEN: 'tok',
};

function ctx(overrides: Record<string, string> = {}): CiContext {
  const r = readCiContext({ ...env, ...overrides }, true);
  assert.ok(r.ok);
  return r.context;
}

describe('readCiContext / explainMissing', () => {
  it("reads GitLab's predefined variables and slugs the default branch", () => {
    const c = ctx();
    assert.equal(c.image, 'registry.example.com/group/app');
    assert.equal(c.defaultSlug, 'main');
    assert.deepEqual(c.login, { registry: 'registry.example.com', user: 'gitlab-ci-token', password: 'tok' });
    assert.equal(ctx({ CI_REGISTRY_USER: 'deploy' }).login?.user, 'deploy');
  });

  it('outside CI: names each missing variable, what it is, and how to set it', () => {
    const r = readCiContext({ PATH: '/bin', CI_COMMIT_SHA: 'abc' }, true);
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.equal(r.inCi, false);
    assert.deepEqual(
      r.missing.map((v) => v.name),
      ['CI_REGISTRY_IMAGE', 'CI_COMMIT_REF_NAME', 'CI_COMMIT_REF_SLUG', 'CI_DEFAULT_BRANCH', 'CI_REGISTRY', 'CI_JOB_TOKEN'],
    );
    const text = explainMissing(r.missing, r.inCi);
    assert.match(text, /runs inside a GitLab CI job/);
    assert.match(text, /CI_REGISTRY_IMAGE {2,}the project's image repository/);
    assert.match(text, /To try it outside CI, set them yourself/);
    assert.match(text, /--no-login/);
    // Without login, only the build variables are needed.
    const noLogin = readCiContext({ ...env, CI_REGISTRY: '', CI_JOB_TOKEN: '' }, false);
    assert.ok(noLogin.ok);
    assert.equal(noLogin.context.login, undefined);
  });

  it('inside CI: says GitLab did not set them (no "try it outside CI" advice)', () => {
    const r = readCiContext({ GITLAB_CI: 'true', CI_COMMIT_SHA: 'abc' }, false);
    assert.ok(!r.ok);
    assert.doesNotMatch(explainMissing(r.missing, r.inCi), /outside CI/);
  });
});

describe('planBuild', () => {
  it('inline, feature branch: login, pull branch and default-branch images (tolerated), build with both as cache, push slug and sha, no latest', () => {
    const steps = planBuild(ctx(), { mode: 'inline', buildArgs: ['--network=none', '.'] });
    assert.deepEqual(
      steps.map((s) => [s.phase, s.args.join(' '), s.tolerateFailure === true]),
      [
        ['login', 'login --username gitlab-ci-token --password-stdin registry.example.com', false],
        ['pull', 'pull registry.example.com/group/app:feature-login', true],
        ['pull', 'pull registry.example.com/group/app:main', true],
        [
          'build',
          'build --build-arg BUILDKIT_INLINE_CACHE=1 --cache-from registry.example.com/group/app:feature-login --cache-from registry.example.com/group/app:main --tag registry.example.com/group/app:feature-login --tag registry.example.com/group/app:0123456789abcdef0123456789abcdef01234567 --network=none .',
          false,
        ],
        ['push', 'push registry.example.com/group/app:feature-login', false],
        ['push', 'push registry.example.com/group/app:0123456789abcdef0123456789abcdef01234567', false],
      ],
    );
    assert.equal(steps[0]?.stdin, 'tok', 'the token goes through stdin, never argv');
  });

  it('inline, default branch: one pull (same tag), latest tagged and pushed; context defaults to "."', () => {
    const steps = planBuild(ctx({ CI_COMMIT_REF_NAME: 'Main', CI_COMMIT_REF_SLUG: 'main' }), { mode: 'inline', buildArgs: [] });
    assert.equal(steps.filter((s) => s.phase === 'pull').length, 1);
    assert.equal(steps.find((s) => s.phase === 'build')?.args.at(-1), '.');
    assert.deepEqual(steps.slice(-2).map((s) => s.args.join(' ')), [
      'tag registry.example.com/group/app:0123456789abcdef0123456789abcdef01234567 registry.example.com/group/app:latest',
      'push registry.example.com/group/app:latest',
    ]);
  });

  it('registry mode: buildx with registry cache tags per slug (mode=max), no pulls, latest via imagetools', () => {
    const steps = planBuild(ctx({ CI_COMMIT_REF_NAME: 'Main', CI_COMMIT_REF_SLUG: 'main', CI_DEFAULT_BRANCH: 'Main' }), { mode: 'registry', buildArgs: [] });
    assert.ok(!steps.some((s) => s.phase === 'pull'));
    const build = steps.find((s) => s.args[1] === 'build');
    assert.deepEqual(build?.args, [
      'buildx', 'build', '--push',
      '--cache-to', 'type=registry,ref=registry.example.com/group/app:cache-main,mode=max',
      '--cache-from', 'type=registry,ref=registry.example.com/group/app:cache-main',
      '--tag', 'registry.example.com/group/app:main',
      '--tag', 'registry.example.com/group/app:0123456789abcdef0123456789abcdef01234567',
      '.',
    ]);
    assert.deepEqual(steps.at(-1)?.args, [
      'buildx', 'imagetools', 'create', '--tag', 'registry.example.com/group/app:latest',
      'registry.example.com/group/app:0123456789abcdef0123456789abcdef01234567',
    ]);
    const feature = planBuild(ctx(), { mode: 'registry', buildArgs: [], buildkitdConfig: '/tmp/x/buildkitd.toml' });
    assert.deepEqual(feature[1]?.args, ['buildx', 'create', '--use', '--driver', 'docker-container', '--config', '/tmp/x/buildkitd.toml']);
    const fb = feature.find((s) => s.args[1] === 'build')?.args.join(' ') ?? '';
    assert.match(fb, /--cache-from type=registry,ref=registry\.example\.com\/group\/app:cache-feature-login --cache-from type=registry,ref=registry\.example\.com\/group\/app:cache-main/);
    assert.ok(!feature.some((s) => s.args.includes('imagetools')));
  });
});

describe('parseBuildOutput (real docker 20.10 output)', () => {
  it('classic builder, cold: 4 steps, none cached (FROM not counted)', () => {
    const s = parseBuildOutput(output('classic-cold.txt'));
    assert.deepEqual([s.builder, s.steps, s.cached], ['classic', 4, 0]);
  });

  it('classic builder, one file changed: the two steps before it cached', () => {
    const s = parseBuildOutput(output('classic-partial.txt'));
    assert.deepEqual(s.cachedSteps, ['COPY base.txt /app/base.txt', 'RUN echo two > /app/two.txt']);
    assert.deepEqual(s.rebuilt, ['COPY app.txt /app/app.txt', 'RUN cat /app/app.txt > /app/out.txt']);
  });

  it('BuildKit plain progress: #id CACHED lines; [internal] and FROM not counted', () => {
    const s = parseBuildOutput(output('buildkit-partial.txt'));
    assert.deepEqual([s.builder, s.steps, s.cached], ['buildkit', 4, 2]);
    assert.deepEqual(s.rebuilt, ['COPY app.txt /app/app.txt', 'RUN cat /app/app.txt > /app/out.txt']);
  });

  it('BuildKit multi-stage: named stages', () => {
    const s = parseBuildOutput(output('buildkit-multistage.txt'));
    assert.deepEqual([s.steps, s.cached], [3, 2]);
    assert.deepEqual(s.rebuilt, ['COPY --from=builder /out/app /usr/local/bin/app']);
  });

  it('no step lines: unknown', () => {
    assert.equal(parseBuildOutput('ERROR: something').builder, 'unknown');
  });
});

describe('pull/push layer ids, summary', () => {
  it('only layers actually transferred count', () => {
    assert.deepEqual(pulledLayerIds(output('pull.txt')), ['956aeca69595', '12574e809750']);
    assert.deepEqual(pushedLayerIds(output('push.txt')), ['956aeca69595', '12574e809750', 'a60a2236a476']);
  });

  it('image references', () => {
    assert.deepEqual(parseImageRef('127.0.0.1:5000/group/app:main'), { host: '127.0.0.1:5000', name: 'group/app', reference: 'main' });
    assert.deepEqual(parseImageRef('registry.example.com/a/b/c'), { host: 'registry.example.com', name: 'a/b/c', reference: 'latest' });
    assert.deepEqual(parseImageRef(`r.example.com/a@sha256:${'0'.repeat(64)}`), { host: 'r.example.com', name: 'a', reference: `sha256:${'0'.repeat(64)}` });
  });

  it('formats the summary a person reads at the end of the job log', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(200 * 1024 * 1024), '200 MiB');
    const text = formatSummary({
      mode: 'inline',
      cacheSources: [
        { ref: 'r/app:feature-login', source: 'branch', found: false },
        { ref: 'r/app:main', source: 'default-branch', found: true },
      ],
      stats: parseBuildOutput(output('buildkit-partial.txt')),
      bytesPulled: 3 * 1024 * 1024,
      bytesPushed: undefined,
      timings: [
        { phase: 'login', ms: 100 },
        { phase: 'pull', ms: 1000 },
        { phase: 'pull', ms: 1500 },
        { phase: 'build', ms: 4200 },
        { phase: 'push', ms: 900 },
      ],
      pushed: ['r/app:feature-login'],
    });
    assert.match(text, /cache source: {2}r\/app:main \(default branch\)/);
    assert.match(text, /cached steps: {2}2 of 4 \(BuildKit\)/);
    assert.match(text, /rebuilt from: {2}COPY app\.txt \/app\/app\.txt/);
    assert.match(text, /pulled: {8}3\.0 MiB/);
    assert.match(text, /pushed: {8}unknown \(r\/app:feature-login\)/);
    assert.match(text, /time: {10}login 0\.1s, pull 2\.5s, build 4\.2s, push 0\.9s/);
  });
});

describe('relais ci build (command) outside CI', () => {
  it('exits 2, lists the missing variables, runs no docker', () => {
    const r = relaisCi(['build', '--docker', '/nonexistent/docker'], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' } });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /CI_REGISTRY_IMAGE/);
    assert.match(r.stderr, /CI_JOB_TOKEN/);
    assert.doesNotMatch(r.stderr, /nonexistent/, 'docker was not run');
  });
});

describe('relais ci build (command) failures', () => {
  const ciEnv = { ...env, PATH: process.env['PATH'] ?? '/usr/bin:/bin' };

  it('a docker step that fails: message and hint, exit 1, no stack trace', () => {
    const r = relaisCi(['build', '--docker', '/bin/false'], { env: ciEnv });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^\$ \/bin\/false login --username gitlab-ci-token --password-stdin registry\.example\.com$/m);
    assert.match(r.stderr, /^error: docker login failed \(exit 1\)$/m);
    assert.match(r.stderr, /^hint: check CI_REGISTRY and CI_JOB_TOKEN$/m);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('a docker CLI that is not there: says which and what to do', () => {
    const r = relaisCi(['build', '--docker', '/nonexistent/docker'], { env: ciEnv });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: cannot run \/nonexistent\/docker: .*ENOENT/m);
    assert.match(r.stderr, /^hint: install the docker CLI in the job image, or pass --docker PATH$/m);
  });
});
