// When a cached tag may be served without asking the upstream, and when it may still be served
// although the upstream fails (stale-if-error). Pure functions of the entry, the clock and the settings.

export interface FreshnessSettings {
  /** How long after the last confirmation a tag is served without asking. */
  readonly tagTtl: number;
  /** How long past the TTL a tag may be served when the upstream fails. */
  readonly maxStale: number;
}

export interface Confirmed {
  /** Last time the upstream confirmed the tag (ms since epoch). */
  readonly checkedAt: number;
}

export type TagFreshness = 'fresh' | 'expired';

export function tagFreshness(entry: Confirmed, now: number, s: FreshnessSettings): TagFreshness {
  return now - entry.checkedAt < s.tagTtl ? 'fresh' : 'expired';
}

/** stale-if-error: an expired tag may stand in for a failing upstream up to tagTtl + maxStale after its last confirmation. */
export function mayServeStale(entry: Confirmed, now: number, s: FreshnessSettings): boolean {
  return now - entry.checkedAt <= s.tagTtl + s.maxStale;
}

/** Whether an upstream failure lets relais fall back to stale data (not for 404s or refused credentials). */
export function isStaleEligibleFailure(status: number): boolean {
  return status === 429 || status >= 500;
}
