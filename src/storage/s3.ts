// The S3 driver: any S3-compatible object store (AWS S3, Ceph RGW, MinIO...). Keys live below an optional
// prefix in one bucket. A streaming write is staged in a local file (src/storage/staged-writer.ts: the file a
// download's clients follow while it grows) and uploaded on commit: a multipart upload straight to the final
// key when it is larger than a part, else one PutObject. S3 shows an object only once the upload completes, so
// a reader never sees a partial blob, and a failed upload is aborted (its parts dropped). A dead process leaves
// staged files and maybe multipart uploads: both are stale writes (staleWrites, dropStaleWrite: gc).
import { createReadStream } from 'node:fs';
import { open, rm, statfs, type FileHandle } from 'node:fs/promises';
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
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { StorageNotFound, type ByteRange, type StaleWrite, type StatInfo, type StorageDriver, type StorageWriter } from './driver.js';
import { StagingArea } from './staged-writer.js';

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
  /**
   * A multipart upload this driver did not start may be another replica's, still running: it counts as a stale
   * write only once started this long ago (ms; default 24 h), whatever the caller's cutoff. The driver's own
   * uploads in flight are never stale.
   */
  readonly foreignUploadMs?: number | undefined;
}

const MIN_PART = 5 * 1024 * 1024;
/** S3 allows 10,000 parts: past 9,000 the part size grows so that a writer of unknown size never runs out. */
const MAX_PARTS = 9000;
const FOREIGN_UPLOAD_MS = 24 * 3600_000;
/** A multipart upload's stale-write id: s3://BUCKET/OBJECT-KEY?uploadId=ID (as S3's REST API names it). */
const UPLOAD_ID = '?uploadId=';

interface S3ErrorLike {
  name?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

function isNoSuchUpload(e: unknown): boolean {
  const err = e as S3ErrorLike;
  return err.name === 'NoSuchUpload' || err.Code === 'NoSuchUpload' || err.$metadata?.httpStatusCode === 404;
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
  private readonly foreignUploadMs: number;
  private readonly staging: StagingArea;
  /** Multipart uploads this driver is running now (never stale). */
  private readonly uploading = new Set<string>();

  constructor(opts: S3DriverOptions) {
    this.bucket = opts.bucket;
    this.staging = new StagingArea(opts.stagingDir);
    this.foreignUploadMs = opts.foreignUploadMs ?? FOREIGN_UPLOAD_MS;
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

  /** The local directory where writes are staged. */
  get stagingDir(): string {
    return this.staging.dir;
  }

  /** Throws unless the staging directory is there, the bucket exists and the credentials may use it (readiness). */
  async check(signal?: AbortSignal): Promise<void> {
    await this.staging.check();
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
    return this.staging.writer(
      key,
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
    this.uploading.add(uploadId);
    let fh: FileHandle | undefined;
    try {
      const file = (fh = await open(localPath, 'r'));

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
            const { bytesRead } = await file.read(buf, got, r.length - got, r.start + got);
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
      this.uploading.delete(uploadId);
      await fh?.close();
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
   * Unfinished writes no live writer owns: staged files of a dead process (id: the file's path), and multipart
   * uploads below the prefix that this driver is not running, started before `olderThan` and before
   * foreignUploadMs ago (the parts of a replica that died mid-upload cost storage until someone aborts them).
   */
  async *staleWrites(olderThan: number, signal?: AbortSignal): AsyncIterable<StaleWrite> {
    yield* this.staging.stale(olderThan);
    const before = Math.min(olderThan, Date.now() - this.foreignUploadMs);
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
        if (u.Key === undefined || u.UploadId === undefined || this.uploading.has(u.UploadId)) continue;
        const started = u.Initiated?.getTime() ?? 0;
        if (started >= before) continue;
        const size = await this.uploadedBytes(u.Key, u.UploadId, signal);
        if (size === undefined) continue;
        yield { id: `s3://${this.bucket}/${u.Key}${UPLOAD_ID}${u.UploadId}`, size, modTime: new Date(started) };
      }
      if (r.IsTruncated !== true) return;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
    }
  }

  /** The bytes of a multipart upload's parts; undefined when it is gone (completed or aborted meanwhile). */
  private async uploadedBytes(objectKey: string, uploadId: string, signal?: AbortSignal): Promise<number | undefined> {
    let size = 0;
    let marker: string | undefined;
    try {
      for (;;) {
        const r = await this.client.send(
          new ListPartsCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId, ...(marker !== undefined ? { PartNumberMarker: marker } : {}) }),
          { abortSignal: signal },
        );
        for (const p of r.Parts ?? []) size += p.Size ?? 0;
        if (r.IsTruncated !== true) return size;
        marker = r.NextPartNumberMarker;
      }
    } catch (e) {
      if (isNoSuchUpload(e)) return undefined;
      throw e;
    }
  }

  /** Removes a stale staged file, or aborts a stale multipart upload below the prefix that this driver is not running. */
  async dropStaleWrite(id: string, signal?: AbortSignal): Promise<boolean> {
    const base = `s3://${this.bucket}/`;
    if (!id.startsWith(base)) return this.staging.drop(id);
    const at = id.lastIndexOf(UPLOAD_ID);
    if (at < 0) return false;
    const key = id.slice(base.length, at);
    const uploadId = id.slice(at + UPLOAD_ID.length);
    if (!key.startsWith(this.prefix) || uploadId === '' || this.uploading.has(uploadId)) return false;
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }), { abortSignal: signal });
      return true;
    } catch (e) {
      if (isNoSuchUpload(e)) return false;
      throw e;
    }
  }

  close(): void {
    this.client.destroy();
  }
}
