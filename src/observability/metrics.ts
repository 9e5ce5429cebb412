// Metrics (prom-client, one registry per relais instance) and the little state the status page shows
// besides them (most-pulled images, recent errors). Names follow Prometheus conventions: the relais_
// prefix, base units (_bytes, _seconds), _total on counters. Everything is fed through the observer hooks
// of the upstream client, the blob service and the HTTP server; nothing here reaches into them.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { TallyCounter, TallyHistogram, type CounterTally, type HistogramTally } from './tally.js';
import type { CacheResult, RequestKind, UpstreamFailureKind } from '../types.js';

export type { RequestKind };

/** What the HTTP server reports about each finished request. */
export interface RequestInfo {
  readonly method: string;
  /** The raw URL (path and query). */
  readonly url: string;
  readonly status: number;
  /** The registry API operation, as the handler that parsed the URL said ('other': not the registry API). */
  readonly kind: RequestKind;
  /** `upstream/repo:tag` for a manifest by tag (top images). */
  readonly image?: string | undefined;
  readonly upstream: string | undefined;
  readonly result: CacheResult | undefined;
  /** Bytes of body sent (as the handler announced them). */
  readonly bytes: number | undefined;
  readonly seconds: number;
  /** False when the client went away before the response was complete (as far as the server can tell). */
  readonly finished: boolean;
  /** Bytes written to the client's connection for this response, headers included. */
  readonly sentBytes?: number | undefined;
  /** The error the request failed with, if any. */
  readonly error?: { readonly code: string; readonly message: string } | undefined;
}

export interface RecentError {
  readonly time: number;
  readonly source: 'request' | 'download' | 'upstream';
  readonly upstream: string | undefined;
  readonly what: string;
  readonly status: number | undefined;
  readonly message: string;
}

/** What the metrics read of a blob download (the core's downloads match it). */
export interface DownloadInfo {
  readonly upstreamName: string;
  readonly repo: string;
  readonly digest: string;
  readonly state: 'running' | 'committed' | 'failed';
  readonly error?: { readonly code: string; readonly status: number; readonly message: string } | undefined;
}

/** Where the live numbers come from (set once the services exist). */
export interface MetricSources {
  downloads(): Iterable<DownloadInfo>;
  usage(): Promise<{ bytes: number; blobs: number; manifests: number; tags: number; repositories: number }>;
  maxSize(): number | undefined;
  circuitOpen(upstream: string): boolean;
  /** Zero-copy responses so far; undefined when sendfile is off. */
  sendfile?(): { readonly responses: number; readonly bytes: number; readonly failures: number } | undefined;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class RelaisMetrics {
  readonly registry = new Registry();
  readonly requests: TallyCounter<'upstream' | 'kind' | 'result'>;
  readonly requestDuration: TallyHistogram<'kind' | 'result'>;
  readonly servedBytes: TallyCounter<'upstream' | 'result'>;
  readonly fetchedBytes: Counter<'upstream'>;
  readonly downloads: Counter<'upstream' | 'outcome'>;
  readonly downloadsInFlight: Gauge<'upstream'>;
  readonly cacheSize: Gauge;
  readonly cacheMaxSize: Gauge;
  readonly cacheItems: Gauge<'kind'>;
  readonly evictions: Counter<'reason'>;
  readonly evictedBytes: Counter<'reason'>;
  readonly gcRuns: Counter<'mode'>;
  readonly gcFreedBytes: Counter;
  readonly upstreamRequests: Counter<'upstream' | 'method' | 'code'>;
  readonly upstreamErrors: Counter<'upstream' | 'kind'>;
  readonly upstreamDuration: Histogram<'upstream' | 'method'>;
  readonly rateLimitRemaining: Gauge<'upstream' | 'credential'>;
  readonly rateLimitLimit: Gauge<'upstream' | 'credential'>;
  readonly circuitOpen: Gauge<'upstream'>;
  readonly prefetchRuns: Counter<'outcome'>;

  private sources: MetricSources | undefined;
  private readonly errors: RecentError[] = [];
  private readonly pulls = new Map<string, { count: number; upstream: string; last: number; heads?: number[] }>();
  private readonly requestSeries = new Map<string, { count: CounterTally; duration: HistogramTally; served: CounterTally }>();
  readonly startedAt = Date.now();

  constructor(
    private readonly opts: {
      readonly upstreams: readonly string[];
      /** upstream -> the credential it uses ("anonymous" or the user name), for the rate-limit gauge. */
      readonly credential: (upstream: string) => string;
      readonly recentErrors?: number;
      readonly defaultMetrics?: boolean;
      readonly version?: string;
    },
  ) {
    const r = this.registry;
    const self = (): RelaisMetrics => this;
    // Fed on every request: tallied (src/observability/tally.ts), not through prom-client's label hashing.
    this.requests = new TallyCounter('relais_requests_total', 'Registry API requests by upstream, kind and cache result (hit, miss, join, stale, revalidated, negative, error)', ['upstream', 'kind', 'result'], r);
    this.requestDuration = new TallyHistogram('relais_request_duration_seconds', 'Time to serve a registry API request, to the last byte', ['kind', 'result'], LATENCY_BUCKETS, r);
    this.servedBytes = new TallyCounter('relais_served_bytes_total', 'Bytes of manifests and blobs sent to clients, by upstream and cache result', ['upstream', 'result'], r);
    this.fetchedBytes = new Counter({ name: 'relais_upstream_fetched_bytes_total', help: 'Blob bytes received from upstreams', labelNames: ['upstream'], registers: [r] });
    this.downloads = new Counter({ name: 'relais_downloads_total', help: 'Blob downloads from upstreams that ended, by outcome (committed, failed)', labelNames: ['upstream', 'outcome'], registers: [r] });
    this.downloadsInFlight = new Gauge({
      name: 'relais_downloads_in_flight',
      help: 'Blob downloads from upstreams running now',
      labelNames: ['upstream'],
      registers: [r],
      collect() {
        const m = self();
        this.reset();
        for (const u of m.opts.upstreams) this.set({ upstream: u }, 0);
        for (const d of m.sources?.downloads() ?? []) this.inc({ upstream: d.upstreamName });
      },
    });
    this.cacheSize = new Gauge({
      name: 'relais_cache_size_bytes',
      help: 'Bytes of blobs and manifests in the cache (as the index records them)',
      registers: [r],
      async collect() {
        const u = await self().usage();
        if (u) this.set(u.bytes);
      },
    });
    this.cacheMaxSize = new Gauge({
      name: 'relais_cache_max_size_bytes',
      help: 'The cache budget (storage.maxSize); absent when unbounded',
      // Registered by setSources() only when there is a budget: an unlabelled gauge always exports a value.
      registers: [],
      collect() {
        const max = self().sources?.maxSize();
        this.reset();
        if (max !== undefined) this.set(max);
      },
    });
    this.cacheItems = new Gauge({
      name: 'relais_cache_items',
      help: 'Items in the cache by kind (blob, manifest, tag, repository)',
      labelNames: ['kind'],
      registers: [r],
      async collect() {
        const u = await self().usage();
        if (!u) return;
        this.set({ kind: 'blob' }, u.blobs);
        this.set({ kind: 'manifest' }, u.manifests);
        this.set({ kind: 'tag' }, u.tags);
        this.set({ kind: 'repository' }, u.repositories);
      },
    });
    this.evictions = new Counter({ name: 'relais_evictions_total', help: 'Images evicted, by reason (size: over storage.maxSize; idle: over storage.maxIdleAge)', labelNames: ['reason'], registers: [r] });
    this.evictedBytes = new Counter({ name: 'relais_evicted_bytes_total', help: 'Bytes freed by eviction, by reason', labelNames: ['reason'], registers: [r] });
    this.gcRuns = new Counter({ name: 'relais_gc_runs_total', help: 'Garbage collections (index/disk reconciliation) run, by mode (online, manual)', labelNames: ['mode'], registers: [r] });
    this.gcFreedBytes = new Counter({ name: 'relais_gc_freed_bytes_total', help: 'Bytes of orphan and temporary files removed by garbage collection', registers: [r] });
    this.upstreamRequests = new Counter({ name: 'relais_upstream_requests_total', help: 'HTTP exchanges with upstreams, by method and status code (or failure kind)', labelNames: ['upstream', 'method', 'code'], registers: [r] });
    this.upstreamErrors = new Counter({ name: 'relais_upstream_errors_total', help: 'Upstream failures by kind (timeout, refused, reset, dns, status_5xx, status_429, digest_mismatch, protocol, other)', labelNames: ['upstream', 'kind'], registers: [r] });
    this.upstreamDuration = new Histogram({ name: 'relais_upstream_request_duration_seconds', help: 'Upstream latency: time to the response headers', labelNames: ['upstream', 'method'], buckets: LATENCY_BUCKETS, registers: [r] });
    this.rateLimitRemaining = new Gauge({ name: 'relais_upstream_ratelimit_remaining', help: "Pulls left in the upstream's rate-limit window (Docker Hub's ratelimit-remaining header), per credential", labelNames: ['upstream', 'credential'], registers: [r] });
    this.rateLimitLimit = new Gauge({ name: 'relais_upstream_ratelimit_limit', help: "The upstream's rate limit per window (Docker Hub's ratelimit-limit header), per credential", labelNames: ['upstream', 'credential'], registers: [r] });
    this.circuitOpen = new Gauge({
      name: 'relais_upstream_circuit_open',
      help: '1 while the circuit breaker of an upstream is open (relais does not call it), else 0',
      labelNames: ['upstream'],
      registers: [r],
      collect() {
        for (const u of self().opts.upstreams) this.set({ upstream: u }, self().sources?.circuitOpen(u) === true ? 1 : 0);
      },
    });
    new Counter({
      name: 'relais_sendfile_bytes_total',
      help: 'Blob bytes sent with sendfile(2) (zero-copy); stays 0 when sendfile is off or unavailable',
      registers: [r],
      collect() {
        const s = self().sources?.sendfile?.();
        this.reset();
        if (s) this.inc(s.bytes);
      },
    });
    new Counter({
      name: 'relais_sendfile_responses_total',
      help: 'Blob responses sent with sendfile(2), by outcome (ok; failed: client gone, stalled or download failed)',
      labelNames: ['outcome'],
      registers: [r],
      collect() {
        const s = self().sources?.sendfile?.();
        this.reset();
        if (!s) return;
        this.inc({ outcome: 'ok' }, s.responses);
        this.inc({ outcome: 'failed' }, s.failures);
      },
    });
    this.prefetchRuns = new Counter({ name: 'relais_prefetch_runs_total', help: 'Scheduled prefetch runs, by outcome (ok, failed)', labelNames: ['outcome'], registers: [r] });
    for (const u of opts.upstreams) {
      this.fetchedBytes.inc({ upstream: u }, 0);
      for (const result of ['hit', 'miss', 'stale', 'error'] as const) this.servedBytes.tally({ upstream: u, result });
    }
    for (const reason of ['size', 'idle'] as const) {
      this.evictions.inc({ reason }, 0);
      this.evictedBytes.inc({ reason }, 0);
    }
    // prom-client's default Node metrics are left out: some of its gauges end in _total (active handles).
    if (opts.defaultMetrics !== false) {
      new Gauge({ name: 'relais_info', help: 'Constant 1, labelled with the relais version', labelNames: ['version'], registers: [r] }).set({ version: opts.version ?? 'unknown' }, 1);
      new Gauge({ name: 'relais_process_start_time_seconds', help: 'When the process started, in seconds since the Unix epoch', registers: [r] }).set(Math.round(this.startedAt / 1000));
      new Gauge({ name: 'relais_process_resident_memory_bytes', help: 'Resident memory of the process', registers: [r], collect() { this.set(process.memoryUsage.rss()); } });
      new Gauge({ name: 'relais_process_heap_used_bytes', help: 'V8 heap in use', registers: [r], collect() { this.set(process.memoryUsage().heapUsed); } });
      new Counter({
        name: 'relais_process_cpu_seconds_total',
        help: 'CPU time used by the process (user and system)',
        registers: [r],
        collect() {
          const u = process.cpuUsage();
          this.reset();
          this.inc((u.user + u.system) / 1e6);
        },
      });
    }
  }

  private usageAt = 0;
  private usagePromise: ReturnType<MetricSources['usage']> | undefined;

  /** The index's totals, shared by the gauges of one scrape (asked at most every 250 ms). */
  private usage(): ReturnType<MetricSources['usage']> | Promise<undefined> {
    const src = this.sources;
    if (!src) return Promise.resolve(undefined);
    const now = Date.now();
    if (!this.usagePromise || now - this.usageAt > 250) {
      this.usageAt = now;
      this.usagePromise = src.usage();
    }
    return this.usagePromise;
  }

  setSources(s: MetricSources): void {
    this.sources = s;
    if (s.maxSize() !== undefined && this.registry.getSingleMetric('relais_cache_max_size_bytes') === undefined) this.registry.registerMetric(this.cacheMaxSize);
  }

  // --- hooks --------------------------------------------------------------------------------------

  /** UpstreamObserver.onExchange */
  upstreamExchange(upstream: string, method: string, outcome: number | UpstreamFailureKind, seconds: number): void {
    this.upstreamRequests.inc({ upstream, method, code: String(outcome) });
    if (typeof outcome === 'number') {
      this.upstreamDuration.observe({ upstream, method }, seconds);
      if (outcome === 429) this.upstreamError(upstream, 'status_429', `${method} answered 429`);
      else if (outcome >= 500) this.upstreamError(upstream, 'status_5xx', `${method} answered ${outcome}`);
    } else {
      this.upstreamError(upstream, outcome, `${method} failed (${outcome})`);
    }
  }

  private upstreamError(upstream: string, kind: UpstreamFailureKind, message: string): void {
    this.upstreamErrors.inc({ upstream, kind });
    this.remember({ time: Date.now(), source: 'upstream', upstream, what: kind, status: undefined, message });
  }

  /** UpstreamObserver.onHeaders: Docker Hub's rate-limit headers ("76;w=21600"). */
  upstreamHeaders(upstream: string, headers: Readonly<Record<string, string | string[] | undefined>>): void {
    const credential = this.opts.credential(upstream);
    const remaining = leadingInt(headers['ratelimit-remaining']);
    if (remaining !== undefined) this.rateLimitRemaining.set({ upstream, credential }, remaining);
    const limit = leadingInt(headers['ratelimit-limit']);
    if (limit !== undefined) this.rateLimitLimit.set({ upstream, credential }, limit);
  }

  /** BlobObserver.bytesFetched */
  bytesFetched(upstream: string, bytes: number): void {
    this.fetchedBytes.inc({ upstream }, bytes);
  }

  /** BlobObserver.downloadEnded */
  downloadEnded(d: DownloadInfo): void {
    this.downloads.inc({ upstream: d.upstreamName, outcome: d.state === 'committed' ? 'committed' : 'failed' });
    if (d.state === 'failed') {
      const code = d.error?.code ?? 'failed';
      if (code === 'UPSTREAM_DIGEST_MISMATCH') this.upstreamErrors.inc({ upstream: d.upstreamName, kind: 'digest_mismatch' });
      this.remember({ time: Date.now(), source: 'download', upstream: d.upstreamName, what: `${d.repo}@${d.digest}`, status: d.error?.status, message: d.error?.message ?? 'download failed' });
    }
  }

  /** The HTTP server's per-request hook. */
  request(info: RequestInfo): void {
    const kind = info.kind;
    if (kind === 'other') return; // /metrics, the status page, health checks
    // A client that read the whole body and hung up at once (before the server saw its last write done)
    // still got it all: every byte of the body reached the connection.
    const delivered = info.finished || (info.bytes !== undefined && info.sentBytes !== undefined && info.sentBytes >= info.bytes);
    const result = info.status >= 400 || !delivered ? 'error' : (info.result ?? 'none');
    const upstream = info.upstream ?? 'none';
    // The tallies of a label set are looked up once; a request adds to them with plain arithmetic.
    const key = `${upstream}\0${kind}\0${result}\0${info.result ?? 'none'}`;
    let series = this.requestSeries.get(key);
    if (!series) {
      series = {
        count: this.requests.tally({ upstream, kind, result }),
        duration: this.requestDuration.tally({ kind, result }),
        served: this.servedBytes.tally({ upstream, result: info.result ?? 'none' }),
      };
      this.requestSeries.set(key, series);
    }
    series.count.value++;
    series.duration.observe(info.seconds);
    if (delivered && info.status < 400 && info.bytes !== undefined && info.bytes > 0 && info.method !== 'HEAD') {
      series.served.value += info.bytes;
    }
    if (info.image !== undefined && (info.method === 'GET' || info.method === 'HEAD') && info.status < 400) this.countPull(info.image, upstream, info.method);
    if (info.status >= 500 || (info.status >= 400 && info.status !== 404 && info.status !== 401)) {
      this.remember({
        time: Date.now(),
        source: 'request',
        upstream: info.upstream,
        what: `${info.method} ${info.url.slice(0, 200)}`,
        status: info.status,
        message: info.error ? `${info.error.code}: ${info.error.message}` : `HTTP ${info.status}`,
      });
    }
  }

  /**
   * One pull per pull, whatever the client sends: skopeo and podman GET the manifest by tag; dockerd and
   * containerd send HEAD by tag, then GET by digest (not counted: not a tag); some clients HEAD and then GET
   * the same tag, counted once (a GET within PULL_PAIR_MS of an unpaired HEAD of the tag is its pair).
   */
  private countPull(image: string, upstream: string, method: 'GET' | 'HEAD'): void {
    const now = Date.now();
    const e = this.pulls.get(image);
    if (e) {
      if (e.heads !== undefined) {
        while (e.heads.length > 0 && (e.heads[0] ?? 0) < now - PULL_PAIR_MS) e.heads.shift();
        if (method === 'GET' && e.heads.length > 0) {
          e.heads.shift();
          return;
        }
      }
      if (method === 'HEAD') (e.heads ??= []).push(now);
      e.count++;
      e.last = now;
    } else {
      if (this.pulls.size >= 5000) {
        // Forget the least pulled half; the status page only shows the top.
        const sorted = [...this.pulls].sort((a, b) => a[1].count - b[1].count);
        for (const [k] of sorted.slice(0, 2500)) this.pulls.delete(k);
      }
      this.pulls.set(image, { count: 1, upstream, last: now, ...(method === 'HEAD' ? { heads: [now] } : {}) });
    }
  }

  private remember(e: RecentError): void {
    const max = this.opts.recentErrors ?? 50;
    if (max === 0) return;
    this.errors.push(e);
    if (this.errors.length > max) this.errors.splice(0, this.errors.length - max);
  }

  recentErrors(): readonly RecentError[] {
    return [...this.errors].reverse();
  }

  topImages(n: number): { image: string; upstream: string; pulls: number; lastPull: number }[] {
    return [...this.pulls]
      .sort((a, b) => b[1].count - a[1].count || b[1].last - a[1].last)
      .slice(0, n)
      .map(([image, e]) => ({ image, upstream: e.upstream, pulls: e.count, lastPull: e.last }));
  }
}

function leadingInt(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined) return undefined;
  const m = /^\s*(\d+)/.exec(s);
  return m ? Number(m[1]) : undefined;
}

/** A GET of a tag this soon after a HEAD of it is the same pull (HEAD to resolve, GET to fetch). */
const PULL_PAIR_MS = 30_000;
