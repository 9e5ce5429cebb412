// The core's blob interfaces: what a door gets for a blob (BlobHandle, FileBody), and the port through which
// the core gets bytes it does not hold (BlobSource). The core's own source is the single download of each
// digest in this process (downloads.ts); cluster mode wraps it (src/cluster/peers.ts) the way distribution's
// proxy wraps its BlobStore, so that every fetch from an upstream, a refetch of a blob storage lost included,
// goes through the cluster's download lease. The core knows no wrapper: app.ts composes them.
import type { Readable } from 'node:stream';
import type { ByteRange } from '../storage/driver.js';
import type { CacheResult } from '../types.js';
import type { BlobDownload } from './download.js';
import type { UpstreamRoute } from './routing.js';

export interface BlobHandle {
  readonly digest: string;
  /** Undefined only while an upstream that sent no length is still streaming. */
  readonly size: number | undefined;
  readonly result: CacheResult;
  /** The bytes, or a range of them; the stream errors if the download fails. */
  open(range?: ByteRange, signal?: AbortSignal): Promise<Readable>;
  /**
   * The same bytes as a local file, for sendfile(2) (src/doors/http/sendfile.ts); undefined when they are not in one
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

/** Where the bytes of a blob the cache does not hold (or lost) come from. */
export type Fetched =
  /** A download in this process, started by this call or joined: followed as its spool grows. */
  | { readonly kind: 'local'; readonly download: BlobDownload; readonly started: boolean }
  /** Bytes from elsewhere (another replica's download). */
  | { readonly kind: 'remote'; readonly handle: BlobHandle }
  /** Committed meanwhile (by another replica): look it up again. */
  | { readonly kind: 'stored' };

export interface BlobSource {
  /** The bytes of a blob the cache does not hold, or whose object its storage lost. */
  fetch(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<Fetched>;
}

/** The core's own source: the single download of each digest in this process. */
export interface LocalBlobSource extends BlobSource {
  /** Whether a download of the digest runs in this process now (a wrapper joins it rather than asking elsewhere). */
  downloading(digest: string): boolean;
}
