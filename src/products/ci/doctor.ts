// `relais ci doctor`: the traps of Docker builds in GitLab CI as rules, pure functions over
// a parsed .gitlab-ci.yml and/or a parsed runner config.toml. Each finding says what is
// wrong, where, and the fix.

import { parse as parseYaml, type YAMLSeq } from 'yaml';
import { errors } from '../../errors.js';
import { DOCKER_CERTS_D, DOCKER_HUB_HOSTS, INTERCEPT_HOSTS_VAR, isLoopback, RELAIS_CA_DIR, SYSTEM_CA_BUNDLE } from './proxy.js';
import { DOCKER_EXECUTORS, isDindImage, runnersOf } from './runner-config.js';
import { serviceAliases } from './service-alias.js';

export type Severity = 'error' | 'warning';

export interface Finding {
  readonly rule: string;
  readonly severity: Severity;
  /** e.g. ".gitlab-ci.yml: job build" or "config.toml: runner docker-builds". */
  readonly where: string;
  readonly message: string;
  readonly fix: string;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(strings);
  return [];
}

/** Top-level keys of .gitlab-ci.yml that are not jobs. */
const GLOBAL_KEYS = new Set([
  'default', 'include', 'stages', 'variables', 'workflow', 'image', 'services', 'cache', 'before_script',
  'after_script', 'types', 'pages:deploy', 'spec',
]);

/** Parses .gitlab-ci.yml (tolerating GitLab's !reference tag). */
export function parseGitlabCi(text: string, file = '.gitlab-ci.yml'): Obj {
  let doc: unknown;
  try {
    doc = parseYaml(text, {
      customTags: [{ tag: '!reference', collection: 'seq', resolve: (seq: YAMLSeq) => seq }],
    });
  } catch (e) {
    throw errors.ciYamlInvalid(file, e instanceof Error ? e.message : String(e));
  }
  if (!isObj(doc)) throw errors.ciYamlNotJobs(file);
  return doc;
}

interface ServiceDef {
  readonly name: string;
  readonly alias: string | undefined;
  readonly command: string[];
  readonly entrypoint: string[];
  /** The service's own variables (.gitlab-ci.yml `variables:`, config.toml `environment = ["K=V"]`). */
  readonly variables: Record<string, string>;
}

interface ResolvedJob {
  readonly name: string;
  readonly variables: Record<string, string>;
  readonly services: ServiceDef[];
  readonly script: string[];
  readonly raw: Obj;
}

function serviceDefs(v: unknown): ServiceDef[] {
  if (!Array.isArray(v)) return [];
  const out: ServiceDef[] = [];
  for (const s of v) {
    if (typeof s === 'string') out.push({ name: s, alias: undefined, command: [], entrypoint: [], variables: {} });
    else if (isObj(s) && typeof s['name'] === 'string') {
      const env: Record<string, string> = {};
      for (const e of strings(s['environment'])) {
        const eq = e.indexOf('=');
        if (eq > 0) env[e.slice(0, eq)] = e.slice(eq + 1);
      }
      out.push({
        name: s['name'],
        alias: typeof s['alias'] === 'string' ? s['alias'] : undefined,
        command: strings(s['command']),
        entrypoint: strings(s['entrypoint']),
        variables: { ...env, ...variablesOf(s['variables']) },
      });
    }
  }
  return out;
}

function variablesOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObj(v)) return out;
  for (const [k, val] of Object.entries(v)) {
    if (typeof val === 'string' || typeof val === 'number' || typeof val === 'boolean') out[k] = String(val);
    else if (isObj(val)) {
      const inner = val['value'];
      if (typeof inner === 'string' || typeof inner === 'number' || typeof inner === 'boolean') out[k] = String(inner);
    }
  }
  return out;
}

/** Merges a job with the templates it extends (GitLab's deep merge of maps, lists replaced). */
function resolveExtends(doc: Obj, job: Obj, depth = 0): Obj {
  if (depth > 10) return job;
  const parents = strings(job['extends']);
  let merged: Obj = {};
  for (const p of parents) {
    const parent = doc[p];
    if (isObj(parent)) merged = deepMerge(merged, resolveExtends(doc, parent, depth + 1));
  }
  return deepMerge(merged, job);
}

function deepMerge(a: Obj, b: Obj): Obj {
  const out: Obj = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = isObj(prev) && isObj(v) ? deepMerge(prev, v) : v;
  }
  return out;
}

/** The jobs of a .gitlab-ci.yml with global defaults and `extends` applied. */
export function resolveJobs(doc: Obj): ResolvedJob[] {
  const def = isObj(doc['default']) ? doc['default'] : {};
  const globalVars = variablesOf(doc['variables']);
  const jobs: ResolvedJob[] = [];
  for (const [name, value] of Object.entries(doc)) {
    if (GLOBAL_KEYS.has(name) || name.startsWith('.') || !isObj(value)) continue;
    const job = resolveExtends(doc, value);
    const services = serviceDefs(job['services'] ?? def['services'] ?? doc['services']);
    const script = [
      ...strings(job['before_script'] ?? def['before_script'] ?? doc['before_script']),
      ...strings(job['script']),
    ];
    jobs.push({ name, variables: { ...globalVars, ...variablesOf(job['variables']) }, services, script, raw: job });
  }
  return jobs;
}

/** What the doctor knows about the runner when a config.toml is given. */
export interface RunnerFacts {
  readonly name: string;
  readonly privileged: boolean;
  readonly volumes: readonly string[];
  readonly services: readonly ServiceDef[];
}

export function runnerFacts(config: Obj): RunnerFacts[] {
  const out: RunnerFacts[] = [];
  for (const r of runnersOf(config)) {
    const executor = typeof r['executor'] === 'string' ? r['executor'] : '';
    if (!DOCKER_EXECUTORS.includes(executor)) continue;
    const d = isObj(r['docker']) ? r['docker'] : {};
    out.push({
      name: typeof r['name'] === 'string' ? r['name'] : '(unnamed)',
      privileged: d['privileged'] === true,
      volumes: strings(d['volumes']),
      services: serviceDefs(d['services']),
    });
  }
  return out;
}

const mentionsMaster = /(^|[^\w-])master([^\w-]|$)/;

/** What proxy-mode wiring a set of variables carries (HTTPS_PROXY, the intercepted hosts). */
interface ProxyFacts {
  readonly url: string;
  /** Hosts relais intercepts, when the wiring names them (RELAIS_INTERCEPT_HOSTS); undefined: unknown. */
  readonly hosts: readonly string[] | undefined;
  readonly noProxy: readonly string[];
}

function proxyFacts(vars: Readonly<Record<string, string>>): ProxyFacts | undefined {
  const url = vars['HTTPS_PROXY'] ?? vars['https_proxy'];
  if (url === undefined || url === '') return undefined;
  const list = vars[INTERCEPT_HOSTS_VAR];
  const noProxy = (vars['NO_PROXY'] ?? vars['no_proxy'] ?? '').split(',').map((h) => h.trim()).filter((h) => h !== '');
  return { url, hosts: list === undefined ? undefined : list.split(/[\s,]+/).filter((h) => h !== ''), noProxy };
}

function urlHost(url: string): string | undefined {
  try {
    return new URL(url).hostname;
  } catch {
    return undefined;
  }
}

/** A --registry-mirror (or HTTPS_PROXY) on loopback: inside dind that is dind itself, never relais. */
function loopbackFinding(what: string, value: string, where: string): Finding | undefined {
  const host = urlHost(value);
  if (host === undefined || !isLoopback(host)) return undefined;
  return {
    rule: 'loopback-relais',
    severity: what === 'HTTPS_PROXY' ? 'error' : 'warning',
    where,
    message:
      what === 'HTTPS_PROXY'
        ? `HTTPS_PROXY=${value} points at loopback: inside the dind container that is dind itself, so every pull fails to connect`
        : `${what}=${value} points at loopback: inside the dind container that is dind itself, so dockerd finds no mirror and silently pulls from Docker Hub`,
    fix: `use a name or address of the relais host that the dind container can reach (e.g. ${what === 'HTTPS_PROXY' ? 'http://relais.example.com:3128' : 'http://relais.example.com:5000'})`,
  };
}

/** True when dind is given relais's CA for the proxy: the generated entrypoint, or a certs.d mount. */
function trustsCa(service: ServiceDef, runnerVolumes: readonly string[]): boolean {
  return service.entrypoint.some((a) => a.includes(DOCKER_CERTS_D)) || runnerVolumes.some((v) => v.split(':')[1] === DOCKER_CERTS_D);
}

/**
 * True when dind gets relais's CA in its system roots, which dockerd's own pulls of Docker Hub need (they
 * ignore certs.d: test/integration/proxy/certsd.test.ts): the generated entrypoint appending it to the bundle,
 * SSL_CERT_DIR naming a mounted directory (runner-config --via proxy: /etc/relais-ca), SSL_CERT_FILE in a
 * mounted path, or a bundle mounted over the system one.
 */
function caInSystemRoots(service: ServiceDef, vars: Readonly<Record<string, string>>, runnerVolumes: readonly string[]): boolean {
  if (service.entrypoint.some((a) => a.includes(SYSTEM_CA_BUNDLE))) return true;
  const targets = runnerVolumes.map((v) => v.split(':')[1] ?? '').filter((t) => t !== '');
  const under = (path: string): boolean => targets.some((t) => path === t || path.startsWith(`${t}/`));
  const dirs = (vars['SSL_CERT_DIR'] ?? '').split(':').filter((d) => d !== '');
  const file = vars['SSL_CERT_FILE'] ?? '';
  return dirs.some(under) || (file !== '' && under(file)) || under(SYSTEM_CA_BUNDLE);
}

/** True when the intercepted hosts include Docker Hub, or are not named (Docker Hub is the default). */
function interceptsDockerHub(p: ProxyFacts): boolean {
  return p.hosts === undefined || p.hosts.some((h) => DOCKER_HUB_HOSTS.includes(h.toLowerCase()));
}

/** The finding for a dind that trusts relais per host (certs.d) only, while Docker Hub goes through the door. */
function hubCaFinding(where: string, service: string): Finding {
  return {
    rule: 'proxy-ca-hub',
    severity: 'warning',
    where,
    message: `service ${service} trusts relais's CA through ${DOCKER_CERTS_D} only: dockerd ignores certs.d for Docker Hub (registry-1.docker.io), so its own pulls of Docker Hub images through the proxy door fail with x509 errors (BuildKit FROM lines still work)`,
    fix: `rerun relais ci runner-config --via proxy: it also mounts a directory holding only relais's CA at ${RELAIS_CA_DIR} and sets SSL_CERT_DIR=${RELAIS_CA_DIR} on the dind service (the CA joins its system roots)`,
  };
}

/** The registry host of an image reference (Docker Hub's for names without one). */
function registryHost(ref: string): string {
  const first = ref.split('/')[0] ?? '';
  return ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? first.toLowerCase() : 'docker.io';
}

/** Rules over .gitlab-ci.yml (and the runner facts, when known). */
export function checkGitlabCi(doc: Obj, runners: readonly RunnerFacts[] | undefined, file = '.gitlab-ci.yml'): Finding[] {
  const findings: Finding[] = [];
  const dindJobs: string[] = [];
  const tlsJobs: string[] = [];
  // The runners that matter are the ones `relais ci runner-config` configures: privileged docker
  // executors (the others cannot run dind and are left alone). Only when none is privileged do the
  // unprivileged ones count, as the reason no dind job can run.
  const privileged = (runners ?? []).filter((r) => r.privileged);
  const relevant = privileged.length > 0 ? privileged : (runners ?? []);
  for (const job of resolveJobs(doc)) {
    const where = `${file}: job ${job.name}`;
    const dind = job.services.filter((s) => isDindImage(s.name));
    const runnerDind = relevant.flatMap((r) => r.services.filter((s) => isDindImage(s.name)));
    const usesDocker = dind.length > 0 || job.script.some((l) => /(^|[\s;&|(])docker\s/.test(l));
    const vars = job.variables;

    // Hard-coded master, anywhere in the job's rules/only/except/script.
    const texts = [
      ...job.script,
      ...strings(job.raw['only']),
      ...strings(job.raw['except']),
      ...(Array.isArray(job.raw['rules']) ? job.raw['rules'].flatMap((r) => (isObj(r) ? strings(r['if']) : [])) : []),
    ];
    const master = texts.find((t) => mentionsMaster.test(t));
    if (master !== undefined) {
      findings.push({
        rule: 'hard-coded-master',
        severity: 'warning',
        where,
        message: `"master" is hard-coded (${truncate(master)}): projects whose default branch is "main" (GitLab's default since 14.0) never match`,
        fix: 'use $CI_DEFAULT_BRANCH, e.g. `if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH`',
      });
    }
    if (!usesDocker) continue;

    // --cache-from without inline cache metadata (the classic builder, DOCKER_BUILDKIT=0, does
    // not need it: it uses the pulled image's layers).
    for (const line of vars['DOCKER_BUILDKIT'] === '0' ? [] : job.script) {
      if (!/\bdocker\b/.test(line) || !/--cache-from/.test(line)) continue;
      if (/\bbuildx\b/.test(line) && /--cache-to/.test(line)) continue;
      if (/BUILDKIT_INLINE_CACHE=1/.test(line)) continue;
      findings.push({
        rule: 'missing-inline-cache',
        severity: 'error',
        where,
        message: `\`${truncate(line)}\` uses --cache-from on an image built without BUILDKIT_INLINE_CACHE=1: BuildKit (the default builder) finds no cache metadata in it and silently rebuilds every step`,
        fix: 'add `--build-arg BUILDKIT_INLINE_CACHE=1` to the build that pushes the image (relais ci gitlab generates it)',
      });
    }

    // DOCKER_HOST, TLS and the service alias must agree.
    const host = vars['DOCKER_HOST'];
    const certdir = vars['DOCKER_TLS_CERTDIR'];
    // docker:dind turns TLS on (DOCKER_TLS_CERTDIR=/certs) unless the job sets it to "".
    const tls = certdir === undefined ? true : certdir !== '';
    const dindServices = dind.length > 0 ? dind : runnerDind;
    if (host !== undefined && dindServices.length > 0) {
      const m = /^tcp:\/\/([^:/]+)(?::(\d+))?/.exec(host);
      const hostName = m?.[1];
      const port = m?.[2] ?? (tls ? '2376' : '2375');
      if (hostName !== undefined) {
        const names = dindServices.flatMap((s) => [
          ...(s.alias === undefined ? [] : s.alias.split(',').map((a) => a.trim())),
          ...(serviceAliases(s.name)?.aliases.map((a) => a.name) ?? []),
        ]);
        if (!names.includes(hostName) && !/\$/.test(hostName)) {
          findings.push({
            rule: 'docker-host-alias',
            severity: 'error',
            where,
            message: `DOCKER_HOST points at "${hostName}" but the dind service is reachable as ${names.map((n) => `"${n}"`).join(', ')}`,
            fix: 'set `alias: docker` on the dind service and DOCKER_HOST to tcp://docker:2376 (TLS) or tcp://docker:2375 (TLS off)',
          });
        } else if (hostName.includes('_')) {
          findings.push({
            rule: 'docker-host-alias',
            severity: 'error',
            where,
            message: `DOCKER_HOST uses "${hostName}", which has "_": not a valid host name, and not the name in dind's TLS certificate`,
            fix: 'set `alias: docker` on the service and use tcp://docker:2376',
          });
        } else if (tls && hostName !== 'docker') {
          findings.push({
            rule: 'tls-alias',
            severity: 'error',
            where,
            message: `TLS is on but DOCKER_HOST uses "${hostName}": dind's certificate names only "docker", so verification fails`,
            fix: 'set `alias: docker` on the dind service and DOCKER_HOST: tcp://docker:2376',
          });
        }
        if (tls && port === '2375') {
          findings.push({
            rule: 'tls-port',
            severity: 'error',
            where,
            message:
              certdir === undefined
                ? 'DOCKER_HOST uses port 2375 but DOCKER_TLS_CERTDIR is not set: docker:dind then enables TLS and listens on 2376 only'
                : `DOCKER_HOST uses port 2375 but DOCKER_TLS_CERTDIR is "${certdir}": with TLS on, dind listens on 2376 only`,
            fix: 'either DOCKER_TLS_CERTDIR: "" (TLS off, port 2375) or DOCKER_HOST: tcp://docker:2376 with DOCKER_TLS_CERTDIR: "/certs"',
          });
        }
        if (!tls && port === '2376') {
          findings.push({
            rule: 'tls-port',
            severity: 'error',
            where,
            message: 'DOCKER_HOST uses port 2376 (TLS) but DOCKER_TLS_CERTDIR is "": dind listens on 2375 without TLS',
            fix: 'DOCKER_HOST: tcp://docker:2375, or turn TLS on with DOCKER_TLS_CERTDIR: "/certs"',
          });
        }
      }
    }

    // Proxy mode: dind's HTTPS_PROXY (service variables, job variables GitLab passes to services too,
    // or the runner's dind environment) must not be loopback, dind must trust relais's CA, and the job's
    // own connection to dind must not go through the proxy.
    const proxyOf = (s: ServiceDef): ProxyFacts | undefined => proxyFacts({ ...vars, ...s.variables });
    const jobProxy = dind.map((s) => ({ s, p: proxyOf(s) })).find((x) => x.p !== undefined);
    const runnerProxy = relevant
      .flatMap((r) => r.services.filter((s) => isDindImage(s.name)).map((s) => ({ s, r, p: proxyFacts(s.variables) })))
      .find((x) => x.p !== undefined);
    const proxy = jobProxy?.p ?? (dind.length === 0 ? runnerProxy?.p : undefined);
    if (proxy !== undefined) {
      const lf = loopbackFinding('HTTPS_PROXY', proxy.url, where);
      if (lf !== undefined) findings.push(lf);
      if (jobProxy !== undefined && !trustsCa(jobProxy.s, relevant.flatMap((r) => r.volumes))) {
        findings.push({
          rule: 'proxy-ca',
          severity: 'error',
          where,
          message: "dind goes through relais's proxy door but nothing gives it relais's CA: every intercepted pull fails with \"x509: certificate signed by unknown authority\"",
          fix: 'generate the job with `relais ci gitlab --proxy ...` (its dind entrypoint writes /etc/docker/certs.d/<host>/ca.crt), or mount a certs.d directory (relais ci runner-config --via proxy)',
        });
      } else if (
        // Trusted through the runner's certs.d mount (runner-config --via proxy), not a job entrypoint of its own.
        jobProxy !== undefined &&
        !jobProxy.s.entrypoint.some((a) => a.includes(DOCKER_CERTS_D)) &&
        interceptsDockerHub(proxy) &&
        !caInSystemRoots(jobProxy.s, { ...vars, ...jobProxy.s.variables }, relevant.flatMap((r) => r.volumes))
      ) {
        findings.push(hubCaFinding(where, jobProxy.s.name));
      }
    }
    const hostVarProxy = proxyFacts(vars);
    const dockerHostName = host === undefined ? undefined : /^tcp:\/\/([^:/]+)/.exec(host)?.[1];
    if (hostVarProxy !== undefined && dockerHostName !== undefined && !hostVarProxy.noProxy.includes(dockerHostName)) {
      findings.push({
        rule: 'proxy-no-proxy',
        severity: 'error',
        where,
        message: `the job sets HTTPS_PROXY, so its docker client would reach dind (${dockerHostName}) through the proxy too: NO_PROXY does not name "${dockerHostName}"`,
        fix: `set HTTPS_PROXY and NO_PROXY on the dind service's own variables only (relais ci gitlab --proxy does), or add ${dockerHostName} to NO_PROXY`,
      });
    }

    // The mirror: absent, malformed, or covering less than people think.
    const mirrorArgs = dind.flatMap((s) => s.command.filter((a) => a.startsWith('--registry-mirror')));
    const runnerMirror =
      runnerDind.some((s) => s.command.some((a) => a.startsWith('--registry-mirror'))) ||
      relevant.some((r) => r.volumes.some((v) => v.split(':')[1] === '/etc/docker/daemon.json'));
    for (const arg of mirrorArgs) {
      const url = arg.slice(arg.indexOf('=') + 1);
      const lf = loopbackFinding('--registry-mirror', url, where);
      if (lf !== undefined) findings.push(lf);
      const u = /^http:\/\/([^/]+)\/?$/.exec(url);
      const svc = dind.find((d) => d.command.includes(arg));
      if (lf === undefined && u?.[1] !== undefined && svc !== undefined && !svc.command.includes(`--insecure-registry=${u[1]}`)) {
        findings.push({
          rule: 'mirror-insecure',
          severity: 'warning',
          where,
          message: `the mirror ${url} is plain HTTP but not an insecure registry: images named through it (${u[1]}/ghcr.io/...) fail with "server gave HTTP response to HTTPS client"`,
          fix: `add "--insecure-registry=${u[1]}" to the dind command (relais ci gitlab --mirror ${url} does)`,
        });
      }
    }
    if (proxy === undefined && dind.length > 0 && mirrorArgs.length === 0 && !runnerMirror && !dind.some((s) => !/^(docker(\.io)?\/)?(library\/)?docker:/.test(s.name))) {
      findings.push({
        rule: 'no-mirror',
        severity: 'warning',
        where,
        message: 'the dind service has no --registry-mirror: every job pulls its base images from Docker Hub again (rate limits, time)',
        fix: 'add `command: ["--registry-mirror=https://<relais>"]` to the service, or run `relais ci runner-config --mirror ...` on the runner',
      });
    }
    for (const arg of mirrorArgs) {
      const url = arg.split('=')[1] ?? '';
      let problem: string | undefined;
      try {
        const u = new URL(url);
        if (u.pathname !== '/') problem = 'has a path, which dockerd rejects (dind exits at start)';
      } catch {
        problem = 'is not a URL with http:// or https://, which dockerd rejects (dind exits at start)';
      }
      if (problem !== undefined) {
        findings.push({ rule: 'mirror-url', severity: 'error', where, message: `${arg} ${problem}`, fix: 'use --registry-mirror=https://relais.example.com' });
      }
    }
    const refs = job.script
      .flatMap((l) => [...l.matchAll(/(?:docker\s+pull|--cache-from|FROM)\s+"?([a-z0-9.-]+\.[a-z]{2,}(?::\d+)?\/[^\s"]+)/gi)])
      .map((mm) => mm[1] ?? '')
      .filter((ref) => ref !== '');
    if (proxy?.hosts !== undefined) {
      // Covered: registries relais intercepts (Docker Hub's names count as one), the others go direct
      // (or are refused by relais unless tunnelled).
      const intercepted = new Set(proxy.hosts.map((h) => h.toLowerCase()));
      const hubIntercepted = DOCKER_HUB_HOSTS.some((h) => intercepted.has(h));
      const missed = refs.filter((ref) => {
        const h = registryHost(ref);
        return !(intercepted.has(h) || (hubIntercepted && DOCKER_HUB_HOSTS.includes(h)));
      });
      if (missed.length > 0) {
        findings.push({
          rule: 'proxy-scope',
          severity: 'warning',
          where,
          message: `relais's proxy door intercepts ${[...intercepted].join(', ')}: ${missed.map((o) => `"${o}"`).join(', ')} ${missed.length === 1 ? 'is' : 'are'} not among them, so dind's CONNECT for ${missed.length === 1 ? 'it' : 'them'} is refused unless relais's proxy.tunnel lists the host`,
          fix: "add the registry's host to upstreams.NAME.hosts in relais's config (then regenerate: relais ci gitlab --proxy ... --relais-config FILE), or to proxy.tunnel to pass it through uncached",
        });
      }
    } else if (proxy === undefined && (mirrorArgs.length > 0 || runnerMirror)) {
      const others = refs.filter((ref) => !/^(docker\.io|registry-1\.docker\.io|index\.docker\.io)\//.test(ref));
      if (others.length > 0) {
        findings.push({
          rule: 'mirror-scope',
          severity: 'warning',
          where,
          message: `--registry-mirror only covers Docker Hub: ${others.map((o) => `"${o}"`).join(', ')} ${others.length === 1 ? 'is' : 'are'} pulled from ${others.length === 1 ? 'its' : 'their'} own registry, not through relais`,
          fix: "use relais's proxy mode (relais ci gitlab --proxy / runner-config --via proxy: every registry relais intercepts, names unchanged), or name them through relais with the upstream as a path prefix, e.g. relais.example.com/quay.io/org/image, or accept the direct pulls",
        });
      }
    }
    if (mirrorArgs.length > 0 || runnerMirror) {
      if (runners !== undefined && dind.some((s) => s.command.some((a) => a.startsWith('--registry-mirror')))) {
        const withDaemonJson = relevant.filter((r) => r.volumes.some((v) => v.split(':')[1] === '/etc/docker/daemon.json'));
        for (const r of withDaemonJson) {
          findings.push({
            rule: 'mirror-conflict',
            severity: 'error',
            where,
            message: `runner "${r.name}" mounts a daemon.json into dind and this job passes --registry-mirror: dockerd refuses to start when both set registry-mirrors`,
            fix: 'drop the `command: [--registry-mirror=...]` from the job (the runner already sets the mirror)',
          });
        }
      }
    }

    if (dind.length > 0 || runnerDind.length > 0) {
      dindJobs.push(job.name);
      if (tls) tlsJobs.push(job.name);
    }
  }
  // Runner side: privileged and the shared TLS client certificates, once per runner.
  const names = (jobs: string[]): string => `${jobs.length === 1 ? 'job' : 'jobs'} ${jobs.join(', ')}`;
  for (const r of relevant) {
    if (dindJobs.length > 0 && !r.privileged) {
      findings.push({
        rule: 'privileged',
        severity: 'error',
        where: `config.toml: runner ${r.name}`,
        message: `${names(dindJobs)} ${dindJobs.length === 1 ? 'runs' : 'run'} dind, which needs a privileged container, but privileged is not true`,
        fix: 'set privileged = true under [runners.docker] (or use a runner dedicated to image builds)',
      });
    }
    if (tlsJobs.length > 0 && r.privileged && !r.volumes.some((v) => v.split(':')[0] === '/certs/client')) {
      findings.push({
        rule: 'tls-certs-volume',
        severity: 'error',
        where: `config.toml: runner ${r.name}`,
        message: `${names(tlsJobs)} ${tlsJobs.length === 1 ? 'talks' : 'talk'} TLS to dind, but the runner does not share /certs/client: the job finds no client certificate`,
        fix: 'add "/certs/client" to volumes under [runners.docker] (relais ci runner-config does it)',
      });
    }
  }
  return dedupe(findings);
}

/** Rules over config.toml alone. */
export function checkRunnerConfig(runners: readonly RunnerFacts[]): Finding[] {
  const findings: Finding[] = [];
  for (const r of runners) {
    const where = `config.toml: runner ${r.name}`;
    const dind = r.services.filter((s) => isDindImage(s.name));
    if (dind.length > 0 && !r.privileged) {
      findings.push({
        rule: 'privileged',
        severity: 'error',
        where,
        message: 'the runner starts a dind service for every job but is not privileged: dind cannot start',
        fix: 'set privileged = true under [runners.docker]',
      });
    }
    for (const s of dind) {
      for (const arg of s.command.filter((a) => a.startsWith('--registry-mirror'))) {
        const lf = loopbackFinding('--registry-mirror', arg.slice(arg.indexOf('=') + 1), where);
        if (lf !== undefined) findings.push(lf);
      }
      const p = proxyFacts(s.variables);
      if (p !== undefined) {
        const lf = loopbackFinding('HTTPS_PROXY', p.url, where);
        if (lf !== undefined) findings.push(lf);
        if (!trustsCa(s, r.volumes)) {
          findings.push({
            rule: 'proxy-ca',
            severity: 'error',
            where,
            message: `service ${s.name} goes through relais's proxy door (HTTPS_PROXY) but no certs.d is mounted at ${DOCKER_CERTS_D}: intercepted pulls fail with x509 errors`,
            fix: 'relais ci runner-config --via proxy writes <host>/ca.crt files and mounts them',
          });
        } else if (interceptsDockerHub(p) && !caInSystemRoots(s, s.variables, r.volumes)) {
          findings.push(hubCaFinding(where, s.name));
        }
      }
      const hasMirrorFlag = s.command.some((a) => a.startsWith('--registry-mirror'));
      if (hasMirrorFlag && r.volumes.some((v) => v.split(':')[1] === '/etc/docker/daemon.json')) {
        findings.push({
          rule: 'mirror-conflict',
          severity: 'error',
          where,
          message: `service ${s.name} passes --registry-mirror and a daemon.json is mounted at /etc/docker/daemon.json: dockerd refuses to start when both set it`,
          fix: 'keep one of the two (relais ci runner-config --via service|volume sets one and removes the other)',
        });
      }
      if (s.alias !== undefined && !s.alias.split(',').map((a) => a.trim()).includes('docker')) {
        findings.push({
          rule: 'tls-alias',
          severity: 'warning',
          where,
          message: `service ${s.name} has alias "${s.alias}": with TLS on, only the name "docker" matches dind's certificate`,
          fix: 'add alias = "docker"',
        });
      }
    }
  }
  return findings;
}

function dedupe(findings: Finding[]): Finding[] {
  const seen = new Set<string>();
  return findings.filter((f) => {
    const key = `${f.rule}|${f.where}|${f.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function truncate(s: string, n = 80): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

export function formatFindings(findings: readonly Finding[]): string {
  if (findings.length === 0) return 'relais ci doctor: no problems found';
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`${f.severity === 'error' ? 'error' : 'warning'} [${f.rule}] ${f.where}`, `  ${f.message}`, `  fix: ${f.fix}`);
  }
  const errors = findings.filter((f) => f.severity === 'error').length;
  lines.push('', `${errors} error(s), ${findings.length - errors} warning(s)`);
  return lines.join('\n');
}
