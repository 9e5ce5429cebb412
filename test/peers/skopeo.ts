// skopeo as a client of a registry or mirror: copies to a `dir:` layout and inspects, optionally
// through a registries.conf with [[registry.mirror]] entries (how podman/skopeo/CRI-O users
// point at a pull-through cache; path prefixes like 127.0.0.1:5002/docker.io work).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Creds } from './images.js';
import { run, tempDirRemovedAtExit, type RunResult } from './proc.js';

export interface RegistriesConfEntry {
  /** The names this entry applies to, e.g. docker.io or ghcr.io/org */
  prefix: string;
  /** Where those names really live; defaults to prefix. */
  location?: string;
  /** Mirror tried first: host[:port][/path], e.g. 127.0.0.1:5002 or 127.0.0.1:5002/docker.io */
  mirror?: string;
  /** Plain HTTP (and no TLS verification) for the mirror; default true. */
  insecure?: boolean;
  /** Also plain HTTP for the location itself; default false. */
  locationInsecure?: boolean;
  /** Only use the mirror for pulls by digest. */
  mirrorByDigestOnly?: boolean;
}

function q(s: string): string {
  return JSON.stringify(s);
}

/** The text of a registries.conf (v2) for these entries. */
export function registriesConf(entries: RegistriesConfEntry[]): string {
  const lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"', ''];
  for (const e of entries) {
    lines.push('[[registry]]', `prefix = ${q(e.prefix)}`, `location = ${q(e.location ?? e.prefix)}`);
    if (e.locationInsecure === true) lines.push('insecure = true');
    if (e.mirrorByDigestOnly === true) lines.push('mirror-by-digest-only = true');
    if (e.mirror !== undefined) {
      lines.push('[[registry.mirror]]', `location = ${q(e.mirror)}`, `insecure = ${String(e.insecure ?? true)}`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

/** Writes DIR/registries.conf and returns its path. */
export async function writeRegistriesConf(dir: string, entries: RegistriesConfEntry[]): Promise<string> {
  const file = join(dir, 'registries.conf');
  await writeFile(file, registriesConf(entries));
  return file;
}

export interface SkopeoClientOptions {
  /** A registries.conf file (see writeRegistriesConf). */
  registriesConf?: string;
  creds?: Creds;
  /** Default false: plain HTTP is allowed for the source. */
  tlsVerify?: boolean;
  /** A directory with ca.crt (see writeCertDir) to trust for HTTPS; implies tlsVerify unless set. */
  certDir?: string;
  /** More environment, e.g. HTTPS_PROXY (the proxy door's tests). */
  env?: Record<string, string>;
  timeoutMs?: number;
}

// No test should read or write the machine's auth files (~/.docker, /run/containers).
let authDir: string | null = null;
function isolatedAuthFile(): string {
  authDir ??= tempDirRemovedAtExit('skopeo-auth');
  return join(authDir, 'auth.json');
}

function globalArgs(opts: SkopeoClientOptions): string[] {
  return opts.registriesConf === undefined ? [] : ['--registries-conf', opts.registriesConf];
}

function srcArgs(opts: SkopeoClientOptions, prefix: '--src-' | '--'): string[] {
  const verify = opts.tlsVerify ?? opts.certDir !== undefined;
  const args = [`${prefix}tls-verify=${String(verify)}`, `${prefix}authfile`, isolatedAuthFile()];
  if (opts.certDir !== undefined) args.push(`${prefix}cert-dir`, opts.certDir);
  if (opts.creds !== undefined) args.push(`${prefix}creds`, `${opts.creds.username}:${opts.creds.password}`);
  return args;
}

/** Writes DIR/ca.crt (the layout skopeo's and podman's --cert-dir expect) and returns DIR. */
export async function writeCertDir(dir: string, caPem: string | Buffer): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'ca.crt'), caPem);
  return dir;
}

export interface SkopeoCopyResult extends RunResult {
  /** The manifest skopeo wrote (when the copy succeeded). */
  manifest?: Buffer;
}

/**
 * `skopeo copy docker://REF dir:DIR` (REF without transport, e.g. docker.io/library/alpine:3.20).
 * With all: true, copies every platform of an index (`--all`). Returns the exit code and output;
 * never throws for a failed copy (check code).
 */
export async function skopeoCopyToDir(ref: string, dir: string, opts: SkopeoClientOptions & { all?: boolean } = {}): Promise<SkopeoCopyResult> {
  const args = [...globalArgs(opts), 'copy', ...srcArgs(opts, '--src-')];
  if (opts.all === true) args.push('--all');
  args.push(`docker://${ref}`, `dir:${dir}`);
  const r = await run('skopeo', args, { timeoutMs: opts.timeoutMs ?? 300_000, ...(opts.env ? { extraEnv: opts.env } : {}) });
  if (r.code !== 0) return r;
  return { ...r, manifest: await readFile(join(dir, 'manifest.json')) };
}

export interface SkopeoInspectResult extends RunResult {
  /** Parsed output (skopeo's summary, or the raw manifest with raw: true) when the command succeeded. */
  json?: unknown;
  /** The raw manifest bytes with raw: true. */
  raw?: Buffer;
}

/** `skopeo inspect [--raw] docker://REF`. Never throws for a failed inspect (check code). */
export async function skopeoInspect(ref: string, opts: SkopeoClientOptions & { raw?: boolean } = {}): Promise<SkopeoInspectResult> {
  const args = [...globalArgs(opts), 'inspect', ...srcArgs(opts, '--')];
  if (opts.raw === true) args.push('--raw');
  args.push(`docker://${ref}`);
  const r = await run('skopeo', args, { timeoutMs: opts.timeoutMs ?? 120_000 });
  if (r.code !== 0) return r;
  const out: SkopeoInspectResult = { ...r, json: JSON.parse(r.stdout) as unknown };
  if (opts.raw === true) out.raw = Buffer.from(r.stdout.replace(/\n$/, ''), 'utf8');
  return out;
}
