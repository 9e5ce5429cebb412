// Cluster-wide single-flight for manifests: a tag fetched (or revalidated) by 3 replicas at once cost 3
// upstream requests, and Docker Hub counts manifest GETs against its pull limit. The replica that wins the
// key's lease (the same table as the blob leases) does the work; the others poll the shared index until the
// result is there. A holder that takes too long (or died: its lease expires) does not block them forever:
// after `waitMs` a waiter fetches itself, which costs one more upstream request, never an error.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ManifestCoordinator } from '../cache/manifests.js';
import type { LeaseManager } from './leases.js';

export interface ManifestCoordinatorOptions {
  /** How often a waiting replica looks at the shared index. */
  readonly pollMs: number;
  /** How long it waits for the holder before doing the work itself. */
  readonly waitMs: number;
}

export function leaseCoordinator(leases: Pick<LeaseManager, 'tryAcquire' | 'release'>, opts: ManifestCoordinatorOptions): ManifestCoordinator {
  return {
    async once<T>(key: string, work: () => Promise<T>, done: () => Promise<T | undefined>): Promise<T> {
      const deadline = Date.now() + opts.waitMs;
      for (;;) {
        const lease = await leases.tryAcquire(key);
        if (lease.acquired) {
          try {
            // The previous holder may have finished just before: its result is in the shared index.
            return (await done()) ?? (await work());
          } finally {
            await leases.release(key).catch(() => undefined);
          }
        }
        await sleep(opts.pollMs);
        const found = await done();
        if (found !== undefined) return found;
        if (Date.now() >= deadline) return work();
      }
    },
  };
}
