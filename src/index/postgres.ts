// The PostgreSQL index: the same CacheIndex as sqlite.ts, shared by every replica of a cluster.
// Same tables and semantics; numbers that outgrow 32 bits (sizes, ms timestamps) are BIGINT and read
// back as JavaScript numbers. Last-access updates are batched in memory and written in one statement
// every few seconds. Migrations run under an advisory lock, so replicas starting together do not race;
// schema_version records how many ran.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { toUsage, type CacheIndex, type ContentEntry, type IndexUsage, type LinkRow, type ManifestRecord, type ReferenceRow, type TagEntry, type TagRow } from './cache-index.js';
import { errors } from '../errors.js';

/** Schema migrations, applied in order, each in its own transaction. */
export const PG_MIGRATIONS: readonly string[] = [
  `CREATE TABLE content (
     digest      TEXT PRIMARY KEY,
     size        BIGINT NOT NULL,
     media_type  TEXT,
     created_at  BIGINT NOT NULL,
     last_access BIGINT NOT NULL
   );
   CREATE TABLE tags (
     upstream   TEXT NOT NULL,
     repo       TEXT NOT NULL,
     tag        TEXT NOT NULL,
     digest     TEXT NOT NULL,
     fetched_at BIGINT NOT NULL,
     checked_at BIGINT NOT NULL,
     PRIMARY KEY (upstream, repo, tag)
   );
   CREATE INDEX tags_by_digest ON tags (digest);
   CREATE TABLE repo_content (
     upstream TEXT NOT NULL,
     repo     TEXT NOT NULL,
     digest   TEXT NOT NULL,
     PRIMARY KEY (upstream, repo, digest)
   );
   CREATE INDEX repo_content_by_digest ON repo_content (digest);
   CREATE TABLE manifest_refs (
     manifest TEXT NOT NULL,
     child    TEXT NOT NULL,
     PRIMARY KEY (manifest, child)
   );
   CREATE INDEX manifest_refs_by_child ON manifest_refs (child);`,
  // Cluster: who is downloading which blob (src/cluster/leases.ts).
  `CREATE TABLE download_leases (
     digest      TEXT PRIMARY KEY,
     owner       TEXT NOT NULL,
     owner_url   TEXT NOT NULL,
     acquired_at BIGINT NOT NULL,
     expires_at  BIGINT NOT NULL
   );`,
];

/** Advisory lock key for migrations ("relais" in ASCII). */
const MIGRATION_LOCK = 0x72656c616973;

interface ContentRow {
  digest: string;
  size: number;
  media_type: string | null;
  created_at: number;
  last_access: number;
}

const toContent = (r: ContentRow): ContentEntry => ({
  digest: r.digest,
  size: r.size,
  mediaType: r.media_type ?? undefined,
  createdAt: r.created_at,
  lastAccess: r.last_access,
});

/** BIGINT (20) and NUMERIC (1700, what sum() gives) as numbers: relais's values stay below 2^53. */
const types = new pg.TypeOverrides();
types.setTypeParser(20, 'text', Number);
types.setTypeParser(1700, 'text', Number);

/** PostgreSQL error codes worth one more try of the whole transaction. */
const RETRYABLE = new Set(['40001', '40P01']);

export interface PostgresIndexOptions {
  readonly poolSize?: number;
  readonly flushIntervalMs?: number;
  /** Name shown in pg_stat_activity. */
  readonly applicationName?: string;
}

/**
 * A LISTEN on a connection of its own (not from the pool: a pooled connection is shared and recycled). The
 * cluster's invalidations use it (src/cluster/invalidations.ts); it reconnects by listening again.
 */
export interface NotificationChannel {
  /** Settles (resolves) when the connection is gone: an error, the server ending it, close(). */
  readonly lost: Promise<void>;
  /** One round trip on the listening connection (rejects when it is dead or slower than its query timeout). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const CHANNEL_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export class PostgresIndex implements CacheIndex {
  private readonly pendingTouches = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private flushing: Promise<void> = Promise.resolve();

  private constructor(
    readonly pool: pg.Pool,
    private readonly url: string,
    opts: PostgresIndexOptions,
  ) {
    this.timer = setInterval(() => {
      void this.flush().catch(() => undefined);
    }, opts.flushIntervalMs ?? 3000);
    this.timer.unref();
  }

  /** Connects, applies pending migrations, and returns the index. */
  static async open(url: string, opts: PostgresIndexOptions = {}): Promise<PostgresIndex> {
    const pool = new pg.Pool({
      connectionString: url,
      max: opts.poolSize ?? 10,
      application_name: opts.applicationName ?? 'relais',
      connectionTimeoutMillis: 10_000,
      idleTimeoutMillis: 30_000,
      types,
    });
    // An idle client losing its connection (database restart) must not crash the process.
    pool.on('error', () => undefined);
    try {
      await migrate(pool);
    } catch (e) {
      await pool.end().catch(() => undefined);
      throw e;
    }
    return new PostgresIndex(pool, url, opts);
  }

  /** Runs fn in a transaction, retrying on deadlock or serialization failure. */
  async transaction<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => undefined);
        if (attempt < 5 && RETRYABLE.has((e as { code?: string }).code ?? '')) continue;
        throw e;
      } finally {
        client.release();
      }
    }
  }

  /**
   * Listens to `channel` on a dedicated connection; `onMessage` gets each notification's payload. Rejects when
   * it cannot connect or LISTEN. Queries on it (LISTEN, ping) time out after `timeoutMs`.
   */
  async listen(channel: string, onMessage: (payload: string) => void, opts: { applicationName: string; timeoutMs: number }): Promise<NotificationChannel> {
    if (!CHANNEL_NAME.test(channel)) throw new Error(`bad notification channel name ${channel}`);
    const client = new pg.Client({
      connectionString: this.url,
      application_name: opts.applicationName,
      connectionTimeoutMillis: opts.timeoutMs,
      query_timeout: opts.timeoutMs,
      keepAlive: true,
    });
    let markLost!: () => void;
    const lost = new Promise<void>((r) => (markLost = r));
    client.on('error', () => markLost());
    client.on('end', () => markLost());
    client.on('notification', (n) => {
      if (n.channel === channel && n.payload !== undefined) onMessage(n.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${channel}`);
    } catch (e) {
      markLost();
      await client.end().catch(() => undefined);
      throw e;
    }
    return {
      lost,
      ping: async () => {
        await client.query('SELECT 1');
      },
      close: async () => {
        markLost();
        // A connection that died silently may never answer the goodbye: do not wait for it long.
        await Promise.race([client.end().catch(() => undefined), sleep(2000, undefined, { ref: false })]);
      },
    };
  }

  /** Sends a notification to every connection listening to `channel` (through the pool; at most 8000 bytes). */
  async notify(channel: string, payload: string): Promise<void> {
    await this.pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
  }

  /** Readiness: one round trip. */
  async ping(): Promise<boolean> {
    try {
      await this.pool.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined> {
    const r = await this.pool.query<{ digest: string; fetched_at: number; checked_at: number }>(
      'SELECT digest, fetched_at, checked_at FROM tags WHERE upstream = $1 AND repo = $2 AND tag = $3',
      [upstream, repo, tag],
    );
    const row = r.rows[0];
    return row ? { digest: row.digest, fetchedAt: row.fetched_at, checkedAt: row.checked_at } : undefined;
  }

  async markTagChecked(upstream: string, repo: string, tag: string, now: number): Promise<void> {
    await this.pool.query('UPDATE tags SET checked_at = $1 WHERE upstream = $2 AND repo = $3 AND tag = $4', [now, upstream, repo, tag]);
  }

  async deleteTag(upstream: string, repo: string, tag: string): Promise<void> {
    await this.pool.query('DELETE FROM tags WHERE upstream = $1 AND repo = $2 AND tag = $3', [upstream, repo, tag]);
  }

  async listTags(upstream: string, repo: string): Promise<string[]> {
    // COLLATE "C": byte order, like SQLite's, whatever the database's locale.
    const r = await this.pool.query<{ tag: string }>('SELECT tag FROM tags WHERE upstream = $1 AND repo = $2 ORDER BY tag COLLATE "C"', [upstream, repo]);
    return r.rows.map((x) => x.tag);
  }

  async putManifest(m: ManifestRecord): Promise<void> {
    // Sorted, so concurrent transactions lock rows in the same order (no deadlock between replicas).
    const links = [...new Set([m.digest, ...m.references])].sort();
    const refs = [...new Set(m.references)].sort();
    await this.transaction(async (c) => {
      await c.query(
        `INSERT INTO content (digest, size, media_type, created_at, last_access) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (digest) DO UPDATE SET size = excluded.size, media_type = COALESCE(excluded.media_type, content.media_type), last_access = excluded.last_access`,
        [m.digest, m.size, m.mediaType, m.now],
      );
      await c.query(
        `INSERT INTO repo_content (upstream, repo, digest) SELECT $1, $2, d FROM unnest($3::text[]) AS d ORDER BY d
         ON CONFLICT DO NOTHING`,
        [m.upstream, m.repo, links],
      );
      if (refs.length > 0) {
        await c.query(
          `INSERT INTO manifest_refs (manifest, child) SELECT $1, d FROM unnest($2::text[]) AS d ORDER BY d ON CONFLICT DO NOTHING`,
          [m.digest, refs],
        );
      }
      if (m.tag !== undefined) {
        await c.query(
          `INSERT INTO tags (upstream, repo, tag, digest, fetched_at, checked_at) VALUES ($1, $2, $3, $4, $5, $5)
           ON CONFLICT (upstream, repo, tag) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at, checked_at = excluded.checked_at`,
          [m.upstream, m.repo, m.tag, m.digest, m.now],
        );
      }
    });
  }

  async putBlob(digest: string, size: number, now: number): Promise<void> {
    await this.pool.query(
      `INSERT INTO content (digest, size, media_type, created_at, last_access) VALUES ($1, $2, NULL, $3, $3)
       ON CONFLICT (digest) DO UPDATE SET size = excluded.size, last_access = excluded.last_access`,
      [digest, size, now],
    );
  }

  async getContent(digest: string): Promise<ContentEntry | undefined> {
    const r = await this.pool.query<ContentRow>('SELECT digest, size, media_type, created_at, last_access FROM content WHERE digest = $1', [digest]);
    const row = r.rows[0];
    return row ? toContent(row) : undefined;
  }

  async linkContent(upstream: string, repo: string, digests: readonly string[]): Promise<void> {
    if (digests.length === 0) return;
    await this.pool.query(
      'INSERT INTO repo_content (upstream, repo, digest) SELECT $1, $2, d FROM unnest($3::text[]) AS d ORDER BY d ON CONFLICT DO NOTHING',
      [upstream, repo, [...new Set(digests)].sort()],
    );
  }

  async isLinked(upstream: string, repo: string, digest: string): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM repo_content WHERE upstream = $1 AND repo = $2 AND digest = $3', [upstream, repo, digest]);
    return r.rowCount !== null && r.rowCount > 0;
  }

  async usage(): Promise<IndexUsage> {
    const c = await this.pool.query<{ blobs: number; blob_bytes: number | null; manifests: number; manifest_bytes: number | null }>(
      `SELECT count(*) FILTER (WHERE media_type IS NULL) AS blobs, sum(size) FILTER (WHERE media_type IS NULL) AS blob_bytes,
              count(*) FILTER (WHERE media_type IS NOT NULL) AS manifests, sum(size) FILTER (WHERE media_type IS NOT NULL) AS manifest_bytes
       FROM content`,
    );
    const t = await this.pool.query<{ tags: number; repositories: number }>(
      'SELECT count(*) AS tags, count(DISTINCT (upstream, repo)) AS repositories FROM tags',
    );
    return toUsage(c.rows[0], t.rows[0]);
  }

  async listContent(): Promise<ContentEntry[]> {
    const r = await this.pool.query<ContentRow>('SELECT digest, size, media_type, created_at, last_access FROM content');
    return r.rows.map(toContent);
  }

  async listReferences(): Promise<ReferenceRow[]> {
    return (await this.pool.query<ReferenceRow>('SELECT manifest, child FROM manifest_refs')).rows;
  }

  async listAllTags(): Promise<TagRow[]> {
    const r = await this.pool.query<{ upstream: string; repo: string; tag: string; digest: string; fetched_at: number; checked_at: number }>(
      'SELECT upstream, repo, tag, digest, fetched_at, checked_at FROM tags ORDER BY upstream COLLATE "C", repo COLLATE "C", tag COLLATE "C"',
    );
    return r.rows.map((x) => ({ upstream: x.upstream, repo: x.repo, tag: x.tag, digest: x.digest, fetchedAt: x.fetched_at, checkedAt: x.checked_at }));
  }

  async listLinks(): Promise<LinkRow[]> {
    return (await this.pool.query<LinkRow>('SELECT upstream, repo, digest FROM repo_content')).rows;
  }

  async deleteContent(digests: readonly string[]): Promise<void> {
    if (digests.length === 0) return;
    const list = [...new Set(digests)].sort();
    for (const d of list) this.pendingTouches.delete(d);
    await this.transaction(async (c) => {
      await c.query('DELETE FROM content WHERE digest = ANY($1::text[])', [list]);
      await c.query('DELETE FROM manifest_refs WHERE manifest = ANY($1::text[]) OR child = ANY($1::text[])', [list]);
      await c.query('DELETE FROM repo_content WHERE digest = ANY($1::text[])', [list]);
      await c.query('DELETE FROM tags WHERE digest = ANY($1::text[])', [list]);
    });
  }

  touch(digest: string, now: number): void {
    const prev = this.pendingTouches.get(digest);
    if (prev === undefined || prev < now) this.pendingTouches.set(digest, now);
  }

  /** Writes the batched last-access times (one statement; never moves a time backwards). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.pendingTouches.size === 0 || this.closed) return;
      const batch = [...this.pendingTouches].sort((a, b) => (a[0] < b[0] ? -1 : 1));
      this.pendingTouches.clear();
      try {
        await this.pool.query(
          `UPDATE content SET last_access = GREATEST(content.last_access, t.at)
           FROM (SELECT unnest($1::text[]) AS digest, unnest($2::bigint[]) AS at) AS t WHERE content.digest = t.digest`,
          [batch.map((b) => b[0]), batch.map((b) => b[1])],
        );
      } catch (e) {
        // Keep them for the next flush (unless newer touches came in meanwhile).
        for (const [d, at] of batch) if (!this.pendingTouches.has(d)) this.pendingTouches.set(d, at);
        throw e;
      }
    });
    return this.flushing;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    await this.flush().catch(() => undefined);
    this.closed = true;
    await this.pool.end();
  }
}

/** Applies the migrations not yet recorded in schema_version, under an advisory lock. */
export async function migrate(pool: pg.Pool): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
      const r = await client.query<{ version: number }>('SELECT version FROM schema_version');
      let version = r.rows[0]?.version ?? 0;
      if (r.rows.length === 0) await client.query('INSERT INTO schema_version (version) VALUES (0)');
      if (version > PG_MIGRATIONS.length) {
        throw errors.postgresSchemaNewer(version, PG_MIGRATIONS.length);
      }
      for (; version < PG_MIGRATIONS.length; version++) {
        const sql = PG_MIGRATIONS[version];
        if (sql === undefined) continue;
        await client.query('BEGIN');
        try {
          await client.query(sql);
          await client.query('UPDATE schema_version SET version = $1', [version + 1]);
          await client.query('COMMIT');
        } catch (e) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
      }
      return version;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    }
  } finally {
    client.release();
  }
}
