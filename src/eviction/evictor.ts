// The online evictor: keeps the cache under storage.maxSize while relais serves.
// It runs every evictInterval, and soon after a stored blob pushes usage over the budget. One run at a
// time; a trigger during a run asks for another. The plan is pure (eviction/eviction-plan.ts); this applies it:
// index rows first (new lookups miss and re-fetch), then files, skipping any digest that became busy.
// Also runs the periodic online gc.
import type { StorageConfig } from '../config/schema.js';
import { formatBytes } from '../config/units.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { Logger } from '../observability/logger.js';
import type { RelaisMetrics } from '../observability/metrics.js';
import { parsePin, planEviction, type EvictionPlan, type PinContext, type PinPattern } from './eviction-plan.js';
import { blobKey, type StorageDriver } from '../storage/driver.js';
import { runGc, type GcReport } from './gc.js';

/** What eviction must know of the blobs in use (the core's BlobService answers it). */
export interface BlobsInUse {
  /** Digests being downloaded or served to a client now: never deleted meanwhile. */
  busyDigests(): Set<string>;
  isBusy(digest: string): boolean;
}

export interface EvictorOptions {
  readonly index: CacheIndex;
  readonly storage: StorageDriver;
  readonly blobs: BlobsInUse;
  /** Told what left the index, so nothing is served from memory the index no longer knows. */
  readonly forget?: (digests: readonly string[]) => void;
  readonly settings: StorageConfig;
  readonly pinContext: PinContext;
  readonly logger: Logger;
  readonly metrics?: RelaisMetrics | undefined;
  readonly now?: () => number;
}

/** How soon after a stored blob the budget is checked (a burst of commits shares one check). */
const STORED_CHECK_DELAY_MS = 200;

/** A one-off budget (disk full): evict down to maxSize x lowWatermark. */
export interface EvictionOverride {
  readonly maxSize: number;
  readonly lowWatermark: number;
}

export interface EvictionRun {
  readonly plan: EvictionPlan;
  readonly at: number;
  readonly ms: number;
}

/** Compiles the pin patterns; a bad one is a configuration error. */
export function compilePins(patterns: readonly string[], ctx: PinContext): PinPattern[] {
  return patterns.map((p) => parsePin(p, ctx));
}

export class Evictor {
  private readonly pins: PinPattern[];
  private running: Promise<EvictionRun | undefined> | undefined;
  private again = false;
  private timers: NodeJS.Timeout[] = [];
  private storedTimer: NodeJS.Timeout | undefined;
  private gcRunning: Promise<GcReport> | undefined;
  private stopped = false;
  /** Files whose rows are gone but that were busy when their turn came: retried on later runs. */
  private readonly pendingFiles = new Set<string>();
  private readonly now: () => number;
  lastRun: EvictionRun | undefined;
  lastGc: { report: GcReport; at: number } | undefined;
  /** Last usage seen (bytes), for the status page without a query. */
  lastUsage = 0;

  constructor(private readonly opts: EvictorOptions) {
    this.pins = compilePins(opts.settings.pin, opts.pinContext);
    this.now = opts.now ?? Date.now;
  }

  get maxSize(): number | undefined {
    return this.opts.settings.maxSize;
  }

  start(): void {
    const s = this.opts.settings;
    if (s.evictInterval > 0 && (s.maxSize !== undefined || s.maxIdleAge !== undefined)) {
      const t = setInterval(() => this.trigger(), s.evictInterval);
      t.unref();
      this.timers.push(t);
    }
    if (s.gcInterval > 0) {
      const t = setInterval(() => {
        void this.gc(false).catch((e: unknown) => this.opts.logger.warn({ err: String(e) }, 'online gc failed'));
      }, s.gcInterval);
      t.unref();
      this.timers.push(t);
    }
    this.trigger();
  }

  /**
   * Content was stored: check the budget soon. Commits in a burst share one check (each check reads the
   * index's totals, a scan of the content table).
   */
  onStored(): void {
    if (this.opts.settings.maxSize === undefined || this.storedTimer !== undefined || this.stopped) return;
    this.storedTimer = setTimeout(() => {
      this.storedTimer = undefined;
      this.trigger();
    }, STORED_CHECK_DELAY_MS);
    this.storedTimer.unref();
  }

  /** Runs a check now, or once more after the current one. Errors are logged. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.runLoop()
      .catch((e: unknown) => {
        this.opts.logger.warn({ err: e instanceof Error ? e.message : String(e) }, 'eviction failed');
        return undefined;
      })
      .finally(() => {
        this.running = undefined;
      });
  }

  /** Waits for the current run (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async runLoop(): Promise<EvictionRun | undefined> {
    let last: EvictionRun | undefined;
    do {
      this.again = false;
      last = (await this.runOnce()) ?? last;
    } while (this.again && !this.stopped);
    return last;
  }

  /**
   * The disk is too full for a download (BlobService's free-space check): evicts least-recently-used
   * images as if the budget were `bytes` lower than today's usage. Only when a budget is configured
   * (storage.maxSize): without one, relais never deletes cached content on its own. Returns bytes freed.
   */
  async makeRoom(bytes: number): Promise<number> {
    if (this.opts.settings.maxSize === undefined || this.stopped) return 0;
    await this.running;
    const usage = await this.opts.index.usage();
    const run = await this.runOnce({ maxSize: Math.max(0, usage.bytes - bytes), lowWatermark: 1 });
    return run?.plan.bytes ?? 0;
  }

  /** One check: plans and applies an eviction when needed. Returns undefined when nothing was due. */
  async runOnce(override?: EvictionOverride): Promise<EvictionRun | undefined> {
    const s = { ...this.opts.settings, ...override };
    const started = this.now();
    await this.retryPending();
    const usage = await this.opts.index.usage();
    this.lastUsage = usage.bytes;
    const overBudget = s.maxSize !== undefined && usage.bytes > s.maxSize;
    if (!overBudget && s.maxIdleAge === undefined) return undefined;
    await this.opts.index.flush();
    const [content, references, tags, links] = await Promise.all([
      this.opts.index.listContent(),
      this.opts.index.listReferences(),
      this.opts.index.listAllTags(),
      this.opts.index.listLinks(),
    ]);
    const plan = planEviction(
      { content, references, tags, links },
      { maxSize: s.maxSize, lowWatermark: s.lowWatermark, maxIdleAge: s.maxIdleAge, pins: this.pins, now: this.now(), busy: this.busy() },
    );
    if (plan.digests.length === 0) {
      if (plan.shortBy > 0) this.opts.logger.warn({ usage: plan.usageBefore, maxSize: s.maxSize, shortBy: plan.shortBy }, 'cache over budget, but everything left is pinned or in use');
      return undefined;
    }
    await this.opts.index.deleteContent(plan.digests);
    this.opts.forget?.(plan.digests);
    for (const d of plan.digests) await this.deleteFile(d);
    this.lastUsage = plan.usageAfter;
    const m = this.opts.metrics;
    for (const img of plan.images) m?.evictions.inc({ reason: img.reason });
    // A run's bytes count for 'size' when the budget drove it (idle images in the same run included).
    m?.evictedBytes.inc({ reason: plan.images.some((i) => i.reason === 'size') ? 'size' : 'idle' }, plan.bytes);
    const run: EvictionRun = { plan, at: started, ms: this.now() - started };
    this.lastRun = run;
    this.opts.logger.info(
      {
        event: 'eviction',
        images: plan.images.length,
        items: plan.digests.length,
        freed: plan.bytes,
        usageBefore: plan.usageBefore,
        usageAfter: plan.usageAfter,
        maxSize: s.maxSize,
        evicted: plan.images.slice(0, 20).map((i) => (i.names[0] ?? i.root) + ` (${i.reason})`),
        ms: run.ms,
      },
      `evicted ${plan.images.length} images, freed ${formatBytes(plan.bytes)}`,
    );
    return run;
  }

  private busy(): Set<string> {
    return this.opts.blobs.busyDigests();
  }

  private async deleteFile(digest: string): Promise<void> {
    if ((await this.opts.index.getContent(digest)) !== undefined) {
      // Fetched again since the plan: the file is live again.
      this.pendingFiles.delete(digest);
      return;
    }
    if (this.opts.blobs.isBusy(digest)) {
      this.pendingFiles.add(digest);
      return;
    }
    this.pendingFiles.delete(digest);
    await this.opts.storage.delete(blobKey(digest));
  }

  private async retryPending(): Promise<void> {
    for (const d of [...this.pendingFiles]) await this.deleteFile(d);
  }

  /** Online gc (also what the status page's numbers come from). */
  gc(dryRun: boolean): Promise<GcReport> {
    this.gcRunning ??= (async () => {
      try {
        await this.idle();
        const report = await runGc({
          index: this.opts.index,
          storage: this.opts.storage,
          dryRun,
          graceMs: this.opts.settings.gcGrace,
          busy: () => this.busy(),
        });
        if (!dryRun) {
          this.opts.forget?.([...report.missingFiles.map((m) => m.digest), ...report.dependentManifests]);
          this.opts.metrics?.gcRuns.inc({ mode: 'online' });
          this.opts.metrics?.gcFreedBytes.inc(report.freedBytes);
          this.lastGc = { report, at: this.now() };
          if (report.freedBytes > 0 || report.droppedRows > 0) {
            this.opts.logger.info(
              { event: 'gc', orphanFiles: report.orphanFiles.length, missingFiles: report.missingFiles.length, dependentManifests: report.dependentManifests.length, tempFiles: report.tempFiles.length, freed: report.freedBytes },
              'gc reconciled the index with the disk',
            );
          }
        }
        return report;
      } finally {
        this.gcRunning = undefined;
      }
    })();
    return this.gcRunning;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.storedTimer !== undefined) clearTimeout(this.storedTimer);
    this.timers = [];
    await this.idle();
    if (this.gcRunning) await this.gcRunning.catch(() => undefined);
  }
}
