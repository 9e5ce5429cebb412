// A per-upstream circuit breaker: after `failures` consecutive failures the circuit opens and calls are
// refused at once for `cooldown`; then one probe is let through (half-open); its success closes the circuit.
// A 429 with Retry-After opens it for that long. Pure state + an injected clock, so it is tested on its own.

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Consecutive failures that open the circuit; 0 disables the breaker. */
  readonly failures: number;
  readonly cooldownMs: number;
  readonly now?: () => number;
}

export class CircuitBreaker {
  private consecutive = 0;
  private openUntil = 0;
  private probing = false;
  private readonly now: () => number;

  constructor(private readonly opts: BreakerOptions) {
    this.now = opts.now ?? Date.now;
  }

  get state(): BreakerState {
    if (this.openUntil === 0) return 'closed';
    return this.now() < this.openUntil ? 'open' : 'half-open';
  }

  /** How long the circuit stays open after it opens (and after a 429 without Retry-After). */
  get cooldownMs(): number {
    return this.opts.cooldownMs;
  }

  /** Milliseconds until a call may be tried again (0 when it may be tried now). */
  retryAfterMs(): number {
    return Math.max(0, this.openUntil - this.now());
  }

  /** Whether a call may go out now. In half-open state only one probe at a time is allowed. */
  tryAcquire(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'open') return false;
    if (this.probing) return false;
    this.probing = true;
    return true;
  }

  onSuccess(): void {
    this.consecutive = 0;
    this.openUntil = 0;
    this.probing = false;
  }

  onFailure(): void {
    this.probing = false;
    if (this.opts.failures <= 0) return;
    this.consecutive++;
    if (this.consecutive >= this.opts.failures || this.openUntil !== 0) {
      this.openUntil = this.now() + this.opts.cooldownMs;
    }
  }

  /** A call ended without telling anything about the upstream (cancelled): frees the half-open probe slot. */
  release(): void {
    this.probing = false;
  }

  /** The upstream asked relais to back off (429 Retry-After, 503 Retry-After). */
  backOff(ms: number): void {
    this.probing = false;
    this.openUntil = Math.max(this.openUntil, this.now() + ms);
  }
}

/** Parses Retry-After (seconds or an HTTP date) to milliseconds; undefined when absent or invalid. */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** The breaker's state in words a person understands (the status page): no circuit jargon. */
export function describeHealth(state: BreakerState, retryAfterMs: number): string {
  if (state === 'closed') return 'healthy';
  if (state === 'open') return `failing, retrying in ${Math.max(1, Math.ceil(retryAfterMs / 1000))} s`;
  return 'failing, trying again now';
}
