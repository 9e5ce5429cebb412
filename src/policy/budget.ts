// The pull budget of an upstream credential, from Docker Hub's rate-limit headers
// (`ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600`): a reserve of pulls is kept for real
// misses. Under it, relais spends no GET on refresh-ahead, prefetch or revalidation (docs/operations.md).
// Pure logic with an injected clock; fed by the upstream client's header hook (src/app.ts).
import type { BudgetView } from '../types.js';

/** One rate-limit header: the count and its window in ms (`w=` seconds), if given. */
export interface RateLimitValue {
  readonly count: number;
  readonly windowMs: number | undefined;
}

/** Parses `100;w=21600` (also a bare `100`); undefined when absent or not a count. */
export function parseRateLimit(value: string | readonly string[] | undefined): RateLimitValue | undefined {
  const s = Array.isArray(value) ? (value as readonly string[])[0] : (value as string | undefined);
  if (s === undefined) return undefined;
  const m = /^\s*(\d+)\s*(?:;(.*))?$/.exec(s);
  if (!m) return undefined;
  const w = /(?:^|;)\s*w\s*=\s*(\d+)/.exec(m[2] ?? '');
  return { count: Number(m[1]), windowMs: w ? Number(w[1]) * 1000 : undefined };
}

/** The reserve as configured: a number of pulls, or a share of the limit ("10%"). */
export type ReserveSetting = { readonly pulls: number } | { readonly share: number };

/** Pulls to keep for real misses, given the limit the upstream announced (if any). */
export function reservePulls(setting: ReserveSetting, limit: number | undefined): number {
  if ('pulls' in setting) return setting.pulls;
  return limit === undefined ? 0 : Math.ceil(limit * setting.share);
}

/** What relais learnt from one upstream answer. */
export interface BudgetSample {
  readonly at: number;
  readonly remaining: number;
  readonly limit: number | undefined;
  readonly windowMs: number | undefined;
}

/** Samples kept for the rate: the last hour, at most this many. */
const RATE_SPAN = 3600_000;
const MAX_SAMPLES = 512;

/** Adds a sample, keeping the last hour (and a bounded number). */
export function addSample(samples: readonly BudgetSample[], s: BudgetSample): BudgetSample[] {
  const out = samples.filter((x) => s.at - x.at <= RATE_SPAN);
  out.push(s);
  return out.length > MAX_SAMPLES ? out.slice(out.length - MAX_SAMPLES) : out;
}

/**
 * Pulls spent per hour over the samples: the sum of the drops of `remaining` between successive samples
 * (a rise is the window giving pulls back, not negative spending) over the time they span. Undefined with
 * fewer than two samples or less than a second between the first and the last.
 */
export function pullsPerHour(samples: readonly BudgetSample[]): number | undefined {
  if (samples.length < 2) return undefined;
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (!first || !last || last.at - first.at < 1000) return undefined;
  let spent = 0;
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    if (a && b && b.remaining < a.remaining) spent += a.remaining - b.remaining;
  }
  return (spent * 3600_000) / (last.at - first.at);
}

export type { BudgetView } from '../types.js';

export function budgetView(samples: readonly BudgetSample[], now: number, reserve: ReserveSetting): BudgetView {
  const last = samples[samples.length - 1];
  const expired = last !== undefined && last.windowMs !== undefined && now - last.at > last.windowMs;
  if (last === undefined || expired) {
    return { known: false, remaining: undefined, limit: last?.limit, windowMs: last?.windowMs, reserve: reservePulls(reserve, last?.limit), underReserve: false, pullsPerHour: undefined, exhaustsAt: undefined, reserveAt: undefined, observedAt: last?.at };
  }
  const r = reservePulls(reserve, last.limit);
  const rate = pullsPerHour(samples.filter((s) => now - s.at <= RATE_SPAN));
  const perMs = rate !== undefined && rate > 0 ? rate / 3600_000 : undefined;
  const under = last.remaining <= r;
  return {
    known: true,
    remaining: last.remaining,
    limit: last.limit,
    windowMs: last.windowMs,
    reserve: r,
    underReserve: under,
    pullsPerHour: rate,
    exhaustsAt: perMs === undefined ? undefined : now + Math.round(last.remaining / perMs),
    reserveAt: perMs === undefined || under ? undefined : now + Math.round((last.remaining - r) / perMs),
    observedAt: last.at,
  };
}

/**
 * The budgets of every upstream (each upstream has one credential: its username, or anonymous), fed with
 * the headers of every upstream answer. Holds only samples; decisions come from budgetView().
 */
export class PullBudgets {
  private readonly samples = new Map<string, BudgetSample[]>();

  constructor(
    private readonly reserve: (upstream: string) => ReserveSetting,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The upstream client's header hook: records ratelimit-remaining (with ratelimit-limit) when present.
   * Returns 'under' when this answer took the upstream under its reserve, 'above' when it brought it back.
   */
  observe(upstream: string, headers: Readonly<Record<string, string | string[] | undefined>>): 'under' | 'above' | undefined {
    const remaining = parseRateLimit(headers['ratelimit-remaining']);
    if (remaining === undefined) return undefined;
    const before = this.view(upstream).underReserve;
    const limit = parseRateLimit(headers['ratelimit-limit']);
    const s: BudgetSample = { at: this.now(), remaining: remaining.count, limit: limit?.count, windowMs: remaining.windowMs ?? limit?.windowMs };
    this.samples.set(upstream, addSample(this.samples.get(upstream) ?? [], s));
    const after = this.view(upstream).underReserve;
    return before === after ? undefined : after ? 'under' : 'above';
  }

  view(upstream: string): BudgetView {
    return budgetView(this.samples.get(upstream) ?? [], this.now(), this.reserve(upstream));
  }

  /** Whether a GET that is not a client's miss may be spent now (refresh-ahead, prefetch, revalidation). */
  maySpend(upstream: string): boolean {
    return !this.view(upstream).underReserve;
  }

  /** Whether any upstream is under its reserve (the scheduled prefetch pauses then). */
  anyUnderReserve(): string | undefined {
    for (const u of this.samples.keys()) if (this.view(u).underReserve) return u;
    return undefined;
  }
}
