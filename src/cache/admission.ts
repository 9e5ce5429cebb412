// Admission of a download into the cache: does the blob fit? Checked before the first byte is spooled, so
// a client gets a 503 STORAGE_FULL it can retry instead of a broken transfer. Two limits: the storage
// budget (storage.maxSize: room is made by eviction BEFORE the blob is stored, counting the downloads in
// flight, so the budget holds instead of being overshot by what is being stored at once) and the disk's
// free space.
import { budgetShortfall } from '../policy/storage-budget.js';
import type { StorageDriver } from '../storage/driver.js';
import { storageFullError } from './download.js';

/** Space kept free besides the blobs (index, WAL, manifests). */
const SPACE_MARGIN = 1024 * 1024;

export interface AdmissionOptions {
  /** Free space for new writes (fs: the storage's disk; S3: the local disk its writes are staged on). */
  readonly storage: Pick<StorageDriver, 'freeSpace'>;
  /** Bytes the other downloads in flight still need (all but `digest`'s). */
  readonly pending: (digest: string) => number;
  /** Disk full: evict to free at least this many bytes (when a budget is configured); returns bytes freed. */
  readonly makeRoom?: ((bytes: number) => Promise<number>) | undefined;
  /** storage.maxSize, when configured: the budget the cache and the downloads in flight stay within. */
  readonly budget?: StorageBudget | undefined;
  /** A blob admitted over the budget (what is left is in use or pinned): by how many bytes. */
  readonly onOverrun?: ((digest: string, bytes: number) => void) | undefined;
}

export interface StorageBudget {
  readonly maxSize: number;
  /** Bytes the index counts as cached. */
  usage(): Promise<number>;
  /** Full sizes of the other downloads in flight (all but `digest`'s): space they have reserved. */
  reserved(digest: string): number;
}

/** What the budget check found (for tests and the log): bytes still over the budget after eviction. */
export interface BudgetOutcome {
  readonly shortBefore: number;
  readonly shortAfter: number;
}

export class SpaceAdmission {
  private overruns = { admissions: 0, maxBytes: 0 };

  constructor(private readonly opts: AdmissionOptions) {}

  /** Admissions that went over the budget because what was left could not be evicted, and the largest overrun. */
  budgetOverruns(): { readonly admissions: number; readonly maxBytes: number } {
    return { ...this.overruns };
  }

  /**
   * Refuses a download that cannot fit: the free space the storage reports (for S3, the local disk its writer
   * stages blobs on) minus what the other downloads in flight still need; asks eviction for room first.
   */
  async admit(digest: string, size: number): Promise<void> {
    await this.reserveInBudget(digest, size);
    await this.fitOnDisk(digest, size);
  }

  /**
   * Evicts, before the blob is stored, what the budget needs for it beside the cache and the other downloads
   * in flight. When what is left cannot be evicted (blobs being downloaded or served, pinned images), the
   * blob is still admitted: the budget is then exceeded by at most what is in use (docs/operations.md).
   */
  async reserveInBudget(digest: string, size: number): Promise<BudgetOutcome | undefined> {
    const b = this.opts.budget;
    if (!b) return undefined;
    const short = async (): Promise<number> => budgetShortfall({ used: await b.usage(), reserved: b.reserved(digest), size, maxSize: b.maxSize });
    const shortBefore = await short();
    if (shortBefore === 0 || !this.opts.makeRoom) return { shortBefore, shortAfter: shortBefore };
    await this.opts.makeRoom(shortBefore);
    const shortAfter = await short();
    if (shortAfter > 0) {
      this.overruns = { admissions: this.overruns.admissions + 1, maxBytes: Math.max(this.overruns.maxBytes, shortAfter) };
      this.opts.onOverrun?.(digest, shortAfter);
    }
    return { shortBefore, shortAfter };
  }

  private async fitOnDisk(digest: string, size: number): Promise<void> {
    const free = await this.opts.storage.freeSpace?.();
    if (free === undefined) return;
    const pending = this.opts.pending(digest);
    if (size + pending + SPACE_MARGIN > free && this.opts.makeRoom) {
      const freed = await this.opts.makeRoom(size + pending + SPACE_MARGIN - free);
      if (freed > 0) return this.fitOnDisk(digest, size);
    }
    if (size + pending + SPACE_MARGIN > free) {
      throw storageFullError(`${size} bytes needed, ${Math.max(0, free - pending)} free${pending > 0 ? ` after ${pending} bytes for downloads in flight` : ''}`);
    }
  }
}
