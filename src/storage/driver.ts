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

/**
 * A streaming write that becomes visible under its key only on commit() (distribution's FileWriter). Every
 * driver stages the bytes in a local file (fs: in the storage root, so commit is a rename; S3: in a local
 * staging directory, and commit uploads it): that file is what a download's followers read while it grows
 * (readWritten), with sendfile(2) or a stream, and a crash leaves only staged files, never a partial object.
 */
export interface StorageWriter {
  /** Appends the bytes (several chunks: one writev); resolves once they are in the staged file. One write at a time. */
  write(data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /** Bytes written so far (readable through readWritten). */
  readonly size: number;
  /**
   * What has been written so far, readable while the write goes on: one shared read-only handle on the staged
   * file, valid after commit (rename, upload) or cancel (unlink) until closed. Undefined once the writer has
   * finished and no handle is open any more: read the committed object then.
   */
  readWritten(): Promise<WrittenFile | undefined>;
  /**
   * Makes the bytes visible under the key, atomically (fs: fdatasync and rename; S3: PutObject or a multipart
   * upload, then the staged file goes). On failure nothing is visible; call cancel() to drop the staged file.
   */
  commit(): Promise<void>;
  /** Drops everything written (the staged file, any upload); the key is untouched. Idempotent; a no-op after a commit. */
  cancel(): Promise<void>;
}

/** The bytes a writer staged so far (StorageWriter.readWritten): an fd for sendfile, and positional reads. */
export interface WrittenFile extends LocalFile {
  /** Reads up to buffer.byteLength bytes at `position`; resolves the count (0: nothing there yet). */
  read(buffer: Uint8Array, position: number): Promise<number>;
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
   * A streaming write (StorageWriter), how every blob enters storage: a download writes through it, its clients
   * follow the staged bytes as they grow, and the download commits once the digest is verified. `signal` aborts
   * the commit's remote requests (S3).
   */
  writer(key: string, signal?: AbortSignal): Promise<StorageWriter>;
  /** Deletes the key; absent keys are not an error. */
  delete(key: string, signal?: AbortSignal): Promise<void>;
  /** Every key below the prefix, with its size. */
  list(prefix: string, signal?: AbortSignal): AsyncIterable<{ readonly key: string; readonly size: number; readonly modTime: Date }>;
  /**
   * Bytes free for new data, when the driver can tell: the storage's disk (fs), or the local staging disk
   * every write passes through (S3: the bucket has no limit relais could know).
   */
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
   * Readiness: throws unless the driver can take writes and reads now (its staging directory is there; S3: the
   * bucket answers).
   */
  check(signal?: AbortSignal): Promise<void>;
  /**
   * Unfinished writes no live writer of this driver owns, last changed before `olderThan` (ms since the epoch):
   * what a dead process left (a staged file; S3: also a multipart upload). Where it stages and which of its
   * writers are live only the driver knows: the files of writers not yet committed or cancelled are never
   * listed. gc reports them and drops them with dropStaleWrite.
   */
  staleWrites?(olderThan: number, signal?: AbortSignal): AsyncIterable<StaleWrite>;
  /**
   * Drops a stale write by its id (staleWrites). Resolves false, dropping nothing, when the id is not one of
   * this driver's stale writes (a live writer's, or gone already).
   */
  dropStaleWrite?(id: string, signal?: AbortSignal): Promise<boolean>;
}

/** An unfinished write no live writer owns (StorageDriver.staleWrites). */
export interface StaleWrite {
  /** What dropStaleWrite takes; readable for an operator: the staged file's path, or the multipart upload's object and id. */
  readonly id: string;
  /** Bytes it holds (a multipart upload: its parts'). */
  readonly size: number;
  /** Last written (a multipart upload: when it was started). */
  readonly modTime: Date;
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
