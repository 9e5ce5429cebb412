// containerd's `ctr` pulling through mirrors configured the way a containerd user does: a hosts
// directory with one hosts.toml per registry (containerd then sends ?ns=<registry> to the mirror).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { removeDir, run, tempDir, type RunResult } from './proc.js';

export interface CtrMirror {
  /** http://HOST:PORT (optionally with a path) */
  url: string;
  /** hosts.toml override_path: use the URL's path as the API root instead of appending /v2. */
  overridePath?: boolean;
  /** Default ['pull', 'resolve']. */
  capabilities?: string[];
  /** PEM file of the CA to trust for an https:// mirror. */
  ca?: string;
  /** Do not verify an https:// mirror's certificate. */
  skipVerify?: boolean;
}

export interface CtrHostsOptions {
  /** registry name (docker.io, ghcr.io, 127.0.0.1:5000) -> mirror */
  mirrors: Record<string, string | CtrMirror>;
  /** registry name -> upstream server URL; defaults to https://registry-1.docker.io for docker.io, else https://NAME */
  servers?: Record<string, string>;
}

export interface CtrPullOptions extends CtrHostsOptions {
  /** containerd namespace; default 'relais-test'. */
  namespace?: string;
  /** user:password sent to every host. */
  user?: string;
  platform?: string;
  /** false: `ctr content fetch` (download only, no unpack: works with random layers). Default true. */
  unpack?: boolean;
  /** Snapshotter for unpacking; default containerd's default (overlayfs). */
  snapshotter?: string;
  timeoutMs?: number;
  /** Extra environment of ctr (e.g. HTTPS_PROXY: ctr fetches in its own process). */
  env?: Record<string, string>;
}

function tomlString(s: string): string {
  return JSON.stringify(s); // a JSON string is a valid TOML basic string for our inputs
}

function defaultServer(registry: string): string {
  return registry === 'docker.io' ? 'https://registry-1.docker.io' : `https://${registry}`;
}

/** The text of one hosts.toml. */
export function hostsToml(registry: string, mirror: string | CtrMirror, server?: string): string {
  const m: CtrMirror = typeof mirror === 'string' ? { url: mirror } : mirror;
  const lines = [
    `server = ${tomlString(server ?? defaultServer(registry))}`,
    '',
    `[host.${tomlString(m.url)}]`,
    `  capabilities = [${(m.capabilities ?? ['pull', 'resolve']).map(tomlString).join(', ')}]`,
  ];
  if (m.overridePath === true) lines.push('  override_path = true');
  if (m.ca !== undefined) lines.push(`  ca = ${tomlString(m.ca)}`);
  if (m.skipVerify === true) lines.push('  skip_verify = true');
  return `${lines.join('\n')}\n`;
}

/** Writes DIR/<registry>/hosts.toml for every mirror (registry names with ':' are written as is). */
export async function writeHostsDir(dir: string, opts: CtrHostsOptions): Promise<void> {
  for (const [registry, mirror] of Object.entries(opts.mirrors)) {
    const sub = join(dir, registry);
    await mkdir(sub, { recursive: true });
    await writeFile(join(sub, 'hosts.toml'), hostsToml(registry, mirror, opts.servers?.[registry]));
  }
}

/** Result of ctrPull, with the hosts dir that was used (already deleted). */
export interface CtrPullResult extends RunResult {
  hostsToml: Record<string, string>;
}

/**
 * `ctr images pull` (or `ctr content fetch` with unpack: false) of a fully qualified ref
 * (docker.io/library/alpine:3.20) against the containerd at `containerdSocket`, with a fresh
 * hosts dir. Does not throw on a non-zero exit: check `code`.
 */
export async function ctrPull(containerdSocket: string, ref: string, opts: CtrPullOptions): Promise<CtrPullResult> {
  const dir = await tempDir('ctr-hosts');
  try {
    await writeHostsDir(dir, opts);
    const args = ['--address', containerdSocket, '--namespace', opts.namespace ?? 'relais-test'];
    args.push(...(opts.unpack === false ? ['content', 'fetch'] : ['images', 'pull']), '--hosts-dir', dir);
    if (opts.user !== undefined) args.push('--user', opts.user);
    if (opts.platform !== undefined) args.push('--platform', opts.platform);
    if (opts.snapshotter !== undefined && opts.unpack !== false) args.push('--snapshotter', opts.snapshotter);
    args.push(ref);
    const r = await run('ctr', args, { timeoutMs: opts.timeoutMs ?? 180_000, ...(opts.env ? { extraEnv: opts.env } : {}) });
    const written: Record<string, string> = {};
    for (const [registry, mirror] of Object.entries(opts.mirrors)) written[registry] = hostsToml(registry, mirror, opts.servers?.[registry]);
    return { ...r, hostsToml: written };
  } finally {
    await removeDir(dir);
  }
}

/** `ctr images ls` as {name, digest} pairs. */
export async function ctrImages(containerdSocket: string, namespace = 'relais-test'): Promise<{ name: string; digest: string }[]> {
  const r = await run('ctr', ['--address', containerdSocket, '--namespace', namespace, 'images', 'ls']);
  if (r.code !== 0) throw new Error(`ctr images ls failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((cols) => cols.length >= 3)
    .map((cols) => ({ name: cols[0] ?? '', digest: cols[2] ?? '' }));
}
