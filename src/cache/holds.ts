// Which blobs clients are being served now, with how many clients each: eviction leaves them alone.
export class BlobHolds {
  private readonly counts = new Map<string, number>();

  /** Counts a client on a digest; the returned function (idempotent) lets go. */
  hold(digest: string): () => void {
    this.counts.set(digest, (this.counts.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.counts.get(digest) ?? 1) - 1;
      if (left <= 0) this.counts.delete(digest);
      else this.counts.set(digest, left);
    };
  }

  has(digest: string): boolean {
    return this.counts.has(digest);
  }

  digests(): IterableIterator<string> {
    return this.counts.keys();
  }

  /** Digests held now. */
  get size(): number {
    return this.counts.size;
  }
}
