// Keeping what clients push (docs/proxy.md, "Pushes"). Pushes themselves are forwarded to the upstream by the
// proxy door; this is the cache's side: the bytes of each blob upload session are hashed and spooled as they
// pass, and the blob enters the cache (the same storage, index rows and repository link as a pulled blob,
// through commitPushedFile: the storage driver's writer) only when
//   (a) the digest of the bytes equals the digest the client named on the final PUT, and
//   (b) the upstream answered 201 to that PUT.
// Anything else (a mismatch, a rejected upload, chunks out of order or concurrent, a failed spool write, an
// upload abandoned for idleMs, more sessions than maxUploads) drops the tracking and the spool file; the push
// itself goes on untouched. Nothing of the client's request headers is kept here.
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { CacheIndex } from '../index/cache-index.js';
import { blobKey, type StorageDriver, type StorageWriter } from '../storage/driver.js';
import { SpoolWriter } from './download.js';
import type { UpstreamRoute } from './routing.js';

const SHA256 = /^sha256:[a-f0-9]{64}$/;

export interface PushKeeperOptions {
  readonly storage: StorageDriver;
  readonly index: CacheIndex;
  /**
   * Where the sessions' bytes are spooled: a directory of their own (dataDir/pushes, emptied at start by app.ts),
   * since a push's key (its digest) is known only at the end; the storage driver's writer takes the blob then.
   */
  readonly spoolDir: string;
  /** Upload sessions tracked at once; beyond it a new upload is forwarded without being kept. */
  readonly maxUploads: number;
  /** An upload session without a request for this long is dropped (its spool removed). */
  readonly idleMs: number;
  readonly now?: () => number;
  /**
   * Whether content pushed to this repository may enter the cache (the read rules: what relais keeps, it serves
   * to clients that may pull from the upstream). Asked once per blob, after (a) and (b).
   */
  readonly mayKeep?: (route: UpstreamRoute, digest: string) => Promise<boolean>;
  /** A blob was committed (eviction looks at the budget). */
  readonly onStored?: () => void;
  readonly onEvent?: (event: PushEvent, detail: Record<string, unknown>) => void;
}

export type PushEvent = 'kept' | 'mismatch' | 'rejected' | 'dropped' | 'untracked' | 'mounted' | 'failed' | 'refused';

/** What happened to pushed blobs since start (tests, status). */
export interface PushStats {
  tracked: number;
  kept: number;
  mismatches: number;
  rejected: number;
  dropped: number;
  untracked: number;
  mounted: number;
  failed: number;
  refused: number;
}

/** The bytes of one request body of an upload session, as they pass (UploadSessions.chunk()). */
export interface ChunkTap {
  /** Hashes and spools a chunk; never throws (a failure drops the tracking). Resolves when the spool took it. */
  write(chunk: Buffer): Promise<void>;
  /** The request body ended: every byte passed through write(). */
  end(): void;
  /** The upstream answered 202 to a PATCH; `range` is its Range header ("0-N"). */
  accepted(range: string | undefined): void;
  /**
   * The upstream answered the final PUT (or a monolithic POST): `status` and the client's `digest`. Commits when
   * both agree (201, matching digest), otherwise drops. Resolves once the cache decided (tests await settle()).
   */
  completed(status: number, digest: string | undefined): void;
  /** The exchange failed or was answered otherwise: drop the session. */
  rejected(status: number | undefined): void;
}

/** Parses a Range / Content-Range header "start-end" (inclusive). */
export function parseByteSpan(v: string | undefined): { start: number; end: number } | undefined {
  if (v === undefined) return undefined;
  const m = /^(?:bytes[= ])?(\d+)-(\d+)$/.exec(v.trim());
  if (!m?.[1] || !m[2]) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  return Number.isSafeInteger(start) && Number.isSafeInteger(end) && end >= start - 1 ? { start, end } : undefined;
}

class Session {
  readonly hash: Hash = createHash('sha256');
  offset = 0;
  busy = false;
  ended = false;
  fh: FileHandle | undefined;
  writer: SpoolWriter | undefined;
  dead = false;
  constructor(
    readonly key: string,
    readonly route: UpstreamRoute,
    readonly spoolPath: string,
    public lastUsed: number,
  ) {}
}

/** Upload sessions of pushes, keyed by upstream, repository and the upstream's upload UUID; bounded. */
export class UploadSessions {
  private readonly sessions = new Map<string, Session>();
  private readonly pending = new Set<Promise<void>>();
  private readonly now: () => number;
  readonly stats: PushStats = { tracked: 0, kept: 0, mismatches: 0, rejected: 0, dropped: 0, untracked: 0, mounted: 0, failed: 0, refused: 0 };

  constructor(private readonly opts: PushKeeperOptions) {
    this.now = opts.now ?? Date.now;
  }

  private static key(route: UpstreamRoute, uuid: string): string {
    return `${route.upstream}\n${route.repo}\n${uuid}`;
  }

  /** Sessions tracked now. */
  get size(): number {
    return this.sessions.size;
  }

  /** Whether an upload session is tracked (tests). */
  has(route: UpstreamRoute, uuid: string): boolean {
    return this.sessions.has(UploadSessions.key(route, uuid));
  }

  /**
   * Starts tracking the upload session the upstream opened (its 202 to a POST), or a monolithic upload
   * (uuid undefined: one request). Returns false when it is not tracked (at maxUploads after dropping idle ones).
   */
  start(route: UpstreamRoute, uuid: string | undefined): boolean {
    this.sweep();
    if (this.sessions.size >= this.opts.maxUploads) {
      this.count('untracked', { upstream: route.upstream, repo: route.repo, why: `${this.opts.maxUploads} uploads tracked already (proxy.keepPushes.maxUploads)` });
      return false;
    }
    const key = uuid === undefined ? `${UploadSessions.key(route, '')}${randomUUID()}` : UploadSessions.key(route, uuid);
    if (this.sessions.has(key)) return true;
    const spoolPath = join(this.opts.spoolDir, `push-${randomUUID()}.part`);
    this.sessions.set(key, new Session(key, route, spoolPath, this.now()));
    this.stats.tracked++;
    return true;
  }

  /** A monolithic upload (POST ?digest= with the body): a session for one request; undefined when not tracked. */
  monolithic(route: UpstreamRoute): ChunkTap | undefined {
    this.sweep();
    if (this.sessions.size >= this.opts.maxUploads) {
      this.count('untracked', { upstream: route.upstream, repo: route.repo, why: `${this.opts.maxUploads} uploads tracked already (proxy.keepPushes.maxUploads)` });
      return undefined;
    }
    const key = `${UploadSessions.key(route, '')}${randomUUID()}`;
    const s = new Session(key, route, join(this.opts.spoolDir, `push-${randomUUID()}.part`), this.now());
    this.sessions.set(key, s);
    this.stats.tracked++;
    s.busy = true;
    return this.tap(s, true);
  }

  /**
   * The tap for a request body of a tracked session (a PATCH, or the final PUT), when its bytes follow the ones
   * seen so far: `start` is the Content-Range start the client gave (undefined: none). A session already busy
   * (chunks sent concurrently) or a chunk out of order drops the tracking; undefined when not tracked.
   */
  chunk(route: UpstreamRoute, uuid: string, start: number | undefined): ChunkTap | undefined {
    const s = this.sessions.get(UploadSessions.key(route, uuid));
    if (!s) return undefined;
    if (s.busy) {
      this.drop(s, 'dropped', 'concurrent requests on one upload');
      return undefined;
    }
    if (start !== undefined && start !== s.offset) {
      this.drop(s, 'dropped', `chunk out of order (at ${start}, expected ${s.offset})`);
      return undefined;
    }
    s.busy = true;
    s.ended = false;
    s.lastUsed = this.now();
    return this.tap(s, false);
  }

  /** The client cancelled the upload (DELETE), or the upstream refused it: forget the session. */
  cancel(route: UpstreamRoute, uuid: string): void {
    const s = this.sessions.get(UploadSessions.key(route, uuid));
    if (s) this.drop(s, 'dropped', 'upload cancelled');
  }

  /**
   * The upstream answered 201 to a cross-repository mount: the blob is now in `route`'s repository there. When
   * relais holds it, it is linked to that repository (as a HEAD of the upstream would).
   */
  mounted(route: UpstreamRoute, digest: string): Promise<boolean> {
    const p = this.link(route, digest);
    this.track(p.then(() => undefined));
    return p;
  }

  private async link(route: UpstreamRoute, digest: string): Promise<boolean> {
    if (!SHA256.test(digest) && !/^sha512:[a-f0-9]{128}$/.test(digest)) return false;
    const have = await this.opts.index.getContent(digest);
    if (!have || have.mediaType !== undefined) return false;
    if (this.opts.mayKeep && !(await this.opts.mayKeep(route, digest))) return false;
    await this.opts.index.linkContent(route.upstream, route.repo, [digest]);
    this.count('mounted', { upstream: route.upstream, repo: route.repo, digest });
    return true;
  }

  /** Drops sessions idle for idleMs (their spool files removed). */
  sweep(): void {
    const cutoff = this.now() - this.opts.idleMs;
    for (const s of this.sessions.values()) if (!s.busy && s.lastUsed < cutoff) this.drop(s, 'dropped', 'upload idle');
  }

  /** Resolves once every commit or drop started so far has ended (tests, shutdown). */
  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** Drops every session (shutdown). */
  async close(): Promise<void> {
    for (const s of [...this.sessions.values()]) this.drop(s, 'dropped', 'shutdown');
    await this.settle();
  }

  /** Runs other keeping work (a pushed manifest) so that settle() waits for it too. */
  background(work: () => Promise<void>): Promise<void> {
    const p = work();
    this.track(p);
    return p;
  }

  private track(p: Promise<void>): void {
    const q = p.catch(() => undefined).finally(() => this.pending.delete(q));
    this.pending.add(q);
  }

  private count(event: PushEvent, detail: Record<string, unknown>): void {
    if (event === 'kept') this.stats.kept++;
    else if (event === 'mismatch') this.stats.mismatches++;
    else if (event === 'rejected') this.stats.rejected++;
    else if (event === 'dropped') this.stats.dropped++;
    else if (event === 'untracked') this.stats.untracked++;
    else if (event === 'mounted') this.stats.mounted++;
    else if (event === 'refused') this.stats.refused++;
    else this.stats.failed++;
    this.opts.onEvent?.(event, detail);
  }

  /** Forgets the session and removes its spool file. */
  private drop(s: Session, event: PushEvent, why: string): void {
    if (s.dead) return;
    s.dead = true;
    this.sessions.delete(s.key);
    this.count(event, { upstream: s.route.upstream, repo: s.route.repo, why });
    this.track(this.release(s, true));
  }

  private async release(s: Session, remove: boolean): Promise<void> {
    const fh = s.fh;
    s.fh = undefined;
    await s.writer?.flush().catch(() => undefined);
    await fh?.close().catch(() => undefined);
    if (remove) await rm(s.spoolPath, { force: true });
  }

  private tap(s: Session, oneShot: boolean): ChunkTap {
    let settled = false;
    const finish = (): void => {
      settled = true;
      s.busy = false;
      s.lastUsed = this.now();
    };
    return {
      write: async (chunk) => {
        if (s.dead || settled) return;
        try {
          if (s.fh === undefined) {
            s.fh = await open(s.spoolPath, 'wx');
            s.writer = new SpoolWriter(appendTo(s.fh), () => undefined);
          }
          s.hash.update(chunk);
          s.offset += chunk.byteLength;
          await s.writer?.push(chunk);
        } catch (e) {
          this.drop(s, 'failed', `spool write failed: ${(e as { code?: string }).code ?? String(e)}`);
        }
      },
      end: () => {
        s.ended = true;
      },
      accepted: (range) => {
        if (settled || s.dead) return;
        finish();
        const span = parseByteSpan(range);
        if (!s.ended || oneShot) this.drop(s, 'dropped', 'request body not seen to its end');
        else if (span !== undefined && span.end + 1 !== s.offset) this.drop(s, 'dropped', `the upstream holds ${span.end + 1} bytes, relais saw ${s.offset}`);
      },
      completed: (status, digest) => {
        if (settled || s.dead) return;
        finish();
        if (status !== 201) return this.drop(s, 'rejected', `the upstream answered ${status} to the final PUT`);
        if (!s.ended) return this.drop(s, 'dropped', 'request body not seen to its end');
        if (digest === undefined || !SHA256.test(digest)) return this.drop(s, 'dropped', 'not a sha256 digest');
        s.dead = true;
        this.sessions.delete(s.key);
        this.track(this.commit(s, digest));
      },
      rejected: (status) => {
        if (settled || s.dead) return;
        finish();
        this.drop(s, 'rejected', status === undefined ? 'the exchange failed' : `the upstream answered ${status}`);
      },
    };
  }

  private async commit(s: Session, digest: string): Promise<void> {
    const detail = { upstream: s.route.upstream, repo: s.route.repo, digest };
    try {
      if (s.fh === undefined) {
        // An empty blob: the spool file is made here.
        s.fh = await open(s.spoolPath, 'wx');
        s.writer = new SpoolWriter(appendTo(s.fh), () => undefined);
      }
      await s.writer?.flush();
      const actual = `sha256:${s.hash.digest('hex')}`;
      if (actual !== digest) {
        this.count('mismatch', { ...detail, actual });
        return;
      }
      await s.fh.datasync();
      await s.fh.close();
      s.fh = undefined;
      if (this.opts.mayKeep && !(await this.opts.mayKeep(s.route, digest))) {
        this.count('refused', { ...detail, why: 'not readable under the read rules' });
        return;
      }
      const have = await this.opts.index.getContent(digest);
      if (have) {
        await this.opts.index.linkContent(s.route.upstream, s.route.repo, [digest]);
      } else {
        await commitPushedFile(this.opts, s.route, digest, s.spoolPath, s.offset, this.now());
        this.opts.onStored?.();
      }
      this.count('kept', { ...detail, size: s.offset });
    } catch (e) {
      this.count('failed', { ...detail, error: (e as { code?: string }).code ?? String(e) });
    } finally {
      await s.fh?.close().catch(() => undefined);
      s.fh = undefined;
      // The storage writer made its own copy: the spool file always goes.
      await rm(s.spoolPath, { force: true }).catch(() => undefined);
    }
  }
}

/** Sequential appends to a push's spool file, for the SpoolWriter's batches (a short write is continued). */
function appendTo(fh: FileHandle): Pick<StorageWriter, 'write'> {
  return {
    write: async (data) => {
      const chunks: readonly Uint8Array[] = data instanceof Uint8Array ? [data] : data;
      for (const c of chunks) {
        let off = 0;
        while (off < c.byteLength) off += (await fh.write(c, off, c.byteLength - off)).bytesWritten;
      }
    },
  };
}

/**
 * A verified push's spool file into the cache: streamed through the storage driver's writer for the blob's
 * key (committed atomically: nothing partial is ever visible), then recorded in the index and linked to the
 * route's repository, as a download's blob is.
 */
async function commitPushedFile(
  to: { readonly storage: StorageDriver; readonly index: CacheIndex },
  route: UpstreamRoute,
  digest: string,
  spoolPath: string,
  size: number,
  now: number,
): Promise<void> {
  const w = await to.storage.writer(blobKey(digest));
  try {
    const fh = await open(spoolPath, 'r');
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      let pos = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.byteLength, pos);
        if (bytesRead === 0) break;
        await w.write(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      if (pos !== size) throw new Error(`the spool holds ${pos} bytes, ${size} were pushed`);
    } finally {
      await fh.close();
    }
    await w.commit();
  } catch (e) {
    await w.cancel().catch(() => undefined);
    throw e;
  }
  try {
    await to.index.putBlob(digest, size, now);
    await to.index.linkContent(route.upstream, route.repo, [digest]);
  } catch (e) {
    // An unindexed file is never served and never evicted: do not leave it behind (e.g. SQLITE_FULL).
    await to.storage.delete(blobKey(digest)).catch(() => undefined);
    throw e;
  }
}
