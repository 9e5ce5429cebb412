// The downloads table: the single download of each digest in this process (single-flight), with the events
// the rest of relais hears about them (started, ended, bytes fetched, resumes, mismatches, failures). It is
// the core's own blob source: a miss starts a download here or joins the one in flight.
import type { CacheIndex } from '../index/cache-index.js';
import type { Reservation } from '../policy/storage-budget.js';
import { blobKey, type StorageDriver } from '../storage/driver.js';
import type { UpstreamClient } from '../upstream/client.js';
import type { Fetched, LocalBlobSource } from './blob-source.js';
import { BlobDownload } from './download.js';
import type { UpstreamRoute } from './routing.js';

export interface BlobObserver {
  downloadStarted?(d: BlobDownload): void;
  downloadEnded?(d: BlobDownload): void;
  bytesFetched?(upstream: string, bytes: number): void;
  event?(event: string, detail: Record<string, unknown>): void;
}

/** What others may read of a download in flight (status page, metrics). */
export type DownloadProgress = Pick<BlobDownload, 'digest' | 'upstreamName' | 'repo' | 'written' | 'size' | 'startedAt' | 'state' | 'error'>;

export interface DownloadTableOptions {
  readonly storage: StorageDriver;
  readonly index: CacheIndex;
  readonly upstream: (name: string) => UpstreamClient;
  readonly attempts: (upstream: string) => number;
  /**
   * Once the size is known, before the first byte: throws (STORAGE_FULL) to refuse the download; with a budget,
   * returns the room reserved for it (released once the index counts the blob, or when the download failed).
   */
  readonly admit: (digest: string, size: number) => Promise<Reservation | undefined>;
  /** Writes the index row of a reserved blob and releases its reservation, with no usage read in between. */
  readonly indexed: (reservation: Reservation | undefined, put: () => Promise<void>) => Promise<void>;
  readonly observer?: BlobObserver | undefined;
}

/** Digests whose commit count the table keeps (a count forgotten reads 0: a lookup then looks at storage once more). */
const COMMITS_KEPT = 4096;

export class DownloadTable implements LocalBlobSource {
  private readonly table = new Map<string, BlobDownload>();
  /** Downloads committed per digest (the latest COMMITS_KEPT digests): a lookup compares before and after. */
  private readonly committed = new Map<string, number>();
  /** Download outcomes since start (tests, status): resumes, digest mismatches, failures, bytes received from upstreams. */
  readonly stats = { resumes: 0, digestMismatches: 0, failures: 0, upstreamBytes: 0 };

  constructor(private readonly opts: DownloadTableOptions) {}

  get(digest: string): BlobDownload | undefined {
    return this.table.get(digest);
  }

  downloading(digest: string): boolean {
    return this.table.has(digest);
  }

  /**
   * How many downloads of the digest this process has committed (0 for one not among the latest). It changes in
   * the same step that takes a committed download out of the table, so a caller that finds the digest neither
   * in the table nor changed here knows no download of it ended since it last looked.
   */
  commits(digest: string): number {
    return this.committed.get(digest) ?? 0;
  }

  /** Downloads in flight now. */
  get size(): number {
    return this.table.size;
  }

  values(): IterableIterator<BlobDownload> {
    return this.table.values();
  }

  /** Joins the download of the digest in flight here, or starts one. */
  fetch(route: UpstreamRoute, digest: string): Promise<Fetched> {
    const dl = this.table.get(digest);
    return Promise.resolve(dl ? { kind: 'local', download: dl, started: false } : { kind: 'local', download: this.start(route, digest), started: true });
  }

  /** Bytes the downloads in flight (all but `digest`'s) still have to write. */
  pendingBytes(digest: string): number {
    let pending = 0;
    for (const d of this.table.values()) if (d.digest !== digest && d.size !== undefined) pending += Math.max(0, d.size - d.written);
    return pending;
  }

  private start(route: UpstreamRoute, digest: string): BlobDownload {
    const upstream = this.opts.upstream(route.upstream);
    const obs = this.opts.observer;
    const { storage, index } = this.opts;
    // The room admission reserved in the budget (storage.maxSize): held until the index counts the blob.
    let reservation: Reservation | undefined;
    const dl = new BlobDownload({
      digest,
      upstream,
      repo: route.repo,
      credential: route.credential,
      // The spool is the storage driver's writer for the blob's key: committed once the digest is verified.
      writer: () => storage.writer(blobKey(digest)),
      attempts: this.opts.attempts(route.upstream),
      commit: async (size) => {
        try {
          const now = Date.now();
          await this.opts.indexed(reservation, () => index.putBlob(digest, size, now));
          await index.linkContent(route.upstream, route.repo, [digest]);
        } catch (e) {
          // An unindexed file is never served and never evicted: do not leave it behind (e.g. SQLITE_FULL).
          await storage.delete(blobKey(digest)).catch(() => undefined);
          throw e;
        }
      },
      reserve: async (size) => {
        reservation = await this.opts.admit(digest, size);
      },
      onProgress: (n) => obs?.bytesFetched?.(route.upstream, n),
      onEvent: (event, detail) => {
        if (event === 'resume') this.stats.resumes++;
        else if (event === 'digest_mismatch') this.stats.digestMismatches++;
        else this.stats.failures++;
        obs?.event?.(event, detail);
      },
    });
    this.table.set(digest, dl);
    obs?.downloadStarted?.(dl);
    void dl.done
      .catch(() => undefined)
      .finally(() => {
        // Indexed, or failed with its spool removed: nothing of it is on disk outside the index now.
        reservation?.release();
        this.stats.upstreamBytes += dl.fetched;
        if (this.table.get(digest) === dl) this.table.delete(digest);
        if (dl.state === 'committed') {
          const n = this.commits(digest) + 1;
          this.committed.delete(digest);
          this.committed.set(digest, n);
          if (this.committed.size > COMMITS_KEPT) {
            const oldest = this.committed.keys().next();
            if (oldest.done !== true) this.committed.delete(oldest.value);
          }
        }
        obs?.downloadEnded?.(dl);
      });
    return dl;
  }

  /** Resolves once every download in flight has ended (committed or failed). */
  async settle(): Promise<void> {
    while (this.table.size > 0) await Promise.allSettled([...this.table.values()].map((d) => d.done));
  }

  /** Cancels every download (shutdown). Their spool files are removed. */
  async cancelAll(): Promise<void> {
    const all = [...this.table.values()];
    for (const d of all) d.cancel();
    await Promise.allSettled(all.map((d) => d.done));
  }
}
