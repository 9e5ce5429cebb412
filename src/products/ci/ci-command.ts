// `relais ci ...`: thin commander wrappers around the pure functions of src/ci.

import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { errors, isRelaisError } from '../../errors.js';
import { explainMissing, formatSummary, planBuild, readCiContext } from './build-plan.js';
import { runBuild } from './build-run.js';
import { checkGitlabCi, checkRunnerConfig, formatFindings, parseGitlabCi, runnerFacts, type Finding } from './doctor.js';
import { buildkitdToml, type CacheMode, dindDockerfile, generateGitlabCi, normalizeMirror } from './gitlab-yaml.js';
import { checkCaPem, defaultCaUrl, interceptHosts, interceptHostsFromConfig } from './proxy.js';
import { describePlan, type MirrorVia, parseRunnerConfig, planRunnerConfig } from './runner-config.js';
import { describeServiceAliases, serviceAliases } from './service-alias.js';

/** Runs a command body; a RelaisError prints message + hint (no stack) and exits non-zero. */
async function guarded(body: () => Promise<number> | number): Promise<void> {
  try {
    const code = await body();
    if (code !== 0) process.exitCode = code;
  } catch (e) {
    if (isRelaisError(e)) {
      process.stderr.write(`error: ${e.message}\n`);
      if (e.hint !== undefined) process.stderr.write(`hint: ${e.hint}\n`);
    } else {
      process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
    }
    process.exitCode = 1;
  }
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw errors.ciFileUnreadable(what, file, e instanceof Error ? e.message : String(e));
  }
}

/**
 * Writes a file through a temporary sibling and a rename, so a crash never leaves half a file.
 * Creates the file's directory (`-o ci/build.yml` in a fresh clone). An existing file keeps its mode
 * and owner (gitlab-runner's config.toml holds tokens: 0600). A failure names the file asked for,
 * never the temporary sibling.
 */
export function writeAtomic(file: string, text: string, newMode = 0o644): void {
  const tmp = join(dirname(file), `.${Date.now().toString(36)}.relais.tmp`);
  try {
    mkdirSync(dirname(file), { recursive: true });
    const before = existsSync(file) ? statSync(file) : undefined;
    writeFileSync(tmp, text, { mode: before === undefined ? newMode : before.mode & 0o7777 });
    if (before !== undefined) {
      chmodSync(tmp, before.mode & 0o7777);
      if (process.getuid?.() === 0) chownSync(tmp, before.uid, before.gid);
    }
    renameSync(tmp, file);
  } catch (e) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // nothing was written there (e.g. a path component is a file)
    }
    const code = (e as NodeJS.ErrnoException).code;
    throw errors.ciWriteFailed(`cannot write ${file}${code === undefined ? '' : ` (${code})`}`, code === 'EACCES' || code === 'EPERM'
          ? `no permission to write in ${dirname(resolve(file))}: run as its owner (sudo for /etc/gitlab-runner) or pick another path`
          : code === 'ENOTDIR' || code === 'EEXIST'
            ? `a path component of ${file} is a file, not a directory`
            : `check that ${dirname(resolve(file))} is a writable directory`);
  }
}

/** Reads relais's CA certificate from a file, or from relais's HTTP door (http(s)://.../_relais/ca.crt). */
async function readCa(source: string): Promise<string> {
  if (/^https?:\/\//.test(source)) {
    let res: Response;
    try {
      res = await fetch(source, { signal: AbortSignal.timeout(10_000) });
    } catch (e) {
      throw errors.ciCaUnavailable(`cannot fetch the CA from ${source}: ${e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)}`, 'is relais running with proxy.listen set? `relais ca > relais-ca.crt` on its host, then --ca relais-ca.crt');
    }
    if (!res.ok) {
      throw errors.ciCaUnavailable(`cannot fetch the CA from ${source}: HTTP ${res.status}`, 'relais serves its CA at /_relais/ca.crt on its HTTP door when proxy.listen is set');
    }
    return checkCaPem(await res.text(), source);
  }
  return checkCaPem(readText(source, 'CA certificate'), source);
}

/** Intercepted hosts from --intercept and/or --relais-config (Docker Hub's when neither names any). */
function interceptOption(intercept: readonly string[] | undefined, relaisConfig: string | undefined): string[] {
  const hosts = [...(intercept ?? [])];
  if (relaisConfig !== undefined) hosts.push(...interceptHostsFromConfig(readText(relaisConfig, 'relais config'), relaisConfig));
  return interceptHosts(hosts);
}

const repeatable = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

const modeOption = (): Option =>
  new Option('--mode <mode>', 'cache mode: inline (cache metadata inside the pushed image) or registry (buildx cache tags)')
    .choices(['inline', 'registry'])
    .default('inline');

export function registerCiCommands(program: Command): void {
  const ci = program
    .command('ci')
    .summary('wire GitLab CI Docker builds to relais and make --cache-from hit')
    .description(
      [
        'Commands for GitLab CI Docker builds: derive service host names, generate',
        'a build job that reuses its cache, point runners at relais, run the build',
        'step, and lint an existing setup.',
        '',
        'Guide: docs/gitlab-ci.md',
      ].join('\n'),
    );

  ci.command('service-alias')
    .summary('print the host names GitLab Runner gives a service image')
    .description(
      [
        'Prints the host names GitLab Runner derives for a service image: the tag',
        'or digest and the registry port are stripped, then "/" becomes "__" (first',
        'alias) and "-" (second alias, when different). Says which are valid host',
        'names (names with "_" are not; dind\'s TLS certificate only names "docker").',
      ].join('\n'),
    )
    .argument('<image>', 'service image, e.g. registry.example.com/ci/docker:dind')
    .option('--json', 'print JSON instead of text')
    .addHelpText('after', '\nExample:\n  $ relais ci service-alias registry.example.com/ci/docker:dind\n')
    .action((image: string, opts: { json?: boolean }) =>
      guarded(() => {
        const r = serviceAliases(image);
        if (r === undefined) {
          throw errors.ciNoAlias(image);
        }
        process.stdout.write(`${opts.json === true ? JSON.stringify(r, null, 2) : describeServiceAliases(r)}\n`);
        return 0;
      }),
    );

  ci.command('gitlab')
    .summary('print a .gitlab-ci.yml build job that reuses its cache through relais')
    .description(
      [
        'Prints a .gitlab-ci.yml build job (or, with --include, a file to include)',
        'that runs docker:dind as a service with alias "docker" and relais as its',
        '--registry-mirror, sets DOCKER_HOST and DOCKER_TLS_CERTDIR consistently,',
        'logs in with $CI_JOB_TOKEN and builds with cache reuse:',
        '',
        '  inline    pull this branch\'s and the default branch\'s images (absence',
        '            tolerated), --cache-from both, push images that carry',
        '            BUILDKIT_INLINE_CACHE=1 cache metadata',
        '  registry  docker buildx build with --cache-to',
        '            type=registry,ref=$IMAGE:cache-<slug>,mode=max and --cache-from',
        '            the branch\'s and the default branch\'s cache tags',
        '',
        'Tags: $CI_COMMIT_REF_SLUG and $CI_COMMIT_SHA; latest only on',
        '$CI_DEFAULT_BRANCH.',
      ].join('\n'),
    )
    .option('--mirror <url>', "relais's URL as dind sees it (given to dind as --registry-mirror)")
    .option('--image <ref>', 'image repository to push', '$CI_REGISTRY_IMAGE')
    .addOption(modeOption())
    .option('--default-branch <name>', 'a fixed default branch instead of $CI_DEFAULT_BRANCH')
    .option('--no-tls', 'talk to dind without TLS (tcp://docker:2375, DOCKER_TLS_CERTDIR "")')
    .option('--docker-version <tag>', 'tag of the docker (job) and docker:<tag>-dind (service) images', '27')
    .option('--dind-image <ref>', 'a dind image that already carries the mirror (see --dind-dockerfile); no command: is set')
    .option('--no-service', 'the runner provides dind (relais ci runner-config --via service): declare no service')
    .option('--job-name <name>', 'name of the job', 'build')
    .option('--stage <stage>', 'stage of the job', 'build')
    .option('--context <dir>', 'build context', '.')
    .option('--dockerfile <file>', 'Dockerfile path (docker build --file)')
    .option(
      '--build-option <word>',
      'extra docker build option, one word, repeatable (e.g. --build-option=--network=none)',
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option('--include', 'write a file to include from .gitlab-ci.yml (no top-level stages:)')
    .option('--proxy <url>', "proxy mode: relais's proxy door as dind sees it (HTTPS_PROXY of the dind service), e.g. http://relais:3128")
    .option('--intercept <host>', 'proxy mode: a host relais intercepts (its upstreams\' hosts), repeatable; default Docker Hub\'s', repeatable)
    .option('--relais-config <file>', 'proxy mode: take the intercepted hosts from this relais config (upstreams.NAME.hosts)')
    .option('--ca <url|file>', 'proxy mode: relais\'s CA; a URL is fetched by dind at start (default http://<proxy host>:5000/_relais/ca.crt), a file is written into the job')
    .option('--dind-dockerfile', 'print a Dockerfile.dind that bakes the mirror into a dind image, instead of the job')
    .option('-o, --output <file>', 'write to FILE instead of stdout')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ relais ci gitlab > .gitlab-ci.yml          # the runner mounts the mirror (runner-config --via volume)',
        '  $ relais ci gitlab --mirror https://relais.example.com > .gitlab-ci.yml',
        '  $ relais ci gitlab --mirror https://relais.example.com --mode registry --include -o ci/build.yml',
        '  $ relais ci gitlab --mirror https://relais.example.com --dind-dockerfile > Dockerfile.dind',
        '  $ relais ci gitlab --proxy http://relais.example.com:3128 --relais-config relais.yaml > .gitlab-ci.yml',
        '',
      ].join('\n'),
    )
    .action(
      (opts: {
        mirror?: string;
        image: string;
        mode: CacheMode;
        defaultBranch?: string;
        tls: boolean;
        dockerVersion: string;
        dindImage?: string;
        service: boolean;
        jobName: string;
        stage: string;
        context: string;
        dockerfile?: string;
        buildOption?: string[];
        include?: boolean;
        dindDockerfile?: boolean;
        output?: string;
        proxy?: string;
        intercept?: string[];
        relaisConfig?: string;
        ca?: string;
      }) =>
        guarded(() => {
          let text: string;
          if (opts.proxy === undefined && (opts.intercept !== undefined || opts.relaisConfig !== undefined || opts.ca !== undefined)) {
            throw errors.ciUsage('--intercept, --relais-config and --ca belong to proxy mode', 'add --proxy http://<relais>:3128');
          }
          const proxy =
            opts.proxy === undefined
              ? undefined
              : {
                  url: opts.proxy,
                  hosts: interceptOption(opts.intercept, opts.relaisConfig),
                  ...(opts.ca === undefined || /^https?:\/\//.test(opts.ca) ? { caUrl: opts.ca } : { caPem: checkCaPem(readText(opts.ca, 'CA certificate'), opts.ca) }),
                };
          if (opts.dindDockerfile === true) {
            if (opts.mirror === undefined) {
              throw errors.ciDindNeedsMirror();
            }
            text = dindDockerfile(opts.mirror, opts.dockerVersion);
          } else {
            text = generateGitlabCi({
              mode: opts.mode,
              mirror: opts.mirror,
              image: opts.image,
              defaultBranch: opts.defaultBranch,
              tls: opts.tls,
              dockerVersion: opts.dockerVersion,
              dindImage: opts.dindImage,
              service: opts.service,
              jobName: opts.jobName,
              stage: opts.stage,
              context: opts.context,
              dockerfile: opts.dockerfile,
              buildOptions: opts.buildOption,
              include: opts.include === true,
              proxy,
              generatedBy: `relais ci gitlab ${process.argv.slice(process.argv.indexOf('gitlab') + 1).join(' ')}`.trim(),
            });
          }
          if (opts.output === undefined) process.stdout.write(text);
          else {
            writeAtomic(opts.output, text);
            process.stderr.write(`wrote ${opts.output}\n`);
          }
          return 0;
        }),
    );

  ci.command('runner-config')
    .summary("add relais as dind's registry mirror in a GitLab Runner config.toml")
    .description(
      [
        'Adds relais as the Docker Hub mirror of dind for every privileged',
        'docker-executor [[runners]] of a GitLab Runner config.toml, in place,',
        'keeping comments and layout. Running it twice changes nothing. Other',
        'executors (shell, kubernetes, ...) and unprivileged runners are left alone.',
        '',
        '  --via volume   (default) a daemon.json with registry-mirrors, written next',
        '                 to config.toml and mounted into dind at',
        '                 /etc/docker/daemon.json: every job\'s own docker:dind service',
        '                 gets the mirror (jobs must not pass --registry-mirror too)',
        '  --via service  a [[runners.docker.services]] docker:dind entry with alias',
        '                 "docker" and command ["--registry-mirror=URL"] (an existing',
        '                 dind entry gets the flag); jobs then declare no dind service',
        '  --via proxy    every registry relais intercepts, not only Docker Hub: the',
        '                 runner\'s dind service gets environment HTTPS_PROXY (relais\'s',
        '                 proxy door) and NO_PROXY, and a certs.d directory written next',
        '                 to config.toml (<host>/ca.crt = relais\'s CA, per intercepted',
        '                 host) is mounted at /etc/docker/certs.d; a relais-ca directory',
        '                 (relais-ca.crt only) is mounted at /etc/relais-ca and named by',
        '                 SSL_CERT_DIR, so the CA joins dind\'s system roots (dockerd\'s',
        '                 own Docker Hub pulls ignore certs.d); jobs declare no dind',
        '                 service (relais ci gitlab --no-service)',
        '',
        'With an http:// mirror the dind command (or daemon.json) also marks relais',
        'as an insecure registry, so images named through relais directly work.',
        'With TLS (the default) it also shares /certs/client with the job.',
        '--check reports what would change and exits 1 when something would, 0 when',
        'the file is up to date.',
      ].join('\n'),
    )
    .option('--mirror <url>', "relais's URL as dind sees it (--via service|volume)")
    .option('--file <path>', 'the runner config', '/etc/gitlab-runner/config.toml')
    .addOption(new Option('--via <how>', 'how dind gets relais').choices(['service', 'volume', 'proxy']).default('volume'))
    .option('--proxy <url>', "--via proxy: relais's proxy door as dind sees it, e.g. http://relais.example.com:3128")
    .option('--intercept <host>', "--via proxy: a host relais intercepts, repeatable; default Docker Hub's", repeatable)
    .option('--relais-config <file>', '--via proxy: take the intercepted hosts from this relais config (upstreams.NAME.hosts)')
    .option('--ca <url|file>', "--via proxy: relais's CA certificate (default http://<proxy host>:5000/_relais/ca.crt)")
    .option('--certs-dir <path>', '--via proxy: host path of the certs.d directory; default: relais-certs.d next to --file')
    .option('--ca-dir <path>', "--via proxy: host path of the directory holding only relais's CA (SSL_CERT_DIR in dind); default: relais-ca next to the certs.d directory")
    .option('--daemon-json <path>', 'host path of the daemon.json (--via volume); default: relais-daemon.json next to --file')
    .option('--dind-image <ref>', 'image of a new dind service entry (--via service)', 'docker:27-dind')
    .option('--no-tls', 'do not add the /certs/client volume (jobs talk to dind on 2375 without TLS)')
    .option('--check', 'report only, write nothing; exit 1 when changes are needed')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ sudo relais ci runner-config --mirror https://relais.example.com --check',
        '  $ sudo relais ci runner-config --mirror https://relais.example.com --via service',
        '  $ sudo relais ci runner-config --via proxy --proxy http://relais.example.com:3128 --relais-config relais.yaml',
        '',
        'gitlab-runner reloads config.toml by itself: no restart is needed.',
        '',
      ].join('\n'),
    )
    .action(
      (opts: {
        mirror?: string;
        file: string;
        via: MirrorVia;
        daemonJson?: string;
        dindImage: string;
        tls: boolean;
        check?: boolean;
        proxy?: string;
        intercept?: string[];
        relaisConfig?: string;
        ca?: string;
        certsDir?: string;
        caDir?: string;
      }) =>
        guarded(async () => {
          if (opts.via !== 'proxy' && opts.mirror === undefined) {
            throw errors.ciUsage(`--via ${opts.via} needs --mirror`, "add --mirror https://<relais>, or --via proxy --proxy http://<relais>:3128");
          }
          if (opts.via === 'proxy' && opts.proxy === undefined) {
            throw errors.ciUsage('--via proxy needs --proxy', 'add --proxy http://<relais>:3128 (relais\'s proxy.listen as dind sees it)');
          }
          const file = resolve(opts.file);
          const text = readText(file, 'runner config');
          const daemonJsonPath = opts.daemonJson ?? join(dirname(file), 'relais-daemon.json');
          const certsDirPath = resolve(opts.certsDir ?? join(dirname(file), 'relais-certs.d'));
          const caDirPath = resolve(opts.caDir ?? join(dirname(certsDirPath), 'relais-ca'));
          const proxy =
            opts.via === 'proxy' && opts.proxy !== undefined
              ? {
                  url: opts.proxy,
                  hosts: interceptOption(opts.intercept, opts.relaisConfig),
                  certsDirPath,
                  caDirPath,
                  caPem: await readCa(opts.ca ?? defaultCaUrl(opts.proxy)),
                }
              : undefined;
          const plan = planRunnerConfig(text, {
            mirror: opts.mirror,
            via: opts.via,
            daemonJsonPath,
            tls: opts.tls,
            dindImage: opts.dindImage,
            proxy,
          });
          const check = opts.check === true;
          const stale = (dir: string) => (f: { path: string; content: string }): boolean => {
            const path = join(dir, f.path);
            return !existsSync(path) || readFileSync(path, 'utf8') !== f.content;
          };
          const staleCerts = (plan.certsFiles ?? []).filter(stale(certsDirPath));
          const staleCa = (plan.caDirFiles ?? []).filter(stale(caDirPath));
          let daemonJsonChanged = false;
          if (plan.daemonJson !== undefined) {
            const current = existsSync(daemonJsonPath) ? readFileSync(daemonJsonPath, 'utf8') : undefined;
            daemonJsonChanged = current !== plan.daemonJson;
          }
          if (!check) {
            if (plan.changed) writeAtomic(file, plan.output);
            if (plan.daemonJson !== undefined && daemonJsonChanged) writeAtomic(daemonJsonPath, plan.daemonJson);
            for (const f of staleCerts) writeAtomic(join(certsDirPath, f.path), f.content);
            for (const f of staleCa) writeAtomic(join(caDirPath, f.path), f.content);
          }
          process.stdout.write(`${describePlan(plan, file, check)}\n`);
          if (plan.daemonJson !== undefined) {
            process.stdout.write(
              `${daemonJsonPath}: ${daemonJsonChanged ? (check ? 'would be written' : 'written') : 'up to date'}\n`,
            );
          }
          if (plan.certsFiles !== undefined) {
            process.stdout.write(
              `${certsDirPath}: ${staleCerts.length === 0 ? 'up to date' : `${check ? 'would write' : 'wrote'} ${staleCerts.map((f) => f.path).join(', ')}`}\n`,
            );
          }
          if (plan.caDirFiles !== undefined) {
            process.stdout.write(
              `${caDirPath}: ${staleCa.length === 0 ? 'up to date' : `${check ? 'would write' : 'wrote'} ${staleCa.map((f) => f.path).join(', ')}`}\n`,
            );
          }
          return check && (plan.changed || daemonJsonChanged || staleCerts.length > 0 || staleCa.length > 0) ? 1 : 0;
        }),
    );

  ci.command('build')
    .summary('the build step as one command: pull, build with cache, tag, push, summary')
    .description(
      [
        "Runs a GitLab CI job's image build. Reads GitLab's predefined variables",
        '(CI_REGISTRY_IMAGE, CI_COMMIT_REF_NAME, CI_COMMIT_REF_SLUG, CI_COMMIT_SHA,',
        'CI_DEFAULT_BRANCH, CI_REGISTRY, CI_JOB_TOKEN), logs in, pulls the cache',
        'sources, builds, tags and pushes as the chosen mode does, streaming',
        "docker's own output, and ends with a summary: the cache source found, how",
        'many build steps were cached, bytes pulled and pushed, time per phase.',
        '',
        'Arguments after -- go to docker build (the last one is the context,',
        'default "."). Outside CI it lists the variables it is missing.',
      ].join('\n'),
    )
    .argument('[docker-build-args...]', 'extra docker build arguments, after --')
    .addOption(modeOption())
    .option('--docker <path>', 'docker CLI to run', process.env['DOCKER'] ?? 'docker')
    .option('--mirror <url>', 'registry mode: relais as Docker Hub mirror of the BuildKit container (buildkitd.toml)')
    .option('--no-login', 'skip docker login (already logged in)')
    .addHelpText(
      'after',
      [
        '',
        'Examples (in a job script):',
        '  $ relais ci build',
        '  $ relais ci build -- --file docker/Dockerfile --network none .',
        '',
      ].join('\n'),
    )
    .action((buildArgs: string[], opts: { mode: CacheMode; docker: string; login: boolean; mirror?: string }) =>
      guarded(async () => {
        const r = readCiContext(process.env, opts.login);
        if (!r.ok) {
          process.stderr.write(`${explainMissing(r.missing, r.inCi)}\n`);
          return 2;
        }
        let buildkitdConfig: string | undefined;
        if (opts.mode === 'registry' && opts.mirror !== undefined) {
          buildkitdConfig = join(mkdtempSync(join(tmpdir(), 'relais-buildkitd-')), 'buildkitd.toml');
          writeFileSync(buildkitdConfig, `${buildkitdToml(normalizeMirror(opts.mirror)).join('\n')}\n`);
        }
        const steps = planBuild(r.context, { mode: opts.mode, buildArgs, ...(buildkitdConfig === undefined ? {} : { buildkitdConfig }) });
        const summary = await runBuild(r.context, opts.mode, steps, {
          docker: opts.docker,
          env: process.env,
          out: process.stdout,
          err: process.stderr,
        });
        process.stdout.write(`${formatSummary(summary)}\n`);
        return 0;
      }),
    );

  ci.command('doctor')
    .summary('lint a GitLab CI Docker build setup for the usual traps')
    .description(
      [
        'Checks a .gitlab-ci.yml and/or a runner config.toml for: a dind service',
        'without a mirror, mirror URLs dockerd rejects, images the mirror does not',
        'cover (it serves Docker Hub only), DOCKER_HOST / service alias / TLS / port',
        'mismatches, --cache-from without BUILDKIT_INLINE_CACHE=1, hard-coded',
        '"master", a runner that is not privileged or does not share /certs/client,',
        'a mirror set twice, a mirror or proxy on localhost (inside dind: dind',
        'itself), and proxy mode (HTTPS_PROXY on dind): images relais does not',
        'intercept, no CA for dind, a job-level proxy that would carry the docker',
        'connection. Runners judged: the privileged docker executors runner-config',
        'configures. Prints each finding with its fix; exits 1 when there is an',
        'error.',
      ].join('\n'),
    )
    .option('--gitlab-ci <file>', 'the pipeline file (default: .gitlab-ci.yml when present)')
    .option('--runner-config <file>', 'the runner config.toml to check too')
    .addHelpText('after', '\nExample:\n  $ relais ci doctor --gitlab-ci .gitlab-ci.yml --runner-config /etc/gitlab-runner/config.toml\n')
    .action((opts: { gitlabCi?: string; runnerConfig?: string }) =>
      guarded(() => {
        const ciFile = opts.gitlabCi ?? (existsSync('.gitlab-ci.yml') ? '.gitlab-ci.yml' : undefined);
        if (ciFile === undefined && opts.runnerConfig === undefined) {
          throw errors.ciNothingToCheck();
        }
        const runners =
          opts.runnerConfig === undefined
            ? undefined
            : runnerFacts(parseRunnerConfig(readText(opts.runnerConfig, 'runner config'), opts.runnerConfig));
        const findings: Finding[] = [];
        if (runners !== undefined) findings.push(...checkRunnerConfig(runners));
        if (ciFile !== undefined) findings.push(...checkGitlabCi(parseGitlabCi(readText(ciFile, 'pipeline file'), ciFile), runners, ciFile));
        process.stdout.write(`${formatFindings(findings)}\n`);
        return findings.some((f) => f.severity === 'error') ? 1 : 0;
      }),
    );
}
