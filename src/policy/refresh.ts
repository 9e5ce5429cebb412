// Refresh-ahead of hot tags (docs/operations.md): which tags are hot, when one is due for a background
// revalidation, and the bounds on the work it may start (bytes per hour, room without eviction).
// Pure functions of their arguments and an injected clock value; the scheduler is src/upkeep/refresh-ahead.ts.

/** A tag is hot when it was pulled at least `minPulls` times within the last `window` ms. */
export interface HotTagRule {
  readonly minPulls: number;
  readonly window: number;
}

/**
 * Records a pull at `now` in a tag's pull times (oldest first) and returns the times worth keeping: the
 * last `minPulls` are all the rule needs, so the list never grows past that.
 */
export function recordPull(times: readonly number[], now: number, rule: HotTagRule): number[] {
  const out = [...times, now];
  return out.length > rule.minPulls ? out.slice(out.length - rule.minPulls) : out;
}

/** Whether the tag is hot at `now`: its `minPulls`-th most recent pull is within the window. */
export function isHot(times: readonly number[], now: number, rule: HotTagRule): boolean {
  if (times.length < rule.minPulls || rule.minPulls < 1) return false;
  const nth = times[times.length - rule.minPulls];
  return nth !== undefined && now - nth <= rule.window;
}

/** Whether a tag nobody pulled within the window can be forgotten (it cannot become hot again without new pulls). */
export function isForgettable(times: readonly number[], now: number, rule: HotTagRule): boolean {
  const last = times[times.length - 1];
  return last === undefined || now - last > rule.window;
}

/** The lead actually used: at most half the tag's TTL, so a refreshed tag is not due again at once. */
export function effectiveLead(tagTtl: number, lead: number): number {
  return Math.max(0, Math.min(lead, Math.floor(tagTtl / 2)));
}

/** Whether a tag last confirmed at `checkedAt` is due for refresh-ahead at `now` (its TTL ends within the lead). */
export function refreshDue(checkedAt: number, now: number, tagTtl: number, lead: number): boolean {
  return now >= checkedAt + tagTtl - effectiveLead(tagTtl, lead);
}

/** A hot tag that is due, and how often it was pulled lately. */
export interface RefreshCandidate {
  readonly key: string;
  readonly pulls: number;
  readonly checkedAt: number;
}

/**
 * Which due tags to start now, given the ones already running and the concurrency bound: the most pulled
 * first, then the one whose freshness ends first.
 */
export function pickRefreshes(candidates: readonly RefreshCandidate[], running: ReadonlySet<string>, concurrency: number): string[] {
  const slots = concurrency - running.size;
  if (slots <= 0) return [];
  return candidates
    .filter((c) => !running.has(c.key))
    .sort((a, b) => b.pulls - a.pulls || a.checkedAt - b.checkedAt)
    .slice(0, slots)
    .map((c) => c.key);
}

/** Bytes refresh-ahead took on, with when (oldest first). */
export interface ByteSpend {
  readonly at: number;
  readonly bytes: number;
}

export const HOUR = 3600_000;

/** Drops spends older than an hour; returns what is left. */
export function pruneSpends(spends: readonly ByteSpend[], now: number): ByteSpend[] {
  return spends.filter((s) => now - s.at < HOUR);
}

/** Bytes spent within the last hour. */
export function spentLastHour(spends: readonly ByteSpend[], now: number): number {
  let n = 0;
  for (const s of spends) if (now - s.at < HOUR) n += s.bytes;
  return n;
}

/** Whether `planned` more bytes fit in the hourly bound (undefined = unbounded). */
export function admitBytes(spent: number, planned: number, maxBytesPerHour: number | undefined): boolean {
  return maxBytesPerHour === undefined || spent + planned <= maxBytesPerHour;
}

/**
 * Whether `planned` more bytes fit in the cache budget without eviction. Refresh-ahead never makes room: a
 * cache that would go over storage.maxSize would evict least-recently-used images, which may be the ones
 * clients use; it skips the refresh instead (the next pull fetches what it needs, as without refresh-ahead).
 */
export function fitsWithoutEviction(usedBytes: number, planned: number, maxSize: number | undefined): boolean {
  return maxSize === undefined || usedBytes + planned <= maxSize;
}
