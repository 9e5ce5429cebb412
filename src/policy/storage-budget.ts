// The storage budget (storage.maxSize) as a pure function: how much must be evicted before a blob is stored.

/** What the storage budget (storage.maxSize) must hold when a blob of `size` bytes is about to be stored. */
export interface BudgetCheck {
  /** Bytes the index counts as cached now. */
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
