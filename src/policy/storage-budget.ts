// The storage budget (storage.maxSize): how much must be evicted before a blob is stored, and the ledger of the
// bytes on disk the index does not count (yet, or any more), so that the bound on what is on disk is exact.
//
// What is on disk under the storage (by name) is, at any moment, at most
//   the index's usage + the ledger's reservations + the ledger's unlinking bytes
// because every way in and out of the disk is ordered against the index:
//   - a download (or a manifest) is reserved (`reserve`) before its first byte is written, and its reservation
//     is released only once the index counts it (`indexed`), in one exclusive section with the index write;
//   - evicted content is put on the unlinking list before its index rows go (in one exclusive section with the
//     index delete), and leaves it once its file is unlinked (a file kept because it is in use stays on it).
// That sum only grows at a reservation, and each reservation computes it (exclusively, with a fresh usage) and
// reports by how much it is over maxSize. So the bytes on disk never exceed maxSize plus the overrun of the
// latest reservation (and so never maxSize plus the largest overrun ever reported).

/** What the storage budget (storage.maxSize) must hold when a blob of `size` bytes is about to be stored. */
export interface BudgetCheck {
  /** Bytes counted now: the index's usage plus what the ledger holds (reservations, files still being unlinked). */
  readonly used: number;
  /** Bytes reserved by the other downloads in flight (their full sizes: they are not in the index yet). */
  readonly reserved: number;
  /** The blob about to be stored. */
  readonly size: number;
  readonly maxSize: number;
}

/**
 * Bytes to free before the blob may be stored so that the cache, the downloads in flight and the blob
 * together stay within the budget (0: it fits). Reserving before the first byte is what keeps the budget
 * strict: evicting after a store lets the cache overshoot by what is being stored at once.
 */
export function budgetShortfall(c: BudgetCheck): number {
  return Math.max(0, c.used + c.reserved + c.size - c.maxSize);
}

/** Room reserved for one store; released once the index counts it, or when the store failed (idempotent). */
export interface Reservation {
  readonly bytes: number;
  /** Bytes over maxSize when it was reserved, this reservation included (0: it fitted). */
  readonly overBy: number;
  release(): void;
}

/** Reservations over the budget since start: how many, the largest, and the latest reservation's (0 if it fitted). */
export interface BudgetOverruns {
  readonly admissions: number;
  readonly maxBytes: number;
  readonly lastBytes: number;
}

/**
 * The bytes of this process's storage that the index does not count: reservations of stores in progress and
 * files whose index rows are gone but which are not unlinked yet. Plain state and arithmetic, plus one
 * serialisation point (`exclusive`) so that a usage read never sees an index write half-applied to the ledger.
 */
export class StorageBudgetLedger {
  private readonly reservations = new Set<{ readonly bytes: number }>();
  private reservedTotal = 0;
  private readonly unlinking = new Map<string, number>();
  private unlinkingTotal = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private overruns: BudgetOverruns = { admissions: 0, maxBytes: 0, lastBytes: 0 };

  constructor(readonly maxSize: number) {}

  /** Bytes reserved by stores not yet in the index. */
  get reserved(): number {
    return this.reservedTotal;
  }

  /** Bytes of files whose rows left the index and that are not unlinked yet. */
  get unlinkingBytes(): number {
    return this.unlinkingTotal;
  }

  /** Everything the ledger counts beside the index. */
  held(): number {
    return this.reservedTotal + this.unlinkingTotal;
  }

  /** Bytes to evict before `size` more may be stored, given the index's usage now. */
  shortfall(indexUsage: number, size: number): number {
    return budgetShortfall({ used: indexUsage + this.unlinkingTotal, reserved: this.reservedTotal, size, maxSize: this.maxSize });
  }

  /**
   * Runs `fn` alone among the exclusive sections: a usage read followed by `reserve`, an index write followed by a
   * release, an index delete preceded by `unlinkStarted`. Sections run in call order.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Reserves `size` bytes given the index's usage read just before (in the same exclusive section). Never refuses:
   * what is over the budget (nothing was left to evict) is returned as `overBy` and counted in the overruns.
   */
  reserve(indexUsage: number, size: number): Reservation {
    const entry = { bytes: size };
    this.reservations.add(entry);
    this.reservedTotal += size;
    const overBy = Math.max(0, indexUsage + this.held() - this.maxSize);
    const o = this.overruns;
    this.overruns = overBy > 0 ? { admissions: o.admissions + 1, maxBytes: Math.max(o.maxBytes, overBy), lastBytes: overBy } : { ...o, lastBytes: 0 };
    return {
      bytes: size,
      overBy,
      release: () => {
        if (!this.reservations.delete(entry)) return;
        this.reservedTotal -= size;
      },
    };
  }

  /** The index rows of `digest` are about to go while its file of `size` bytes stays until unlinked. */
  unlinkStarted(digest: string, size: number): void {
    if (this.unlinking.has(digest)) return;
    this.unlinking.set(digest, size);
    this.unlinkingTotal += size;
  }

  /** The file of `digest` is unlinked (or the index counts it again). */
  unlinkEnded(digest: string): void {
    const size = this.unlinking.get(digest);
    if (size === undefined) return;
    this.unlinking.delete(digest);
    this.unlinkingTotal -= size;
  }

  /** Reservations that went over the budget: how many, by how much at most, and the latest reservation's overrun. */
  budgetOverruns(): BudgetOverruns {
    return this.overruns;
  }
}
