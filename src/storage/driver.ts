// The storage driver: a small, byte-level interface (after distribution's registry/storage/driver).
// Drivers store opaque bytes under keys; they know nothing of registries, digests or manifests.
// Every write becomes visible atomically, or not at all.
import type { Readable } from 'node:stream';

export interface StatInfo {
  readonly size: number;
  readonly modTime: Date;
}

export interface ByteRange {
  /** Inclusive first byte. */
  readonly start: number;
  /** Inclusive last byte. */
  readonly end: number;
}

/** A streaming write that becomes visible under its key only on commit(). */
export interface StorageWriter {
  write(chunk: Uint8Array): Promise<void>;
  readonly size: number;
  /** Makes the bytes visible under the key (atomic). */
  commit(): Promise<void>;
  /** Drops everything written; the key is untouched. */
  cancel(): Promise<void>;
}

export interface StorageDriver {
  readonly name: string;
  stat(key: string, signal?: AbortSignal): Promise<StatInfo | undefined>;
  /** Small objects in one piece; undefined when absent. */
  getContent(key: string, signal?: AbortSignal): Promise<Buffer | undefined>;
  /** Writes a small object atomically. */
  putContent(key: string, data: Uint8Array, signal?: AbortSignal): Promise<void>;
  /** A stream of the object's bytes (or a range of them); throws StorageNotFound when absent. */
  reader(key: string, range?: ByteRange, signal?: AbortSignal): Promise<Readable>;
  /**
   * A streaming write. Blobs do not take this path today (see importFile): the shared driver suite checks it,
   * and it is the way in once the driver's writer becomes the download spool.
   */
  writer(key: string, signal?: AbortSignal): Promise<StorageWriter>;
  /**
   * Moves a complete local file in under the key (atomic); the local file is consumed. How every blob enters
   * storage: a download is spooled to a local file (storage/create.ts's spoolDir) that clients follow while it
   * grows, verified, then moved in here (a rename on the filesystem, a multipart upload to S3).
   */
  importFile(key: string, localPath: string, signal?: AbortSignal): Promise<void>;
  /** Deletes the key; absent keys are not an error. */
  delete(key: string, signal?: AbortSignal): Promise<void>;
  /** Every key below the prefix, with its size. */
  list(prefix: string, signal?: AbortSignal): AsyncIterable<{ readonly key: string; readonly size: number; readonly modTime: Date }>;
  /** Bytes free for new data, when the backend can tell. */
  freeSpace?(): Promise<number | undefined>;
  /**
   * Drivers whose objects are local files: the object opened for reading, so that the HTTP edge can send it
   * with sendfile(2) instead of streaming it through memory (like distribution's optional RedirectURL, a
   * capability, not a requirement). Throws StorageNotFound when absent.
   */
  openLocal?(key: string): Promise<LocalFile>;
  /** Drivers that keep objects open between openLocal calls: closes those nobody is reading now. */
  releaseIdle?(): Promise<void>;
  /**
   * Drivers with multipart uploads (S3): aborts the uploads started before `olderThan` (ms since the epoch),
   * a dead process's leftovers; returns how many. Optional: a driver without such uploads has none to clean.
   */
  abortStaleUploads?(olderThan: number): Promise<number>;
}

/** An object opened as a local file (StorageDriver.openLocal). */
export interface LocalFile {
  readonly fd: number;
  close(): Promise<void>;
}

export class StorageNotFound extends Error {
  override readonly name = 'StorageNotFound';
  readonly code = 'ENOENT';
  constructor(readonly key: string) {
    super(`storage: no object at ${key}`);
  }
}

/** Keys for content-addressed data: blobs/sha256/ab/abcdef... */
export function blobKey(digest: string): string {
  const colon = digest.indexOf(':');
  const alg = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  return `blobs/${alg}/${hex.slice(0, 2)}/${hex}`;
}
