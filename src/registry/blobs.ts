// Blobs: one content-addressed store shared by every upstream and repository.
// A hit streams from storage; a miss starts (or joins) the single download of that digest.
import { open, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { errors, RelaisError } from '../errors.js';
import type { PeerDownloads } from '../cluster/peers.js';
import type { CacheIndex } from '../index/index.js';
import { blobKey, StorageNotFound, type ByteRange, type StorageDriver } from '../storage/driver.js';
import { discard, header, type UpstreamClient } from '../upstream/client.js';
import { BlobDownload, storageFullError } from './download.js';
import type { UpstreamRoute } from './routing.js';

export type CacheResult = 'hit' | 'miss' | 'join' | 'stale' | 'revalidated' | 'negative';

export interface BlobHandle {
  readonly digest: string;
  /** Undefined only while an upstream that sent no length is still streaming. */
  readonly size: number | undefined;
  readonly result: CacheResult;
  /** The bytes, or a range of them; the stream errors if the download fails. */
  open(range?: ByteRange, signal?: AbortSignal): Promise<Readable>;
  /**
   * The same bytes as a local file, for sendfile(2) (src/http/sendfile.ts); undefined when they are not in one
   * (object storage, an upstream that sent no length): use open() then.
   */
  openFile(range?: ByteRange): Promise<FileBody | undefined>;
}

/** Bytes of a local file to send: a committed blob, or a download's spool that is still growing. */
export interface FileBody {
  readonly fd: number;
  /** First byte to send. */
  readonly start: number;
  /** One past the last byte to send. */
  readonly end: number;
  /**
   * How far (exclusive) bytes from `pos` may be sent now: resolves once that is beyond `pos`; rejects when the
   * bytes will never come (the download failed) or the signal aborted.
   */
  ready(pos: number, signal: AbortSignal): Promise<number>;
  /** Closes the file and lets go of the blob (it may be evicted again). */
  close(): Promise<void>;
}

export interface BlobServiceOptions {
  readonly storage: StorageDriver;
  readonly index: CacheIndex;
  readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  /** Local directory for spool files (same filesystem as storage for the filesystem driver). */
  readonly spoolDir: string;
  readonly attempts: (upstream: string) => number;
  readonly observer?: BlobObserver;
  /** Cluster mode: on a miss, the download may be another replica's (src/cluster/peers.ts). */
  readonly peers?: PeerDownloads | undefined;
  /** Disk full: evict to free at least this many bytes (when a budget is configured); returns bytes freed. */
  readonly makeRoom?: ((bytes: number) => Promise<number>) | undefined;
}

export interface BlobObserver {
  downloadStarted?(d: BlobDownload): void;
  downloadEnded?(d: BlobDownload): void;
  bytesFetched?(upstream: string, bytes: number): void;
  event?(event: string, detail: Record<string, unknown>): void;
}

/** How long a blob handle nobody opened keeps its digest from eviction. */
const UNOPENED_HOLD_MS = 30_000;

/** How much a follower reads from the spool at a time (also its stream's buffer: memory per client). */
const FOLLOW_CHUNK = 256 * 1024;
/** Space kept free besides the blobs (index, WAL, manifests). */
const SPACE_MARGIN = 1024 * 1024;

export class BlobService {
  /** Digests being served to clients, with how many: never evicted (see get()). */
  readonly serving = new Map<string, number>();
  /** Downloads in flight, by digest: the single-flight table. */
  readonly inflight = new Map<string, BlobDownload>();
  /** Download outcomes since start (tests, status): resumes, digest mismatches, failures, bytes received from upstreams. */
  readonly stats = { resumes: 0, digestMismatches: 0, failures: 0, upstreamBytes: 0 };

  constructor(private readonly opts: BlobServiceOptions) {}

  private upstream(name: string): UpstreamClient {
    const u = this.opts.upstreams.get(name);
    if (!u) throw errors.internal(`upstream ${name} is not configured`);
    return u;
  }

  /** Checks that the upstream serves this digest under this repository before relais does. */
  private async ensureLinked(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<void> {
    if (await this.opts.index.isLinked(route.upstream, route.repo, digest)) return;
    const res = await this.upstream(route.upstream).send({ method: 'HEAD', repo: route.repo, path: `/v2/${route.repo}/blobs/${digest}`, signal });
    discard(res.body);
    if (res.status === 200) {
      await this.opts.index.linkContent(route.upstream, route.repo, [digest]);
      return;
    }
    if (res.status === 404) throw errors.blobUnknown(route.repo, digest);
    throw new RelaisError('UPSTREAM_ERROR', `upstream ${route.upstream} answered ${res.status} to HEAD blob`, { status: 502 });
  }

  /** Metadata only: cached size, an in-flight download's size, or the upstream's HEAD (nothing is fetched). */
  async head(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<{ size: number; result: CacheResult }> {
    const cached = await this.opts.index.getContent(digest);
    if (cached) {
      await this.ensureLinked(route, digest, signal);
      return { size: cached.size, result: 'hit' };
    }
    const res = await this.upstream(route.upstream).send({ method: 'HEAD', repo: route.repo, path: `/v2/${route.repo}/blobs/${digest}`, signal });
    discard(res.body);
    if (res.status === 404) throw errors.blobUnknown(route.repo, digest);
    if (res.status !== 200) throw new RelaisError('UPSTREAM_ERROR', `upstream ${route.upstream} answered ${res.status} to HEAD blob`, { status: 502 });
    const len = Number(header(res.headers, 'content-length'));
    if (!Number.isSafeInteger(len) || len < 0) throw new RelaisError('UPSTREAM_ERROR', `upstream ${route.upstream} sent no Content-Length for blob`, { status: 502 });
    await this.opts.index.linkContent(route.upstream, route.repo, [digest]);
    return { size: len, result: 'miss' };
  }

  /**
   * A blob for a client. While the client is served (from the lookup until its stream closes) the digest
   * is in `serving`, and eviction leaves it alone.
   */
  async get(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<BlobHandle> {
    const release = this.hold(digest);
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

  /** Counts a client on a digest; the returned function (idempotent) lets go. */
  private hold(digest: string): () => void {
    this.serving.set(digest, (this.serving.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.serving.get(digest) ?? 1) - 1;
      if (left <= 0) this.serving.delete(digest);
      else this.serving.set(digest, left);
    };
  }

  private async lookup(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<BlobHandle> {
    const key = blobKey(digest);
    const cached = await this.opts.index.getContent(digest);
    if (cached) {
      await this.ensureLinked(route, digest, signal);
      this.opts.index.touch(digest, Date.now());
      // The index says cached but the object is gone (deleted by hand, lost with a disk): fetch it again, as
      // a miss would, instead of answering 404 until `relais gc` reconciles the index.
      const refetch = async (): Promise<BlobDownload> => {
        this.opts.observer?.event?.('cached blob missing from storage, fetching it again', { digest, upstream: route.upstream, repo: route.repo });
        const dl = this.inflight.get(digest) ?? this.startDownload(route, digest);
        await dl.headers();
        return dl;
      };
      return {
        digest,
        size: cached.size,
        result: 'hit',
        open: async (range, sig) => {
          try {
            return await this.opts.storage.reader(key, range, sig);
          } catch (e) {
            if (e instanceof StorageNotFound) return this.follow(await refetch(), key, range);
            throw e;
          }
        },
        openFile: async (range) => {
          try {
            return await this.committedFile(key, cached.size, range);
          } catch (e) {
            if (e instanceof StorageNotFound) return this.followFile(await refetch(), key, range);
            throw e;
          }
        },
      };
    }
    let dl = this.inflight.get(digest);
    let result: CacheResult = 'join';
    const claim = dl ? undefined : await this.opts.peers?.claim(digest, signal);
    if (claim?.kind === 'stored') return this.lookup(route, digest, signal);
    if (claim?.kind === 'remote') {
      await this.ensureLinked(route, digest, signal);
      return claim.handle;
    }
    dl ??= this.inflight.get(digest);
    if (dl) {
      // The download's own GET proved the link for its upstream and repository; others must ask.
      if (dl.upstreamName !== route.upstream || dl.repo !== route.repo) await this.ensureLinked(route, digest, signal);
    } else {
      dl = this.startDownload(route, digest);
      result = 'miss';
    }
    if (claim?.kind === 'local') claim.bind(dl.done);
    await dl.headers();
    const download = dl;
    return {
      digest,
      size: download.size,
      result,
      open: (range) => Promise.resolve(this.follow(download, key, range)),
      openFile: (range) => this.followFile(download, key, range),
    };
  }

  /** A committed blob (of the size the index knows) as a local file, when the storage driver keeps files. */
  private async committedFile(key: string, size: number, range?: ByteRange): Promise<FileBody | undefined> {
    if (!this.opts.storage.openLocal) return undefined;
    const f = await this.opts.storage.openLocal(key);
    const end = range ? range.end + 1 : size;
    return { fd: f.fd, start: range?.start ?? 0, end, ready: () => Promise.resolve(end), close: () => f.close() };
  }

  /**
   * A download in flight as a local file: its spool, opened now (the open fd survives the rename or unlink
   * at commit), with the same rules as follow(): the last byte only once the digest is verified.
   */
  private async followFile(dl: BlobDownload, key: string, range?: ByteRange): Promise<FileBody | undefined> {
    const size = dl.size;
    if (size === undefined) return undefined;
    const end = range ? range.end + 1 : size;
    const file = dl.acquireReader();
    if (!file) {
      // Committed or failed between the lookup and now.
      if (dl.state === 'failed') throw dl.error ?? errors.internal('download failed');
      await dl.done;
      return this.committedFile(key, size, range);
    }
    return {
      fd: file.fd,
      start: range?.start ?? 0,
      end,
      ready: async (pos, signal) => {
        for (;;) {
          const allowed = sendableEnd(dl, end);
          if (allowed > pos) return allowed;
          if (dl.verified) throw errors.internal('spool file shorter than the range');
          signal.throwIfAborted();
          await new Promise<void>((resolve, reject) => {
            const onAbort = (): void => reject(signal.reason as Error);
            signal.addEventListener('abort', onAbort, { once: true });
            void dl.changed().then(() => {
              signal.removeEventListener('abort', onAbort);
              resolve();
            });
          });
        }
      },
      close: () => file.release(),
    };
  }

  private startDownload(route: UpstreamRoute, digest: string): BlobDownload {
    const upstream = this.upstream(route.upstream);
    const obs = this.opts.observer;
    const dl = new BlobDownload({
      digest,
      upstream,
      repo: route.repo,
      spoolPath: join(this.opts.spoolDir, `${digest.replace(':', '-')}.${randomUUID().slice(0, 8)}.part`),
      attempts: this.opts.attempts(route.upstream),
      commit: async (spool, size) => {
        await this.opts.storage.importFile(blobKey(digest), spool);
        try {
          const now = Date.now();
          await this.opts.index.putBlob(digest, size, now);
          await this.opts.index.linkContent(route.upstream, route.repo, [digest]);
        } catch (e) {
          // An unindexed file is never served and never evicted: do not leave it behind (e.g. SQLITE_FULL).
          await this.opts.storage.delete(blobKey(digest)).catch(() => undefined);
          throw e;
        }
      },
      reserve: (size) => this.checkSpace(digest, size),
      onProgress: (n) => obs?.bytesFetched?.(route.upstream, n),
      onEvent: (event, detail) => {
        if (event === 'resume') this.stats.resumes++;
        else if (event === 'digest_mismatch') this.stats.digestMismatches++;
        else this.stats.failures++;
        obs?.event?.(event, detail);
      },
    });
    this.inflight.set(digest, dl);
    obs?.downloadStarted?.(dl);
    void dl.done
      .catch(() => undefined)
      .finally(() => {
        this.stats.upstreamBytes += dl.fetched;
        if (this.inflight.get(digest) === dl) this.inflight.delete(digest);
        obs?.downloadEnded?.(dl);
      });
    return dl;
  }

  /**
   * Refuses a download that cannot fit: free space (of the storage, else of the spool directory) minus what
   * the other downloads in flight still need.
   * Checked before the first byte, so the client gets a 503 STORAGE_FULL instead of a broken transfer.
   */
  private async checkSpace(digest: string, size: number): Promise<void> {
    // A driver that cannot tell (object stores) still spools the whole blob locally: check the spool's disk.
    const free = (await this.opts.storage.freeSpace?.()) ?? (await statfs(this.opts.spoolDir).then((s) => s.bavail * s.bsize, () => undefined));
    if (free === undefined) return;
    let pending = 0;
    for (const d of this.inflight.values()) if (d.digest !== digest && d.size !== undefined) pending += Math.max(0, d.size - d.written);
    if (size + pending + SPACE_MARGIN > free && this.opts.makeRoom) {
      const freed = await this.opts.makeRoom(size + pending + SPACE_MARGIN - free);
      if (freed > 0) return this.checkSpace(digest, size);
    }
    if (size + pending + SPACE_MARGIN > free) {
      throw storageFullError(`${size} bytes needed, ${Math.max(0, free - pending)} free${pending > 0 ? ` after ${pending} bytes for downloads in flight` : ''}`);
    }
  }

  /** A stream of a download in flight here, for another replica of the cluster (src/cluster/peers.ts). */
  followDownload(dl: BlobDownload, range?: ByteRange): Readable {
    return this.follow(dl, blobKey(dl.digest), range);
  }

  /**
   * A stream that follows a download's spool file as it grows. The final byte of the requested range is
   * only sent once the digest is verified; if the download fails, the stream errors (the client's response
   * is destroyed, never completed).
   */
  private follow(dl: BlobDownload, key: string, range?: ByteRange): Readable {
    const storage = this.opts.storage;
    async function* gen(): AsyncGenerator<Buffer> {
      let pos = range?.start ?? 0;
      const endExclusive = range ? range.end + 1 : undefined;
      let fh;
      try {
        fh = await open(dl.spoolPath, 'r');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      if (!fh) {
        // Committed (renamed away) or failed between the lookup and now.
        if (dl.state === 'failed') throw dl.error ?? errors.internal('download failed');
        await dl.done;
        const size = dl.size ?? 0;
        yield* storageRead(await storage.reader(key, { start: pos, end: (endExclusive ?? size) - 1 }));
        return;
      }
      try {
        for (;;) {
          // The whole blob ends at its announced size: without this a full GET got its last byte unverified.
          const total = endExclusive ?? dl.size ?? (dl.verified ? dl.written : Infinity);
          const allowed = sendableEnd(dl, total);
          if (pos >= total) return;
          if (pos < allowed) {
            const n = Math.min(allowed - pos, FOLLOW_CHUNK);
            const buf = Buffer.allocUnsafe(n);
            const { bytesRead } = await fh.read(buf, 0, n, pos);
            if (bytesRead === 0) throw errors.internal('spool file shorter than written');
            pos += bytesRead;
            yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
            continue;
          }
          // Nothing new to send: sleep until the download writes more or ends (no await since `state` was read).
          await dl.changed();
        }
      } finally {
        await fh.close();
      }
    }
    return Readable.from(gen(), { objectMode: false, highWaterMark: FOLLOW_CHUNK });
  }

  /**
   * Resolves once every download in flight has ended (committed or failed). A client has its blob as soon as
   * the digest verified, a moment before the cache has stored it: wait here before looking at the storage.
   */
  async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight.values()].map((d) => d.done));
  }

  /** Cancels every download (shutdown). Their spool files are removed. */
  async cancelAll(): Promise<void> {
    const all = [...this.inflight.values()];
    for (const d of all) d.cancel();
    await Promise.allSettled(all.map((d) => d.done));
  }
}

/**
 * How far (exclusive, at most `end`) a follower of the download may send: what is on disk, minus the
 * response's last byte while the digest is unverified. Throws the download's error once it failed, unless
 * every byte had been verified first (a commit that fails then still leaves clients a correct blob: the spool
 * fds they read stay valid).
 */
function sendableEnd(dl: BlobDownload, end: number): number {
  // A committed download was verified first (download.ts), so `verified` covers it.
  if (dl.verified) return Math.min(dl.written, end);
  if (dl.state === 'failed') throw dl.error ?? errors.internal('download failed');
  return Math.min(dl.written, end - 1);
}

async function* storageRead(stream: Readable): AsyncGenerator<Buffer> {
  for await (const chunk of stream) yield chunk as Buffer;
}
