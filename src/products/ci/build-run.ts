// The process half of `relais ci build`: runs the planned docker commands, streaming
// docker's own output to the job log, and asks the registry how many bytes moved.

import { spawn } from 'node:child_process';
import { errors } from '../../errors.js';
import { ACCEPT_IMAGES } from '../../upstream/media-types.js';
import { RegistryClient } from '../../upstream/registry-client.js';
import {
  type BuildOutputStats,
  type BuildSummary,
  type CiContext,
  type DockerStep,
  type PhaseTiming,
  parseBuildOutput,
  pulledLayerIds,
  pushedLayerIds,
} from './build-plan.js';
import type { CacheMode } from './gitlab-yaml.js';

export interface RunOptions {
  readonly docker: string;
  readonly env: NodeJS.ProcessEnv;
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

export interface StepResult {
  readonly code: number;
  readonly output: string;
  readonly ms: number;
}

/** Runs one docker command, copying its stdout/stderr through as they come, and keeps the text. */
export function runDocker(step: DockerStep, options: RunOptions): Promise<StepResult> {
  const started = Date.now();
  options.out.write(`$ ${options.docker} ${step.args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(options.docker, [...step.args], {
      env: options.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const chunks: string[] = [];
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      chunks.push(d);
      options.out.write(d);
    });
    child.stderr.on('data', (d: string) => {
      chunks.push(d);
      options.err.write(d);
    });
    // A command that exits without reading its stdin (EPIPE) fails through its exit code.
    child.stdin.on('error', () => undefined);
    child.stdin.end(step.stdin === undefined ? undefined : `${step.stdin}\n`);
    child.on('error', (e) => {
      reject(
        errors.ciDockerMissing(options.docker, e.message, e),
      );
    });
    child.on('close', (code) => {
      resolve({ code: code ?? 1, output: chunks.join(''), ms: Date.now() - started });
    });
  });
}

export async function runBuild(ctx: CiContext, mode: CacheMode, steps: readonly DockerStep[], options: RunOptions): Promise<BuildSummary> {
  const timings: PhaseTiming[] = [];
  const cacheSources: { ref: string; source: 'branch' | 'default-branch'; found: boolean }[] = [];
  let stats: BuildOutputStats = { builder: 'unknown', steps: 0, cached: 0, rebuilt: [], cachedSteps: [] };
  const pulls: { ref: string; output: string }[] = [];
  const pushes: { ref: string; output: string }[] = [];

  for (const step of steps) {
    const r = await runDocker(step, options);
    timings.push({ phase: step.phase, ms: r.ms });
    if (step.phase === 'pull' && step.source !== undefined) {
      const ref = step.args[step.args.length - 1] ?? '';
      cacheSources.push({ ref, source: step.source, found: r.code === 0 });
      if (r.code === 0) pulls.push({ ref, output: r.output });
      else options.out.write(`(no ${step.source === 'branch' ? 'image of this branch' : "image of the default branch"} yet: building without it)\n`);
    }
    if (r.code !== 0 && step.tolerateFailure !== true) {
      throw errors.ciDockerFailed(step.args[0] ?? '', r.code, step.phase === 'login');
    }
    if (step.phase === 'build' && step.args.includes('build')) stats = parseBuildOutput(r.output);
    if (step.phase === 'push' && step.ref !== undefined && step.args[0] === 'push') pushes.push({ ref: step.ref, output: r.output });
  }

  const creds = ctx.login === undefined ? undefined : { user: ctx.login.user, password: ctx.login.password };
  const bytesPulled = await sumOrUndefined(
    pulls.map(async (p) => {
      const layers = await imageLayers(p.ref, creds);
      const ids = pulledLayerIds(p.output);
      return layers.filter((l) => ids.some((id) => l.digest.startsWith(`sha256:${id}`))).reduce((a, l) => a + l.size, 0);
    }),
  );
  const bytesPushed = await sumOrUndefined(
    pushes.map(async (p) => {
      const layers = await imageLayers(p.ref, creds);
      const ids = pushedLayerIds(p.output);
      return layers.filter((l) => ids.some((id) => l.diffId.startsWith(`sha256:${id}`))).reduce((a, l) => a + l.size, 0);
    }),
  );
  return { mode, cacheSources, stats, bytesPulled, bytesPushed, timings, pushed: pushes.map((p) => p.ref) };
}

async function sumOrUndefined(parts: Promise<number>[]): Promise<number | undefined> {
  try {
    const values = await Promise.all(parts);
    return values.reduce((a, b) => a + b, 0);
  } catch {
    return undefined;
  }
}

export interface LayerInfo {
  readonly digest: string;
  readonly size: number;
  readonly diffId: string;
}

interface ParsedRef {
  readonly host: string;
  readonly name: string;
  readonly reference: string;
}

/** Splits registry/name:tag (a registry host is required here: CI_REGISTRY_IMAGE always has one). */
export function parseImageRef(ref: string): ParsedRef {
  const slash = ref.indexOf('/');
  const host = ref.slice(0, slash);
  let rest = ref.slice(slash + 1);
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at !== -1) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon !== -1) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
  }
  return { host, name: rest, reference };
}


function isLoopback(host: string): boolean {
  const h = host.replace(/:\d+$/, '');
  return h === 'localhost' || h.startsWith('127.') || h === '[::1]';
}

/** Layers of an image in its registry: compressed digest and size, with the matching diff id. */
export async function imageLayers(ref: string, creds: { user: string; password: string } | undefined): Promise<LayerInfo[]> {
  const p = parseImageRef(ref);
  const client = new RegistryClient({
    url: `${isLoopback(p.host) ? 'http' : 'https'}://${p.host}`,
    credentials: creds === undefined ? undefined : { username: creds.user, password: creds.password },
    retries: 1,
    timeoutMs: 30_000,
    userAgent: 'relais-ci',
  });
  try {
    return await layersOf(client, p);
  } finally {
    await client.close();
  }
}

async function layersOf(client: RegistryClient, p: ParsedRef): Promise<LayerInfo[]> {
  const getJson = async (path: string, accept: string): Promise<unknown> => {
    // Registries may redirect blob reads to object storage (GitLab's does): open() follows.
    const res = await client.open(p.name, client.url(`/v2/${p.name}${path}`), { headers: { accept } });
    const text = await res.body.text();
    if (res.status !== 200) throw client.fail({ status: res.status, body: text }, `GET ${p.name}${path}`, p.name);
    return JSON.parse(text) as unknown;
  };
  let manifest = await getJson(`/manifests/${p.reference}`, ACCEPT_IMAGES);
  const list = field(manifest, 'manifests');
  if (Array.isArray(list)) {
    const pick = list.find((m) => {
      const platform = field(m, 'platform');
      return field(platform, 'os') === 'linux' && field(platform, 'architecture') === 'amd64';
    }) as unknown;
    const digest = field(pick ?? list[0], 'digest');
    if (typeof digest !== 'string') return [];
    manifest = await getJson(`/manifests/${digest}`, ACCEPT_IMAGES);
  }
  const configDigest = field(field(manifest, 'config'), 'digest');
  const layers = field(manifest, 'layers');
  if (typeof configDigest !== 'string' || !Array.isArray(layers)) return [];
  const config = await getJson(`/blobs/${configDigest}`, '*/*');
  const diffIds = field(field(config, 'rootfs'), 'diff_ids');
  return layers.map((l, i) => ({
    digest: String(field(l, 'digest')),
    size: Number(field(l, 'size')),
    diffId: Array.isArray(diffIds) ? String(diffIds[i]) : '',
  }));
}

function field(v: unknown, key: string): unknown {
  return typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[key] : undefined;
}

