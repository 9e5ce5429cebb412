import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { checkGitlabCi, parseGitlabCi } from '../../../src/products/ci/doctor.js';
import { buildkitdToml, dindDockerfile, generateGitlabCi, type GitlabJobOptions } from '../../../src/products/ci/gitlab-yaml.js';
import { refSlug, shellSlug } from '../../../src/gitlab-slug.js';
import { isRelaisError } from '../../../src/errors.js';
import { relaisCi } from './cli.js';

type Obj = Record<string, unknown>;

function obj(v: unknown): Obj {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `expected a mapping, got ${JSON.stringify(v)}`);
  return v as Obj;
}
function list(v: unknown): unknown[] {
  assert.ok(Array.isArray(v), `expected a list, got ${JSON.stringify(v)}`);
  return v;
}

function generate(options: GitlabJobOptions): { text: string; doc: Obj; job: Obj; script: string[] } {
  const text = generateGitlabCi(options);
  const doc = obj(parse(text));
  const job = obj(doc[options.jobName ?? 'build']);
  const script = list(job['script']).map(String);
  return { text, doc, job, script };
}

/** GitLab's CI JSON schema, as shipped and applied by gitlab-ci-local (its own ajv). */
interface Validator {
  jsonSchemaValidation(a: { pathToExpandedGitLabCi: string; gitLabCiConfig: unknown; argv: { ignoreSchemaPaths: string[] } }): void;
}
async function gitlabSchemaValidator(): Promise<Validator> {
  const spec = 'gitlab-ci-local/src/validator.js';
  const mod: unknown = await import(spec);
  const v = obj(mod)['Validator'];
  assert.equal(typeof v, 'function', 'gitlab-ci-local must export Validator (npm install gitlab-ci-local@4.65.0)');
  return v as Validator;
}

const variants: Record<string, GitlabJobOptions> = {
  'inline, TLS, mirror': { mode: 'inline', mirror: 'https://relais.example.com' },
  'inline, no TLS, http mirror with port': { mode: 'inline', mirror: 'http://relais.internal:5000', tls: false },
  'registry, TLS, mirror': { mode: 'registry', mirror: 'https://relais.example.com' },
  'registry, no mirror, include file, custom job': { mode: 'registry', include: true, jobName: 'docker-image', stage: 'package' },
  'inline, custom dind image': { mode: 'inline', dindImage: 'registry.example.com/ci/dind-relais:27' },
  'inline, proxy mode, CA fetched by dind': { mode: 'inline', proxy: { url: 'http://relais.example.com:3128', hosts: ['ghcr.io', 'registry-1.docker.io'] } },
  'inline, proxy mode, CA in the file': { mode: 'inline', proxy: { url: 'http://relais.example.com:3128', hosts: [], caPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' } },
  'inline, runner provides dind, fixed default branch': { mode: 'inline', service: false, defaultBranch: 'Release/2.0', dockerfile: 'docker/App Dockerfile', context: 'app' },
};

describe('generateGitlabCi', () => {
  it('inline mode: dind service with alias and mirror, consistent TLS variables, login, cache reuse, tags', () => {
    const { doc, job, script, text } = generate({ mode: 'inline', mirror: 'https://relais.example.com/' });
    assert.deepEqual(doc['stages'], ['build']);
    assert.equal(job['stage'], 'build');
    assert.equal(job['image'], 'docker:27');
    assert.deepEqual(job['services'], [
      { name: 'docker:27-dind', alias: 'docker', command: ['--registry-mirror=https://relais.example.com'] },
    ]);
    assert.deepEqual(job['variables'], {
      DOCKER_HOST: 'tcp://docker:2376',
      DOCKER_TLS_CERTDIR: '/certs',
      DOCKER_TLS_VERIFY: '1',
      DOCKER_CERT_PATH: '$DOCKER_TLS_CERTDIR/client',
      IMAGE: '$CI_REGISTRY_IMAGE',
    });
    assert.deepEqual(job['before_script'], [
      'echo "$CI_JOB_TOKEN" | docker login --username gitlab-ci-token --password-stdin "$CI_REGISTRY"',
    ]);
    assert.match(script[0] ?? '', /^DEFAULT_SLUG=\$\(printf '%s' "\$CI_DEFAULT_BRANCH"/);
    assert.deepEqual(script.slice(1, 3), ['docker pull "$IMAGE:$CI_COMMIT_REF_SLUG" || true', 'docker pull "$IMAGE:$DEFAULT_SLUG" || true']);
    const build = script[3] ?? '';
    assert.match(build, /^docker build /);
    assert.match(build, /--build-arg BUILDKIT_INLINE_CACHE=1/);
    assert.match(build, /--cache-from "\$IMAGE:\$CI_COMMIT_REF_SLUG" --cache-from "\$IMAGE:\$DEFAULT_SLUG"/);
    assert.match(build, /--tag "\$IMAGE:\$CI_COMMIT_REF_SLUG" --tag "\$IMAGE:\$CI_COMMIT_SHA" \.$/);
    assert.deepEqual(script.slice(4, 6), ['docker push "$IMAGE:$CI_COMMIT_REF_SLUG"', 'docker push "$IMAGE:$CI_COMMIT_SHA"']);
    assert.equal(
      script[6],
      'if [ "$CI_COMMIT_REF_NAME" = "$CI_DEFAULT_BRANCH" ]; then docker tag "$IMAGE:$CI_COMMIT_SHA" "$IMAGE:latest" && docker push "$IMAGE:latest"; fi',
    );
    assert.equal(script.length, 7);
    assert.doesNotMatch(text, /master/);
    // Readable: comments explain the traps, the mirror flag is quoted in a one-line list.
    assert.match(text, /^# Generated by: relais ci gitlab/);
    assert.match(text, /# BUILDKIT_INLINE_CACHE=1 writes the cache metadata/);
    assert.match(text, /command: \["--registry-mirror=https:\/\/relais\.example\.com"\]/);
  });

  it('TLS off: port 2375 with an empty DOCKER_TLS_CERTDIR, nothing else', () => {
    const { job, text } = generate({ mode: 'inline', mirror: 'http://relais.internal:5000', tls: false });
    assert.deepEqual(job['variables'], { DOCKER_HOST: 'tcp://docker:2375', DOCKER_TLS_CERTDIR: '', IMAGE: '$CI_REGISTRY_IMAGE' });
    assert.match(text, /DOCKER_TLS_CERTDIR: ""/);
  });

  it('registry mode: buildx with registry cache per slug, mode=max, and the mirror for BuildKit too', () => {
    const { job, script } = generate({ mode: 'registry', mirror: 'http://relais.internal:5000' });
    // An http mirror is also an insecure registry: path-prefix pulls (relais.internal:5000/ghcr.io/...) work.
    assert.deepEqual(obj(list(job['services'])[0])['command'], ['--registry-mirror=http://relais.internal:5000', '--insecure-registry=relais.internal:5000']);
    const printf = script.find((l) => l.startsWith('printf'));
    assert.ok(printf, 'writes buildkitd.toml');
    assert.match(printf, /mirrors = \["relais\.internal:5000"\]/);
    assert.match(printf, /http = true/);
    assert.ok(script.includes('docker buildx create --use --driver docker-container --config buildkitd.toml'));
    const build = script.find((l) => l.startsWith('docker buildx build')) ?? '';
    assert.match(build, /--push/);
    assert.match(build, /--cache-to "type=registry,ref=\$IMAGE:cache-\$CI_COMMIT_REF_SLUG,mode=max"/);
    assert.match(build, /--cache-from "type=registry,ref=\$IMAGE:cache-\$CI_COMMIT_REF_SLUG"/);
    assert.match(build, /--cache-from "type=registry,ref=\$IMAGE:cache-\$DEFAULT_SLUG"/);
    assert.match(build, /--tag "\$IMAGE:\$CI_COMMIT_REF_SLUG" --tag "\$IMAGE:\$CI_COMMIT_SHA"/);
    assert.doesNotMatch(build, /BUILDKIT_INLINE_CACHE/);
    assert.match(script[script.length - 1] ?? '', /docker buildx imagetools create --tag "\$IMAGE:latest" "\$IMAGE:\$CI_COMMIT_SHA"/);
    assert.ok(!script.some((l) => /^docker (pull|push) /.test(l)), 'buildx pushes itself, no pre-pull');
  });

  it('buildkitd.toml routes docker.io through the mirror (http only when the mirror is http)', () => {
    assert.deepEqual(buildkitdToml('https://relais.example.com'), ['[registry."docker.io"]', '  mirrors = ["relais.example.com"]']);
    assert.deepEqual(buildkitdToml('http://r:5000'), ['[registry."docker.io"]', '  mirrors = ["r:5000"]', '[registry."r:5000"]', '  http = true']);
  });

  it('include file: no stages, job name and stage as given', () => {
    const { doc, job } = generate({ mode: 'registry', include: true, jobName: 'docker-image', stage: 'package' });
    assert.equal(doc['stages'], undefined);
    assert.deepEqual(Object.keys(doc), ['docker-image']);
    assert.equal(job['stage'], 'package');
    // A keyword is no job name (GitLab's schema reads `image:` as the global image).
    assert.throws(() => generateGitlabCi({ mode: 'inline', jobName: 'image' }), (e: unknown) => isRelaisError(e) && /keyword/.test(e.message));
  });

  it('custom dind image: no command (the image carries the mirror); no service when the runner provides it', () => {
    const custom = generate({ mode: 'inline', mirror: 'https://relais.example.com', dindImage: 'registry.example.com/ci/dind-relais:27' });
    assert.deepEqual(custom.job['services'], [{ name: 'registry.example.com/ci/dind-relais:27', alias: 'docker' }]);
    const none = generate({ mode: 'inline', service: false });
    assert.equal(none.job['services'], undefined);
  });

  it('a fixed default branch is slugged at generation time and compared literally', () => {
    const { script } = generate({ mode: 'inline', defaultBranch: 'Release/2.0', dockerfile: 'docker/App Dockerfile', context: 'app' });
    assert.equal(script[0], 'DEFAULT_SLUG=release-2-0');
    assert.match(script[script.length - 1] ?? '', /^if \[ "\$CI_COMMIT_REF_NAME" = Release\/2\.0 \]/);
    assert.match(script.find((l) => l.startsWith('docker build')) ?? '', / --file 'docker\/App Dockerfile' app$/);
  });

  it('rejects mirror URLs dockerd would refuse', () => {
    for (const bad of ['relais.example.com', 'ftp://relais.example.com', 'https://relais.example.com/v2/']) {
      assert.throws(
        () => generateGitlabCi({ mode: 'inline', mirror: bad }),
        (e: unknown) => isRelaisError(e) && e.code === 'CONFIG_INVALID' && e.hint !== undefined,
        bad,
      );
    }
  });

  it("every variant is valid against GitLab's CI schema (gitlab-ci-local's copy) and passes relais ci doctor", async () => {
    const validator = await gitlabSchemaValidator();
    for (const [name, options] of Object.entries(variants)) {
      const text = generateGitlabCi(options);
      assert.doesNotThrow(
        () => { validator.jsonSchemaValidation({ pathToExpandedGitLabCi: name, gitLabCiConfig: parse(text), argv: { ignoreSchemaPaths: [] } }); },
        name,
      );
      const findings = checkGitlabCi(parseGitlabCi(text), undefined).filter((f) => f.rule !== 'no-mirror');
      assert.deepEqual(findings, [], name);
    }
    // The validator does reject a broken job (the check above can fail).
    const broken = obj(parse(generateGitlabCi({ mode: 'inline' })));
    obj(broken['build'])['stage'] = 5;
    assert.throws(() => { validator.jsonSchemaValidation({ pathToExpandedGitLabCi: 'broken', gitLabCiConfig: broken, argv: { ignoreSchemaPaths: [] } }); }, /Invalid \.gitlab-ci\.yml/);
  });

  it('Dockerfile.dind bakes the mirror into the dind command', () => {
    assert.match(dindDockerfile('https://relais.example.com', '26'), /^FROM docker:26-dind\nCMD \["--registry-mirror=https:\/\/relais\.example\.com"\]$/m);
  });
});

describe('slugs', () => {
  it("refSlug follows GitLab's CI_COMMIT_REF_SLUG rule", () => {
    assert.equal(refSlug('main'), 'main');
    assert.equal(refSlug('feature/Login_Form'), 'feature-login-form');
    assert.equal(refSlug('--x--'), 'x');
    assert.equal(refSlug(`a${'b'.repeat(80)}`).length, 63);
    assert.equal(refSlug(`${'x'.repeat(62)}/y`), 'x'.repeat(62));
  });

  it('the shell pipeline in generated jobs gives the same slug as refSlug (dash + GNU tools, and busybox as in docker:27)', () => {
    // The docker image is Alpine: its sh, tr, cut and sed are busybox applets.
    const bin = mkdtempSync(join(tmpdir(), 'relais-ci-busybox-'));
    try {
      for (const applet of ['sh', 'printf', 'tr', 'cut', 'sed', 'echo']) symlinkSync('/bin/busybox', join(bin, applet));
      const shells = [
        { shell: 'sh', PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
        { shell: join(bin, 'sh'), PATH: bin },
      ];
      for (const { shell, PATH } of shells) {
        for (const ref of ['main', 'feature/Login_Form', 'Release/2.0', '--x--', `${'x'.repeat(62)}/yz`, 'UPPER-case']) {
          const out = execFileSync(shell, ['-c', `echo "${shellSlug('CI_DEFAULT_BRANCH')}"`], {
            env: { PATH, CI_DEFAULT_BRANCH: ref },
            encoding: 'utf8',
          }).trim();
          assert.equal(out, refSlug(ref), `${shell}: ${ref}`);
        }
      }
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

describe('relais ci gitlab --mirror http:// and --proxy', () => {
  it('an http mirror is marked insecure in the service command and the dind Dockerfile, an https one is not', () => {
    const { job } = generate({ mode: 'inline', mirror: 'http://relais.internal:5000' });
    assert.deepEqual(obj(list(job['services'])[0])['command'], ['--registry-mirror=http://relais.internal:5000', '--insecure-registry=relais.internal:5000']);
    assert.match(dindDockerfile('http://relais.internal:5000'), /^CMD \["--registry-mirror=http:\/\/relais\.internal:5000", "--insecure-registry=relais\.internal:5000"\]$/m);
    const https = generate({ mode: 'inline', mirror: 'https://relais.example.com' });
    assert.deepEqual(obj(list(https.job['services'])[0])['command'], ['--registry-mirror=https://relais.example.com']);
  });

  it('proxy mode: the dind service gets HTTPS_PROXY, NO_PROXY, the intercepted hosts and an entrypoint writing certs.d', () => {
    const { job, text } = generate({ mode: 'inline', proxy: { url: 'http://relais.example.com:3128/', hosts: ['GHCR.io', 'registry.gitlab.example.com:443', 'ghcr.io'] } });
    const svc = obj(list(job['services'])[0]);
    assert.equal(svc['name'], 'docker:27-dind');
    assert.equal(svc['alias'], 'docker');
    assert.equal(svc['command'], undefined, 'no mirror flag needed');
    assert.deepEqual(svc['variables'], {
      HTTPS_PROXY: 'http://relais.example.com:3128',
      NO_PROXY: 'docker,localhost,127.0.0.1,relais.example.com',
      RELAIS_INTERCEPT_HOSTS: 'ghcr.io registry.gitlab.example.com',
      RELAIS_CA_URL: 'http://relais.example.com:5000/_relais/ca.crt',
    });
    const ep = list(svc['entrypoint']).map(String);
    assert.deepEqual([ep[0], ep[1], ep[3]], ['sh', '-c', 'dind']);
    assert.match(ep[2] ?? '', /\/etc\/docker\/certs\.d\/\$h\/ca\.crt/);
    assert.match(ep[2] ?? '', /exec dockerd-entrypoint\.sh "\$@"$/);
    // The job's own variables carry no proxy: its docker client talks to dind directly.
    assert.equal(obj(job['variables'])['HTTPS_PROXY'], undefined);
    assert.match(text, /per-registry trust/);
    // Docker Hub's names when no host is given.
    const hub = generate({ mode: 'inline', proxy: { url: 'http://10.0.0.5:3128', hosts: [] } });
    assert.equal(obj(obj(list(hub.job['services'])[0])['variables'])['RELAIS_INTERCEPT_HOSTS'], 'registry-1.docker.io docker.io index.docker.io');
  });

  it('proxy mode refusals: loopback, https proxy, --no-service, registry mode', () => {
    const refuses = (o: GitlabJobOptions, re: RegExp): void => {
      assert.throws(() => generateGitlabCi(o), (e: unknown) => isRelaisError(e) && re.test(e.message) && e.hint !== undefined);
    };
    refuses({ mode: 'inline', proxy: { url: 'http://localhost:3128', hosts: [] } }, /loopback/);
    refuses({ mode: 'inline', proxy: { url: 'http://127.0.0.1:3128', hosts: [] } }, /loopback/);
    refuses({ mode: 'inline', proxy: { url: 'https://relais:3128', hosts: [] } }, /must start with http:\/\//);
    refuses({ mode: 'inline', service: false, proxy: { url: 'http://relais:3128', hosts: [] } }, /--no-service/);
    refuses({ mode: 'registry', proxy: { url: 'http://relais:3128', hosts: [] } }, /--mode registry/);
    refuses({ mode: 'inline', proxy: { url: 'http://relais:3128', hosts: ['ghcr.io/org'] } }, /not a registry host name/);
  });

  it('the generated entrypoint, run by sh: fetches the CA from relais (or takes RELAIS_CA), writes certs.d per host, starts dind with the command', async () => {
    const { dindProxyEntrypoint } = await import('../../../src/products/ci/proxy.js');
    const { createServer } = await import('node:http');
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    // Async: the CA server runs in this process, so the shell must not block the event loop.
    const sh = (args: string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> =>
      promisify(execFile)('sh', args, { env, encoding: 'utf8' });
    const { existsSync, writeFileSync, chmodSync } = await import('node:fs');
    const dir = mkdtempSync(join(tmpdir(), 'relais-ci-entrypoint-'));
    const pem = '-----BEGIN CERTIFICATE-----\nMIIBrelais\n-----END CERTIFICATE-----';
    const server = createServer((req, res) => {
      if (req.url === '/_relais/ca.crt') res.end(`${pem}\n`);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const bin = join(dir, 'bin');
      execFileSync('mkdir', ['-p', bin]);
      // Stands in for docker:dind's entrypoint: prints the arguments it was started with.
      writeFileSync(join(bin, 'dockerd-entrypoint.sh'), '#!/bin/sh\necho "dockerd $*"\n');
      chmodSync(join(bin, 'dockerd-entrypoint.sh'), 0o755);
      const certs = join(dir, 'certs.d');
      const bundle = join(dir, 'ca-certificates.crt');
      writeFileSync(bundle, 'SYSTEM ROOTS\n');
      const [shell, c, script, name] = dindProxyEntrypoint(certs, bundle);
      assert.equal(shell, 'sh');
      const env = { PATH: `${bin}:${process.env['PATH'] ?? ''}`, RELAIS_INTERCEPT_HOSTS: 'ghcr.io registry-1.docker.io', RELAIS_CA_URL: `http://127.0.0.1:${port}/_relais/ca.crt` };
      const out = await sh([c ?? '-c', script ?? '', name ?? 'dind', '--mtu=1450'], env);
      assert.equal(out.stdout, 'dockerd --mtu=1450\n');
      for (const h of ['ghcr.io', 'registry-1.docker.io']) assert.equal(readFileSync(join(certs, h, 'ca.crt'), 'utf8'), `${pem}\n`);
      // And added to the system roots (dockerd's own Docker Hub pulls use only those), never replacing them.
      assert.equal(readFileSync(bundle, 'utf8'), `SYSTEM ROOTS\n${pem}\n`);
      // RELAIS_CA (the CA written into the job) wins over fetching.
      rmSync(certs, { recursive: true });
      await sh([c ?? '-c', script ?? '', name ?? 'dind'], { ...env, RELAIS_CA: pem, RELAIS_CA_URL: 'http://127.0.0.1:1/nope' });
      assert.equal(readFileSync(join(certs, 'ghcr.io', 'ca.crt'), 'utf8'), `${pem}\n`);
      // relais unreachable: dind does not start (no x509 failures later), and says why.
      rmSync(certs, { recursive: true });
      await assert.rejects(
        sh([c ?? '-c', script ?? '', name ?? 'dind'], { ...env, RELAIS_CA_URL: `http://127.0.0.1:${port}/missing` }),
        (e: unknown) => /cannot fetch the CA/.test(String((e as { stderr?: string }).stderr)),
      );
      assert.ok(!existsSync(certs));
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('relais ci gitlab (command)', () => {
  it('-o into a directory that does not exist yet (the docs\' ci/build.yml) creates it; a failure names the file, never a temp file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relais-ci-gitlab-o-'));
    try {
      const r = relaisCi(['gitlab', '--mirror', 'https://relais.example.com', '--mode', 'registry', '--include', '-o', 'ci/build.yml'], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /^wrote ci\/build\.yml$/m);
      assert.deepEqual(Object.keys(obj(parse(readFileSync(join(dir, 'ci', 'build.yml'), 'utf8')))), ['build']);
      // A path component that is a file: the error names ci/build.yml/x.yml and hints, no .relais.tmp.
      const bad = relaisCi(['gitlab', '-o', 'ci/build.yml/x.yml'], { cwd: dir });
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /^error: cannot write ci\/build\.yml\/x\.yml \((ENOTDIR|EEXIST)\)$/m);
      assert.match(bad.stderr, /^hint: /m);
      assert.doesNotMatch(bad.stderr, /relais\.tmp/);
      // --proxy with a CA file: the PEM goes into the job.
      const ca = join(dir, 'ca.crt');
      execFileSync('sh', ['-c', `printf '%s\\n' '-----BEGIN CERTIFICATE-----' 'MIIB' '-----END CERTIFICATE-----' > ${ca}`]);
      const proxied = relaisCi(['gitlab', '--proxy', 'http://relais.example.com:3128', '--intercept', 'ghcr.io', '--ca', ca]);
      assert.equal(proxied.code, 0, proxied.stderr);
      const vars = obj(obj(list(obj(obj(parse(proxied.stdout))['build'])['services'])[0])['variables']);
      assert.match(String(vars['RELAIS_CA']), /^-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----$/);
      const stray = relaisCi(['gitlab', '--intercept', 'ghcr.io']);
      assert.equal(stray.code, 1);
      assert.match(stray.stderr, /belong to proxy mode/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });


  it('prints the job, or writes it with -o; refuses bad input with a hint', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relais-ci-gitlab-'));
    try {
      const printed = relaisCi(['gitlab', '--mirror', 'https://relais.example.com', '--build-option=--network=none']);
      assert.equal(printed.code, 0, printed.stderr);
      const job = obj(obj(parse(printed.stdout))['build']);
      assert.match(list(job['script']).map(String).find((l) => l.startsWith('docker build')) ?? '', / --network=none \.$/);
      const out = join(dir, 'build.yml');
      const written = relaisCi(['gitlab', '--mode', 'registry', '--include', '-o', out]);
      assert.equal(written.code, 0, written.stderr);
      assert.equal(written.stdout, '');
      assert.deepEqual(Object.keys(obj(parse(readFileSync(out, 'utf8')))), ['build']);
      const dockerfile = relaisCi(['gitlab', '--mirror', 'https://relais.example.com', '--dind-dockerfile']);
      assert.match(dockerfile.stdout, /^CMD \["--registry-mirror=https:\/\/relais\.example\.com"\]$/m);
      const bad = relaisCi(['gitlab', '--mirror', 'relais.example.com']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /^error: invalid mirror URL "relais\.example\.com"$/m);
      assert.match(bad.stderr, /^hint: /m);
      const badMode = relaisCi(['gitlab', '--mode', 'fast']);
      assert.notEqual(badMode.code, 0);
      assert.match(badMode.stderr, /Allowed choices are inline, registry/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
