// Read-only file descriptors of hot objects, kept open between requests. Serving a cached blob with sendfile(2)
// needs an fd; opening and closing one per request cost two thread-pool round trips (~40 us of the ~140 us of a
// small-blob hit). Objects are immutable once written, so one fd per key serves every reader at once (sendfile
// and pread take explicit offsets). An fd is closed when its key is deleted or replaced (at once if idle, else
// when its last reader lets go), when it has been idle for `idleMs`, and when more than `maxIdle` are idle.
import type { FileHandle } from 'node:fs/promises';
import type { LocalFile } from './driver.js';

interface Entry {
  readonly fh: FileHandle;
  refs: number;
  /** When refs last went to 0 (ms since epoch). */
  idleSince: number;
  /** Deleted or replaced: close once the last reader lets go, never hand out again. */
  stale: boolean;
}

export interface OpenFilesOptions {
  /** Idle fds kept at most. */
  readonly maxIdle: number;
  /** An idle fd is closed after this long. */
  readonly idleMs: number;
  readonly now?: () => number;
}

export class OpenFiles {
  /** In least recently used order (re-inserted on every acquire). */
  private readonly entries = new Map<string, Entry>();
  /** Opens in progress: concurrent first readers of a key share one open(). */
  private readonly opening = new Map<string, Promise<Entry>>();
  private idle = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;

  constructor(
    private readonly openFile: (key: string) => Promise<FileHandle>,
    private readonly opts: OpenFilesOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.timer = setInterval(() => void this.sweep(), Math.max(1000, Math.floor(opts.idleMs / 2)));
    this.timer.unref();
  }

  /** Fds open now (in use or idle). */
  get size(): number {
    return this.entries.size;
  }

  /** An fd for the key's object; close() (idempotent) lets go of it. Rejects as `openFile` does (e.g. ENOENT). */
  async acquire(key: string): Promise<LocalFile> {
    let e = this.entries.get(key);
    while (e === undefined) {
      let p = this.opening.get(key);
      if (p === undefined) {
        p = this.openFile(key).then(
          (fh) => {
            this.opening.delete(key);
            const entry: Entry = { fh, refs: 0, idleSince: this.now(), stale: false };
            this.entries.set(key, entry);
            this.idle++;
            return entry;
          },
          (err: unknown) => {
            this.opening.delete(key);
            throw err;
          },
        );
        this.opening.set(key, p);
      }
      const opened = await p;
      // Invalidated (deleted, replaced) while it was being opened: open the key again.
      e = opened.stale ? undefined : opened;
    }
    if (e.refs === 0) this.idle--;
    e.refs++;
    // Most recently used last.
    this.entries.delete(key);
    this.entries.set(key, e);
    const entry = e;
    let released = false;
    return {
      fd: entry.fh.fd,
      close: async () => {
        if (released) return;
        released = true;
        await this.release(key, entry);
      },
    };
  }

  private async release(key: string, e: Entry): Promise<void> {
    e.refs--;
    if (e.refs > 0) return;
    if (e.stale) {
      await e.fh.close();
      return;
    }
    e.idleSince = this.now();
    this.idle++;
    if (this.idle > this.opts.maxIdle) await this.trim();
  }

  /** The key's object was deleted or replaced: its fd must not serve new readers. */
  async invalidate(key: string): Promise<void> {
    const e = this.entries.get(key);
    if (e === undefined) return;
    this.entries.delete(key);
    e.stale = true;
    if (e.refs === 0) {
      this.idle--;
      await e.fh.close();
    }
  }

  /** Closes every idle fd; fds in use close when their readers let go. */
  async closeAll(): Promise<void> {
    clearInterval(this.timer);
    const keys = [...this.entries.keys()];
    await Promise.all(keys.map((k) => this.invalidate(k)));
  }

  /** Closes the idle fds now (in-use ones stay); the cache goes on working. */
  async releaseIdle(): Promise<void> {
    const idle = [...this.entries].filter(([, e]) => e.refs === 0).map(([k]) => k);
    await Promise.all(idle.map((k) => this.invalidate(k)));
  }

  /** Closes the least recently used idle fds until at most maxIdle are idle. */
  private async trim(): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const [key, e] of this.entries) {
      if (this.idle <= this.opts.maxIdle) break;
      if (e.refs === 0) closing.push(this.invalidate(key));
    }
    await Promise.all(closing);
  }

  /** Closes the fds idle for idleMs or longer (the timer runs this every max(1 s, idleMs / 2)). */
  async sweep(): Promise<void> {
    const cutoff = this.now() - this.opts.idleMs;
    const closing: Promise<void>[] = [];
    for (const [key, e] of this.entries) {
      if (e.refs === 0 && e.idleSince <= cutoff) closing.push(this.invalidate(key).catch(() => undefined));
    }
    await Promise.all(closing);
  }
}
