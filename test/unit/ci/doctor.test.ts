import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkGitlabCi, checkRunnerConfig, parseGitlabCi, resolveJobs, runnerFacts, type Finding } from '../../../src/products/ci/doctor.js';
import { generateGitlabCi } from '../../../src/products/ci/gitlab-yaml.js';
import { parseRunnerConfig, planRunnerConfig } from '../../../src/products/ci/runner-config.js';
import { isRelaisError } from '../../../src/errors.js';
import { relaisCi } from './cli.js';

const root = fileURLToPath(new URL('../../../../', import.meta.url));
const fixture = (name: string): string => readFileSync(join(root, 'test/fixtures/ci', name), 'utf8');
const rules = (findings: readonly Finding[]): string[] => findings.map((f) => `${f.severity}:${f.rule}`).sort();

function ci(text: string, runners?: string): Finding[] {
  const facts = runners === undefined ? undefined : runnerFacts(parseRunnerConfig(runners));
  return checkGitlabCi(parseGitlabCi(text), facts);
}

describe('relais ci doctor rules', () => {
  it("the blog recipe: derived alias with '_', TLS port trap, no inline cache, hard-coded master", () => {
    const findings = ci(fixture('doctor/blog-recipe.gitlab-ci.yml'));
    assert.deepEqual(rules(findings), [
      'error:docker-host-alias',
      'error:missing-inline-cache',
      'error:tls-port',
      'warning:hard-coded-master',
    ]);
    for (const f of findings) {
      assert.match(f.where, /job build/);
      assert.ok(f.fix.length > 10, `${f.rule} has a fix`);
    }
    assert.match(findings.find((f) => f.rule === 'docker-host-alias')?.message ?? '', /registry\.example\.com__ci__docker/);
  });

  it('extends + global variables: TLS alias and port mismatch, mirror URL with a path, mirror scope, master in rules', () => {
    const findings = ci(fixture('doctor/tls-mismatch.gitlab-ci.yml'));
    assert.deepEqual(rules(findings), [
      'error:mirror-url',
      'error:tls-alias',
      'error:tls-port',
      'warning:hard-coded-master',
      'warning:mirror-scope',
    ]);
    assert.match(findings.find((f) => f.rule === 'mirror-scope')?.message ?? '', /quay\.io\/prometheus\/busybox/);
    // The lint job uses no docker: nothing about it.
    assert.ok(findings.every((f) => !f.where.includes('lint')));
  });

  it('TLS off on port 2376; a dind service without mirror', () => {
    assert.deepEqual(rules(ci(fixture('doctor/no-tls-2376.gitlab-ci.yml'))), ['error:tls-port', 'warning:no-mirror']);
  });

  it('with the runner config: privileged, /certs/client, and a mirror set both by daemon.json and by the job', () => {
    const runners = fixture('doctor/runner-daemon-json.toml');
    const findings = ci(fixture('doctor/tls-mismatch.gitlab-ci.yml'), runners);
    const byRule = (r: string): Finding[] => findings.filter((f) => f.rule === r);
    // "builds" is not privileged: runner-config leaves it alone (it cannot run dind), and so does the
    // doctor, since "pinned-dind" can run the dind jobs. Only the runner that matters is judged.
    assert.equal(byRule('privileged').length, 0);
    assert.deepEqual(byRule('tls-certs-volume').map((f) => f.where), ['config.toml: runner pinned-dind']);
    assert.equal(byRule('mirror-conflict').length, 1);
    assert.deepEqual(rules(checkRunnerConfig(runnerFacts(parseRunnerConfig(runners)))), ['error:mirror-conflict', 'warning:tls-alias']);
  });

  it('runner findings come once per runner, naming the jobs', () => {
    const two = `.d: {image: "docker:27", services: [{name: "docker:27-dind", alias: docker, command: ["--registry-mirror=https://r.example.com"]}], variables: {DOCKER_HOST: "tcp://docker:2376", DOCKER_TLS_CERTDIR: /certs}}
a: {extends: .d, script: [docker build .]}
b: {extends: .d, script: [docker build .]}
c: {image: node:20, script: [npm test]}
`;
    const findings = ci(two, '[[runners]]\n  name = "r"\n  executor = "docker"\n  [runners.docker]\n    privileged = false\n');
    // The only runner is unprivileged: that is the error (the /certs/client volume comes after).
    assert.deepEqual(
      findings.map((f) => [f.rule, f.message.split(' ').slice(0, 3).join(' ')]),
      [['privileged', 'jobs a, b']],
    );
  });

  it('the classic builder needs no inline cache', () => {
    const text = fixture('doctor/blog-recipe.gitlab-ci.yml').replace('DOCKER_HOST:', 'DOCKER_BUILDKIT: "0"\n    DOCKER_HOST:');
    assert.ok(!rules(ci(text)).includes('error:missing-inline-cache'));
  });

  it("what relais generates and configures passes: job + runner-config's output", () => {
    const job = generateGitlabCi({ mode: 'inline', mirror: 'https://relais.example.com' });
    const runner = planRunnerConfig(fixture('runner-config/registered-docker.toml'), {
      mirror: 'https://relais.example.com',
      via: 'volume',
      daemonJsonPath: '/etc/gitlab-runner/relais-daemon.json',
    }).output;
    // The job passes --registry-mirror and the runner (--via volume) sets daemon.json: a conflict, rightly.
    assert.deepEqual(rules(ci(job, runner)), ['error:mirror-conflict']);
    // A job without its own mirror flag (the runner provides it) is clean.
    assert.deepEqual(ci(generateGitlabCi({ mode: 'inline' }), runner), []);
    const viaService = planRunnerConfig(fixture('runner-config/registered-docker.toml'), {
      mirror: 'https://relais.example.com',
      via: 'service',
      daemonJsonPath: '/unused',
    }).output;
    assert.deepEqual(ci(generateGitlabCi({ mode: 'inline', service: false }), viaService), []);
    assert.deepEqual(checkRunnerConfig(runnerFacts(parseRunnerConfig(viaService))), []);
  });

  it('a loopback mirror (inside dind: dind itself) is flagged in the job and in the runner config', () => {
    for (const url of ['http://localhost:5000', 'http://127.0.0.1:5000']) {
      const job = generateGitlabCi({ mode: 'inline', mirror: url });
      const f = ci(job).filter((x) => x.rule === 'loopback-relais');
      assert.equal(f.length, 1, url);
      assert.match(f[0]?.message ?? '', /dind itself/);
      const runner = planRunnerConfig(fixture('runner-config/registered-docker.toml'), { mirror: url, via: 'service', daemonJsonPath: '/unused' }).output;
      assert.ok(checkRunnerConfig(runnerFacts(parseRunnerConfig(runner))).some((x) => x.rule === 'loopback-relais'), url);
    }
    assert.ok(!ci(generateGitlabCi({ mode: 'inline', mirror: 'http://relais.internal:5000' })).some((x) => x.rule === 'loopback-relais'));
  });

  it('an http mirror without --insecure-registry (the README snippet\'s second flag forgotten) is a warning; the generated job has it', () => {
    const job = generateGitlabCi({ mode: 'inline', mirror: 'http://relais.internal:5000' });
    assert.deepEqual(ci(job), []);
    const handWritten = job.replace(', "--insecure-registry=relais.internal:5000"', '');
    assert.notEqual(handWritten, job);
    const f = ci(handWritten);
    assert.deepEqual(rules(f), ['warning:mirror-insecure']);
    assert.match(f[0]?.fix ?? '', /--insecure-registry=relais\.internal:5000/);
  });

  it('agrees with runner-config about which runners matter: an unprivileged runner it leaves alone is not an error', () => {
    // The user's fleet: a privileged build runner with dind, and an unprivileged one for tests.
    const toml = fixture('runner-config/existing-dind.toml');
    const configured = planRunnerConfig(toml, { mirror: 'https://relais.example.com', via: 'service', daemonJsonPath: '/unused' });
    assert.match(configured.runners.find((r) => r.name === 'unprivileged')?.skipped ?? '', /not privileged/);
    const findings = ci(generateGitlabCi({ mode: 'inline', service: false }), configured.output);
    assert.deepEqual(findings, [], 'nothing about the runner runner-config left alone');
    assert.deepEqual(checkRunnerConfig(runnerFacts(parseRunnerConfig(configured.output))), []);
  });

  it('proxy mode: generated job and runner wiring are clean; no-mirror and mirror-scope give way to proxy-scope', () => {
    const proxy = { url: 'http://relais.example.com:3128', hosts: ['registry-1.docker.io', 'ghcr.io'] };
    const job = generateGitlabCi({ mode: 'inline', proxy });
    assert.deepEqual(ci(job), []);
    // FROM lines of intercepted registries are covered; quay.io is not intercepted.
    const withPulls = job.replace('- docker pull "$IMAGE:$CI_COMMIT_REF_SLUG" || true', '- docker pull ghcr.io/org/base:1 && docker pull quay.io/org/tool:2 && docker pull docker.io/library/alpine:3');
    const scope = ci(withPulls).filter((f) => f.rule === 'proxy-scope');
    assert.equal(scope.length, 1);
    assert.match(scope[0]?.message ?? '', /"quay\.io\/org\/tool:2" is not among them/);
    assert.ok(!ci(withPulls).some((f) => f.rule === 'mirror-scope' || f.rule === 'no-mirror'));

    const runner = planRunnerConfig(fixture('runner-config/registered-docker.toml'), {
      via: 'proxy',
      daemonJsonPath: '/unused',
      proxy: { ...proxy, certsDirPath: '/etc/gitlab-runner/relais-certs.d', caDirPath: '/etc/gitlab-runner/relais-ca', caPem: 'x' },
    }).output;
    assert.deepEqual(ci(generateGitlabCi({ mode: 'inline', service: false }), runner), []);
    assert.deepEqual(checkRunnerConfig(runnerFacts(parseRunnerConfig(runner))), []);
    // The certs.d mount removed by hand: dind would not trust relais's CA.
    const noCa = runner.replace(', "/etc/gitlab-runner/relais-certs.d:/etc/docker/certs.d:ro"', '');
    assert.notEqual(noCa, runner);
    assert.deepEqual(rules(checkRunnerConfig(runnerFacts(parseRunnerConfig(noCa)))), ['error:proxy-ca']);
    // Wired by an older runner-config (certs.d only, no CA dir, no SSL_CERT_DIR): Docker Hub pulls would fail.
    const certsDOnly = runner.replace(', "/etc/gitlab-runner/relais-ca:/etc/relais-ca:ro"', '').replace(', "SSL_CERT_DIR=/etc/relais-ca"', '');
    assert.notEqual(certsDOnly, runner);
    const hub = checkRunnerConfig(runnerFacts(parseRunnerConfig(certsDOnly)));
    assert.deepEqual(rules(hub), ['warning:proxy-ca-hub']);
    assert.match(hub[0]?.fix ?? '', /SSL_CERT_DIR=\/etc\/relais-ca/);
    // The variable without the mount, or the mount without the variable, is not enough either.
    const varOnly = runner.replace(', "/etc/gitlab-runner/relais-ca:/etc/relais-ca:ro"', '');
    assert.deepEqual(rules(checkRunnerConfig(runnerFacts(parseRunnerConfig(varOnly)))), ['warning:proxy-ca-hub']);
    const mountOnly = runner.replace(', "SSL_CERT_DIR=/etc/relais-ca"', '');
    assert.deepEqual(rules(checkRunnerConfig(runnerFacts(parseRunnerConfig(mountOnly)))), ['warning:proxy-ca-hub']);
    // Docker Hub not intercepted: certs.d covers every intercepted host, nothing to warn about.
    const noHub = certsDOnly.replace('RELAIS_INTERCEPT_HOSTS=registry-1.docker.io ghcr.io', 'RELAIS_INTERCEPT_HOSTS=ghcr.io');
    assert.notEqual(noHub, certsDOnly);
    assert.deepEqual(rules(checkRunnerConfig(runnerFacts(parseRunnerConfig(noHub)))), []);
    // A job's own dind with HTTPS_PROXY, trusting relais through the runner's mounts: the same check.
    const jobDind = (vars: string): string => `build:
  image: docker:27
  services: [{name: "docker:27-dind", alias: docker, variables: {HTTPS_PROXY: "http://relais.example.com:3128"${vars}}}]
  variables: {DOCKER_HOST: "tcp://docker:2376", DOCKER_TLS_CERTDIR: /certs}
  script: [docker build .]
`;
    const caRules = (yaml: string, toml: string): string[] => rules(ci(yaml, toml)).filter((r) => r.includes(':proxy-ca'));
    assert.deepEqual(caRules(jobDind(''), certsDOnly), ['warning:proxy-ca-hub']);
    assert.deepEqual(caRules(jobDind(', SSL_CERT_DIR: /etc/relais-ca'), runner), []);
    assert.deepEqual(caRules(jobDind(', SSL_CERT_DIR: /etc/relais-ca'), certsDOnly), ['warning:proxy-ca-hub'], 'the variable names a directory nothing mounts');
  });

  it('proxy mode traps: no CA for dind, HTTPS_PROXY on loopback, job-level HTTPS_PROXY that would proxy the docker connection', () => {
    const svc = (vars: string): string => `build:
  image: docker:27
  services: [{name: "docker:27-dind", alias: docker, variables: {${vars}}}]
  variables: {DOCKER_HOST: "tcp://docker:2376", DOCKER_TLS_CERTDIR: /certs}
  script: [docker build .]
`;
    assert.deepEqual(rules(ci(svc('HTTPS_PROXY: "http://relais.example.com:3128"'))), ['error:proxy-ca']);
    assert.deepEqual(rules(ci(svc('HTTPS_PROXY: "http://127.0.0.1:3128"'))), ['error:loopback-relais', 'error:proxy-ca']);
    const jobLevel = `build:
  image: docker:27
  services: [{name: "docker:27-dind", alias: docker, entrypoint: [sh, -c, "mkdir -p /etc/docker/certs.d/ghcr.io", dind]}]
  variables: {DOCKER_HOST: "tcp://docker:2376", DOCKER_TLS_CERTDIR: /certs, HTTPS_PROXY: "http://relais.example.com:3128", NO_PROXY: localhost}
  script: [docker build .]
`;
    assert.deepEqual(rules(ci(jobLevel)), ['error:proxy-no-proxy']);
    assert.deepEqual(rules(ci(jobLevel.replace('NO_PROXY: localhost', 'NO_PROXY: "localhost,docker"'))), []);
  });

  it('resolves extends, default and global variables like GitLab', () => {
    const jobs = resolveJobs(
      parseGitlabCi(`variables: {A: "1", B: "1"}
default: {services: [docker:dind]}
.t: {variables: {B: "2", C: "2"}, script: [echo t]}
j: {extends: .t, variables: {C: "3"}}
`),
    );
    assert.equal(jobs.length, 1);
    assert.deepEqual(jobs[0]?.variables, { A: '1', B: '2', C: '3' });
    assert.deepEqual(jobs[0]?.services.map((s) => s.name), ['docker:dind']);
    assert.deepEqual(jobs[0]?.script, ['echo t']);
  });

  it('tolerates !reference and rejects what is not YAML', () => {
    assert.doesNotThrow(() => parseGitlabCi('.a: {script: [x]}\nb: {script: [!reference [.a, script]]}\n'));
    assert.throws(() => parseGitlabCi('a: [\n'), (e: unknown) => isRelaisError(e) && /not valid YAML/.test(e.message));
  });
});

describe('relais ci doctor (command)', () => {
  it('prints findings with fixes, exits 1 on errors and 0 on a clean setup', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relais-ci-doctor-'));
    try {
      const doctor = (...args: string[]) => relaisCi(['doctor', ...args], { cwd: dir });
      const bad = doctor('--gitlab-ci', join(root, 'test/fixtures/ci/doctor/blog-recipe.gitlab-ci.yml'));
      assert.equal(bad.code, 1, bad.stderr);
      assert.match(bad.stdout, /^error \[tls-port\] .*job build$/m);
      assert.match(bad.stdout, /^ {2}fix: /m);
      assert.match(bad.stdout, /3 error\(s\), 1 warning\(s\)/);
      writeFileSync(join(dir, '.gitlab-ci.yml'), generateGitlabCi({ mode: 'inline', mirror: 'https://relais.example.com' }));
      const good = doctor();
      assert.equal(good.code, 0, good.stdout);
      assert.match(good.stdout, /no problems found/);
      rmSync(join(dir, '.gitlab-ci.yml'));
      const nothing = doctor();
      assert.equal(nothing.code, 1);
      assert.match(nothing.stderr, /^error: nothing to check/m);
      assert.match(nothing.stderr, /^hint: /m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
