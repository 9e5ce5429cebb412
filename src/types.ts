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
