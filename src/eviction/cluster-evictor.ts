// Cluster-wide eviction and gc: every replica runs the same Evictor (src/eviction/evictor.ts) on the shared
// index and storage, but a run only happens on the replica that holds the job's lease ("job:evict",
// "job:gc" in the leases table), so one replica at a time evicts from the one shared budget. A replica
// that dies mid-run stops renewing its lease and another one takes the next run.
//
// Safe while the others serve: blobs another replica is downloading have no index row yet (they cannot be
// planned); blobs the others serve from storage carry a recent last access (touches reach the shared index
// within seconds), so the LRU plan picks them last; gc never touches files younger than storage.gcGrace, nor
// multipart uploads another replica may still be running (the S3 driver counts those stale only after a day).
import { Evictor, type EvictionOverride, type EvictionRun, type EvictorOptions } from './evictor.js';
import type { GcReport } from './gc.js';
import type { LeaseManager } from '../cluster/leases.js';

export const EVICT_JOB = 'job:evict';
export const GC_JOB = 'job:gc';

export class ClusterEvictor extends Evictor {
  /** Runs skipped because another replica held the job (tests, status). */
  skipped = { evict: 0, gc: 0 };

  constructor(
    opts: EvictorOptions,
    private readonly leases: LeaseManager,
  ) {
    super(opts);
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
      // A dead replica's multipart uploads are among the driver's stale writes that gc drops.
      const report = await this.exclusive(GC_JOB, () => super.gc(false));
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
