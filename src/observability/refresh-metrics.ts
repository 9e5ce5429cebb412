// Series of refresh-ahead and of the upstreams' pull budgets (docs/operations.md), registered on the
// instance's metrics registry. Kept apart from metrics.ts: they are fed by src/upkeep/refresh-ahead.ts and read
// from the budgets (src/policy/budget.ts) at scrape time.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { BudgetView } from '../types.js';

export type RefreshResult = 'unchanged' | 'moved' | 'held_budget' | 'skipped_budget' | 'skipped_bytes' | 'skipped_space' | 'missing' | 'failed';

export interface RefreshMetricSources {
  readonly upstreams: readonly string[];
  credential(upstream: string): string;
  budget(upstream: string): BudgetView;
  hotTags(): number;
  inFlight(): number;
}

export class RefreshMetrics {
  readonly refreshes: Counter<'upstream' | 'result'>;
  readonly bytes: Counter<'upstream'>;
  readonly heldBack: Counter<'upstream' | 'what'>;

  constructor(registry: Registry, src: RefreshMetricSources) {
    this.refreshes = new Counter({
      name: 'relais_refresh_ahead_total',
      help: 'Background revalidations of hot tags, by result (unchanged, moved, held_budget: moved but under the pull reserve (HEAD only), skipped_budget: the reserve reached while warming, skipped_bytes: over maxBytesPerHour, skipped_space: would need eviction, missing, failed)',
      labelNames: ['upstream', 'result'],
      registers: [registry],
    });
    this.bytes = new Counter({ name: 'relais_refresh_ahead_bytes_total', help: 'Blob bytes refresh-ahead fetched before any client asked', labelNames: ['upstream'], registers: [registry] });
    this.heldBack = new Counter({
      name: 'relais_pull_budget_held_back_total',
      help: 'GETs relais did not spend because the upstream was under its pull reserve, by what would have spent them (revalidation: a moved tag served stale; refresh; prefetch)',
      labelNames: ['upstream', 'what'],
      registers: [registry],
    });
    new Gauge({
      name: 'relais_refresh_ahead_hot_tags',
      help: 'Tags that are hot now (refreshAhead.minPulls within refreshAhead.window)',
      registers: [registry],
      collect() {
        this.set(src.hotTags());
      },
    });
    new Gauge({
      name: 'relais_refresh_ahead_in_flight',
      help: 'Refresh-ahead revalidations running now',
      registers: [registry],
      collect() {
        this.set(src.inFlight());
      },
    });
    new Gauge({
      name: 'relais_upstream_pull_reserve',
      help: 'Pulls of the rate limit kept for real misses (upstreams.NAME.pullReserve), per credential',
      labelNames: ['upstream', 'credential'],
      registers: [registry],
      collect() {
        this.reset();
        for (const u of src.upstreams) {
          const v = src.budget(u);
          if (v.known) this.set({ upstream: u, credential: src.credential(u) }, v.reserve);
        }
      },
    });
    new Gauge({
      name: 'relais_upstream_pull_budget_under_reserve',
      help: '1 while the upstream credential is at or under its pull reserve (no refresh-ahead, prefetch or revalidation GETs), else 0; absent before any rate-limit header',
      labelNames: ['upstream', 'credential'],
      registers: [registry],
      collect() {
        this.reset();
        for (const u of src.upstreams) {
          const v = src.budget(u);
          if (v.known) this.set({ upstream: u, credential: src.credential(u) }, v.underReserve ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'relais_upstream_pull_budget_exhaustion_seconds',
      help: 'Seconds until the rate limit would run out at the rate of the last hour; absent when not spending',
      labelNames: ['upstream', 'credential'],
      registers: [registry],
      collect() {
        this.reset();
        const now = Date.now();
        for (const u of src.upstreams) {
          const v = src.budget(u);
          if (v.known && v.exhaustsAt !== undefined) this.set({ upstream: u, credential: src.credential(u) }, Math.max(0, (v.exhaustsAt - now) / 1000));
        }
      },
    });
    for (const u of src.upstreams) {
      this.bytes.inc({ upstream: u }, 0);
      for (const result of ['unchanged', 'moved', 'held_budget'] as const) this.refreshes.inc({ upstream: u, result }, 0);
    }
  }
}
