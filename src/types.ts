// Types several layers share (core, doors, observability, upstream). A leaf: it imports nothing, so any
// layer may use it without pulling another layer in (the architecture lint, .dependency-cruiser.cjs).

/** How a request was answered from the cache's point of view (metrics, request log, status page). */
export type CacheResult = 'hit' | 'miss' | 'join' | 'stale' | 'revalidated' | 'negative';

/** The registry API operation a request was, as the door that parsed it says (metrics label). */
export type RequestKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'base' | 'invalid' | 'other';

/** How an exchange with an upstream failed (metrics label, circuit breaker). */
export type UpstreamFailureKind = 'timeout' | 'refused' | 'reset' | 'dns' | 'status_5xx' | 'status_429' | 'circuit_open' | 'digest_mismatch' | 'protocol' | 'other';

/**
 * What a door learns about a request while it serves it, for the request log and the metrics: filled by the
 * handlers as they parse and route, read once the response ends (nothing re-parses the URL).
 */
export interface RequestLabels {
  /** The registry API operation; unset for anything that is not one (health, metrics, status page). */
  kind?: RequestKind;
  /** The image pulled, `upstream/repo:tag`, for a manifest by tag once its route resolved (top images). */
  image?: string;
  upstream?: string;
  result?: CacheResult;
  /** Body bytes the handler announced. */
  bytes?: number;
}

/** An upstream's pull budget as read from its rate-limit headers (src/policy/budget.ts), for metrics and the status page. */
export interface BudgetView {
  /** False before any rate-limit header, or when the last one is older than its window (the window reset since). */
  readonly known: boolean;
  readonly remaining: number | undefined;
  readonly limit: number | undefined;
  readonly windowMs: number | undefined;
  /** Pulls kept for real misses. */
  readonly reserve: number;
  /** True when `remaining` is at or below the reserve: no GET for refresh-ahead, prefetch or revalidation. */
  readonly underReserve: boolean;
  readonly pullsPerHour: number | undefined;
  /** When `remaining` would reach 0 at the current rate (ms since epoch); undefined when not spending. */
  readonly exhaustsAt: number | undefined;
  /** When it would reach the reserve at the current rate; undefined when not spending or already there. */
  readonly reserveAt: number | undefined;
  /** When the last header was seen. */
  readonly observedAt: number | undefined;
}
