// The StorageWriter of every driver: bytes are staged in a local file, then published under the key by the
// driver (fs: fdatasync + rename in the same filesystem; S3: an upload of the file). The staged file is what a
// download's followers read while it grows: one read-only fd shared by all of them (sendfile(2) or positional
// reads), opened on first use and kept valid through the publish's rename or unlink until the last one lets go.
// A driver's staging directory (StagingArea) knows which staged files belong to its live writers: the others are
// a dead process's, which the driver lists and drops as stale writes (gc).
import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { StaleWrite, StorageWriter, WrittenFile } from './driver.js';

/**
 * Publishes a staged file under its key. `releasePath` must be awaited before the staged path is renamed away or
 * removed (it lets a reader open in progress finish first); after it no new reader opens the path.
 */
export type Publish = (localPath: string, size: number, releasePath: () => Promise<void>) => Promise<void>;

/** A staged file's name: the key's last segment (a blob's digest hex, for an operator's `ls`), unique per writer. */
export function stagedName(key: string): string {
  return `${key.slice(key.lastIndexOf('/') + 1)}.${randomUUID().slice(0, 8)}.part`;
}

type State = 'open' | 'committing' | 'committed' | 'failed' | 'cancelled';

export class StagedWriter implements StorageWriter {
  private position = 0;
  /** Writes run one after another (each at the position the previous one left). */
  private tail: Promise<void> = Promise.resolve();
  private writeError: Error | undefined;
  private state: State = 'open';
  private committing: Promise<void> | undefined;
  private writeClosed = false;
  /** The staged path was renamed or removed (or is about to be): readers can no longer open it. */
  private pathGone = false;
  /** The shared read-only fd (opened on the first readWritten), its users, and whether it was closed for good. */
  private reader: Promise<FileHandle> | undefined;
  private readerUsers = 0;
  private readerClosed = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly localPath: string,
    private readonly publish: Publish,
    /** fdatasync before publishing (fs: the rename must not outlive the bytes in a power loss). */
    private readonly sync: boolean,
    /** Called once the staged file is gone by the writer's own hand (published, or cancelled). */
    private readonly onGone: () => void,
  ) {}

  /** Creates the staged file (it must not exist). */
  static async create(localPath: string, publish: Publish, opts: { readonly sync: boolean; readonly onGone?: () => void }): Promise<StagedWriter> {
    const fh = await open(localPath, 'wx');
    return new StagedWriter(fh, localPath, publish, opts.sync, opts.onGone ?? (() => undefined));
  }

  get size(): number {
    return this.position;
  }

  write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new Error('storage: write after commit or cancel'));
    const bufs = data instanceof Uint8Array ? [data] : data;
    let total = 0;
    for (const b of bufs) total += b.byteLength;
    const run = async (): Promise<void> => {
      if (this.writeError) throw this.writeError;
      if (total === 0) return;
      try {
        await writevAll(this.fh, bufs, total, this.position);
      } catch (e) {
        // A failed write may have left a part of its bytes: nothing after it may be appended.
        this.writeError = e instanceof Error ? e : new Error(String(e));
        throw e;
      }
      this.position += total;
    };
    const p = this.tail.then(run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  async readWritten(): Promise<WrittenFile | undefined> {
    if (this.readerClosed) return undefined;
    if (this.reader === undefined) {
      if (this.pathGone) return undefined;
      this.reader = open(this.localPath, 'r');
    }
    this.readerUsers++;
    let fh: FileHandle;
    try {
      fh = await this.reader;
    } catch (e) {
      this.readerUsers--;
      throw e;
    }
    let released = false;
    return {
      fd: fh.fd,
      read: async (buffer, position) => (await fh.read(buffer, 0, buffer.byteLength, position)).bytesRead,
      close: async () => {
        if (released) return;
        released = true;
        this.readerUsers--;
        await this.closeReaderIfUnused();
      },
    };
  }

  commit(): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new Error(`storage: commit after ${this.state === 'committing' ? 'commit' : this.state}`));
    this.state = 'committing';
    this.committing = (async () => {
      try {
        await this.tail;
        if (this.writeError) throw this.writeError;
        if (this.sync) await this.fh.datasync();
        await this.closeWrite();
        await this.publish(this.localPath, this.position, () => this.releasePath());
        this.state = 'committed';
        this.onGone();
      } catch (e) {
        this.state = 'failed';
        throw e;
      } finally {
        await this.closeReaderIfUnused();
      }
    })();
    return this.committing;
  }

  async cancel(): Promise<void> {
    if (this.state === 'committing') await this.committing?.catch(() => undefined);
    if (this.state === 'committed' || this.state === 'cancelled') return;
    this.state = 'cancelled';
    await this.tail;
    await this.closeWrite().catch(() => undefined);
    await this.releasePath();
    await rm(this.localPath, { force: true });
    this.onGone();
    await this.closeReaderIfUnused();
  }

  private async closeWrite(): Promise<void> {
    if (this.writeClosed) return;
    this.writeClosed = true;
    await this.fh.close();
  }

  private async releasePath(): Promise<void> {
    this.pathGone = true;
    await this.reader?.catch(() => undefined);
  }

  private async closeReaderIfUnused(): Promise<void> {
    if ((this.state !== 'committed' && this.state !== 'cancelled' && this.state !== 'failed') || this.readerUsers > 0 || this.readerClosed) return;
    this.readerClosed = true;
    const r = this.reader;
    this.reader = undefined;
    if (r) await (await r.catch(() => undefined))?.close().catch(() => undefined);
  }
}

/**
 * A driver's staging directory: the files its writers stage, which of them are live (a writer made here that was
 * neither committed nor cancelled yet: never listed, never dropped), and the others, a dead process's: stale
 * writes once older than the caller's cutoff (StorageDriver.staleWrites / dropStaleWrite).
 */
export class StagingArea {
  /** Names of the staged files of this process's live writers. */
  private readonly live = new Set<string>();
  private made = false;

  constructor(readonly dir: string) {}

  /** A writer of `key` staged here. */
  async writer(key: string, publish: Publish, opts: { readonly sync: boolean }): Promise<StagedWriter> {
    if (!this.made) {
      await mkdir(this.dir, { recursive: true });
      this.made = true;
    }
    const name = stagedName(key);
    this.live.add(name);
    try {
      return await StagedWriter.create(join(this.dir, name), publish, { ...opts, onGone: () => this.live.delete(name) });
    } catch (e) {
      this.live.delete(name);
      throw e;
    }
  }

  /** Throws unless the directory is there (readiness). */
  async check(): Promise<void> {
    await readdir(this.dir);
  }

  /** Staged files no live writer owns, last written before `olderThan` (ms since the epoch); id: the file's path. */
  async *stale(olderThan: number): AsyncIterable<StaleWrite> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    for (const name of names) {
      if (this.live.has(name)) continue;
      const path = join(this.dir, name);
      const s = await stat(path).catch(() => undefined);
      if (!s?.isFile() || s.mtimeMs >= olderThan) continue;
      yield { id: path, size: s.size, modTime: s.mtime };
    }
  }

  /** Whether `id` names a staged file here (a path in this directory, not a live writer's). */
  owns(id: string): boolean {
    return dirname(id) === this.dir && !this.live.has(basename(id));
  }

  /** Removes a stale staged file; false when `id` is not one (a live writer's, another directory's, gone already). */
  async drop(id: string): Promise<boolean> {
    if (!this.owns(id)) return false;
    const s = await stat(id).catch(() => undefined);
    if (!s?.isFile()) return false;
    await rm(id, { force: true });
    return true;
  }
}

/** writev of a batch; a short write (the disk filling up) is continued piece by piece, ending in ENOSPC. */
async function writevAll(fh: FileHandle, bufs: readonly Uint8Array[], total: number, position: number): Promise<void> {
  const first = bufs[0];
  const { bytesWritten } = bufs.length === 1 && first ? await fh.write(first, 0, total, position) : await fh.writev(bufs as Uint8Array[], position);
  if (bytesWritten === total) return;
  await writeAll(fh, Buffer.concat(bufs).subarray(bytesWritten), position + bytesWritten);
}

/**
 * Writes every byte at `position`. A short write (the disk filling up) is continued, so it either completes
 * or throws (ENOSPC): never a hole in the staged file that a hash computed over the received bytes would not see.
 */
async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const { bytesWritten } = await fh.write(data, done, data.byteLength - done, position + done);
    if (bytesWritten === 0) throw Object.assign(new Error('no space left on device (short write)'), { code: 'ENOSPC' });
    done += bytesWritten;
  }
}
