// How long a referrers answer (GET /v2/<name>/referrers/<digest>) is served without asking the upstream again.
// Referrers change when someone pushes a signature, an SBOM or an attestation for an image, so they are
// treated like a tag: a list with entries is fresh for the upstream's tagTtl; an empty list for notFoundTtl
// (at most tagTtl), so a signature pushed right after its image shows up within seconds, as a new tag would.
// Past that, a failing upstream may be stood in for by the last answer up to maxStale (stale-if-error).
import type { FreshnessSettings } from './freshness.js';

export interface ReferrersFreshnessSettings extends FreshnessSettings {
  readonly notFoundTtl: number;
}

/** Milliseconds an answer with `count` descriptors stays fresh. */
export function referrersTtl(count: number, s: ReferrersFreshnessSettings): number {
  return count === 0 ? Math.min(s.notFoundTtl, s.tagTtl) : s.tagTtl;
}

export type ReferrersFreshness = 'fresh' | 'stale-usable' | 'expired';

/** Whether an answer fetched at `fetchedAt` is fresh, usable only when the upstream fails, or too old for either. */
export function referrersFreshness(fetchedAt: number, count: number, now: number, s: ReferrersFreshnessSettings): ReferrersFreshness {
  const age = now - fetchedAt;
  const ttl = referrersTtl(count, s);
  if (age < ttl) return 'fresh';
  return age <= ttl + s.maxStale ? 'stale-usable' : 'expired';
}
