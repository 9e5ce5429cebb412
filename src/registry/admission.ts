// Admission of a download into the cache: does the blob fit? Checked before the first byte is spooled, so
// a client gets a 503 STORAGE_FULL it can retry instead of a broken transfer.
import { statfs } from 'node:fs/promises';
import type { StorageDriver } from '../storage/driver.js';
import { storageFullError } from './download.js';

/** Space kept free besides the blobs (index, WAL, manifests). */
const SPACE_MARGIN = 1024 * 1024;

export interface AdmissionOptions {
  readonly storage: Pick<StorageDriver, 'freeSpace'>;
  /** Where spool files go: its disk is checked when the storage cannot tell (object stores spool locally). */
  readonly spoolDir: string;
  /** Bytes the other downloads in flight still need (all but `digest`'s). */
  readonly pending: (digest: string) => number;
  /** Disk full: evict to free at least this many bytes (when a budget is configured); returns bytes freed. */
  readonly makeRoom?: ((bytes: number) => Promise<number>) | undefined;
}

export class SpaceAdmission {
  constructor(private readonly opts: AdmissionOptions) {}

  /**
   * Refuses a download that cannot fit: free space (of the storage, else of the spool directory) minus what
   * the other downloads in flight still need; asks eviction for room first.
   */
  async admit(digest: string, size: number): Promise<void> {
    // A driver that cannot tell (object stores) still spools the whole blob locally: check the spool's disk.
    const free = (await this.opts.storage.freeSpace?.()) ?? (await statfs(this.opts.spoolDir).then((s) => s.bavail * s.bsize, () => undefined));
    if (free === undefined) return;
    const pending = this.opts.pending(digest);
    if (size + pending + SPACE_MARGIN > free && this.opts.makeRoom) {
      const freed = await this.opts.makeRoom(size + pending + SPACE_MARGIN - free);
      if (freed > 0) return this.admit(digest, size);
    }
    if (size + pending + SPACE_MARGIN > free) {
      throw storageFullError(`${size} bytes needed, ${Math.max(0, free - pending)} free${pending > 0 ? ` after ${pending} bytes for downloads in flight` : ''}`);
    }
  }
}
