// The filesystem driver (default). Writes are staged in a temp file in the same filesystem (_tmp/ under the
// root; src/storage/staged-writer.ts), then rename()d into place: a reader never sees a partial object, and a
// crash leaves only staged files, which the driver lists as stale writes (gc removes them).
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { StorageNotFound, type ByteRange, type LocalFile, type StaleWrite, type StatInfo, type StorageDriver, type StorageWriter } from './driver.js';
import { OpenFiles } from './open-files.js';
import { StagingArea } from './staged-writer.js';

const TMP_DIR = '_tmp';
/** Idle fds of hot objects kept open for openLocal (src/storage/open-files.ts), and for how long. */
const MAX_IDLE_FDS = 128;
const IDLE_FD_MS = 30_000;

export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem';
  private readonly madeDirs = new Set<string>();
  private readonly files = new OpenFiles((key) => open(this.path(key), 'r'), { maxIdle: MAX_IDLE_FDS, idleMs: IDLE_FD_MS });
  private readonly staging: StagingArea;

  constructor(readonly root: string) {
    this.staging = new StagingArea(join(root, TMP_DIR));
  }

  /** The local path of a key: keys are validated so they cannot leave the root. */
  path(key: string): string {
    if (key === '' || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..') || key.includes('\0')) {
      throw new Error(`storage: invalid key ${JSON.stringify(key)}`);
    }
    return join(this.root, ...key.split('/'));
  }

  /** Where writes are staged (same filesystem as the objects, so rename is atomic); emptied at start by create-storage.ts. */
  get tmpDir(): string {
    return this.staging.dir;
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.madeDirs.add(dir);
  }

  async stat(key: string): Promise<StatInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      return { size: s.size, modTime: s.mtime };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async getContent(key: string, signal?: AbortSignal): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key), { signal });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async putContent(key: string, data: Uint8Array): Promise<void> {
    const w = await this.writer(key);
    try {
      await w.write(data);
      await w.commit();
    } catch (e) {
      await w.cancel();
      throw e;
    }
  }

  async reader(key: string, range?: ByteRange): Promise<Readable> {
    const p = this.path(key);
    // Open first so a missing key is an error here, not on the stream.
    let fh: FileHandle;
    try {
      fh = await open(p, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new StorageNotFound(key);
      throw e;
    }
    return createReadStream('', {
      fd: fh,
      highWaterMark: 256 * 1024,
      ...(range ? { start: range.start, end: range.end } : {}),
    });
  }

  async openLocal(key: string): Promise<LocalFile> {
    try {
      return await this.files.acquire(key);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new StorageNotFound(key);
      throw e;
    }
  }

  releaseIdle(): Promise<void> {
    return this.files.releaseIdle();
  }

  /** Closes the fds openLocal keeps open (those in use close when their readers let go). */
  close(): Promise<void> {
    return this.files.closeAll();
  }

  /** A write staged in tmpDir (same filesystem), published by fdatasync and rename(): atomic, never partial. */
  async writer(key: string): Promise<StorageWriter> {
    const target = this.path(key);
    return this.staging.writer(
      key,
      async (staged, _size, releasePath) => {
        await this.ensureDir(dirname(target));
        await releasePath();
        await rename(staged, target);
        await this.files.invalidate(key);
      },
      { sync: true },
    );
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
    // After the unlink: an fd opened in between would keep the deleted file's space until it is idle.
    await this.files.invalidate(key);
  }

  async *list(prefix: string): AsyncIterable<{ key: string; size: number; modTime: Date }> {
    const start = prefix === '' ? this.root : this.path(prefix.replace(/\/$/, ''));
    const walk = async function* (dir: string, root: string): AsyncGenerator<{ key: string; size: number; modTime: Date }> {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      }
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.isDirectory()) {
          if (dir === root && e.name === TMP_DIR) continue;
          yield* walk(p, root);
        } else if (e.isFile()) {
          const s = await stat(p).catch(() => undefined);
          if (s) yield { key: relative(root, p).split(sep).join('/'), size: s.size, modTime: s.mtime };
        }
      }
    };
    yield* walk(start, this.root);
  }

  /** Readiness: the staging directory is there. */
  check(): Promise<void> {
    return this.staging.check();
  }

  /** Staged files of writers that are not live (a crash's), last written before `olderThan`; id: the file's path. */
  staleWrites(olderThan: number): AsyncIterable<StaleWrite> {
    return this.staging.stale(olderThan);
  }

  dropStaleWrite(id: string): Promise<boolean> {
    return this.staging.drop(id);
  }

  async freeSpace(): Promise<number | undefined> {
    await this.ensureDir(this.root);
    const s = await statfs(this.root);
    return s.bavail * s.bsize;
  }
}
