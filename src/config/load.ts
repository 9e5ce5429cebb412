// Loads the configuration: YAML file (optional) -> ${ENV} interpolation -> CLI overrides -> schema.
// Any mistake names the field and what was expected, and relais refuses to start.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { ZodError } from 'zod';
import { errors, type RelaisError } from '../errors.js';
import { configSchema, upstreamUrlProblem, type RelaisConfig, type UpstreamConfig } from './schema.js';

export interface CliOverrides {
  readonly listen?: string | undefined;
  readonly dataDir?: string | undefined;
  /** `NAME=URL` pairs; docker.io (else the first) is the default upstream. */
  readonly upstreams?: readonly string[] | undefined;
  readonly startupChecks?: string | undefined;
}

export interface ResolvedConfig extends RelaisConfig {
  readonly defaultUpstream: string;
  /** Whether defaultUpstream was chosen by the config (`defaultUpstream:`) rather than by the docker.io/first-upstream rule. */
  readonly defaultUpstreamExplicit?: boolean;
}

/**
 * The upstream that serves requests with no prefix and no ?ns= (dockerd's registry-mirrors, which only ever
 * carry Docker Hub images): docker.io when configured, else the first upstream.
 */
export function pickDefaultUpstream(names: readonly string[]): string | undefined {
  return names.includes('docker.io') ? 'docker.io' : names[0];
}

/** A warning when dockerd's mirror traffic (Docker Hub images) would go to a registry that is not Docker Hub. */
export function defaultUpstreamWarning(cfg: ResolvedConfig): { message: string; hint: string } | undefined {
  if (cfg.defaultUpstream === 'docker.io' || cfg.defaultUpstreamExplicit === true) return undefined;
  return {
    message: `unprefixed requests (dockerd's registry-mirrors, which carry Docker Hub images) go to ${cfg.defaultUpstream}, which is not Docker Hub: dockerd will get "manifest unknown" and pull from Docker Hub directly, bypassing the cache`,
    hint: `add a docker.io upstream (--upstream docker.io=https://registry-1.docker.io), or set defaultUpstream: ${cfg.defaultUpstream} in the config if that registry really mirrors Docker Hub`,
  };
}

/** "--listen :5743" and "5743" mean every interface, as in Go programs (dockerd, registry). */
export function normalizeListen(v: unknown): unknown {
  if (typeof v === 'number') return `0.0.0.0:${v}`;
  if (typeof v !== 'string') return v;
  if (/^:\d{1,5}$/.test(v)) return `0.0.0.0${v}`;
  if (/^\d{1,5}$/.test(v)) return `0.0.0.0:${v}`;
  return v;
}

function configError(source: string, message: string, hint?: string): RelaisError {
  return errors.configInvalid(source, message, hint);
}

function pathToString(path: readonly PropertyKey[]): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : /^[A-Za-z_][\w]*$/.test(String(p)) ? `.${String(p)}` : `["${String(p)}"]`))
    .join('')
    .replace(/^\./, '');
}

export function formatZodError(source: string, err: ZodError): RelaisError {
  const lines = err.issues.map((i) => `  ${pathToString(i.path) || '(top level)'}: ${i.message}`);
  return configError(source, `invalid configuration\n${lines.join('\n')}`);
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replaces ${NAME} and ${NAME:-default} in every string value; a missing variable is an error naming the field. */
export function interpolateEnv(value: unknown, env: NodeJS.ProcessEnv, source: string, path: string[] = []): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_m, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined) return v;
      if (fallback !== undefined) return fallback;
      throw configError(source, `${pathToString(path)}: environment variable ${name} is not set`, `export ${name}, or write \${${name}:-default}`);
    });
  }
  if (Array.isArray(value)) return value.map((v: unknown, i) => interpolateEnv(v, env, source, [...path, String(i)]));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolateEnv(v, env, source, [...path, k]);
    return out;
  }
  return value;
}

export function parseUpstreamFlag(flag: string): { name: string; url: string } {
  const eq = flag.indexOf('=');
  if (eq <= 0) throw configError('--upstream', `expected NAME=URL, got "${flag}"`, 'e.g. --upstream docker.io=https://registry-1.docker.io');
  const problem = upstreamUrlProblem(flag.slice(eq + 1));
  if (problem !== undefined) throw configError('--upstream', problem, 'e.g. --upstream ghcr.io=https://ghcr.io');
  return { name: flag.slice(0, eq), url: flag.slice(eq + 1) };
}

export async function loadConfig(file: string | undefined, overrides: CliOverrides = {}, env: NodeJS.ProcessEnv = process.env): Promise<ResolvedConfig> {
  let raw: Record<string, unknown> = {};
  const source = file ?? 'configuration';
  if (file !== undefined) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw configError(file, `cannot read the config file (${(e as NodeJS.ErrnoException).code ?? String(e)})`, 'check the path given to --config');
    }
    let doc: unknown;
    try {
      doc = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
    } catch (e) {
      if (e instanceof YAMLParseError) throw configError(file, `not valid YAML: ${e.message}`);
      throw e;
    }
    if (doc === null || doc === undefined) doc = {};
    if (typeof doc !== 'object' || Array.isArray(doc)) throw configError(file, 'expected a mapping at the top level');
    raw = interpolateEnv(doc, env, file) as Record<string, unknown>;
  }
  return resolveConfig(raw, overrides, source);
}

/** Applies CLI overrides to an already-read raw object and validates it. Exported for tests and embedding. */
export function resolveConfig(raw: Record<string, unknown>, overrides: CliOverrides = {}, source = 'configuration'): ResolvedConfig {
  const merged: Record<string, unknown> = { ...raw };
  if (overrides.listen !== undefined) merged.listen = overrides.listen;
  if (merged.listen !== undefined) merged.listen = normalizeListen(merged.listen);
  if (overrides.dataDir !== undefined) merged.dataDir = overrides.dataDir;
  if (overrides.startupChecks !== undefined) merged.startupChecks = overrides.startupChecks;
  if (overrides.upstreams !== undefined && overrides.upstreams.length > 0) {
    const fromFile = (raw.upstreams ?? {}) as Record<string, unknown>;
    const ups: Record<string, unknown> = { ...fromFile };
    for (const flag of overrides.upstreams) {
      const { name, url } = parseUpstreamFlag(flag);
      const prev = fromFile[name];
      ups[name] = { ...(prev !== null && typeof prev === 'object' ? prev : {}), url };
    }
    merged.upstreams = ups;
  }
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) throw formatZodError(source, parsed.error);
  const cfg = parsed.data;
  const names = Object.keys(cfg.upstreams);
  if (names.length === 0) throw configError(source, 'upstreams: at least one upstream is required');
  const defaultUpstream = cfg.defaultUpstream ?? pickDefaultUpstream(names);
  if (defaultUpstream === undefined || !(defaultUpstream in cfg.upstreams)) {
    throw configError(source, `defaultUpstream: "${String(defaultUpstream)}" is not one of the upstreams (${names.join(', ')})`);
  }
  for (const [name, up] of Object.entries(cfg.upstreams)) {
    if ((up.username === undefined) !== (up.password === undefined)) {
      throw configError(source, `upstreams.${name}: username and password go together`);
    }
  }
  if (cfg.auth) {
    const known = (u: string): boolean => u === '*' || u in cfg.upstreams;
    for (const u of cfg.auth.anonymous) if (!known(u)) throw configError(source, `auth.anonymous: "${u}" is not one of the upstreams (${names.join(', ')}) or "*"`);
    for (const [p, ups] of Object.entries(cfg.auth.permissions)) {
      for (const u of ups) if (!known(u)) throw configError(source, `auth.permissions.${p}: "${u}" is not one of the upstreams (${names.join(', ')}) or "*"`);
    }
    if (cfg.auth.htpasswd === undefined && Object.keys(cfg.auth.tokens).length === 0 && cfg.auth.anonymous.length === 0) {
      throw configError(source, 'auth: no htpasswd, no tokens and no anonymous upstreams: nobody could pull', 'add auth.htpasswd, auth.tokens or auth.anonymous');
    }
  }
  return { ...cfg, defaultUpstream, defaultUpstreamExplicit: cfg.defaultUpstream !== undefined };
}

/** Docker Hub's library/ rule applies to docker.io unless configured otherwise. */
export function usesLibraryPrefix(name: string, up: UpstreamConfig): boolean {
  return up.libraryPrefix ?? name === 'docker.io';
}

/** Docker Hub's host names, as clients write them (what dockerd CONNECTs to for docker.io images). */
const DOCKER_HUB_HOSTS = ['registry-1.docker.io', 'docker.io', 'index.docker.io'];

/**
 * The host names (host or host:port) clients use for an upstream through the proxy door, lowercased:
 * upstreams.NAME.hosts, or by default Docker Hub's names for docker.io and the upstream's own name otherwise.
 */
export function upstreamHosts(name: string, up: UpstreamConfig): readonly string[] {
  if (up.hosts !== undefined) return up.hosts;
  if (name === 'docker.io') return DOCKER_HUB_HOSTS;
  return /[a-z]/.test(name.replace(/:\d+$/, '')) ? [name] : [];
}

/** A host entry as CONNECT names it: "host:port", port 443 when none is written. */
export function hostKey(entry: string): string {
  return /:\d+$/.test(entry) ? entry : `${entry}:443`;
}
