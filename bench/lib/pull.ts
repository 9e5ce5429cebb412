// The bench's load client: pulls images the way a container runtime does (manifest by tag with
// the runtime's Accept list, index -> platform manifest, then config and layers concurrently),
// verifying every digest with sha256 while the bytes stream in and counting what was delivered.
// Each simulated client has its own connection pool, like a separate machine would.
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Agent, ProxyAgent, request, type Dispatcher } from 'undici';

/** What a runtime (dockerd 20.10, containerd) sends when resolving a tag. */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

export interface ImageRef {
  readonly repo: string; // e.g. library/mixed
  readonly tag: string;
}

export interface PullJob {
  readonly kind: 'pull';
  readonly baseUrl: string;
  readonly images: readonly ImageRef[];
  readonly clients: number;
  /** Blobs fetched at once per image and client (dockerd's max-concurrent-downloads is 3). */
  readonly layerConcurrency: number;
  readonly timeoutMs: number;
  /**
   * Pull through an HTTPS forward proxy (relais's proxy door) instead of straight from baseUrl, which is then
   * the https:// registry host the proxy intercepts: CONNECT + TLS on every connection, trusting only `ca`.
   */
  readonly proxy?: { readonly url: string; readonly ca: string };
}

export interface PullResult {
  readonly kind: 'pull';
  readonly wallMs: number;
  /** Body bytes of every blob and manifest delivered to all clients. */
  readonly bytes: number;
  readonly blobBytes: number;
  readonly blobs: number;
  readonly manifests: number;
  /** Per client wall time, ms, sorted. */
  readonly clientMs: readonly number[];
  readonly errors: readonly string[];
  /** CPU seconds the client processes used (set when run as child processes). */
  readonly clientCpuSeconds?: number;
}

export interface TtfbJob {
  readonly kind: 'ttfb';
  readonly baseUrl: string;
  readonly repo: string;
  readonly digest: string;
  /** Client B starts once client A has received this many body bytes. */
  readonly joinAfterBytes: number;
  readonly timeoutMs: number;
}

export interface TtfbResult {
  readonly kind: 'ttfb';
  /** A: request start to first body byte, and to the end. */
  readonly aTtfbMs: number;
  readonly aTotalMs: number;
  /** B: request start (A already had joinAfterBytes) to first body byte, and to the end. */
  readonly bTtfbMs: number;
  readonly bTotalMs: number;
  readonly errors: readonly string[];
}

export type Job = PullJob | TtfbJob;
export type JobResult = PullResult | TtfbResult;

interface Descriptor {
  readonly mediaType?: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: { readonly os?: string; readonly architecture?: string };
}

interface ManifestDoc {
  readonly mediaType?: string;
  readonly manifests?: readonly Descriptor[];
  readonly config?: Descriptor;
  readonly layers?: readonly Descriptor[];
}

interface Counters {
  bytes: number;
  blobBytes: number;
  blobs: number;
  manifests: number;
}

class Client {
  readonly agent: Dispatcher;
  constructor(readonly baseUrl: string, readonly signal: AbortSignal, connections: number, proxy?: PullJob['proxy']) {
    const opts = { connections, pipelining: 1, bodyTimeout: 0, headersTimeout: 0 };
    // Through the proxy each connection is its own CONNECT tunnel with its own TLS session, kept alive like a direct one.
    this.agent = proxy === undefined ? new Agent(opts) : new ProxyAgent({ ...opts, uri: proxy.url, requestTls: { ca: proxy.ca } });
  }

  async manifest(repo: string, reference: string, c: Counters): Promise<{ doc: ManifestDoc; type: string }> {
    const res = await request(`${this.baseUrl}/v2/${repo}/manifests/${reference}`, {
      dispatcher: this.agent,
      headers: { accept: MANIFEST_ACCEPT },
      signal: this.signal,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (res.statusCode !== 200) {
      throw new Error(`GET manifest ${repo}:${reference}: HTTP ${res.statusCode} ${body.toString('utf8', 0, 200)}`);
    }
    c.bytes += body.length;
    c.manifests += 1;
    const got = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (reference.startsWith('sha256:') && got !== reference) {
      throw new Error(`manifest ${repo}@${reference}: content has digest ${got}`);
    }
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header !== got) {
      throw new Error(`manifest ${repo}:${reference}: Docker-Content-Digest ${header} but content is ${got}`);
    }
    const doc = JSON.parse(body.toString('utf8')) as ManifestDoc;
    const ct = res.headers['content-type'];
    const type = (typeof ct === 'string' ? ct : undefined) ?? doc.mediaType ?? '';
    return { doc, type };
  }

  /** Streams a blob, hashing as it goes; resolves when the whole blob is verified. */
  async blob(repo: string, d: Descriptor, c: Counters): Promise<void> {
    const res = await request(`${this.baseUrl}/v2/${repo}/blobs/${d.digest}`, {
      dispatcher: this.agent,
      signal: this.signal,
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new Error(`GET blob ${repo}@${d.digest}: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
    }
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of res.body) {
      const b = chunk as Buffer;
      hash.update(b);
      n += b.length;
    }
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== d.digest || n !== d.size) {
      throw new Error(`blob ${repo}@${d.digest}: received ${n} bytes with digest ${got}, expected ${d.size}`);
    }
    c.bytes += n;
    c.blobBytes += n;
    c.blobs += 1;
  }

  async pull(img: ImageRef, concurrency: number, c: Counters): Promise<void> {
    let { doc, type } = await this.manifest(img.repo, img.tag, c);
    if (INDEX_TYPES.has(type) || doc.manifests !== undefined) {
      const pick =
        doc.manifests?.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64') ??
        doc.manifests?.[0];
      if (pick === undefined) throw new Error(`index ${img.repo}:${img.tag} has no manifests`);
      ({ doc, type } = await this.manifest(img.repo, pick.digest, c));
    }
    if (doc.config === undefined || doc.layers === undefined) {
      throw new Error(`manifest ${img.repo}:${img.tag} (${type}) has no config or layers`);
    }
    const queue: Descriptor[] = [doc.config, ...doc.layers];
    const worker = async (): Promise<void> => {
      for (let d = queue.shift(); d !== undefined; d = queue.shift()) await this.blob(img.repo, d, c);
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker));
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

export async function runPull(job: PullJob): Promise<PullResult> {
  const signal = AbortSignal.timeout(job.timeoutMs);
  const c: Counters = { bytes: 0, blobBytes: 0, blobs: 0, manifests: 0 };
  const errors: string[] = [];
  const clientMs: number[] = [];
  const clients = Array.from({ length: job.clients }, () => new Client(job.baseUrl, signal, job.layerConcurrency + 1, job.proxy));
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (cl) => {
      try {
        for (const img of job.images) await cl.pull(img, job.layerConcurrency, c);
      } catch (e) {
        errors.push(e instanceof Error ? e.message : String(e));
      } finally {
        clientMs.push(performance.now() - t0);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  await Promise.all(clients.map((cl) => cl.close()));
  clientMs.sort((a, b) => a - b);
  return { kind: 'pull', wallMs, ...c, clientMs, errors };
}

/**
 * Cold time to first byte for a client that joins an in-flight download: A starts fetching the
 * blob, and once A has received joinAfterBytes, B asks for the same blob. Both verify the digest.
 */
export async function runTtfb(job: TtfbJob): Promise<TtfbResult> {
  const signal = AbortSignal.timeout(job.timeoutMs);
  const errors: string[] = [];
  const url = `${job.baseUrl}/v2/${job.repo}/blobs/${job.digest}`;
  const fetchOne = async (
    agent: Agent,
    onBytes: (n: number) => Promise<void> | undefined,
  ): Promise<{ ttfbMs: number; totalMs: number }> => {
    const t0 = performance.now();
    let ttfbMs = -1;
    const res = await request(url, { dispatcher: agent, signal });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new Error(`GET ${url}: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
    }
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of res.body) {
      const b = chunk as Buffer;
      if (ttfbMs < 0) ttfbMs = performance.now() - t0;
      hash.update(b);
      n += b.length;
      const wait = onBytes(n);
      if (wait) await wait;
    }
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== job.digest) throw new Error(`GET ${url}: ${n} bytes with digest ${got}`);
    return { ttfbMs, totalMs: performance.now() - t0 };
  };
  const agentA = new Agent({ connections: 1, bodyTimeout: 0, headersTimeout: 0 });
  const agentB = new Agent({ connections: 1, bodyTimeout: 0, headersTimeout: 0 });
  let startB: () => void = () => undefined;
  const bGo = new Promise<void>((resolve) => {
    startB = resolve;
  });
  // A stops reading once it has joinAfterBytes, until B has its first byte: the download goes on in the
  // target either way (relais's is independent of its clients, nginx's fills its cache file), and this
  // process then does nothing but B's request. Without the pause, B's request and first bytes queued behind
  // A's receiving and hashing of a fast stream in this same process, which measured the client, not the target.
  let bFirstByte: () => void = () => undefined;
  const bStarted = new Promise<void>((resolve) => (bFirstByte = resolve));
  let paused = false;
  const a = fetchOne(agentA, (n) => {
    if (n < job.joinAfterBytes || paused) return undefined;
    paused = true;
    startB();
    return bStarted;
  }).finally(startB);
  const b = bGo.then(() =>
    fetchOne(agentB, () => {
      bFirstByte();
      return undefined;
    }).finally(bFirstByte),
  );
  const [ra, rb] = await Promise.allSettled([a, b]);
  await Promise.all([agentA.close(), agentB.close()]);
  const val = (r: PromiseSettledResult<{ ttfbMs: number; totalMs: number }>): { ttfbMs: number; totalMs: number } => {
    if (r.status === 'fulfilled') return r.value;
    errors.push(r.reason instanceof Error ? r.reason.message : String(r.reason));
    return { ttfbMs: Number.NaN, totalMs: Number.NaN };
  };
  const va = val(ra);
  const vb = val(rb);
  return { kind: 'ttfb', aTtfbMs: va.ttfbMs, aTotalMs: va.totalMs, bTtfbMs: vb.ttfbMs, bTotalMs: vb.totalMs, errors };
}

export async function runJob(job: Job): Promise<JobResult> {
  return job.kind === 'pull' ? runPull(job) : runTtfb(job);
}
