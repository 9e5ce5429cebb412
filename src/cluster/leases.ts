// Cluster leases in PostgreSQL: a row per blob being downloaded, naming the replica that fetches it and
// where the others can stream it from. A lease expires unless its holder renews it (a heartbeat every
// third of the TTL), so a replica that dies mid-download releases the work after at most one TTL.
// Times come from the database's clock, never from the replicas' (no clock skew between them).
// The same table holds cluster-wide jobs (eviction, gc) under names that are not digests ("job:evict").
import type pg from 'pg';

export interface LeaseHolder {
  readonly owner: string;
  readonly ownerUrl: string;
  /** ms since epoch, database clock. */
  readonly expiresAt: number;
}

export type AcquireResult = { readonly acquired: true } | { readonly acquired: false; readonly holder: LeaseHolder };

export interface LeaseOptions {
  /** This replica's identity: unique per process start. */
  readonly owner: string;
  /** Where the other replicas reach this one (may be set once the server listens: setOwnerUrl). */
  ownerUrl: string;
  readonly ttlMs: number;
  /** Told when a heartbeat finds a lease gone (taken over after a long pause). */
  readonly onLost?: (name: string) => void;
  readonly onError?: (e: unknown) => void;
}

const NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

export class LeaseManager {
  /** Leases this replica holds. */
  readonly held = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    readonly opts: LeaseOptions,
  ) {
    this.timer = setInterval(() => {
      void this.renew().catch((e: unknown) => opts.onError?.(e));
    }, Math.max(200, Math.floor(opts.ttlMs / 3)));
    this.timer.unref();
  }

  /** Takes the lease when it is free, expired, or already ours; otherwise says who holds it. */
  async tryAcquire(name: string): Promise<AcquireResult> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await this.pool.query(
        `INSERT INTO download_leases AS l (digest, owner, owner_url, acquired_at, expires_at)
         SELECT $1, $2, $3, n.ms, n.ms + $4 FROM (SELECT ${NOW_MS} AS ms) AS n
         ON CONFLICT (digest) DO UPDATE SET owner = excluded.owner, owner_url = excluded.owner_url,
           acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
         WHERE l.expires_at < excluded.acquired_at OR l.owner = excluded.owner
         RETURNING owner`,
        [name, this.opts.owner, this.opts.ownerUrl, this.opts.ttlMs],
      );
      if (r.rowCount === 1) {
        this.held.add(name);
        return { acquired: true };
      }
      const h = await this.pool.query<{ owner: string; owner_url: string; expires_at: number }>(
        'SELECT owner, owner_url, expires_at FROM download_leases WHERE digest = $1',
        [name],
      );
      const row = h.rows[0];
      if (row) return { acquired: false, holder: { owner: row.owner, ownerUrl: row.owner_url, expiresAt: row.expires_at } };
      // Released between the two statements: try again.
    }
    throw new Error(`lease ${name}: could not acquire nor read its holder`);
  }

  /** Takes over a lease from a given holder (one known to be gone), only if it still holds it. */
  async takeOver(name: string, from: string): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE download_leases SET owner = $2, owner_url = $3, acquired_at = ${NOW_MS}, expires_at = ${NOW_MS} + $4
       WHERE digest = $1 AND owner = $5`,
      [name, this.opts.owner, this.opts.ownerUrl, this.opts.ttlMs, from],
    );
    if (r.rowCount === 1) this.held.add(name);
    return r.rowCount === 1;
  }

  async release(name: string): Promise<void> {
    this.held.delete(name);
    await this.pool.query('DELETE FROM download_leases WHERE digest = $1 AND owner = $2', [name, this.opts.owner]);
  }

  /** Extends every lease held (one statement); leases found taken over are dropped and reported. */
  async renew(): Promise<void> {
    if (this.closed || this.held.size === 0) return;
    const names = [...this.held];
    const r = await this.pool.query<{ digest: string }>(
      `UPDATE download_leases SET expires_at = ${NOW_MS} + $3 WHERE owner = $1 AND digest = ANY($2::text[]) RETURNING digest`,
      [this.opts.owner, names, this.opts.ttlMs],
    );
    const renewed = new Set(r.rows.map((x) => x.digest));
    for (const n of names) {
      if (!renewed.has(n) && this.held.has(n)) {
        this.held.delete(n);
        this.opts.onLost?.(n);
      }
    }
  }

  /** Stops renewing and releases every lease held (graceful stop). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    const names = [...this.held];
    this.held.clear();
    if (names.length > 0) {
      await this.pool
        .query('DELETE FROM download_leases WHERE owner = $1 AND digest = ANY($2::text[])', [this.opts.owner, names])
        .catch((e: unknown) => this.opts.onError?.(e));
    }
  }

  /** Stops renewing without releasing anything (what a crash looks like to the others; for tests). */
  abandon(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.held.clear();
  }
}
