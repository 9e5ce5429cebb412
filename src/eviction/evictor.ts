// The online evictor: keeps the cache under storage.maxSize while relais serves.
// It runs every evictInterval, and soon after a stored blob pushes usage over the budget. One run at a
// time; a trigger during a run asks for another. The plan is pure (eviction/eviction-plan.ts); this applies it:
// index rows first (new lookups miss and re-fetch), then files, skipping any digest that became busy.
// Runs one at a time (a budget check, a disk-full makeRoom, an admission's room), so an admission asking for
// room sees the previous run's files unlinked. With storage.maxSize, the budget's ledger
// (src/policy/storage-budget.ts) counts each evicted file from before its rows go until it is unlinked.
// Also runs the periodic online gc.
import type { StorageConfig } from '../config/schema.js';
import { formatBytes } from '../config/units.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { Logger } from '../observability/logger.js';
import type { RelaisMetrics } from '../observability/metrics.js';
import { parsePin, planEviction, type EvictionPlan, type PinContext, type PinPattern } from './eviction-plan.js';
import type { StorageBudgetLedger } from '../policy/storage-budget.js';
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
  /** storage.maxSize's ledger: evicted files count in it until they are unlinked (the admission reads it). */
  readonly ledger?: StorageBudgetLedger | undefined;
  readonly settings: StorageConfig;
  readonly pinContext: PinContext;
  readonly logger: Logger;
  readonly metrics?: RelaisMetrics | undefined;
  readonly now?: () => number;
}

/** How soon after a stored blob the budget is checked (a burst of commits shares one check). */
const STORED_CHECK_DELAY_MS = 200;

/**
 * A one-off budget (disk full, room for an admission): evict `free` bytes below the index's usage at the time the
 * run starts (after the runs before it), or what `recheck` says is still needed then (nothing: no run).
 */
export interface EvictionOverride {
  readonly free: number;
  readonly recheck?: (() => Promise<number>) | undefined;
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
  /** Runs one after another: the tail of the queue. */
  private runTail: Promise<unknown> = Promise.resolve();
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
    // And the runs queued by makeRoom (an admission's room).
    await this.runTail;
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
   * A download needs room (the budget's admission, or the disk's free-space check): evicts least-recently-used
   * images as if the budget were `bytes` lower than the usage when its turn comes (or `recheck()` bytes, asked
   * then: what the runs before it freed counts). Only when a budget is configured
   * (storage.maxSize): without one, relais never deletes cached content on its own. Returns bytes freed.
   */
  async makeRoom(bytes: number, recheck?: () => Promise<number>): Promise<number> {
    if (this.opts.settings.maxSize === undefined || this.stopped) return 0;
    const run = await this.runOnce({ free: bytes, recheck });
    return run?.plan.bytes ?? 0;
  }

  /** One check: plans and applies an eviction when needed, after the runs before it. Undefined when nothing was due. */
  runOnce(override?: EvictionOverride): Promise<EvictionRun | undefined> {
    const run = this.runTail.then(() => this.runNow(override));
    this.runTail = run.catch(() => undefined);
    return run;
  }

  private async runNow(override?: EvictionOverride): Promise<EvictionRun | undefined> {
    const started = this.now();
    await this.retryPending();
    const free = override?.recheck ? await override.recheck() : override?.free;
    if (free !== undefined && free <= 0) return undefined;
    const usage = await this.opts.index.usage();
    const s = free === undefined ? this.opts.settings : { ...this.opts.settings, maxSize: Math.max(0, usage.bytes - free), lowWatermark: 1 };
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
    await this.forgetRows(plan.digests, content);
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

  /**
   * Deletes the rows; with a budget, each file goes on the ledger's unlinking list first, in one exclusive section
   * with the delete, so that a usage read counts every evicted file once until it is unlinked.
   */
  private async forgetRows(digests: readonly string[], content: readonly { readonly digest: string; readonly size: number }[]): Promise<void> {
    const ledger = this.opts.ledger;
    if (!ledger) return this.opts.index.deleteContent(digests);
    const size = new Map(content.map((c) => [c.digest, c.size]));
    await ledger.exclusive(async () => {
      for (const d of digests) ledger.unlinkStarted(d, size.get(d) ?? 0);
      try {
        await this.opts.index.deleteContent(digests);
      } catch (e) {
        for (const d of digests) ledger.unlinkEnded(d);
        throw e;
      }
    });
  }

  private busy(): Set<string> {
    return this.opts.blobs.busyDigests();
  }

  private async deleteFile(digest: string): Promise<void> {
    if ((await this.opts.index.getContent(digest)) !== undefined) {
      // Fetched again since the plan: the file is live again (and the index counts it).
      this.pendingFiles.delete(digest);
      this.opts.ledger?.unlinkEnded(digest);
      return;
    }
    if (this.opts.blobs.isBusy(digest)) {
      this.pendingFiles.add(digest);
      return;
    }
    this.pendingFiles.delete(digest);
    try {
      await this.opts.storage.delete(blobKey(digest));
    } catch (e) {
      // Still on disk (and on the ledger): tried again on the next run.
      this.pendingFiles.add(digest);
      throw e;
    }
    this.opts.ledger?.unlinkEnded(digest);
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
