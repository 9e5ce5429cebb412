// Operator endpoints: /metrics (Prometheus text format), the status page at / and its JSON at
// /_relais/status. The JSON is computed from the same prom-client metrics /metrics shows, so the page
// and a Prometheus scrape never disagree.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RelaisMetrics } from '../../observability/metrics.js';
import type { Evictor } from '../../eviction/evictor.js';
import type { BudgetView } from '../../policy/budget.js';
import type { BlobService } from '../../cache/blobs.js';
import type { UpstreamClient } from '../../upstream/client.js';
import { describeHealth } from '../../policy/circuit-breaker.js';
import type { RequestContext } from './context.js';
import { STATUS_PAGE_HTML } from './status-page.js';

export interface OpsHandlerDeps {
  readonly metrics: RelaisMetrics;
  readonly blobs: BlobService;
  readonly evictor: Evictor;
  readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  readonly version: string;
  readonly lowWatermark: number;
  readonly pins: readonly string[];
  readonly metricsEnabled: boolean;
  readonly statusPage: boolean;
  readonly topImages: number;
  /** The pull budget of an upstream's credential (src/policy/budget.ts). */
  readonly budget?: ((upstream: string) => BudgetView) | undefined;
  /** Refresh-ahead's state (src/upkeep/refresh-ahead.ts). */
  readonly refreshAhead?: (() => RefreshAheadStatus) | undefined;
  /** Access checks (client authentication): throw a RelaisError to refuse. */
  readonly guard?: {
    readonly metrics?: (req: IncomingMessage, ctx: RequestContext) => void;
    readonly admin?: (req: IncomingMessage, ctx: RequestContext) => void;
  };
}

/** Cache results that were served without a new upstream download of the content. */
export const SERVED_FROM_CACHE = ['hit', 'revalidated', 'stale', 'join'] as const;

export interface UpstreamStatus {
  readonly name: string;
  readonly url: string;
  readonly requests: Record<string, number>;
  readonly hits: number;
  readonly misses: number;
  readonly errors: number;
  /** hits / (hits + misses); null before any. */
  readonly hitRatio: number | null;
  readonly servedBytes: number;
  readonly savedBytes: number;
  readonly fetchedBytes: number;
  readonly upstreamErrors: Record<string, number>;
  readonly circuit: string;
  /** The circuit in words: "healthy", "failing, retrying in 12 s", "failing, trying again now". */
  readonly health: string;
  readonly rateLimit: { readonly credential: string; readonly remaining: number; readonly limit: number | null } | null;
  /** The pull budget: reserve kept for real misses, rate, when it would run out; null before any rate-limit header. */
  readonly budget: {
    readonly remaining: number;
    readonly limit: number | null;
    readonly reserve: number;
    readonly underReserve: boolean;
    readonly pullsPerHour: number | null;
    readonly exhaustsAt: number | null;
    readonly reserveAt: number | null;
    readonly observedAt: number | null;
  } | null;
}

export interface RefreshAheadStatus {
  readonly enabled: boolean;
  readonly hotTags: number;
  readonly inFlight: number;
  readonly bytesLastHour: number;
  readonly maxBytesPerHour: number;
}

export interface StatusDocument {
  readonly version: string;
  readonly now: number;
  readonly startedAt: number;
  readonly cache: {
    readonly bytes: number;
    readonly maxSize: number | null;
    readonly lowWatermark: number;
    readonly blobs: number;
    readonly manifests: number;
    readonly tags: number;
    readonly repositories: number;
    readonly pins: readonly string[];
  };
  readonly totals: { readonly requests: number; readonly hits: number; readonly misses: number; readonly errors: number; readonly hitRatio: number | null; readonly servedBytes: number; readonly savedBytes: number; readonly fetchedBytes: number };
  readonly upstreams: readonly UpstreamStatus[];
  readonly downloads: readonly { readonly digest: string; readonly upstream: string; readonly repo: string; readonly written: number; readonly size: number | null; readonly startedAt: number; readonly bytesPerSecond: number }[];
  readonly topImages: readonly { readonly image: string; readonly upstream: string; readonly pulls: number; readonly lastPull: number }[];
  readonly recentErrors: readonly { readonly time: number; readonly source: string; readonly upstream: string | null; readonly what: string; readonly status: number | null; readonly message: string }[];
  readonly evictions: { readonly images: Record<string, number>; readonly bytes: Record<string, number>; readonly last: { readonly at: number; readonly images: number; readonly freedBytes: number } | null };
  readonly gc: { readonly at: number; readonly freedBytes: number; readonly orphanFiles: number; readonly missingFiles: number; readonly tempFiles: number } | null;
  readonly refreshAhead: RefreshAheadStatus | null;
}

type Values = { labels: Partial<Record<string, string | number>>; value: number }[];

async function values(m: { get(): Promise<{ values: Values }> | { values: Values } }): Promise<Values> {
  return (await m.get()).values;
}

function sumWhere(vs: Values, pred: (l: Partial<Record<string, string | number>>) => boolean): number {
  let n = 0;
  for (const v of vs) if (pred(v.labels)) n += v.value;
  return n;
}

export async function statusDocument(deps: OpsHandlerDeps): Promise<StatusDocument> {
  const m = deps.metrics;
  // Collect the gauges first (their collect() refreshes them), then read everything from one moment.
  const size = await values(m.cacheSize);
  const [items, maxSize] = await Promise.all([values(m.cacheItems), values(m.cacheMaxSize)]);
  const [requests, served, fetched, upErrors, remaining, limit, evictions, evictedBytes] = await Promise.all([
    values(m.requests),
    values(m.servedBytes),
    values(m.fetchedBytes),
    values(m.upstreamErrors),
    values(m.rateLimitRemaining),
    values(m.rateLimitLimit),
    values(m.evictions),
    values(m.evictedBytes),
  ]);
  const item = (kind: string): number => sumWhere(items, (l) => l.kind === kind);
  const fromCache = new Set<string>(SERVED_FROM_CACHE);
  const upstreams: UpstreamStatus[] = [];
  for (const [name, client] of deps.upstreams) {
    const mine = (l: Partial<Record<string, string | number>>): boolean => l.upstream === name;
    const byResult: Record<string, number> = {};
    for (const v of requests) {
      if (!mine(v.labels)) continue;
      const r = String(v.labels.result);
      byResult[r] = (byResult[r] ?? 0) + v.value;
    }
    const hits = sumWhere(requests, (l) => mine(l) && fromCache.has(String(l.result)));
    const misses = sumWhere(requests, (l) => mine(l) && l.result === 'miss');
    const errs: Record<string, number> = {};
    for (const v of upErrors) if (mine(v.labels)) errs[String(v.labels.kind)] = (errs[String(v.labels.kind)] ?? 0) + v.value;
    const rl = remaining.find((v) => mine(v.labels));
    const rlLimit = rl ? limit.find((v) => mine(v.labels) && v.labels.credential === rl.labels.credential) : undefined;
    upstreams.push({
      name,
      url: client.baseUrl.toString(),
      requests: byResult,
      hits,
      misses,
      errors: byResult.error ?? 0,
      hitRatio: hits + misses > 0 ? hits / (hits + misses) : null,
      servedBytes: sumWhere(served, mine),
      savedBytes: sumWhere(served, (l) => mine(l) && fromCache.has(String(l.result))),
      fetchedBytes: sumWhere(fetched, mine),
      upstreamErrors: errs,
      circuit: client.breaker.state,
      health: describeHealth(client.breaker.state, client.breaker.retryAfterMs()),
      rateLimit: rl ? { credential: String(rl.labels.credential), remaining: rl.value, limit: rlLimit?.value ?? null } : null,
      budget: budgetStatus(deps.budget?.(name)),
    });
  }
  const hits = upstreams.reduce((n, u) => n + u.hits, 0);
  const misses = upstreams.reduce((n, u) => n + u.misses, 0);
  const now = Date.now();
  const lastRun = deps.evictor.lastRun;
  const lastGc = deps.evictor.lastGc;
  const byReason = (vs: Values): Record<string, number> => Object.fromEntries(vs.map((v) => [String(v.labels.reason), v.value]));
  return {
    version: deps.version,
    now,
    startedAt: m.startedAt,
    cache: {
      bytes: size[0]?.value ?? 0,
      maxSize: maxSize[0]?.value ?? null,
      lowWatermark: deps.lowWatermark,
      blobs: item('blob'),
      manifests: item('manifest'),
      tags: item('tag'),
      repositories: item('repository'),
      pins: deps.pins,
    },
    totals: {
      requests: sumWhere(requests, () => true),
      hits,
      misses,
      errors: sumWhere(requests, (l) => l.result === 'error'),
      hitRatio: hits + misses > 0 ? hits / (hits + misses) : null,
      servedBytes: sumWhere(served, () => true),
      savedBytes: upstreams.reduce((n, u) => n + u.savedBytes, 0),
      fetchedBytes: sumWhere(fetched, () => true),
    },
    upstreams,
    downloads: [...deps.blobs.downloadsInFlight()].map((d) => {
      const secs = Math.max(0.001, (now - d.startedAt) / 1000);
      return { digest: d.digest, upstream: d.upstreamName, repo: d.repo, written: d.written, size: d.size ?? null, startedAt: d.startedAt, bytesPerSecond: Math.round(d.written / secs) };
    }),
    topImages: m.topImages(deps.topImages),
    recentErrors: m.recentErrors().map((e) => ({ time: e.time, source: e.source, upstream: e.upstream ?? null, what: e.what, status: e.status ?? null, message: e.message })),
    evictions: {
      images: byReason(evictions),
      bytes: byReason(evictedBytes),
      last: lastRun ? { at: lastRun.at, images: lastRun.plan.images.length, freedBytes: lastRun.plan.bytes } : null,
    },
    gc: lastGc
      ? { at: lastGc.at, freedBytes: lastGc.report.freedBytes, orphanFiles: lastGc.report.orphanFiles.length, missingFiles: lastGc.report.missingFiles.length, tempFiles: lastGc.report.tempFiles.length }
      : null,
    refreshAhead: deps.refreshAhead?.() ?? null,
  };
}

function budgetStatus(v: BudgetView | undefined): UpstreamStatus['budget'] {
  if (v?.known !== true || v.remaining === undefined) return null;
  return {
    remaining: v.remaining,
    limit: v.limit ?? null,
    reserve: v.reserve,
    underReserve: v.underReserve,
    pullsPerHour: v.pullsPerHour ?? null,
    exhaustsAt: v.exhaustsAt ?? null,
    reserveAt: v.reserveAt ?? null,
    observedAt: v.observedAt ?? null,
  };
}

export function createOpsHandler(deps: OpsHandlerDeps) {
  return async function ops(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): Promise<boolean> {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') return false;
    if (path === '/metrics' && deps.metricsEnabled) {
      deps.guard?.metrics?.(req, ctx);
      const body = await deps.metrics.registry.metrics();
      res.statusCode = 200;
      res.setHeader('content-type', deps.metrics.registry.contentType);
      res.setHeader('cache-control', 'no-store');
      res.end(method === 'HEAD' ? undefined : body);
      return true;
    }
    if (!deps.statusPage) return false;
    if (path === '/_relais/status') {
      deps.guard?.admin?.(req, ctx);
      const body = JSON.stringify(await statusDocument(deps));
      res.statusCode = 200;
      res.setHeader('content-type', 'application/json');
      res.setHeader('cache-control', 'no-store');
      res.end(method === 'HEAD' ? undefined : body);
      return true;
    }
    if (path === '/' || path === '/index.html') {
      deps.guard?.admin?.(req, ctx);
      res.statusCode = 200;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.setHeader('cache-control', 'no-store');
      // Everything is inline: no CDN, no other origin.
      res.setHeader('content-security-policy', "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
      res.setHeader('x-content-type-options', 'nosniff');
      res.end(method === 'HEAD' ? undefined : STATUS_PAGE_HTML);
      return true;
    }
    return false;
  };
}
