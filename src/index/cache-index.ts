// The cache index: what is cached, under which names, and when it was last used. SQLite for one node
// (sqlite.ts); the interface is async so a shared engine (PostgreSQL) can implement it for a cluster.

export interface TagEntry {
  readonly digest: string;
  /** When the upstream last sent this mapping (ms since epoch). */
  readonly fetchedAt: number;
  /** When relais last confirmed it with the upstream (ms since epoch). */
  readonly checkedAt: number;
}

export interface ContentEntry {
  readonly digest: string;
  readonly size: number;
  /** Set for manifests (their Content-Type), undefined for blobs. */
  readonly mediaType: string | undefined;
  readonly createdAt: number;
  readonly lastAccess: number;
}

export interface ManifestRecord {
  readonly upstream: string;
  readonly repo: string;
  readonly digest: string;
  readonly size: number;
  readonly mediaType: string;
  /** Blobs and child manifests it references (config, layers, index children, subject). */
  readonly references: readonly string[];
  /** Set when the manifest was fetched by tag. */
  readonly tag?: string | undefined;
  readonly now: number;
}

/** Totals of what the index holds (blobs are content without a media type, manifests with one). */
export interface IndexUsage {
  readonly bytes: number;
  readonly blobs: number;
  readonly blobBytes: number;
  readonly manifests: number;
  readonly manifestBytes: number;
  readonly tags: number;
  /** Repositories with at least one tag. */
  readonly repositories: number;
}

/** The totals rows both engines' usage queries return (content table, tags table). */
export interface UsageRows {
  readonly blobs?: number | null;
  readonly blob_bytes?: number | null;
  readonly manifests?: number | null;
  readonly manifest_bytes?: number | null;
  readonly tags?: number | null;
  readonly repositories?: number | null;
}

/** Turns the engines' usage rows into IndexUsage (shared by SQLite and PostgreSQL). */
export function toUsage(c: UsageRows | undefined, t: UsageRows | undefined): IndexUsage {
  const blobBytes = c?.blob_bytes ?? 0;
  const manifestBytes = c?.manifest_bytes ?? 0;
  return {
    bytes: blobBytes + manifestBytes,
    blobs: c?.blobs ?? 0,
    blobBytes,
    manifests: c?.manifests ?? 0,
    manifestBytes,
    tags: t?.tags ?? 0,
    repositories: t?.repositories ?? 0,
  };
}

export interface TagRow extends TagEntry {
  readonly upstream: string;
  readonly repo: string;
  readonly tag: string;
}

/** A manifest's reference to a blob or a child manifest. */
export interface ReferenceRow {
  readonly manifest: string;
  readonly child: string;
}

export interface LinkRow {
  readonly upstream: string;
  readonly repo: string;
  readonly digest: string;
}

export interface CacheIndex {
  getTag(upstream: string, repo: string, tag: string): Promise<TagEntry | undefined>;
  /** Records that the upstream confirmed the tag still points to its digest. */
  markTagChecked(upstream: string, repo: string, tag: string, now: number): Promise<void>;
  deleteTag(upstream: string, repo: string, tag: string): Promise<void>;
  listTags(upstream: string, repo: string): Promise<string[]>;
  /** Stores a manifest's metadata, its references, its repository link and (optionally) its tag, at once. */
  putManifest(m: ManifestRecord): Promise<void>;
  putBlob(digest: string, size: number, now: number): Promise<void>;
  getContent(digest: string): Promise<ContentEntry | undefined>;
  /** Links content to a repository: relais serves a digest under a name only once the upstream showed it there. */
  linkContent(upstream: string, repo: string, digests: readonly string[]): Promise<void>;
  isLinked(upstream: string, repo: string, digest: string): Promise<boolean>;
  // --- Operations (eviction, gc, ls, stats): whole-table reads and one bulk delete. ---
  usage(): Promise<IndexUsage>;
  listContent(): Promise<ContentEntry[]>;
  listReferences(): Promise<ReferenceRow[]>;
  listAllTags(): Promise<TagRow[]>;
  listLinks(): Promise<LinkRow[]>;
  /**
   * Forgets content at once (one transaction): its rows, its references in both directions, its repository
   * links and every tag pointing to it. The files are the caller's to delete, afterwards.
   */
  deleteContent(digests: readonly string[]): Promise<void>;
  /** Notes a use of the content (batched; refreshed on every hit). */
  touch(digest: string, now: number): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}
