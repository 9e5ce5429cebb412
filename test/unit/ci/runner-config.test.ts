import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from '@decimalturn/toml-patch';
import { daemonJsonFor, planRunnerConfig, type MirrorVia } from '../../../src/products/ci/runner-config.js';
import { isRelaisError } from '../../../src/errors.js';
import { relaisCi, type CliResult } from './cli.js';

// dist/test/unit/ci -> repository root
const root = fileURLToPath(new URL('../../../../', import.meta.url));
const fixtures = join(root, 'test/fixtures/ci/runner-config');
const MIRROR = 'https://relais.example.com';
const DAEMON_JSON = '/etc/gitlab-runner/relais-daemon.json';
const samples = readdirSync(fixtures).filter((f) => f.endsWith('.toml') && !f.includes('.golden.'));

const CA = '-----BEGIN CERTIFICATE-----\nMIIBrelais\n-----END CERTIFICATE-----\n';
const PROXY = { url: 'http://relais.example.com:3128', hosts: ['ghcr.io', 'registry-1.docker.io'], certsDirPath: '/etc/gitlab-runner/relais-certs.d', caDirPath: '/etc/gitlab-runner/relais-ca', caPem: CA };

function plan(text: string, via: MirrorVia, mirror = MIRROR) {
  return planRunnerConfig(text, { mirror, via, daemonJsonPath: DAEMON_JSON, proxy: PROXY });
}

type Obj = Record<string, unknown>;
// Plain objects (toml-patch gives null-prototype tables; dates become strings).
const runnersOf = (text: string): Obj[] => (JSON.parse(JSON.stringify(parse(text))) as { runners: Obj[] }).runners;
const dockerOf = (r: Obj | undefined): Obj => (r?.['docker'] ?? {}) as Obj;

function cli(args: string[]): CliResult {
  return relaisCi(args.slice(1));
}

describe('runner-config golden files', () => {
  assert.ok(samples.length >= 3, 'fixtures present');
  for (const sample of samples) {
    for (const via of ['service', 'volume', 'proxy'] as const) {
      it(`${sample} --via ${via}`, () => {
        const input = readFileSync(join(fixtures, sample), 'utf8');
        const result = plan(input, via);
        const goldenFile = join(fixtures, sample.replace(/\.toml$/, `.${via}.golden.toml`));
        if (process.env['RELAIS_UPDATE_GOLDEN'] === '1') writeFileSync(goldenFile, result.output);
        assert.equal(result.output, readFileSync(goldenFile, 'utf8'), `differs from ${goldenFile}`);
        // Idempotent: a second run changes nothing and reports nothing to do.
        const again = plan(result.output, via);
        assert.equal(again.changed, false);
        assert.equal(again.output, result.output);
        assert.ok(again.runners.every((r) => r.changes.length === 0));
        // Every comment line of the input survives.
        for (const line of input.split('\n').filter((l) => l.trim().startsWith('#'))) {
          assert.ok(result.output.includes(line), `comment kept: ${line}`);
        }
      });
    }
  }
});

describe('runner-config semantics', () => {
  const fleet = readFileSync(join(fixtures, 'fleet.toml'), 'utf8');

  it('--via service: dind with alias docker and the mirror on every privileged docker runner, others untouched', () => {
    const result = plan(fleet, 'service');
    const before = runnersOf(fleet);
    const after = runnersOf(result.output);
    assert.equal(after.length, before.length);
    for (const [i, r] of after.entries()) {
      const executor = r['executor'];
      if (executor === 'docker' || executor === 'docker+machine') {
        const services = dockerOf(r)['services'] as Obj[];
        const dind = services.filter((s) => String(s['name']).includes('dind'));
        assert.deepEqual(dind, [{ name: 'docker:27-dind', alias: 'docker', command: [`--registry-mirror=${MIRROR}`] }]);
        assert.ok((dockerOf(r)['volumes'] as string[]).includes('/certs/client'));
      } else {
        assert.deepEqual(r, before[i], `runner ${String(r['name'])} (${String(executor)}) left alone`);
      }
    }
    // The existing postgres service is kept, first.
    assert.deepEqual((dockerOf(after[0])['services'] as Obj[])[0], { name: 'postgres:16', alias: 'db' });
    const shell = result.runners.find((r) => r.executor === 'shell');
    assert.match(shell?.skipped ?? '', /shell/);
  });

  it('--via service: an existing dind entry gets the mirror (replacing an old one) and keeps its other flags', () => {
    const text = readFileSync(join(fixtures, 'existing-dind.toml'), 'utf8');
    const after = runnersOf(plan(text, 'service').output);
    assert.deepEqual(dockerOf(after[0])['services'], [
      { name: 'docker:26-dind', command: ['--mtu=1450', `--registry-mirror=${MIRROR}`], alias: 'docker' },
    ]);
    // The unprivileged runner cannot run dind: left exactly as it was.
    assert.deepEqual(after[1], runnersOf(text)[1]);
  });

  it('--via volume: daemon.json mounted into dind, runner-level --registry-mirror removed (dockerd refuses both)', () => {
    const text = readFileSync(join(fixtures, 'existing-dind.toml'), 'utf8');
    const result = plan(text, 'volume');
    const d = dockerOf(runnersOf(result.output)[0]);
    assert.ok((d['volumes'] as string[]).includes(`${DAEMON_JSON}:/etc/docker/daemon.json:ro`));
    assert.deepEqual((d['services'] as Obj[])[0]?.['command'], ['--mtu=1450']);
    assert.deepEqual(JSON.parse(result.daemonJson ?? ''), { 'registry-mirrors': [MIRROR] });
  });

  it('--via service with an http mirror: --insecure-registry too (as daemon.json does); idempotent; --via volume then removes both flags', () => {
    const text = readFileSync(join(fixtures, 'existing-dind.toml'), 'utf8');
    const http = 'http://relais.internal:5000';
    const r = plan(text, 'service', http);
    assert.deepEqual(dockerOf(runnersOf(r.output)[0])['services'], [
      { name: 'docker:26-dind', command: ['--mtu=1450', `--registry-mirror=${http}`, '--insecure-registry=relais.internal:5000'], alias: 'docker' },
    ]);
    assert.equal(plan(r.output, 'service', http).changed, false);
    const fresh = plan(readFileSync(join(fixtures, 'registered-docker.toml'), 'utf8'), 'service', http);
    const dind = (dockerOf(runnersOf(fresh.output)[0])['services'] as Obj[]).find((x) => String(x['name']).includes('dind'));
    assert.deepEqual(dind?.['command'], [`--registry-mirror=${http}`, '--insecure-registry=relais.internal:5000']);
    // dockerd refuses insecure-registries set by both daemon.json and a flag: volume mode removes the flag.
    const vol = plan(r.output, 'volume', http);
    assert.deepEqual((dockerOf(runnersOf(vol.output)[0])['services'] as Obj[])[0]?.['command'], ['--mtu=1450']);
  });

  it('--via proxy: dind environment HTTPS_PROXY/NO_PROXY/hosts/SSL_CERT_DIR, certs.d and the CA dir mounted, one ca.crt per host; unprivileged and shell runners left alone', () => {
    const fleet2 = readFileSync(join(fixtures, 'fleet.toml'), 'utf8');
    const r = plan(fleet2, 'proxy');
    const after = runnersOf(r.output);
    const builds = dockerOf(after[0]);
    assert.ok((builds['volumes'] as string[]).includes('/etc/gitlab-runner/relais-certs.d:/etc/docker/certs.d:ro'));
    assert.ok((builds['volumes'] as string[]).includes('/certs/client'));
    // The CA directory for SSL_CERT_DIR: dockerd's own Docker Hub pulls ignore certs.d (certsd.test.ts).
    assert.ok((builds['volumes'] as string[]).includes('/etc/gitlab-runner/relais-ca:/etc/relais-ca:ro'));
    const dind = (builds['services'] as Obj[]).find((x) => String(x['name']).includes('dind'));
    assert.deepEqual(dind, {
      name: 'docker:27-dind',
      alias: 'docker',
      environment: [
        'HTTPS_PROXY=http://relais.example.com:3128',
        // docker (the job's connection to dind), loopback, relais, the runner's postgres service (db and
        // its derived name), GitLab itself.
        'NO_PROXY=docker,localhost,127.0.0.1,relais.example.com,db,postgres,gitlab.example.com',
        'RELAIS_INTERCEPT_HOSTS=ghcr.io registry-1.docker.io',
        'SSL_CERT_DIR=/etc/relais-ca',
      ],
    });
    assert.deepEqual(r.caDirFiles, [{ path: 'relais-ca.crt', content: CA }]);
    assert.deepEqual(r.certsFiles, [
      { path: 'ghcr.io/ca.crt', content: CA },
      { path: 'registry-1.docker.io/ca.crt', content: CA },
    ]);
    assert.equal(r.daemonJson, undefined);
    assert.deepEqual(after[2], runnersOf(fleet2)[2], 'shell runner untouched');
    // Switching the proxy address updates the entry, keeping other variables of the service.
    const moved = planRunnerConfig(r.output.replace('"HTTPS_PROXY=', '"FOO=bar", "HTTPS_PROXY='), {
      via: 'proxy',
      daemonJsonPath: DAEMON_JSON,
      proxy: { ...PROXY, url: 'http://relais2.example.com:3128' },
    });
    const env = ((dockerOf(runnersOf(moved.output)[0])['services'] as Obj[]).find((x) => String(x['name']).includes('dind'))?.['environment'] ?? []) as string[];
    assert.deepEqual(env.slice(0, 2), ['FOO=bar', 'HTTPS_PROXY=http://relais2.example.com:3128']);
    assert.throws(() => planRunnerConfig(fleet2, { via: 'proxy', daemonJsonPath: DAEMON_JSON, proxy: { ...PROXY, url: 'http://127.0.0.1:3128' } }), (e: unknown) => isRelaisError(e) && /loopback/.test(e.message));
  });

  it('--via proxy upgrades a config wired before the CA dir existed, keeps a user\'s SSL_CERT_DIR and a moved CA dir, idempotently', () => {
    const fleet2 = readFileSync(join(fixtures, 'fleet.toml'), 'utf8');
    const dindEnv = (text: string): string[] =>
      ((dockerOf(runnersOf(text)[0])['services'] as Obj[]).find((x) => String(x['name']).includes('dind'))?.['environment'] ?? []) as string[];
    const current = plan(fleet2, 'proxy').output;
    // What the previous version wrote: certs.d only, no CA dir, no SSL_CERT_DIR.
    const old = current.replaceAll(', "/etc/gitlab-runner/relais-ca:/etc/relais-ca:ro"', '').replaceAll(', "SSL_CERT_DIR=/etc/relais-ca"', '');
    assert.notEqual(old, current);
    assert.ok(!old.includes('relais-ca'), old);
    const upgraded = plan(old, 'proxy');
    assert.equal(upgraded.output, current);
    assert.ok(upgraded.runners[0]?.changes.some((c) => c.includes('/etc/gitlab-runner/relais-ca:/etc/relais-ca:ro')));
    assert.ok(upgraded.runners[0]?.changes.some((c) => c.includes('SSL_CERT_DIR=/etc/relais-ca')));
    // A user's own SSL_CERT_DIR keeps its directories (colon-separated), relais's is added once.
    const own = plan(old.replace('"HTTPS_PROXY=', '"SSL_CERT_DIR=/etc/corp-ca", "HTTPS_PROXY='), 'proxy');
    assert.ok(dindEnv(own.output).includes('SSL_CERT_DIR=/etc/corp-ca:/etc/relais-ca'), own.output);
    assert.equal(dindEnv(own.output).filter((e) => e.startsWith('SSL_CERT_DIR=')).length, 1);
    assert.equal(plan(own.output, 'proxy').changed, false);
    // Another CA dir on the host: the mount at /etc/relais-ca is updated, not doubled.
    const moved = planRunnerConfig(current, { via: 'proxy', daemonJsonPath: DAEMON_JSON, proxy: { ...PROXY, caDirPath: '/srv/relais-ca' } });
    const vols = dockerOf(runnersOf(moved.output)[0])['volumes'] as string[];
    assert.deepEqual(vols.filter((v) => v.includes('/etc/relais-ca')), ['/srv/relais-ca:/etc/relais-ca:ro']);
  });

  it('daemon.json for an http mirror marks it insecure', () => {
    assert.deepEqual(JSON.parse(daemonJsonFor('http://relais.internal:5000')), {
      'registry-mirrors': ['http://relais.internal:5000'],
      'insecure-registries': ['relais.internal:5000'],
    });
  });

  it('bad input: a clear error, not a stack', () => {
    assert.throws(() => plan('[[runners]\nname = ', 'service'), (e: unknown) => isRelaisError(e) && /not valid TOML/.test(e.message));
    assert.throws(() => planRunnerConfig(fleet, { mirror: 'relais:5000', via: 'service', daemonJsonPath: DAEMON_JSON }), (e: unknown) => isRelaisError(e));
  });
});

describe('relais ci runner-config (command)', () => {
  it('--check reports and writes nothing (exit 1), a real run writes, a second run changes nothing (exit 0)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relais-ci-rc-'));
    try {
      const file = join(dir, 'config.toml');
      const original = readFileSync(join(fixtures, 'fleet.toml'), 'utf8');
      writeFileSync(file, original, { mode: 0o600 });
      const check = cli(['ci', 'runner-config', '--mirror', MIRROR, '--file', file, '--via', 'service', '--check']);
      assert.equal(check.code, 1, check.stderr);
      assert.match(check.stdout, /runner "docker-builds" \(executor docker\): would change/);
      assert.match(check.stdout, /runner "deploy-shell" \(executor shell\): left alone/);
      assert.match(check.stdout, /needs changes/);
      assert.equal(readFileSync(file, 'utf8'), original, '--check wrote nothing');

      const apply = cli(['ci', 'runner-config', '--mirror', MIRROR, '--file', file, '--via', 'service']);
      assert.equal(apply.code, 0, apply.stderr);
      assert.match(apply.stdout, /updated/);
      assert.equal(readFileSync(file, 'utf8'), readFileSync(join(fixtures, 'fleet.service.golden.toml'), 'utf8'));
      assert.equal(statSync(file).mode & 0o777, 0o600, 'config.toml holds runner tokens: its mode is kept');

      const again = cli(['ci', 'runner-config', '--mirror', MIRROR, '--file', file, '--via', 'service', '--check']);
      assert.equal(again.code, 0, again.stdout);
      assert.match(again.stdout, /up to date/);

      // The default is --via volume.
      const volume = cli(['ci', 'runner-config', '--mirror', 'http://relais.internal:5000', '--file', file]);
      assert.equal(volume.code, 0, volume.stderr);
      const daemonJson = join(dir, 'relais-daemon.json');
      assert.ok(existsSync(daemonJson));
      assert.deepEqual(JSON.parse(readFileSync(daemonJson, 'utf8')), {
        'registry-mirrors': ['http://relais.internal:5000'],
        'insecure-registries': ['relais.internal:5000'],
      });
      assert.equal(cli(['ci', 'runner-config', '--mirror', 'http://relais.internal:5000', '--file', file, '--via', 'volume', '--check']).code, 0);

      // --via proxy with the CA from a file: certs.d written next to config.toml, a second run changes nothing.
      const ca = join(dir, 'ca.pem');
      writeFileSync(ca, CA);
      const relaisYaml = join(dir, 'relais.yaml');
      writeFileSync(relaisYaml, 'upstreams:\n  docker.io: {url: "https://registry-1.docker.io"}\n  ghcr: {url: "https://ghcr.io", hosts: [ghcr.io]}\n');
      const proxyArgs = ['ci', 'runner-config', '--via', 'proxy', '--proxy', 'http://relais.example.com:3128', '--relais-config', relaisYaml, '--ca', ca, '--file', file];
      const proxied = cli(proxyArgs);
      assert.equal(proxied.code, 0, proxied.stderr);
      for (const h of ['registry-1.docker.io', 'docker.io', 'index.docker.io', 'ghcr.io']) {
        assert.equal(readFileSync(join(dir, 'relais-certs.d', h, 'ca.crt'), 'utf8'), CA, h);
      }
      assert.match(readFileSync(file, 'utf8'), /RELAIS_INTERCEPT_HOSTS=registry-1\.docker\.io docker\.io index\.docker\.io ghcr\.io/);
      const proxiedAgain = cli([...proxyArgs, '--check']);
      assert.equal(proxiedAgain.code, 0, proxiedAgain.stdout);
      assert.match(proxiedAgain.stdout, /relais-certs\.d: up to date/);
      assert.match(proxiedAgain.stdout, /relais-ca: up to date/);
      // The CA dir next to certs.d holds the CA and nothing else (dind trusts every file of SSL_CERT_DIR).
      assert.deepEqual(readdirSync(join(dir, 'relais-ca')), ['relais-ca.crt']);
      assert.equal(readFileSync(join(dir, 'relais-ca', 'relais-ca.crt'), 'utf8'), CA);
      assert.match(readFileSync(file, 'utf8'), new RegExp(`"${join(dir, 'relais-ca')}:/etc/relais-ca:ro"`));
      assert.match(readFileSync(file, 'utf8'), /"SSL_CERT_DIR=\/etc\/relais-ca"/);
      const noCa = cli(['ci', 'runner-config', '--via', 'proxy', '--proxy', 'http://relais.invalid:3128', '--file', file]);
      assert.equal(noCa.code, 1);
      assert.match(noCa.stderr, /^error: cannot fetch the CA from http:\/\/relais\.invalid:5000\/_relais\/ca\.crt/m);
      assert.match(noCa.stderr, /^hint: /m);
      const key = join(dir, 'key.pem');
      writeFileSync(key, '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n');
      assert.match(cli(['ci', 'runner-config', '--via', 'proxy', '--proxy', 'http://relais.example.com:3128', '--ca', key, '--file', file]).stderr, /holds a private key/);

      const missing = cli(['ci', 'runner-config', '--mirror', MIRROR, '--file', join(dir, 'nope.toml')]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^error: cannot read runner config .*nope\.toml/m);
      assert.match(missing.stderr, /^hint: /m);
      assert.doesNotMatch(missing.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
