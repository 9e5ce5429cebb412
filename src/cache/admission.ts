// Admission of a store into the cache: does the blob fit? Checked before the first byte is spooled, so
// a client gets a 503 STORAGE_FULL it can retry instead of a broken transfer. Two limits: the storage
// budget (storage.maxSize: room is made by eviction BEFORE the blob is stored and then reserved in the
// budget's ledger, src/policy/storage-budget.ts, until the index counts the blob) and the disk's free space.
import type { Reservation, StorageBudgetLedger } from '../policy/storage-budget.js';
import type { StorageDriver } from '../storage/driver.js';
import { storageFullError } from './download.js';

/** Space kept free besides the blobs (index, WAL, manifests). */
const SPACE_MARGIN = 1024 * 1024;

export interface AdmissionOptions {
  /** Free space for new writes (fs: the storage's disk; S3: the local disk its writes are staged on). */
  readonly storage: Pick<StorageDriver, 'freeSpace'>;
  /** Bytes the other downloads in flight still need (all but `digest`'s). */
  readonly pending: (digest: string) => number;
  /**
   * Evict to free at least this many bytes (when a budget is configured); returns bytes freed. `recheck`, when
   * given, says how many are still needed once the evictions before this one have landed.
   */
  readonly makeRoom?: ((bytes: number, recheck?: () => Promise<number>) => Promise<number>) | undefined;
  /** storage.maxSize, when configured: the budget the cache and the stores in progress stay within. */
  readonly budget?: StorageBudget | undefined;
  /** A store admitted over the budget (what is left is in use or pinned): by how many bytes, all stores counted. */
  readonly onOverrun?: ((digest: string, bytes: number) => void) | undefined;
}

export interface StorageBudget {
  /** What the index does not count: reservations, files being unlinked; and the exclusive sections. */
  readonly ledger: StorageBudgetLedger;
  /** Bytes the index counts as cached. */
  usage(): Promise<number>;
}

/** What the budget check found (for tests and the log): bytes over the budget before eviction, and with this store reserved. */
export interface BudgetOutcome {
  readonly shortBefore: number;
  readonly shortAfter: number;
  readonly reservation: Reservation;
}

export class SpaceAdmission {
  constructor(private readonly opts: AdmissionOptions) {}

  /**
   * Refuses a download that cannot fit: the free space the storage reports (for S3, the local disk its writer
   * stages blobs on) minus what the other downloads in flight still need; asks eviction for room first. With a
   * budget, returns the reservation the caller releases once the index counts the blob (`indexed`) or the store failed.
   */
  async admit(digest: string, size: number): Promise<Reservation | undefined> {
    const outcome = await this.reserveInBudget(digest, size);
    try {
      await this.fitOnDisk(digest, size);
    } catch (e) {
      outcome?.reservation.release();
      throw e;
    }
    return outcome?.reservation;
  }

  /**
   * Evicts, before the blob is stored, what the budget needs for it beside the cache and the other stores in
   * progress, then reserves its room. When what is left cannot be evicted (blobs being downloaded or served, pinned
   * images), the blob is still admitted: the budget is then exceeded by `shortAfter` (every store counted), which
   * is reported (docs/operations.md).
   */
  async reserveInBudget(digest: string, size: number): Promise<BudgetOutcome | undefined> {
    const b = this.opts.budget;
    if (!b) return undefined;
    const shortBefore = b.ledger.shortfall(await b.usage(), size);
    if (shortBefore > 0 && this.opts.makeRoom) await this.opts.makeRoom(shortBefore, async () => b.ledger.shortfall(await b.usage(), size));
    // The usage read and the reservation in one exclusive section: no index write or delete lands in between.
    const reservation = await b.ledger.exclusive(async () => b.ledger.reserve(await b.usage(), size));
    if (reservation.overBy > 0) this.opts.onOverrun?.(digest, reservation.overBy);
    return { shortBefore, shortAfter: reservation.overBy, reservation };
  }

  /**
   * Records a reserved store in the index (`put`) and releases its reservation in one exclusive section, so that
   * no usage read counts it twice or not at all. Without a budget, just `put`.
   */
  async indexed(reservation: Reservation | undefined, put: () => Promise<void>): Promise<void> {
    const b = this.opts.budget;
    if (!b) return put();
    await b.ledger.exclusive(async () => {
      await put();
      reservation?.release();
    });
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
