// The SQLite index (better-sqlite3, WAL). Statements are prepared once; last-access updates are batched
// in memory and written in one transaction every few seconds, so a cache hit costs no disk write.
import Database from 'better-sqlite3';
import { toUsage, type CacheIndex, type ContentEntry, type IndexUsage, type LinkRow, type ManifestRecord, type ReferenceRow, type TagEntry, type TagRow } from './cache-index.js';

/** Schema migrations, applied in order; PRAGMA user_version records how many ran. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE content (
     digest      TEXT PRIMARY KEY,
     size        INTEGER NOT NULL,
     media_type  TEXT,
     created_at  INTEGER NOT NULL,
     last_access INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE tags (
     upstream   TEXT NOT NULL,
     repo       TEXT NOT NULL,
     tag        TEXT NOT NULL,
     digest     TEXT NOT NULL,
     fetched_at INTEGER NOT NULL,
     checked_at INTEGER NOT NULL,
     PRIMARY KEY (upstream, repo, tag)
   ) WITHOUT ROWID;
   CREATE INDEX tags_by_digest ON tags (digest);
   CREATE TABLE repo_content (
     upstream TEXT NOT NULL,
     repo     TEXT NOT NULL,
     digest   TEXT NOT NULL,
     PRIMARY KEY (upstream, repo, digest)
   ) WITHOUT ROWID;
   CREATE INDEX repo_content_by_digest ON repo_content (digest);
   CREATE TABLE manifest_refs (
     manifest TEXT NOT NULL,
     child    TEXT NOT NULL,
     PRIMARY KEY (manifest, child)
   ) WITHOUT ROWID;
   CREATE INDEX manifest_refs_by_child ON manifest_refs (child);`,
];

interface ContentRow {
  digest: string;
  size: number;
  media_type: string | null;
  created_at: number;
  last_access: number;
}

export class SqliteIndex implements CacheIndex {
  readonly db: Database.Database;
  private readonly pendingTouches = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly stmts;

  constructor(file: string, opts: { flushIntervalMs?: number } = {}) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    const db = this.db;
    this.stmts = {
      getTag: db.prepare<[string, string, string], { digest: string; fetched_at: number; checked_at: number }>(
        'SELECT digest, fetched_at, checked_at FROM tags WHERE upstream = ? AND repo = ? AND tag = ?',
      ),
      upsertTag: db.prepare(
        `INSERT INTO tags (upstream, repo, tag, digest, fetched_at, checked_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (upstream, repo, tag) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at, checked_at = excluded.checked_at`,
      ),
      checkTag: db.prepare('UPDATE tags SET checked_at = ? WHERE upstream = ? AND repo = ? AND tag = ?'),
      deleteTag: db.prepare('DELETE FROM tags WHERE upstream = ? AND repo = ? AND tag = ?'),
      listTags: db.prepare<[string, string], { tag: string }>('SELECT tag FROM tags WHERE upstream = ? AND repo = ? ORDER BY tag'),
      upsertContent: db.prepare(
        `INSERT INTO content (digest, size, media_type, created_at, last_access) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET size = excluded.size, media_type = COALESCE(excluded.media_type, content.media_type), last_access = excluded.last_access`,
      ),
      getContent: db.prepare<[string], ContentRow>('SELECT digest, size, media_type, created_at, last_access FROM content WHERE digest = ?'),
      link: db.prepare('INSERT OR IGNORE INTO repo_content (upstream, repo, digest) VALUES (?, ?, ?)'),
      isLinked: db.prepare<[string, string, string], { one: number }>('SELECT 1 AS one FROM repo_content WHERE upstream = ? AND repo = ? AND digest = ?'),
      addRef: db.prepare('INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)'),
      touch: db.prepare('UPDATE content SET last_access = max(last_access, ?) WHERE digest = ?'),
      usageContent: db.prepare<[], { blobs: number; blob_bytes: number | null; manifests: number; manifest_bytes: number | null }>(
        `SELECT count(*) FILTER (WHERE media_type IS NULL) AS blobs, sum(size) FILTER (WHERE media_type IS NULL) AS blob_bytes,
                count(*) FILTER (WHERE media_type IS NOT NULL) AS manifests, sum(size) FILTER (WHERE media_type IS NOT NULL) AS manifest_bytes
         FROM content`,
      ),
      usageTags: db.prepare<[], { tags: number; repositories: number }>(
        "SELECT count(*) AS tags, count(DISTINCT upstream || '/' || repo) AS repositories FROM tags",
      ),
      allContent: db.prepare<[], ContentRow>('SELECT digest, size, media_type, created_at, last_access FROM content'),
      allRefs: db.prepare<[], ReferenceRow>('SELECT manifest, child FROM manifest_refs'),
      allTags: db.prepare<[], { upstream: string; repo: string; tag: string; digest: string; fetched_at: number; checked_at: number }>(
        'SELECT upstream, repo, tag, digest, fetched_at, checked_at FROM tags ORDER BY upstream, repo, tag',
      ),
      allLinks: db.prepare<[], LinkRow>('SELECT upstream, repo, digest FROM repo_content'),
      delContent: db.prepare('DELETE FROM content WHERE digest = ?'),
      delRefsOf: db.prepare('DELETE FROM manifest_refs WHERE manifest = ?'),
      delRefsTo: db.prepare('DELETE FROM manifest_refs WHERE child = ?'),
      delLinks: db.prepare('DELETE FROM repo_content WHERE digest = ?'),
      delTagsTo: db.prepare('DELETE FROM tags WHERE digest = ?'),
    };
    this.timer = setInterval(() => this.flushSync(), opts.flushIntervalMs ?? 5000);
    this.timer.unref();
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    for (let i = version; i < MIGRATIONS.length; i++) {
      const sql = MIGRATIONS[i];
      if (sql === undefined) continue;
      this.db.transaction(() => {
        this.db.exec(sql);
        this.db.pragma(`user_version = ${i + 1}`);
      })();
    }
  }

  getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined> {
    const row = this.stmts.getTag.get(upstream, repo, tag);
    return Promise.resolve(row ? { digest: row.digest, fetchedAt: row.fetched_at, checkedAt: row.checked_at } : undefined);
  }

  markTagChecked(upstream: string, repo: string, tag: string, now: number): Promise<void> {
    this.stmts.checkTag.run(now, upstream, repo, tag);
    return Promise.resolve();
  }

  deleteTag(upstream: string, repo: string, tag: string): Promise<void> {
    this.stmts.deleteTag.run(upstream, repo, tag);
    return Promise.resolve();
  }

  listTags(upstream: string, repo: string): Promise<string[]> {
    return Promise.resolve(this.stmts.listTags.all(upstream, repo).map((r) => r.tag));
  }

  putManifest(m: ManifestRecord): Promise<void> {
    this.db.transaction(() => {
      this.stmts.upsertContent.run(m.digest, m.size, m.mediaType, m.now, m.now);
      this.stmts.link.run(m.upstream, m.repo, m.digest);
      for (const child of m.references) {
        this.stmts.addRef.run(m.digest, child);
        this.stmts.link.run(m.upstream, m.repo, child);
      }
      if (m.tag !== undefined) this.stmts.upsertTag.run(m.upstream, m.repo, m.tag, m.digest, m.now, m.now);
    })();
    return Promise.resolve();
  }

  putBlob(digest: string, size: number, now: number): Promise<void> {
    this.stmts.upsertContent.run(digest, size, null, now, now);
    return Promise.resolve();
  }

  getContent(digest: string): Promise<ContentEntry | undefined> {
    const r = this.stmts.getContent.get(digest);
    return Promise.resolve(
      r ? { digest: r.digest, size: r.size, mediaType: r.media_type ?? undefined, createdAt: r.created_at, lastAccess: r.last_access } : undefined,
    );
  }

  linkContent(upstream: string, repo: string, digests: readonly string[]): Promise<void> {
    this.db.transaction(() => {
      for (const d of digests) this.stmts.link.run(upstream, repo, d);
    })();
    return Promise.resolve();
  }

  isLinked(upstream: string, repo: string, digest: string): Promise<boolean> {
    return Promise.resolve(this.stmts.isLinked.get(upstream, repo, digest) !== undefined);
  }

  usage(): Promise<IndexUsage> {
    return Promise.resolve(toUsage(this.stmts.usageContent.get(), this.stmts.usageTags.get()));
  }

  listContent(): Promise<ContentEntry[]> {
    return Promise.resolve(
      this.stmts.allContent.all().map((r) => ({ digest: r.digest, size: r.size, mediaType: r.media_type ?? undefined, createdAt: r.created_at, lastAccess: r.last_access })),
    );
  }

  listReferences(): Promise<ReferenceRow[]> {
    return Promise.resolve(this.stmts.allRefs.all());
  }

  listAllTags(): Promise<TagRow[]> {
    return Promise.resolve(
      this.stmts.allTags.all().map((r) => ({ upstream: r.upstream, repo: r.repo, tag: r.tag, digest: r.digest, fetchedAt: r.fetched_at, checkedAt: r.checked_at })),
    );
  }

  listLinks(): Promise<LinkRow[]> {
    return Promise.resolve(this.stmts.allLinks.all());
  }

  deleteContent(digests: readonly string[]): Promise<void> {
    this.db.transaction(() => {
      for (const d of digests) {
        this.stmts.delContent.run(d);
        this.stmts.delRefsOf.run(d);
        this.stmts.delRefsTo.run(d);
        this.stmts.delLinks.run(d);
        this.stmts.delTagsTo.run(d);
        this.pendingTouches.delete(d);
      }
    })();
    return Promise.resolve();
  }

  touch(digest: string, now: number): void {
    this.pendingTouches.set(digest, now);
  }

  private flushSync(): void {
    if (this.pendingTouches.size === 0 || !this.db.open) return;
    const batch = [...this.pendingTouches];
    this.pendingTouches.clear();
    try {
      this.db.transaction(() => {
        for (const [digest, at] of batch) this.stmts.touch.run(at, digest);
      })();
    } catch {
      // A full disk (SQLITE_FULL) must not take relais down from a timer: last-access times are advisory,
      // keep them for the next flush (newer touches win).
      for (const [digest, at] of batch) if (!this.pendingTouches.has(digest)) this.pendingTouches.set(digest, at);
    }
  }

  flush(): Promise<void> {
    this.flushSync();
    return Promise.resolve();
  }

  close(): Promise<void> {
    clearInterval(this.timer);
    if (this.db.open) {
      this.flushSync();
      this.db.close();
    }
    return Promise.resolve();
  }
}
