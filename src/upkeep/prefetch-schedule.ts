// The `prefetch:` schedule: warms the cache at set times of day (UTC) and/or every interval, by pulling
// through this relais's own HTTP API like any client. One run at a time; a failure is logged and counted.
import type { PrefetchConfig } from '../config/schema.js';
import { formatBytes } from '../config/units.js';
import type { Logger } from '../observability/logger.js';
import type { RelaisMetrics } from '../observability/metrics.js';
import { clientAuthorization, hostPlatform, nextRunDelay, prefetch, type PrefetchSummary, type PrefetchTarget } from './prefetch.js';

export class PrefetchScheduler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<PrefetchSummary | undefined> | undefined;
  private lastRun: number | undefined;
  private stopped = false;
  private readonly abort = new AbortController();

  constructor(
    private readonly cfg: PrefetchConfig,
    private readonly opts: {
      readonly server: string;
      readonly logger: Logger;
      readonly metrics?: RelaisMetrics | undefined;
      /** A reason to skip a scheduled run (an upstream under its pull reserve), or undefined to run. */
      readonly paused?: (() => string | undefined) | undefined;
    },
  ) {}

  private targets(): PrefetchTarget[] {
    return this.cfg.images.map((i) => (typeof i === 'string' ? { image: i } : { image: i.image, platforms: i.platforms, allPlatforms: i.allPlatforms }));
  }

  start(): void {
    if (this.cfg.images.length === 0) return;
    if (this.cfg.onStart) void this.runNow();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const delay = nextRunDelay(Date.now(), this.cfg.at, this.cfg.every, this.lastRun);
    if (delay === undefined) return;
    // setTimeout holds at most ~24.8 days; schedules are shorter than that.
    this.timer = setTimeout(() => {
      const paused = this.opts.paused?.();
      if (paused !== undefined) {
        this.lastRun = Date.now();
        this.opts.logger.info({ event: 'prefetch', skipped: paused }, `prefetch skipped: ${paused}`);
        this.schedule();
        return;
      }
      void this.runNow().finally(() => this.schedule());
    }, Math.min(delay, 2 ** 31 - 1));
    this.timer.unref();
  }

  /** Runs the configured prefetch now (or joins the run in progress). */
  runNow(): Promise<PrefetchSummary | undefined> {
    this.running ??= (async () => {
      this.lastRun = Date.now();
      const targets = this.targets();
      this.opts.logger.info({ event: 'prefetch', images: targets.map((t) => t.image) }, 'prefetch starting');
      try {
        const summary = await prefetch(targets, {
          server: this.opts.server,
          platforms: this.cfg.platforms ?? [hostPlatform()],
          allPlatforms: this.cfg.allPlatforms,
          concurrency: this.cfg.concurrency,
          authorization: clientAuthorization(),
          signal: this.abort.signal,
        });
        this.opts.metrics?.prefetchRuns.inc({ outcome: summary.failed === 0 ? 'ok' : 'failed' });
        const log = summary.failed === 0 ? this.opts.logger.info.bind(this.opts.logger) : this.opts.logger.warn.bind(this.opts.logger);
        log(
          { event: 'prefetch', images: summary.images.length, failed: summary.images.filter((i) => !i.ok).map((i) => `${i.image}: ${i.error ?? ''}`), bytes: summary.bytes, upstreamBytes: summary.upstreamBytes, seconds: Math.round(summary.seconds * 10) / 10 },
          `prefetch done: ${summary.images.length - summary.failed}/${summary.images.length} images, ${formatBytes(summary.bytes)}`,
        );
        return summary;
      } catch (e) {
        this.opts.metrics?.prefetchRuns.inc({ outcome: 'failed' });
        if (!this.stopped) this.opts.logger.warn({ event: 'prefetch', err: e instanceof Error ? e.message : String(e) }, 'prefetch failed');
        return undefined;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.running;
  }
}
