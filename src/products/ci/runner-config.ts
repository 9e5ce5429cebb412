// `relais ci runner-config`: adds relais as the Docker Hub mirror of the dind service for
// every docker-executor [[runners]] of a GitLab Runner config.toml. Edits go through
// toml-patch, which keeps the user's comments, order and layout; applying the plan to its
// own output changes nothing (idempotent).

import { parse, patch } from '@decimalturn/toml-patch';
import { errors } from '../../errors.js';
import { dindMirrorFlags, normalizeMirror } from './gitlab-yaml.js';
import { certsDFiles, DOCKER_CERTS_D, INTERCEPT_HOSTS_VAR, interceptHosts, noProxyFor, normalizeProxy, RELAIS_CA_DIR, RELAIS_CA_FILE, sslCertDirWith } from './proxy.js';
import { serviceAliases } from './service-alias.js';

export type MirrorVia = 'service' | 'volume' | 'proxy';

/** Proxy mode (--via proxy): what dind needs to pull the intercepted registries through relais's proxy door. */
export interface RunnerProxyOptions {
  /** The proxy door as dind sees it, http://relais.example.com:3128. */
  readonly url: string;
  /** Host names relais intercepts; Docker Hub's when empty. */
  readonly hosts: readonly string[];
  /** Host path of the certs.d directory the command writes and the runner mounts at /etc/docker/certs.d. */
  readonly certsDirPath: string;
  /**
   * Host path of a directory holding only relais's CA (relais-ca.crt), mounted read-only at /etc/relais-ca and
   * named by SSL_CERT_DIR in dind's environment: the CA joins the system roots, which is what dockerd's own
   * pulls of Docker Hub need (they ignore certs.d). Everything in it is trusted: keep nothing else there.
   */
  readonly caDirPath: string;
  /** relais's CA certificate (PEM), written as <host>/ca.crt for every intercepted host and as relais-ca.crt. */
  readonly caPem: string;
}

export interface RunnerConfigOptions {
  /** relais's HTTP door as dind sees it (--via service|volume). */
  readonly mirror?: string | undefined;
  /** --via proxy. */
  readonly proxy?: RunnerProxyOptions | undefined;
  /** service: a [[runners.docker.services]] dind entry with --registry-mirror; volume: mount a daemon.json into dind. */
  readonly via: MirrorVia;
  /** Host path of the daemon.json mounted into dind (via volume). */
  readonly daemonJsonPath: string;
  /** Share /certs/client between dind and the job (TLS on 2376). Default true. */
  readonly tls?: boolean;
  /** dind image for a new service entry (via service). */
  readonly dindImage?: string;
}

export interface RunnerReport {
  readonly index: number;
  readonly name: string;
  readonly executor: string;
  /** What was (or, with --check, would be) changed. Empty when already configured. */
  readonly changes: readonly string[];
  /** Set when this runner was left alone, and why. */
  readonly skipped?: string;
  /** Problems the command does not fix by itself (e.g. privileged = false). */
  readonly warnings: readonly string[];
}

export interface RunnerConfigPlan {
  readonly output: string;
  readonly changed: boolean;
  readonly runners: readonly RunnerReport[];
  /** The daemon.json to write next to config.toml (via volume). */
  readonly daemonJson?: string;
  /** The certs.d files to write under RunnerProxyOptions.certsDirPath (via proxy): relative path and content. */
  readonly certsFiles?: readonly { path: string; content: string }[];
  /** The files to write under RunnerProxyOptions.caDirPath (via proxy): relais-ca.crt, the CA. */
  readonly caDirFiles?: readonly { path: string; content: string }[];
}

export const DOCKER_EXECUTORS: readonly string[] = ['docker', 'docker+machine', 'docker-autoscaler'];
const DIND_DAEMON_JSON = '/etc/docker/daemon.json';

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function stringArray(v: unknown): string[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: string[] = [];
  for (const x of v) if (typeof x === 'string') out.push(x);
  return out.length === v.length ? out : undefined;
}

/** Parses config.toml, turning syntax errors into a RelaisError that says where. */
export function parseRunnerConfig(text: string, file = 'config.toml'): Table {
  let parsed: unknown;
  try {
    parsed = parse(text);
  } catch (e) {
    throw errors.ciTomlInvalid(file, e instanceof Error ? e.message : String(e));
  }
  if (!isTable(parsed)) throw errors.ciTomlNotTable(file);
  return parsed;
}

/** The runners of a parsed config.toml (an empty list when it has none). */
export function runnersOf(config: Table): Table[] {
  const r = config['runners'];
  if (!Array.isArray(r)) return [];
  return r.filter(isTable);
}

/** True for service images that run dind (docker:dind, docker:27-dind, registry/x/docker:dind...). */
export function isDindImage(name: string): boolean {
  const withoutDigest = name.split('@')[0] ?? name;
  const lastSlash = withoutDigest.lastIndexOf('/');
  const tail = withoutDigest.slice(lastSlash + 1);
  return /dind/.test(tail);
}

/** The daemon.json relais wants dind to load (via volume). */
export function daemonJsonFor(mirror: string): string {
  const m = normalizeMirror(mirror);
  const u = new URL(m);
  const json: Record<string, string[]> = { 'registry-mirrors': [m] };
  // The mirror itself is reached with the URL's scheme; images named through relais directly
  // (relais.example.com/ghcr.io/...) need a plain-HTTP relais listed as insecure.
  if (u.protocol === 'http:') json['insecure-registries'] = [u.host];
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Computes the new config.toml text and a report (pure: no file is read or written). */
export function planRunnerConfig(text: string, options: RunnerConfigOptions): RunnerConfigPlan {
  let mirror = '';
  let proxy: { url: string; hosts: string[]; mount: string; caMount: string; options: RunnerProxyOptions } | undefined;
  if (options.via === 'proxy') {
    if (options.proxy === undefined) {
      throw errors.ciUsage('--via proxy needs --proxy', 'add --proxy http://<relais>:3128 (proxy.listen)');
    }
    proxy = {
      url: normalizeProxy(options.proxy.url),
      hosts: interceptHosts(options.proxy.hosts),
      mount: `${options.proxy.certsDirPath}:${DOCKER_CERTS_D}:ro`,
      caMount: `${options.proxy.caDirPath}:${RELAIS_CA_DIR}:ro`,
      options: options.proxy,
    };
  } else {
    if (options.mirror === undefined) {
      throw errors.ciUsage(`--via ${options.via} needs --mirror`, 'add --mirror https://<relais>');
    }
    mirror = normalizeMirror(options.mirror);
  }
  const config = parseRunnerConfig(text);
  const runners = runnersOf(config);
  const reports: RunnerReport[] = [];
  const tls = options.tls ?? true;
  const mirrorFlags = mirror === '' ? [] : dindMirrorFlags(mirror);
  const mirrorHost = mirror === '' ? '' : new URL(mirror).host;
  // Flags relais owns on a dind command: any --registry-mirror, and --insecure-registry for relais itself.
  const ours = (a: string): boolean => a.startsWith('--registry-mirror') || (mirrorHost !== '' && a === `--insecure-registry=${mirrorHost}`);
  const mount = `${options.daemonJsonPath}:${DIND_DAEMON_JSON}:ro`;

  runners.forEach((runner, index) => {
    const name = typeof runner['name'] === 'string' ? runner['name'] : `#${index + 1}`;
    const executor = typeof runner['executor'] === 'string' ? runner['executor'] : '(none)';
    if (!DOCKER_EXECUTORS.includes(executor)) {
      reports.push({ index, name, executor, changes: [], warnings: [], skipped: `executor "${executor}" runs no dind service` });
      return;
    }
    const changes: string[] = [];
    const warnings: string[] = [];
    const docker = runner['docker'];
    if (!isTable(docker) || docker['privileged'] !== true) {
      reports.push({
        index,
        name,
        executor,
        changes: [],
        warnings: [],
        skipped: 'not privileged, so it cannot run dind (set privileged = true in [runners.docker] first)',
      });
      return;
    }
    const d = docker;

    const volumes = stringArray(d['volumes']) ?? [];
    const newVolumes = [...volumes];
    if (tls && !volumes.some((v) => v.split(':')[0] === '/certs/client')) {
      newVolumes.push('/certs/client');
      changes.push('volumes += "/certs/client" (dind writes its TLS client certificates there for the job)');
    }

    const services = Array.isArray(d['services']) ? (d['services'] as unknown[]) : [];
    const dindServices = services.filter(
      (s): s is Table => isTable(s) && typeof s['name'] === 'string' && isDindImage(s['name']),
    );

    if (proxy !== undefined) {
      const p = proxy;
      const mounts: [string, string, string][] = [
        [DOCKER_CERTS_D, p.mount, "dind trusts relais's CA for each intercepted host"],
        [RELAIS_CA_DIR, p.caMount, "dind adds relais's CA to its system roots through SSL_CERT_DIR: dockerd's own pulls of Docker Hub ignore certs.d"],
      ];
      for (const [target, mnt, why] of mounts) {
        const existing = newVolumes.findIndex((v) => v.split(':')[1] === target);
        if (existing === -1) {
          newVolumes.push(mnt);
          changes.push(`volumes += "${mnt}" (${why})`);
        } else if (newVolumes[existing] !== mnt) {
          changes.push(`volumes: "${newVolumes[existing] ?? ''}" -> "${mnt}"`);
          newVolumes[existing] = mnt;
        }
      }
      // NO_PROXY: the runner's other services (the job reaches them directly) and GitLab's own host.
      const otherNames = services
        .filter((s): s is Table => isTable(s) && typeof s['name'] === 'string' && !isDindImage(s['name']))
        .flatMap((s) => [
          ...(typeof s['alias'] === 'string' ? s['alias'].split(',').map((a) => a.trim()) : []),
          ...(serviceAliases(String(s['name']))?.aliases.filter((a) => a.validDns).map((a) => a.name) ?? []),
        ]);
      const gitlabHost = typeof runner['url'] === 'string' ? hostOf(runner['url']) : undefined;
      const env = [
        `HTTPS_PROXY=${p.url}`,
        `NO_PROXY=${noProxyFor(p.url, p.hosts, [...otherNames, ...(gitlabHost === undefined ? [] : [gitlabHost])])}`,
        `${INTERCEPT_HOSTS_VAR}=${p.hosts.join(' ')}`,
      ];
      const isOurs = (e: string): boolean => /^(HTTPS_PROXY|https_proxy|NO_PROXY|no_proxy|SSL_CERT_DIR)=/.test(e) || e.startsWith(`${INTERCEPT_HOSTS_VAR}=`);
      if (dindServices.length === 0) {
        const image = options.dindImage ?? 'docker:27-dind';
        services.push({ name: image, alias: 'docker', environment: [...env, `SSL_CERT_DIR=${sslCertDirWith(undefined)}`] });
        d['services'] = services;
        changes.push(`services += ${image} (alias docker, environment HTTPS_PROXY=${p.url}, NO_PROXY, ${INTERCEPT_HOSTS_VAR}, SSL_CERT_DIR=${RELAIS_CA_DIR})`);
      }
      for (const s of dindServices) {
        const current = stringArray(s['environment']) ?? [];
        // A user's own SSL_CERT_DIR directories are kept; relais's is added to them.
        const userCertDir = current.find((e) => e.startsWith('SSL_CERT_DIR='))?.slice('SSL_CERT_DIR='.length);
        const want = [...current.filter((e) => !isOurs(e)), ...env, `SSL_CERT_DIR=${sslCertDirWith(userCertDir)}`];
        if (current.length !== want.length || current.some((e, i) => e !== want[i])) {
          s['environment'] = want;
          changes.push(`service "${String(s['name'])}": environment = ${JSON.stringify(want)}`);
        }
        if (s['alias'] === undefined) {
          s['alias'] = 'docker';
          changes.push(`service "${String(s['name'])}": alias = "docker" (the name dind's TLS certificate carries)`);
        }
      }
      warnings.push('jobs must not declare their own dind service (relais ci gitlab --no-service): the runner\'s has the proxy settings');
      if (executor !== 'docker') {
        warnings.push(`executor ${executor} runs jobs on other machines: ${p.options.certsDirPath} and ${p.options.caDirPath} must exist there too`);
      }
    } else if (options.via === 'volume') {
      const existing = newVolumes.findIndex((v) => v.split(':')[1] === DIND_DAEMON_JSON);
      if (existing === -1) {
        newVolumes.push(mount);
        changes.push(`volumes += "${mount}" (dind loads the mirror from daemon.json)`);
      } else if (newVolumes[existing] !== mount) {
        changes.push(`volumes: "${newVolumes[existing] ?? ''}" -> "${mount}"`);
        newVolumes[existing] = mount;
      }
      for (const s of dindServices) {
        const cmd = stringArray(s['command']) ?? [];
        const others = cmd.filter((a) => !ours(a));
        if (others.length !== cmd.length) {
          // dockerd refuses to start when a flag and daemon.json both set registry-mirrors (or insecure-registries).
          s['command'] = others;
          changes.push(`service "${String(s['name'])}": --registry-mirror removed from command (daemon.json sets it now)`);
        }
      }
      warnings.push(
        'jobs must not pass --registry-mirror to their dind service any more: dockerd refuses a flag that daemon.json also sets',
      );
      if (executor !== 'docker') {
        warnings.push(
          `executor ${executor} runs jobs on other machines: ${options.daemonJsonPath} must exist there too (or use --via service)`,
        );
      }
    } else {
      if (dindServices.length === 0) {
        const image = options.dindImage ?? 'docker:27-dind';
        services.push({ name: image, alias: 'docker', command: mirrorFlags });
        d['services'] = services;
        changes.push(`services += ${image} (alias docker, command ${mirrorFlags.join(' ')})`);
      }
      for (const s of dindServices) {
        const cmd = stringArray(s['command']) ?? [];
        const others = cmd.filter((a) => !ours(a));
        const want = [...others, ...mirrorFlags];
        if (cmd.length !== want.length || cmd.some((a, i) => a !== want[i])) {
          s['command'] = want;
          changes.push(`service "${String(s['name'])}": command = ${JSON.stringify(want)}`);
        }
        if (s['alias'] === undefined) {
          s['alias'] = 'docker';
          changes.push(`service "${String(s['name'])}": alias = "docker" (the name dind's TLS certificate carries)`);
        }
      }
      if (volumes.some((v) => v.split(':')[1] === DIND_DAEMON_JSON)) {
        warnings.push(
          `a daemon.json is mounted at ${DIND_DAEMON_JSON}: if it sets registry-mirrors too, dockerd refuses to start`,
        );
      }
    }
    if (newVolumes.length !== volumes.length || newVolumes.some((v, i) => v !== volumes[i])) d['volumes'] = newVolumes;
    reports.push({ index, name, executor, changes, warnings });
  });

  const changed = reports.some((r) => r.changes.length > 0);
  const output = changed ? patch(text, config) : text;
  return {
    output,
    changed: output !== text,
    runners: reports,
    ...(options.via === 'volume' ? { daemonJson: daemonJsonFor(mirror) } : {}),
    ...(proxy !== undefined
      ? { certsFiles: certsDFiles(proxy.hosts, proxy.options.caPem), caDirFiles: [{ path: RELAIS_CA_FILE, content: proxy.options.caPem }] }
      : {}),
  };
}

function hostOf(url: string): string | undefined {
  try {
    return new URL(url).hostname || undefined;
  } catch {
    return undefined;
  }
}

/** The report `relais ci runner-config` prints. */
export function describePlan(plan: RunnerConfigPlan, file: string, check: boolean): string {
  const lines: string[] = [];
  if (plan.runners.length === 0) lines.push(`${file}: no [[runners]] found`);
  for (const r of plan.runners) {
    const head = `runner ${JSON.stringify(r.name)} (executor ${r.executor})`;
    if (r.skipped !== undefined) lines.push(`${head}: left alone, ${r.skipped}`);
    else if (r.changes.length === 0) lines.push(`${head}: already configured`);
    else {
      lines.push(`${head}: ${check ? 'would change' : 'changed'}`);
      for (const c of r.changes) lines.push(`  - ${c}`);
    }
    for (const w of r.warnings) lines.push(`  ! ${w}`);
  }
  if (check) lines.push(plan.changed ? `${file} needs changes (run without --check to apply them)` : `${file} is up to date`);
  else lines.push(plan.changed ? `${file} updated` : `${file} unchanged`);
  return lines.join('\n');
}
