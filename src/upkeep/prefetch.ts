// Prefetch: pulls images through a relais (over its HTTP API, like any client) so they are cached before
// the CI rush. Manifests first (multi-platform images: the chosen platforms' children), then every blob,
// a few at a time; the bytes are counted and dropped. Used by `relais prefetch` and the `prefetch:`
// schedule in the config.
import { arch } from 'node:os';
import { errors, type RelaisError } from '../errors.js';
import { ACCEPT_IMAGES } from '../upstream/media-types.js';
import { RegistryClient, type RegistryStream } from '../upstream/registry-client.js';


export interface PrefetchTarget {
  readonly image: string;
  /** os/arch[/variant]; undefined = the run's default. */
  readonly platforms?: readonly string[] | undefined;
  readonly allPlatforms?: boolean | undefined;
}

export interface PrefetchOptions {
  /** Base URL of the relais, e.g. http://127.0.0.1:5000 */
  readonly server: string;
  readonly platforms: readonly string[];
  readonly allPlatforms: boolean;
  readonly concurrency: number;
  /** Authorization header for a relais with client authentication. */
  readonly authorization?: string | undefined;
  readonly signal?: AbortSignal | undefined;
  readonly progress?: PrefetchProgress | undefined;
}

export interface PrefetchProgress {
  /** Manifests resolved: the bytes to come. */
  planned?(image: string, blobs: number, bytes: number): void;
  bytes?(n: number): void;
  imageDone?(result: ImageResult): void;
}

export interface ImageResult {
  readonly image: string;
  readonly ok: boolean;
  readonly error?: string | undefined;
  readonly platforms: readonly string[];
  readonly manifests: number;
  readonly blobs: number;
  /** Bytes of blobs received from relais. */
  readonly bytes: number;
}

export interface PrefetchSummary {
  readonly images: readonly ImageResult[];
  readonly bytes: number;
  readonly blobs: number;
  readonly failed: number;
  readonly seconds: number;
  /** What relais fetched from upstreams meanwhile (from /metrics; includes other clients' traffic), if known. */
  readonly upstreamBytes: number | undefined;
}

/** The machine's platform, as registries write it. */
export function hostPlatform(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return `linux/${map[arch()] ?? arch()}`;
}

/** `[HOST/]REPO[:TAG][@DIGEST]` -> the name relais routes (host kept as a path prefix) and the reference. */
export function parseImage(image: string): { name: string; reference: string } {
  let rest = image.trim();
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at !== -1) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const colon = rest.indexOf(':', rest.lastIndexOf('/') + 1);
    if (colon !== -1) rest = rest.slice(0, colon);
  } else {
    const colon = rest.indexOf(':', rest.lastIndexOf('/') + 1);
    if (colon !== -1) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
  }
  if (rest === '' || reference === '') throw errors.prefetchReferenceInvalid(image);
  return { name: rest, reference };
}

interface Descriptor {
  readonly digest: string;
  readonly size: number;
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string };
}

function platformOf(d: Descriptor): string {
  const p = d.platform ?? {};
  return [p.os ?? '?', p.architecture ?? '?', ...(p.variant === undefined ? [] : [p.variant])].join('/');
}

function platformMatches(d: Descriptor, wanted: string): boolean {
  const [os, architecture, variant] = wanted.split('/');
  const p = d.platform;
  if (!p || p.os !== os || p.architecture !== architecture) return false;
  return variant === undefined || p.variant === variant;
}

export async function prefetch(targets: readonly PrefetchTarget[], opts: PrefetchOptions): Promise<PrefetchSummary> {
  const client = new RegistryClient({
    url: opts.server,
    authorization: opts.authorization,
    // relais retried the upstream already: an error it answers is final for this run.
    retries: 0,
    concurrency: Math.max(1, opts.concurrency) + 1,
    userAgent: 'relais-prefetch',
    description: `relais ${opts.server}`,
  });
  try {
    return await prefetchWith(client, targets, opts);
  } finally {
    await client.close();
  }
}

async function prefetchWith(client: RegistryClient, targets: readonly PrefetchTarget[], opts: PrefetchOptions): Promise<PrefetchSummary> {
  const started = performance.now();
  const before = await upstreamFetched(client, opts);
  const results: ImageResult[] = [];
  // Blobs already fetched in this run (images often share base layers).
  const seen = new Set<string>();
  for (const t of targets) {
    const r = await prefetchOne(client, t, opts, seen).catch(
      (e: unknown): ImageResult => ({ image: t.image, ok: false, error: e instanceof Error ? e.message : String(e), platforms: [], manifests: 0, blobs: 0, bytes: 0 }),
    );
    results.push(r);
    opts.progress?.imageDone?.(r);
  }
  const after = await upstreamFetched(client, opts);
  return {
    images: results,
    bytes: results.reduce((n, r) => n + r.bytes, 0),
    blobs: results.reduce((n, r) => n + r.blobs, 0),
    failed: results.filter((r) => !r.ok).length,
    seconds: (performance.now() - started) / 1000,
    upstreamBytes: before !== undefined && after !== undefined ? after - before : undefined,
  };
}

async function prefetchOne(client: RegistryClient, t: PrefetchTarget, opts: PrefetchOptions, seen: Set<string>): Promise<ImageResult> {
  const { name, reference } = parseImage(t.image);
  const top = await getManifest(client, opts, name, reference);
  const doc = top.doc;
  let manifests = 1;
  const images: { platform: string; doc: ManifestDoc }[] = [];
  const list = doc.manifests;
  if (list !== undefined) {
    const all = t.allPlatforms ?? opts.allPlatforms;
    const wanted = t.platforms ?? opts.platforms;
    // Attestations and other artifacts ride along in indexes as unknown/unknown: not an image to pull.
    const children = list.filter((d) => all ? platformOf(d) !== 'unknown/unknown' : wanted.some((w) => platformMatches(d, w)));
    if (children.length === 0) {
      const offered = list.map(platformOf).join(', ');
      throw errors.prefetchNoPlatform(t.image, wanted.join(' or '), offered);
    }
    for (const c of children) {
      const child = await getManifest(client, opts, name, c.digest);
      manifests++;
      images.push({ platform: platformOf(c), doc: child.doc });
    }
  } else {
    images.push({ platform: 'single', doc });
  }
  const blobs: Descriptor[] = [];
  for (const img of images) {
    for (const d of [img.doc.config, ...(img.doc.layers ?? [])]) {
      if (d === undefined || seen.has(d.digest)) continue;
      seen.add(d.digest);
      blobs.push(d);
    }
  }
  opts.progress?.planned?.(t.image, blobs.length, blobs.reduce((n, b) => n + b.size, 0));
  let bytes = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const b = blobs[next++];
      if (b === undefined) return;
      // (not `bytes += await …`: that would read `bytes` before the await and lose the other workers' counts)
      const n = await getBlob(client, opts, name, b);
      bytes += n;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, blobs.length)) }, worker));
  return { image: t.image, ok: true, platforms: images.map((i) => i.platform), manifests, blobs: blobs.length, bytes };
}

interface ManifestDoc {
  readonly manifests?: readonly Descriptor[];
  readonly config?: Descriptor;
  readonly layers?: readonly Descriptor[];
}

async function failure(res: RegistryStream, what: string): Promise<RelaisError> {
  const text = await res.body.text().catch(() => '');
  try {
    const e = (JSON.parse(text) as { errors?: { code?: string; message?: string }[] }).errors?.[0];
    if (e) return errors.prefetchServerError(`${e.code ?? 'ERROR'}: ${e.message ?? what}`);
  } catch {
    /* not JSON */
  }
  return errors.prefetchServerError(`${what}: HTTP ${res.status}`);
}

async function getManifest(client: RegistryClient, opts: PrefetchOptions, name: string, reference: string): Promise<{ doc: ManifestDoc }> {
  const res = await client.open(name, client.url(`/v2/${name}/manifests/${reference}`), { headers: { accept: ACCEPT_IMAGES }, signal: opts.signal });
  if (res.status !== 200) throw await failure(res, `manifest ${name}:${reference}`);
  return { doc: (await res.body.json()) as ManifestDoc };
}

async function getBlob(client: RegistryClient, opts: PrefetchOptions, name: string, d: Descriptor): Promise<number> {
  const res = await client.open(name, client.url(`/v2/${name}/blobs/${d.digest}`), { signal: opts.signal });
  if (res.status !== 200) throw await failure(res, `blob ${d.digest}`);
  let n = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    n += chunk.byteLength;
    opts.progress?.bytes?.(chunk.byteLength);
  }
  if (n !== d.size) throw errors.prefetchBlobSize(d.digest, n, d.size);
  return n;
}

/** Sum of relais_upstream_fetched_bytes_total, or undefined when /metrics is not there. */
async function upstreamFetched(client: RegistryClient, opts: PrefetchOptions): Promise<number | undefined> {
  try {
    const res = await client.send('GET', '', client.url('/metrics'), { signal: opts.signal });
    if (res.status !== 200) return undefined;
    let sum = 0;
    for (const line of res.body.toString('utf8').split('\n')) {
      const m = /^relais_upstream_fetched_bytes_total(?:\{[^}]*\})? (\S+)$/.exec(line);
      if (m) sum += Number(m[1]);
    }
    return sum;
  } catch {
    return undefined;
  }
}

/** Milliseconds from `now` to the next run of a schedule: times of day (UTC "HH:MM") and/or an interval. */
export function nextRunDelay(now: number, at: readonly string[], every: number | undefined, last: number | undefined): number | undefined {
  const candidates: number[] = [];
  for (const hhmm of at) {
    const [h, m] = hhmm.split(':').map(Number);
    const d = new Date(now);
    let t = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), h ?? 0, m ?? 0);
    if (t <= now) t += 24 * 3600_000;
    candidates.push(t - now);
  }
  if (every !== undefined && every > 0) candidates.push(Math.max(0, (last ?? now) + every - now));
  return candidates.length === 0 ? undefined : Math.min(...candidates);
}

/** Credentials for a relais with client authentication, from the environment (never from flags: ps shows them). */
export function clientAuthorization(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const token = env.RELAIS_TOKEN;
  if (token !== undefined && token !== '') return `Bearer ${token}`;
  const user = env.RELAIS_USERNAME;
  if (user !== undefined && user !== '') return `Basic ${Buffer.from(`${user}:${env.RELAIS_PASSWORD ?? ''}`).toString('base64')}`;
  return undefined;
}
