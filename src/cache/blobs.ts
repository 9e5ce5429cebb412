// Blobs: one content-addressed store shared by every upstream and repository.
// A hit streams from storage; a miss (or a cached blob whose object storage lost) gets its bytes from the blob
// source: the single download of that digest here (downloads.ts), or, in cluster mode, wherever the cluster's
// download lease says (the cluster wraps the source; blob-source.ts). The parts, one job each:
//   downloads.ts     the downloads table (single-flight) and its events
//   admission.ts     whether a download fits (free space, eviction for room)
//   spool-reader.ts  reading a growing spool or a committed object for a client
//   holds.ts         which blobs clients are being served (never evicted meanwhile)
import type { Readable } from 'node:stream';
import { errors } from '../errors.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { BudgetOverruns, StorageBudgetLedger } from '../policy/storage-budget.js';
import { blobKey, StorageNotFound, type ByteRange, type StorageDriver } from '../storage/driver.js';
import type { CacheResult } from '../types.js';
import { discard, header, type UpstreamClient } from '../upstream/client.js';
import { SpaceAdmission } from './admission.js';
import type { BlobHandle, BlobSource, FileBody, LocalBlobSource } from './blob-source.js';
import { DownloadTable, type BlobObserver, type DownloadProgress } from './downloads.js';
import { BlobHolds } from './holds.js';
import type { UpstreamRoute } from './routing.js';
import { SpoolReader } from './spool-reader.js';

export type { CacheResult } from '../types.js';
export type { BlobHandle, BlobSource, FileBody, LocalBlobSource } from './blob-source.js';
export type { BlobObserver, DownloadProgress } from './downloads.js';

export interface BlobServiceOptions {
  readonly storage: StorageDriver;
  readonly index: CacheIndex;
  readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  readonly attempts: (upstream: string) => number;
  readonly observer?: BlobObserver;
  /** Cluster mode: wraps the core's own source, so that a fetch may be another replica's (app.ts, src/cluster/peers.ts). */
  readonly wrapSource?: ((local: LocalBlobSource) => BlobSource) | undefined;
  /**
   * Evict to free at least this many bytes (when a budget is configured); returns bytes freed. `recheck`, when
   * given, says how many are still needed once the evictions before this one have landed.
   */
  readonly makeRoom?: ((bytes: number, recheck?: () => Promise<number>) => Promise<number>) | undefined;
  /**
   * storage.maxSize: room for a blob (or manifest) is made and reserved in the ledger before it is stored
   * (admission.ts); the evictor records in the same ledger what it has not unlinked yet.
   */
  readonly budget?: { readonly ledger: StorageBudgetLedger; usage(): Promise<number> } | undefined;
}

/** A download in flight in this process, as another replica streams it (src/cluster/peers.ts). */
export interface LocalDownload {
  /** Known once the upstream's headers arrived (undefined: the upstream sent no length). */
  readonly size: number | undefined;
  /** Waits for the upstream's headers; throws if the download failed. */
  headers(): Promise<void>;
  /** The bytes as they arrive (the last one once verified). */
  open(range?: ByteRange): Readable;
}

/** How long a blob handle nobody opened keeps its digest from eviction. */
const UNOPENED_HOLD_MS = 30_000;

export class BlobService {
  private readonly downloads: DownloadTable;
  private readonly holds = new BlobHolds();
  private readonly reader: SpoolReader;
  private readonly source: BlobSource;
  private readonly admission: SpaceAdmission;

  constructor(private readonly opts: BlobServiceOptions) {
    const admission = new SpaceAdmission({
      storage: opts.storage,
      pending: (d) => this.downloads.pendingBytes(d),
      makeRoom: opts.makeRoom,
      budget: opts.budget,
      onOverrun: (digest, bytes) => opts.observer?.event?.('admitted over storage.maxSize: what is left to evict is in use (being downloaded or served) or pinned', { digest, bytes }),
    });
    this.admission = admission;
    this.downloads = new DownloadTable({
      storage: opts.storage,
      index: opts.index,
      upstream: (name) => this.upstream(name),
      attempts: opts.attempts,
      admit: (digest, size) => admission.admit(digest, size),
      indexed: (reservation, put) => admission.indexed(reservation, put),
      observer: opts.observer,
    });
    this.reader = new SpoolReader(opts.storage);
    this.source = opts.wrapSource?.(this.downloads) ?? this.downloads;
  }

  /** Download outcomes since start (tests, status): resumes, digest mismatches, failures, bytes received from upstreams. */
  get stats(): Readonly<DownloadTable['stats']> {
    return this.downloads.stats;
  }

  private upstream(name: string): UpstreamClient {
    const u = this.opts.upstreams.get(name);
    if (!u) throw errors.internal(`upstream ${name} is not configured`);
    return u;
  }

  /** Checks that the upstream serves this digest under this repository before relais does. */
  private async ensureLinked(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<void> {
    if (await this.opts.index.isLinked(route.upstream, route.repo, digest)) return;
    const res = await this.upstream(route.upstream).send({ method: 'HEAD', repo: route.repo, credential: route.credential, path: `/v2/${route.repo}/blobs/${digest}`, signal });
    discard(res.body);
    if (res.status === 200) {
      await this.opts.index.linkContent(route.upstream, route.repo, [digest]);
      return;
    }
    if (res.status === 404) throw errors.blobUnknown(route.repo, digest);
    throw errors.upstreamUnexpected(route.upstream, res.status, 'to HEAD blob');
  }

  /** Metadata only: cached size, an in-flight download's size, or the upstream's HEAD (nothing is fetched). */
  async head(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<{ size: number; result: CacheResult }> {
    const cached = await this.opts.index.getContent(digest);
    if (cached) {
      await this.ensureLinked(route, digest, signal);
      return { size: cached.size, result: 'hit' };
    }
    const res = await this.upstream(route.upstream).send({ method: 'HEAD', repo: route.repo, credential: route.credential, path: `/v2/${route.repo}/blobs/${digest}`, signal });
    discard(res.body);
    if (res.status === 404) throw errors.blobUnknown(route.repo, digest);
    if (res.status !== 200) throw errors.upstreamUnexpected(route.upstream, res.status, 'to HEAD blob');
    const len = Number(header(res.headers, 'content-length'));
    if (!Number.isSafeInteger(len) || len < 0) throw errors.upstreamNoContentLength(route.upstream);
    await this.opts.index.linkContent(route.upstream, route.repo, [digest]);
    return { size: len, result: 'miss' };
  }

  /**
   * A blob for a client. While the client is served (from the lookup until its stream closes) the digest
   * is held (see isBusy()), and eviction leaves it alone.
   */
  async get(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<BlobHandle> {
    const release = this.holds.hold(digest);
    let handle: BlobHandle;
    try {
      handle = await this.lookup(route, digest, signal);
    } catch (e) {
      release();
      throw e;
    }
    // A handle that is never opened (the request failed before streaming) lets go after a while.
    const unopened = setTimeout(release, UNOPENED_HOLD_MS);
    unopened.unref();
    return {
      ...handle,
      open: async (range, sig) => {
        clearTimeout(unopened);
        let stream: Readable;
        try {
          stream = await handle.open(range, sig);
        } catch (e) {
          release();
          throw e;
        }
        stream.once('close', release);
        return stream;
      },
      openFile: async (range) => {
        clearTimeout(unopened);
        let body: FileBody | undefined;
        try {
          body = await handle.openFile(range);
        } catch (e) {
          release();
          throw e;
        }
        if (!body) return undefined;
        const inner = body;
        return {
          ...inner,
          close: async () => {
            release();
            await inner.close();
          },
        };
      },
    };
  }

  private async lookup(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<BlobHandle> {
    const commitsAtLookup = this.downloads.commits(digest);
    const cached = await this.opts.index.getContent(digest);
    if (!cached) return this.fetch(route, digest, signal);
    await this.ensureLinked(route, digest, signal);
    this.opts.index.touch(digest, Date.now());
    // The index says cached but the object is gone (deleted by hand, lost with a disk, evicted by another
    // replica): fetch it again through the blob source, as a miss would (in a cluster: under the download
    // lease), instead of answering 404 until `relais gc` reconciles the index.
    const refetch = (): Promise<BlobHandle> => {
      this.opts.observer?.event?.('cached blob missing from storage, fetching it again', { digest, upstream: route.upstream, repo: route.repo });
      return this.fetch(route, digest, signal);
    };
    // The object missing: unless a download of the digest committed since this lookup began (a concurrent
    // client's refetch that ended between this read's failure and now: the object is back, read it again),
    // fetch it. The count and the downloads table change in one step, so no refetch ends unseen in between.
    const orRefetch = async <T>(read: () => Promise<T>, again: (h: BlobHandle) => Promise<T>): Promise<T> => {
      try {
        return await read();
      } catch (e) {
        if (!(e instanceof StorageNotFound)) throw e;
      }
      if (this.downloads.commits(digest) !== commitsAtLookup) {
        try {
          return await read();
        } catch (e) {
          if (!(e instanceof StorageNotFound)) throw e;
        }
      }
      return again(await refetch());
    };
    const key = blobKey(digest);
    return {
      digest,
      size: cached.size,
      result: 'hit',
      open: (range, sig) => orRefetch(() => this.opts.storage.reader(key, range, sig), (h) => h.open(range, sig)),
      openFile: (range) => orRefetch(() => this.reader.committedFile(digest, cached.size, range), (h) => h.openFile(range)),
    };
  }

  /** A blob the cache does not hold (or lost), from the blob source. */
  private async fetch(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<BlobHandle> {
    const fetched = await this.source.fetch(route, digest, signal);
    if (fetched.kind === 'stored') return this.lookup(route, digest, signal);
    if (fetched.kind === 'remote') {
      await this.ensureLinked(route, digest, signal);
      return fetched.handle;
    }
    const dl = fetched.download;
    // The download's own GET proved the link for its upstream and repository; others must ask.
    if (!fetched.started && (dl.upstreamName !== route.upstream || dl.repo !== route.repo)) await this.ensureLinked(route, digest, signal);
    await dl.headers();
    return {
      digest,
      size: dl.size,
      result: fetched.started ? 'miss' : 'join',
      open: (range) => Promise.resolve(this.reader.follow(dl, range)),
      openFile: (range) => this.reader.followFile(dl, range),
    };
  }

  /** The download of this digest in flight in this process, if any (another replica streams it). */
  localDownload(digest: string): LocalDownload | undefined {
    const dl = this.downloads.get(digest);
    if (!dl) return undefined;
    const reader = this.reader;
    return {
      get size() {
        return dl.size;
      },
      headers: () => dl.headers(),
      open: (range) => reader.follow(dl, range),
    };
  }

  /** Whether eviction must leave the digest alone now: downloading, or being served to a client. */
  isBusy(digest: string): boolean {
    return this.downloads.downloading(digest) || this.holds.has(digest);
  }

  /** Every digest isBusy() now. */
  busyDigests(): Set<string> {
    const busy = new Set(this.holds.digests());
    for (const d of this.downloads.values()) busy.add(d.digest);
    return busy;
  }

  /**
   * Admissions over storage.maxSize (what was left could not be evicted): how many, the largest overrun and the
   * latest admission's (0 if it fitted), every store in progress counted. The bytes on disk never exceed maxSize
   * plus the latest admission's overrun (src/policy/storage-budget.ts).
   */
  budgetOverruns(): BudgetOverruns {
    return this.opts.budget?.ledger.budgetOverruns() ?? { admissions: 0, maxBytes: 0, lastBytes: 0 };
  }

  /**
   * Stores something of known size that is not a download (a manifest) within the budget: room made and reserved
   * before `write`, released once `index` has recorded it. Never refuses (a manifest is small); an overrun is reported.
   */
  async storeWithinBudget(digest: string, size: number, write: () => Promise<void>, index: () => Promise<void>): Promise<void> {
    const reserved = await this.admission.reserveInBudget(digest, size);
    try {
      await write();
      await this.admission.indexed(reserved?.reservation, index);
    } finally {
      reserved?.reservation.release();
    }
  }

  /** The downloads in flight (status page, metrics). */
  downloadsInFlight(): IterableIterator<DownloadProgress> {
    return this.downloads.values();
  }

  /** How many digests clients are being served now. */
  servingCount(): number {
    return this.holds.size;
  }

  /**
   * Resolves once every download in flight has ended (committed or failed). A client has its blob as soon as
   * the digest verified, a moment before the cache has stored it: wait here before looking at the storage.
   */
  settle(): Promise<void> {
    return this.downloads.settle();
  }

  /** Cancels every download (shutdown). Their spool files are removed. */
  cancelAll(): Promise<void> {
    return this.downloads.cancelAll();
  }
}
