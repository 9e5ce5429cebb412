// The S3 driver: any S3-compatible object store (AWS S3, Ceph RGW, MinIO...). Keys live below an optional
// prefix in one bucket. A streaming write is staged in a local file (src/storage/staged-writer.ts: the file a
// download's clients follow while it grows) and uploaded on commit: a multipart upload straight to the final
// key when it is larger than a part, else one PutObject. S3 shows an object only once the upload completes, so
// a reader never sees a partial blob, and a failed upload is aborted (its parts dropped).
import { createReadStream } from 'node:fs';
import { open, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { StorageNotFound, type ByteRange, type StatInfo, type StorageDriver, type StorageWriter } from './driver.js';
import { StagedWriter, stagedName } from './staged-writer.js';

export interface S3DriverOptions {
  readonly bucket: string;
  /** http(s)://host:port of an S3-compatible service; unset for AWS itself. */
  readonly endpoint?: string | undefined;
  readonly region: string;
  /** Unset: the SDK's default credential chain (environment, instance role...). */
  readonly accessKeyId?: string | undefined;
  readonly secretAccessKey?: string | undefined;
  /** Prepended to every key ("relais/" keeps relais's objects apart in a shared bucket). */
  readonly prefix?: string | undefined;
  /** Size of a multipart part (S3's minimum is 5 MiB); also the threshold for a single PutObject. */
  readonly partSize?: number | undefined;
  /** Parts uploaded at once by a writer's commit. */
  readonly concurrency?: number | undefined;
  /** Local directory where writes are staged before their upload (the download spool; emptied at start by storage/create-storage.ts). */
  readonly stagingDir: string;
  /** Keys per ListObjectsV2 page (S3's default and maximum: 1000). */
  readonly listPageSize?: number | undefined;
}

const MIN_PART = 5 * 1024 * 1024;
/** S3 allows 10,000 parts: past 9,000 the part size grows so that a writer of unknown size never runs out. */
const MAX_PARTS = 9000;

interface S3ErrorLike {
  name?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

function isNotFound(e: unknown): boolean {
  const err = e as S3ErrorLike;
  return err.name === 'NoSuchKey' || err.name === 'NotFound' || err.Code === 'NoSuchKey' || err.$metadata?.httpStatusCode === 404;
}

export class S3Driver implements StorageDriver {
  readonly name = 's3';
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  private readonly partSize: number;
  private readonly concurrency: number;
  private readonly listPageSize: number | undefined;
  readonly stagingDir: string;

  constructor(opts: S3DriverOptions) {
    this.bucket = opts.bucket;
    this.stagingDir = opts.stagingDir;
    const p = opts.prefix ?? '';
    this.prefix = p === '' || p.endsWith('/') ? p : `${p}/`;
    this.partSize = Math.max(MIN_PART, opts.partSize ?? 8 * 1024 * 1024);
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
    this.listPageSize = opts.listPageSize;
    this.client = new S3Client({
      region: opts.region,
      ...(opts.endpoint !== undefined ? { endpoint: opts.endpoint } : {}),
      ...(opts.accessKeyId !== undefined && opts.secretAccessKey !== undefined
        ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } }
        : {}),
      // S3-compatible services (Ceph RGW, MinIO) answer streamed bodies with the SDK's default
      // checksums by 411 MissingContentLength; path-style addressing needs no wildcard DNS.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      forcePathStyle: true,
    });
  }

  /** The object key of a storage key (validated like the filesystem driver's, so both accept the same keys). */
  objectKey(key: string): string {
    if (key === '' || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..') || key.includes('\0')) {
      throw new Error(`storage: invalid key ${JSON.stringify(key)}`);
    }
    return this.prefix + key;
  }

  /** Part size for part number n (1-based) of an upload. */
  private partSizeFor(n: number): number {
    return n <= MAX_PARTS ? this.partSize : this.partSize * 4;
  }

  /** Throws unless the bucket exists and the credentials may use it (readiness). */
  async check(signal?: AbortSignal): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal });
  }

  async stat(key: string, signal?: AbortSignal): Promise<StatInfo | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), { abortSignal: signal });
      return { size: r.ContentLength ?? 0, modTime: r.LastModified ?? new Date(0) };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async getContent(key: string, signal?: AbortSignal): Promise<Buffer | undefined> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), { abortSignal: signal });
      if (!r.Body) return Buffer.alloc(0);
      return Buffer.from(await r.Body.transformToByteArray());
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async putContent(key: string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), Body: data, ContentLength: data.byteLength }),
      { abortSignal: signal },
    );
  }

  async reader(key: string, range?: ByteRange, signal?: AbortSignal): Promise<Readable> {
    try {
      const r = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
        { abortSignal: signal },
      );
      // In Node the SDK's body is the HTTP response stream itself.
      return r.Body as Readable;
    } catch (e) {
      if (isNotFound(e)) throw new StorageNotFound(key);
      throw e;
    }
  }

  /**
   * A write staged in a local file (stagingDir), uploaded by commit: one PutObject up to partSize, else a
   * multipart upload of the file's parts (`concurrency` at once). S3 shows the object only once the upload
   * completes; a failed or aborted upload is aborted (its parts dropped).
   */
  async writer(key: string, signal?: AbortSignal): Promise<StorageWriter> {
    const objectKey = this.objectKey(key);
    return StagedWriter.create(
      join(this.stagingDir, stagedName(key)),
      async (staged, size, releasePath) => {
        await this.upload(key, objectKey, staged, size, signal);
        // The followers' shared fd outlives the unlink.
        await releasePath();
        await rm(staged, { force: true });
      },
      // The staged file is gone once uploaded: nothing to make durable.
      { sync: false },
    );
  }

  /** Bytes free on the local staging disk: every write passes through it (the bucket's own space is not known). */
  freeSpace(): Promise<number | undefined> {
    return statfs(this.stagingDir).then(
      (s) => s.bavail * s.bsize,
      () => undefined,
    );
  }

  /** Uploads a complete local file under the key. */
  private async upload(key: string, objectKey: string, localPath: string, size: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (size <= this.partSize) {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: objectKey, Body: size === 0 ? new Uint8Array(0) : createReadStream(localPath), ContentLength: size }),
        { abortSignal: signal },
      );
      return;
    }
    const created = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey }), { abortSignal: signal });
    const uploadId = created.UploadId;
    if (uploadId === undefined) throw new Error(`storage: the S3 service started no multipart upload for ${key}`);
    const fh = await open(localPath, 'r');
    try {
      const ranges: { n: number; start: number; length: number }[] = [];
      for (let start = 0, n = 1; start < size; n++) {
        const length = Math.min(this.partSizeFor(n), size - start);
        ranges.push({ n, start, length });
        start += length;
      }
      const parts: CompletedPart[] = new Array<CompletedPart>(ranges.length);
      let next = 0;
      const worker = async (): Promise<void> => {
        for (;;) {
          const r = ranges[next++];
          if (r === undefined) return;
          signal?.throwIfAborted();
          // Whole parts in memory: the SDK can retry a Buffer body, not a half-read stream.
          const buf = Buffer.allocUnsafe(r.length);
          let got = 0;
          while (got < r.length) {
            const { bytesRead } = await fh.read(buf, got, r.length - got, r.start + got);
            if (bytesRead === 0) throw new Error(`storage: ${localPath} shrank while it was uploaded`);
            got += bytesRead;
          }
          const res = await this.client.send(
            new UploadPartCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId, PartNumber: r.n, Body: buf, ContentLength: r.length }),
            { abortSignal: signal },
          );
          parts[r.n - 1] = { PartNumber: r.n, ETag: res.ETag };
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.concurrency, ranges.length) }, worker));
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
        { abortSignal: signal },
      );
    } catch (e) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId })).catch(() => undefined);
      throw e;
    } finally {
      await fh.close();
    }
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), { abortSignal: signal });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<{ key: string; size: number; modTime: Date }> {
    let token: string | undefined;
    do {
      const r = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, MaxKeys: this.listPageSize, ...(token !== undefined ? { ContinuationToken: token } : {}) }),
        { abortSignal: signal },
      );
      for (const o of r.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, modTime: o.LastModified ?? new Date(0) };
      }
      token = r.IsTruncated === true ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /**
   * Aborts multipart uploads below the prefix started before `olderThan` (ms since epoch): the parts of a
   * replica that died mid-upload cost storage until someone does. Returns how many were aborted.
   */
  async abortStaleUploads(olderThan: number, signal?: AbortSignal): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const r = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.bucket,
          Prefix: this.prefix,
          ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
          ...(idMarker !== undefined ? { UploadIdMarker: idMarker } : {}),
        }),
        { abortSignal: signal },
      );
      for (const u of r.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined || (u.Initiated?.getTime() ?? 0) >= olderThan) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal: signal });
        aborted++;
      }
      if (r.IsTruncated !== true) return aborted;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
    }
  }

  close(): void {
    this.client.destroy();
  }
}
