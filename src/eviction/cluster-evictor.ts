// Cluster-wide eviction and gc: every replica runs the same Evictor (src/eviction/evictor.ts) on the shared
// index and storage, but a run only happens on the replica that holds the job's lease ("job:evict",
// "job:gc" in the leases table), so one replica at a time evicts from the one shared budget. A replica
// that dies mid-run stops renewing its lease and another one takes the next run.
//
// Safe while the others serve: blobs another replica is downloading have no index row yet (they cannot be
// planned); blobs the others serve from storage carry a recent last access (touches reach the shared index
// within seconds), so the LRU plan picks them last; gc never touches files younger than storage.gcGrace.
import { Evictor, type EvictionOverride, type EvictionRun, type EvictorOptions } from './evictor.js';
import type { GcReport } from './gc.js';
import type { LeaseManager } from '../cluster/leases.js';

export const EVICT_JOB = 'job:evict';
export const GC_JOB = 'job:gc';
/** Multipart uploads older than this are a dead replica's: gc aborts them. */
const STALE_UPLOAD_MS = 24 * 3600_000;

export class ClusterEvictor extends Evictor {
  /** Runs skipped because another replica held the job (tests, status). */
  skipped = { evict: 0, gc: 0 };

  constructor(
    private readonly copts: EvictorOptions,
    private readonly leases: LeaseManager,
  ) {
    super(copts);
  }

  private async exclusive<T>(job: string, run: () => Promise<T>): Promise<T | undefined> {
    const r = await this.leases.tryAcquire(job);
    if (!r.acquired) return undefined;
    try {
      return await run();
    } finally {
      await this.leases.release(job).catch(() => undefined);
    }
  }

  override async runOnce(override?: EvictionOverride): Promise<EvictionRun | undefined> {
    let ran = false;
    const run = await this.exclusive(EVICT_JOB, () => {
      ran = true;
      return super.runOnce(override);
    });
    if (!ran) this.skipped.evict++;
    return run;
  }

  override gc(dryRun: boolean): Promise<GcReport> {
    if (dryRun) return super.gc(true);
    return (async () => {
      const report = await this.exclusive(GC_JOB, async () => {
        const r = await super.gc(false);
        const storage = this.copts.storage;
        // A capability of drivers with multipart uploads (S3), asked of the driver: nothing here loads the AWS SDK.
        if (storage.abortStaleUploads) {
          const aborted = await storage.abortStaleUploads(Date.now() - STALE_UPLOAD_MS);
          if (aborted > 0) this.copts.logger.info({ event: 'gc', abortedUploads: aborted }, 'gc aborted stale multipart uploads');
        }
        return r;
      });
      if (report) return report;
      this.skipped.gc++;
      return { dryRun: false, orphanFiles: [], missingFiles: [], dependentManifests: [], tempFiles: [], freedBytes: 0, droppedRows: 0 };
    })();
  }
}

/** The cluster's evictor when a lease manager is given (cluster mode), the plain one otherwise. */
export function makeEvictor(leases: LeaseManager | undefined, opts: EvictorOptions): Evictor {
  return leases ? new ClusterEvictor(opts, leases) : new Evictor(opts);
}
