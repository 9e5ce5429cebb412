// Reading a blob's bytes for a client: a download's spool as it grows (the storage writer's staged bytes,
// StorageWriter.readWritten: a stream, or the fd for sendfile), or the committed object in storage. The final byte of a response is only given once the digest
// is verified; if the download fails, the stream errors (the client's response is destroyed, never completed).
import { Readable } from 'node:stream';
import { errors } from '../errors.js';
import { blobKey, type ByteRange, type StorageDriver } from '../storage/driver.js';
import type { FileBody } from './blob-source.js';
import type { BlobDownload } from './download.js';

/** How much a follower reads from the spool at a time (also its stream's buffer: memory per client). */
const FOLLOW_CHUNK = 256 * 1024;

export class SpoolReader {
  constructor(private readonly storage: StorageDriver) {}

  /** A committed blob (of the size the index knows) as a local file, when the storage driver keeps files. */
  async committedFile(digest: string, size: number, range?: ByteRange): Promise<FileBody | undefined> {
    if (!this.storage.openLocal) return undefined;
    const f = await this.storage.openLocal(blobKey(digest));
    const end = range ? range.end + 1 : size;
    return { fd: f.fd, start: range?.start ?? 0, end, ready: () => Promise.resolve(end), close: () => f.close() };
  }

  /**
   * A download in flight as a local file: its spool, opened now (the open fd survives the rename or unlink
   * at commit), with the same rules as follow(): the last byte only once the digest is verified.
   */
  async followFile(dl: BlobDownload, range?: ByteRange): Promise<FileBody | undefined> {
    const size = dl.size;
    if (size === undefined) return undefined;
    const end = range ? range.end + 1 : size;
    const file = await dl.readSpool();
    if (!file) {
      // Committed or failed between the lookup and now.
      if (dl.state === 'failed') throw dl.error ?? errors.internal('download failed');
      await dl.done;
      return this.committedFile(dl.digest, size, range);
    }
    return {
      fd: file.fd,
      start: range?.start ?? 0,
      end,
      ready: async (pos, signal) => {
        for (;;) {
          const allowed = sendableEnd(dl, end);
          if (allowed > pos) return allowed;
          if (dl.verified) throw errors.internal('spool file shorter than the range');
          signal.throwIfAborted();
          await new Promise<void>((resolve, reject) => {
            const onAbort = (): void => reject(signal.reason as Error);
            signal.addEventListener('abort', onAbort, { once: true });
            void dl.changed().then(() => {
              signal.removeEventListener('abort', onAbort);
              resolve();
            });
          });
        }
      },
      close: () => file.close(),
    };
  }

  /** A stream that follows a download's spool file as it grows (then the committed object, if it is gone). */
  follow(dl: BlobDownload, range?: ByteRange): Readable {
    const storage = this.storage;
    const key = blobKey(dl.digest);
    async function* gen(): AsyncGenerator<Buffer> {
      let pos = range?.start ?? 0;
      const endExclusive = range ? range.end + 1 : undefined;
      const spool = await dl.readSpool();
      if (!spool) {
        // Committed or failed between the lookup and now (and nobody holds the spool any more).
        if (dl.state === 'failed') throw dl.error ?? errors.internal('download failed');
        await dl.done;
        const size = dl.size ?? 0;
        yield* storageRead(await storage.reader(key, { start: pos, end: (endExclusive ?? size) - 1 }));
        return;
      }
      try {
        for (;;) {
          // The whole blob ends at its announced size: without this a full GET got its last byte unverified.
          const total = endExclusive ?? dl.size ?? (dl.verified ? dl.written : Infinity);
          const allowed = sendableEnd(dl, total);
          if (pos >= total) return;
          if (pos < allowed) {
            const n = Math.min(allowed - pos, FOLLOW_CHUNK);
            const buf = Buffer.allocUnsafe(n);
            const bytesRead = await spool.read(buf, pos);
            if (bytesRead === 0) throw errors.internal('spool file shorter than written');
            pos += bytesRead;
            yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
            continue;
          }
          // Nothing new to send: sleep until the download writes more or ends (no await since `state` was read).
          await dl.changed();
        }
      } finally {
        await spool.close();
      }
    }
    return Readable.from(gen(), { objectMode: false, highWaterMark: FOLLOW_CHUNK });
  }
}

/**
 * How far (exclusive, at most `end`) a follower of the download may send: what is on disk, minus the
 * response's last byte while the digest is unverified. Throws the download's error once it failed, unless
 * every byte had been verified first (a commit that fails then still leaves clients a correct blob: the spool
 * fds they read stay valid).
 */
function sendableEnd(dl: BlobDownload, end: number): number {
  // A committed download was verified first (download.ts), so `verified` covers it.
  if (dl.verified) return Math.min(dl.written, end);
  if (dl.state === 'failed') throw dl.error ?? errors.internal('download failed');
  return Math.min(dl.written, end - 1);
}

async function* storageRead(stream: Readable): AsyncGenerator<Buffer> {
  for await (const chunk of stream) yield chunk as Buffer;
}
