// Admission of a download into the cache: does the blob fit? Checked before the first byte is spooled, so
// a client gets a 503 STORAGE_FULL it can retry instead of a broken transfer.
import type { StorageDriver } from '../storage/driver.js';
import { storageFullError } from './download.js';

/** Space kept free besides the blobs (index, WAL, manifests). */
const SPACE_MARGIN = 1024 * 1024;

export interface AdmissionOptions {
  /** Free space for new writes (fs: the storage's disk; S3: the local disk its writes are staged on). */
  readonly storage: Pick<StorageDriver, 'freeSpace'>;
  /** Bytes the other downloads in flight still need (all but `digest`'s). */
  readonly pending: (digest: string) => number;
  /** Disk full: evict to free at least this many bytes (when a budget is configured); returns bytes freed. */
  readonly makeRoom?: ((bytes: number) => Promise<number>) | undefined;
}

export class SpaceAdmission {
  constructor(private readonly opts: AdmissionOptions) {}

  /**
   * Refuses a download that cannot fit: the free space the storage reports (for S3, the local disk its writer
   * stages blobs on) minus what the other downloads in flight still need; asks eviction for room first.
   */
  async admit(digest: string, size: number): Promise<void> {
    const free = await this.opts.storage.freeSpace?.();
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
