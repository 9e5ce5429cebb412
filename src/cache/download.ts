// One upstream download of one blob, shared by every client that wants it (single-flight).
//
// The bytes are written through the storage driver's writer (the spool: a local file the driver stages them
// in, src/storage/staged-writer.ts) while they are hashed. Clients follow the spool as it grows
// (StorageWriter.readWritten), so nobody waits for the whole blob before the first byte, and the download
// belongs to no client: it goes on when they disconnect. Only a blob whose digest matches is committed (the
// writer's commit: a rename into storage, an upload to S3); on a mismatch the writer is cancelled and every
// follower is failed. Followers are never given the final byte of their
// response before the digest is verified, so a client can never see a complete-looking transfer of wrong bytes.
import { createHash, type Hash } from 'node:crypto';
import { RelaisError, errors } from '../errors.js';
import type { StorageWriter, WrittenFile } from '../storage/driver.js';
import type { UpstreamClient } from '../upstream/client.js';
import type { ClientCredential } from '../upstream/credential.js';
import { discard, header } from '../upstream/client.js';
import { isAbort, isTransient, toUpstreamError } from '../upstream/upstream-errors.js';
import { parseContentRange, rangeHeader } from '../storage/byte-range.js';

export type DownloadState = 'running' | 'committed' | 'failed';

export interface DownloadOptions {
  readonly digest: string;
  readonly upstream: UpstreamClient;
  readonly repo: string;
  /** A passthrough upstream: the credential of the client whose request started the download. */
  readonly credential?: ClientCredential | undefined;
  /** The storage writer the bytes go through (the spool); its commit makes the verified blob visible. */
  readonly writer: () => Promise<StorageWriter>;
  /** Attempts for the body (resumed with Range where the upstream supports it). */
  readonly attempts: number;
  /** Records the committed blob (in the index); runs once the writer committed. */
  readonly commit: (size: number) => Promise<void>;
  /** Called once the size is known, before the first byte is spooled: throws (e.g. STORAGE_FULL) to refuse the download. */
  readonly reserve?: (size: number) => Promise<void>;
  readonly onProgress?: (bytes: number) => void;
  readonly onEvent?: (event: 'resume' | 'digest_mismatch' | 'failed', detail: Record<string, unknown>) => void;
}

export class BlobDownload {
  readonly digest: string;
  readonly upstreamName: string;
  readonly repo: string;
  readonly startedAt = Date.now();
  /** Total size, once the upstream said (Content-Length / Content-Range). */
  size: number | undefined;
  /** Bytes written to the spool so far. */
  written = 0;
  /** Bytes received from the upstream, including any re-sent on a resume that could not use Range. */
  fetched = 0;
  state: DownloadState = 'running';
  /**
   * Every byte is on the spool and hashes to the digest: followers may send the last byte now, before the
   * commit has made the copy durable (fdatasync, rename, index; with S3 storage, the upload). A client waits
   * for the verification, never for the cache's own storage. Set before the commit: a committed download is verified.
   */
  verified = false;
  error: RelaisError | undefined;
  /** Resolves when committed; rejects when failed. */
  readonly done: Promise<void>;

  /** The spool: created when the download starts. */
  private readonly writer: Promise<StorageWriter>;
  private spool: StorageWriter | undefined;

  private readonly abort = new AbortController();
  private wake: { promise: Promise<void>; resolve: () => void };
  /** Resolves as soon as the size is known or the download ended. */
  private readonly sizeKnown: Promise<void>;
  private resolveSizeKnown!: () => void;

  constructor(private readonly opts: DownloadOptions) {
    this.digest = opts.digest;
    this.upstreamName = opts.upstream.name;
    this.repo = opts.repo;
    this.wake = deferred();
    this.sizeKnown = new Promise((r) => (this.resolveSizeKnown = r));
    this.writer = opts.writer();
    // run() reports a failure to create it.
    this.writer.catch(() => undefined);
    this.done = this.run();
    // Followers observe failures through `state`; nobody must see an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /** A promise that resolves on the next progress or state change. */
  changed(): Promise<void> {
    return this.wake.promise;
  }

  /** Waits until the upstream's headers arrived (size known) or the download ended. */
  async headers(): Promise<void> {
    await this.sizeKnown;
    if (this.state === 'failed' && this.error) throw this.error;
  }

  cancel(): void {
    this.abort.abort();
  }

  /**
   * The spool open for reading (an fd for sendfile, positional reads for a stream), shared by every follower: a
   * client joining the download opens nothing. The handle stays valid through the commit and a failure's cancel,
   * until closed. Undefined once the download's writer has finished and nobody holds the spool any more: read
   * the committed object then (after `done`).
   */
  async readSpool(): Promise<WrittenFile | undefined> {
    const w = await this.writer.catch(() => undefined);
    return w?.readWritten();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = deferred();
    w.resolve();
  }

  private async run(): Promise<void> {
    const alg = this.digest.slice(0, this.digest.indexOf(':'));
    const hash = createHash(alg);
    let writer: StorageWriter | undefined;
    let held: WrittenFile | undefined;
    try {
      writer = await this.writer;
      this.spool = writer;
      // The followers' shared read fd, opened now, before the spool writes keep the thread pool busy: a client
      // joining the download opens nothing (docs/performance.md, optimisation 7). Held until the download ends.
      held = await writer.readWritten();
      await this.fetchInto(writer, hash);
      const actual = `${alg}:${hash.digest('hex')}`;
      if (actual !== this.digest) {
        this.opts.onEvent?.('digest_mismatch', { digest: this.digest, actual, upstream: this.upstreamName });
        throw errors.blobDigestMismatch(this.upstreamName, this.digest, actual);
      }
      if (this.size !== undefined && this.size !== this.written) {
        throw errors.blobSizeMismatch(this.upstreamName, this.written, this.size);
      }
      this.size = this.written;
      this.verified = true;
      this.notify();
      // Only verified bytes are committed: the storage layer makes them visible at once, or not at all.
      await writer.commit();
      await this.opts.commit(this.written);
      this.state = 'committed';
    } catch (e) {
      const error = e instanceof RelaisError ? e : isAbort(e) ? errors.downloadCancelled() : storageOrUpstreamError(this.upstreamName, e);
      // The spool goes before anyone learns of the failure: a client that saw its transfer fail never
      // finds the spool still taking disk space (which matters when the disk is full). After a commit, cancel does nothing.
      await writer?.cancel().catch(() => undefined);
      this.error = error;
      this.state = 'failed';
      this.opts.onEvent?.('failed', { digest: this.digest, error: error.message, code: error.code });
      throw error;
    } finally {
      await held?.close();
      this.spool = undefined;
      this.resolveSizeKnown();
      this.notify();
    }
  }

  private async fetchInto(writer: StorageWriter, hash: Hash): Promise<void> {
    const signal = this.abort.signal;
    // Followers see bytes once they are on the spool (`written`), and are woken for each batch.
    const spool = new SpoolWriter(writer, (n) => {
      this.written += n;
      this.opts.onProgress?.(n);
      this.notify();
    });
    for (let attempt = 1; ; attempt++) {
      const resumeAt = this.written;
      try {
        const headers: Record<string, string> = { accept: '*/*' };
        if (resumeAt > 0) headers.range = rangeHeader({ start: resumeAt });
        const res = await this.opts.upstream.send({ method: 'GET', repo: this.repo, credential: this.opts.credential, path: `/v2/${this.repo}/blobs/${this.digest}`, headers, signal });
        if (res.status === 404) {
          discard(res.body);
          throw errors.blobUnknown(this.repo, this.digest);
        }
        // Bytes of this response to drop: a resume the upstream answered with the whole blob.
        let skip = 0;
        if (res.status === 206 && resumeAt > 0) {
          const cr = parseContentRange(header(res.headers, 'content-range'));
          if (cr?.start !== resumeAt) {
            discard(res.body);
            throw errors.blobResumeWrongRange(this.upstreamName);
          }
          if (cr.size !== undefined) this.size ??= cr.size;
        } else if (res.status === 200) {
          skip = resumeAt;
          const len = header(res.headers, 'content-length');
          if (len !== undefined && /^\d+$/.test(len)) this.size ??= Number(len);
        } else {
          discard(res.body);
          throw errors.upstreamUnexpected(this.upstreamName, res.status, `for blob ${this.digest}`);
        }
        if (resumeAt === 0 && this.size !== undefined && this.opts.reserve !== undefined) {
          try {
            await this.opts.reserve(this.size);
          } catch (e) {
            discard(res.body);
            throw e;
          }
        }
        this.resolveSizeKnown();
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          this.fetched += chunk.byteLength;
          let data = chunk;
          if (skip > 0) {
            if (data.byteLength <= skip) {
              skip -= data.byteLength;
              continue;
            }
            data = data.subarray(skip);
            skip = 0;
          }
          if (this.size !== undefined && this.written + spool.pending + data.byteLength > this.size) {
            throw errors.blobTooLong(this.upstreamName, this.digest);
          }
          hash.update(data);
          await spool.push(data);
        }
        await spool.flush();
        if (this.size !== undefined && this.written < this.size) {
          // The upstream closed early without an error: treat it as a broken link and resume.
          throw Object.assign(new Error('upstream body ended early'), { code: 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' });
        }
        return;
      } catch (e) {
        // What was received goes to disk first: a resume starts right after it (a failed write is the error).
        await spool.flush();
        if (e instanceof RelaisError || signal.aborted || attempt >= this.opts.attempts || !isTransient(e)) throw e;
        this.opts.onEvent?.('resume', { digest: this.digest, at: this.written, attempt, reason: (e as { code?: string }).code });
      }
    }
  }
}

/** Most bytes received and not yet written before the receive loop waits for the disk. */
const MAX_QUEUED = 2 * 1024 * 1024;
/** Bytes gathered before a spool write (fewer once SPOOL_GATHER_MS passed, or at the end of a response). */
export const SPOOL_WRITE_BYTES = 512 * 1024;
/** The longest received bytes wait to be gathered into a larger write. */
export const SPOOL_GATHER_MS = 2;

/**
 * Writes the spool behind the receive loop: chunks are queued and written in batches of SPOOL_WRITE_BYTES, or
 * of whatever arrived within SPOOL_GATHER_MS of the first queued chunk. Receiving never waits for the disk (unless
 * MAX_QUEUED bytes are waiting). A write costs the kernel about the same whatever its size up to a few hundred
 * KiB: 224 MB written 64 KiB at a time took 160-210 ms of system time here, 512 KiB at a time 50-70 ms
 * (2026-12-04). A slow upstream's bytes still reach the disk, and the followers, within SPOOL_GATHER_MS.
 */
export class SpoolWriter {
  private queue: Buffer[] = [];
  private queued = 0;
  private inWrite = 0;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private error: Error | undefined;

  constructor(
    private readonly writer: Pick<StorageWriter, 'write'>,
    private readonly onWritten: (bytes: number) => void,
  ) {}

  /** Bytes received and not yet on disk. */
  get pending(): number {
    return this.queued + this.inWrite;
  }

  async push(data: Buffer): Promise<void> {
    if (this.error !== undefined) throw this.error;
    this.queue.push(data);
    this.queued += data.byteLength;
    if (this.running === undefined) {
      if (this.queued >= SPOOL_WRITE_BYTES) this.start();
      else this.timer ??= setTimeout(() => this.start(), SPOOL_GATHER_MS);
    }
    if (this.queued >= MAX_QUEUED) await this.flush();
  }

  /** Waits until everything pushed is on disk; throws the write's error if one failed. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.error !== undefined) throw this.error;
      if (this.queued > 0 && this.running === undefined) this.start();
      if (this.running === undefined) return;
      await this.running;
    }
  }

  private start(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        const n = this.queued;
        this.queue = [];
        this.queued = 0;
        this.inWrite = n;
        // One writev per batch (the writer continues a short write, or throws ENOSPC).
        await this.writer.write(batch);
        this.inWrite = 0;
        this.onWritten(n);
        // What arrived during the write: written at once if it is a batch, else gathered a little longer.
        if (this.queued > 0 && this.queued < SPOOL_WRITE_BYTES) {
          this.running = undefined;
          this.timer ??= setTimeout(() => this.start(), SPOOL_GATHER_MS);
          return;
        }
      }
    } catch (e) {
      // Kept for push()/flush(): the receive loop fails with it.
      this.error = e instanceof Error ? e : new Error(String(e));
    } finally {
      if (this.timer === undefined) this.running = undefined;
    }
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** The cache cannot take the blob: the client gets a 503 it can retry, the operator a hint. */
export function storageFullError(detail: string, cause?: unknown): RelaisError {
  return errors.storageFull.with({ cause }, detail);
}

/** STORAGE_FULL for a write that failed because the disk (or the index on it) is full; undefined otherwise. */
export function asStorageFull(e: unknown): RelaisError | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL' ? storageFullError(code, e) : undefined;
}

function storageOrUpstreamError(upstream: string, e: unknown): RelaisError {
  // SQLITE_FULL: the index shares the data dir's disk.
  const full = asStorageFull(e);
  if (full) return full;
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' && (code.startsWith('E') && !code.startsWith('ECONN')) && ['EACCES', 'EROFS', 'EIO', 'EMFILE', 'ENFILE', 'EPERM'].includes(code)) {
    return errors.storageFailed.with({ cause: e }, code);
  }
  return toUpstreamError(upstream, e);
}
