// Cluster-wide single-flight: a wrapper around the core's blob source (src/cache/blob-source.ts), as
// distribution's proxy wraps its BlobStore. Every fetch the core makes (a miss, or a cached blob whose object
// the shared storage lost) passes through ClusterBlobSource.fetch, which joins a download in flight on this
// replica or else claims the blob cluster-wide first.
//
// claim(digest) answers one of:
//   local   this replica now holds the download lease: it fetches from the upstream (and binds the lease
//           to its download, which releases it when the download ends);
//   remote  another replica holds it: the blob is streamed from that replica's spool over
//           GET /_relais/cluster/spool/<digest> (authenticated with the cluster secret), so its clients get
//           bytes as they arrive, and the last byte only once the owner verified and stored the blob;
//   stored  the blob was committed meanwhile: read it from the shared storage.
// A replica that dies mid-download stops renewing its lease; the others find it unreachable, wait for the
// lease to expire (cluster.leaseTtl) and one of them takes the work over. Clients whose stream came from
// the dead replica see their transfer cut (never completed) and retry.
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { errors } from '../errors.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { Logger } from '../observability/logger.js';
import type { BlobHandle, BlobSource, Fetched, LocalBlobSource } from '../cache/blob-source.js';
import type { BlobService } from '../cache/blobs.js';
import type { UpstreamRoute } from '../cache/routing.js';
import { contentRange, parseByteRange, rangeHeader } from '../storage/byte-range.js';
import { blobKey, type ByteRange, type StorageDriver } from '../storage/driver.js';
import type { LeaseManager } from './leases.js';

export type Claim =
  | { readonly kind: 'local'; bind(done: Promise<unknown>): void }
  | { readonly kind: 'remote'; readonly handle: BlobHandle }
  | { readonly kind: 'stored' };

/** An HTTP handler of the cluster's internal endpoint: true when it answered (the HTTP server's RouteHandler shape). */
export type ClusterHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export interface ClusterPeersOptions {
  readonly leases: LeaseManager;
  readonly index: CacheIndex;
  /** The shared storage: where a blob is read once its owner committed it. */
  readonly storage: StorageDriver;
  readonly secret: string;
  readonly logger?: Logger;
  /** How long an owner may take to send the upstream's headers. */
  readonly headersTimeoutMs?: number;
}

export const SPOOL_PATH = '/_relais/cluster/spool/';
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
/** A lease taken but bound to no download within this time is released (a request that died in between). */
const BIND_TIMEOUT_MS = 10_000;

export class ClusterPeers {
  private readonly pending = new Map<string, Promise<Claim>>();
  private readonly bound = new Set<string>();
  private readonly agent: Agent;

  constructor(private readonly opts: ClusterPeersOptions) {
    this.agent = new Agent({ connectTimeout: 3000, headersTimeout: opts.headersTimeoutMs ?? 60_000, bodyTimeout: 60_000 });
  }

  private get ttl(): number {
    return this.opts.leases.opts.ttlMs;
  }

  claim(digest: string, _signal?: AbortSignal): Promise<Claim> {
    // Concurrent misses on this replica share one claim (and so one lease); the download they start is
    // bound once. The claim belongs to no client: it goes on when the first one disconnects.
    let p = this.pending.get(digest);
    if (!p) {
      p = this.doClaim(digest).finally(() => this.pending.delete(digest));
      this.pending.set(digest, p);
    }
    return p;
  }

  private local(digest: string): Claim {
    const timer = setTimeout(() => {
      if (!this.bound.has(digest)) void this.opts.leases.release(digest).catch(() => undefined);
    }, BIND_TIMEOUT_MS);
    timer.unref();
    return {
      kind: 'local',
      bind: (done) => {
        clearTimeout(timer);
        if (this.bound.has(digest)) return;
        this.bound.add(digest);
        void done
          .catch(() => undefined)
          .finally(() => {
            this.bound.delete(digest);
            void this.opts.leases.release(digest).catch((e: unknown) => this.opts.logger?.warn({ digest, err: String(e) }, 'cluster: lease release failed'));
          });
      },
    };
  }

  private async doClaim(digest: string): Promise<Claim> {
    const leases = this.opts.leases;
    // Past this, fetch it here without a lease: availability wins over a second upstream fetch.
    const deadline = Date.now() + 2 * this.ttl + 30_000;
    let delay = 50;
    for (;;) {
      const r = await leases.tryAcquire(digest);
      if (r.acquired) {
        if (await this.stored(digest)) {
          await leases.release(digest);
          return { kind: 'stored' };
        }
        return this.local(digest);
      }
      const holder = r.holder;
      if (holder.ownerUrl === leases.opts.ownerUrl) {
        // Our own address under another identity: this replica restarted and its old download is gone.
        if (await leases.takeOver(digest, holder.owner)) return this.local(digest);
        continue;
      }
      const size = await this.probe(holder.ownerUrl, digest);
      if (size !== 'absent' && size !== 'unreachable') {
        this.opts.logger?.debug({ digest, owner: holder.ownerUrl }, 'cluster: streaming from the replica that fetches it');
        return { kind: 'remote', handle: this.remoteHandle(holder.ownerUrl, digest, size) };
      }
      if (size === 'absent' && (await this.stored(digest))) return { kind: 'stored' };
      if (Date.now() > deadline) {
        this.opts.logger?.warn({ digest, owner: holder.ownerUrl }, 'cluster: the lease holder neither serves nor releases the blob; fetching it here');
        return { kind: 'local', bind: () => undefined };
      }
      // Unreachable: its lease expires unless it renews it. Absent: it is committing or just failed.
      await sleep(delay);
      delay = Math.min(delay * 2, 500);
    }
  }

  /**
   * Committed: indexed AND in the shared storage. The index alone is not enough: a blob whose object was lost
   * (deleted by hand, evicted by another replica while it was being served) is fetched again under the lease.
   */
  private async stored(digest: string): Promise<boolean> {
    if ((await this.opts.index.getContent(digest)) === undefined) return false;
    return (await this.opts.storage.stat(blobKey(digest))) !== undefined;
  }

  private headers(range?: ByteRange): Record<string, string> {
    return {
      authorization: `Bearer ${this.opts.secret}`,
      ...(range ? { range: rangeHeader(range) } : {}),
    };
  }

  /** HEAD on the owner's spool: the size (undefined when the upstream sent none), or why not. */
  private async probe(ownerUrl: string, digest: string): Promise<number | undefined | 'absent' | 'unreachable'> {
    try {
      const res = await request(`${ownerUrl}${SPOOL_PATH}${digest}`, { method: 'HEAD', headers: this.headers(), dispatcher: this.agent });
      await res.body.dump();
      if (res.statusCode === 200) {
        const len = Number(res.headers['content-length']);
        return res.headers['content-length'] !== undefined && Number.isSafeInteger(len) ? len : undefined;
      }
      if (res.statusCode === 404) return 'absent';
      this.opts.logger?.warn({ digest, owner: ownerUrl, status: res.statusCode }, 'cluster: unexpected answer from a replica');
      return 'unreachable';
    } catch {
      return 'unreachable';
    }
  }

  private remoteHandle(ownerUrl: string, digest: string, size: number | undefined): BlobHandle {
    return {
      digest,
      size,
      result: 'join',
      open: async (range, signal) => {
        let res;
        try {
          res = await request(`${ownerUrl}${SPOOL_PATH}${digest}`, { method: 'GET', headers: this.headers(range), dispatcher: this.agent, signal });
        } catch (e) {
          throw errors.peerUnreachable.with({ cause: e });
        }
        if (res.statusCode === 404) {
          await res.body.dump();
          // Committed between the probe and now: it is in the shared storage.
          if (await this.opts.index.getContent(digest)) return this.opts.storage.reader(blobKey(digest), range, signal);
        }
        if (res.statusCode !== 200 && res.statusCode !== 206) {
          await res.body.dump();
          throw errors.peerAnswered(res.statusCode);
        }
        return res.body;
      },
      // The bytes are on another replica: streamed, never a local file.
      openFile: () => Promise.resolve(undefined),
    };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/**
 * The core's blob source with the cluster around it: a download in flight on this replica is joined; else the
 * blob is claimed cluster-wide, and only the lease holder fetches from the upstream (its download releases
 * the lease when it ends).
 */
export class ClusterBlobSource implements BlobSource {
  constructor(
    private readonly local: LocalBlobSource,
    private readonly peers: Pick<ClusterPeers, 'claim'>,
  ) {}

  async fetch(route: UpstreamRoute, digest: string, signal?: AbortSignal): Promise<Fetched> {
    if (this.local.downloading(digest)) return this.local.fetch(route, digest, signal);
    const claim = await this.peers.claim(digest, signal);
    if (claim.kind === 'stored') return { kind: 'stored' };
    if (claim.kind === 'remote') return { kind: 'remote', handle: claim.handle };
    const fetched = await this.local.fetch(route, digest, signal);
    // Bound before the upstream's headers are awaited: a slow upstream must not outlast the bind timeout.
    if (fetched.kind === 'local') claim.bind(fetched.download.done);
    return fetched;
  }
}

function secretMatches(header: string | undefined, secret: string): boolean {
  const want = Buffer.from(`Bearer ${secret}`);
  const got = Buffer.from(header ?? '');
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * The owner's side: GET/HEAD /_relais/cluster/spool/<digest> streams a download in flight on this replica
 * (404 when there is none: the asking replica then looks again). Runs before access control: it has its
 * own authentication, the cluster secret.
 */
export function createClusterHandler(opts: { secret: string; blobs: Pick<BlobService, 'localDownload'>; leases: LeaseManager }): ClusterHandler {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (!path.startsWith(SPOOL_PATH)) return false;
    const reply = (status: number, text: string): true => {
      res.statusCode = status;
      res.setHeader('content-type', 'text/plain');
      res.end(req.method === 'HEAD' ? undefined : `${text}\n`);
      return true;
    };
    if (!secretMatches(req.headers.authorization, opts.secret)) return reply(401, 'cluster secret required');
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'GET or HEAD');
    const digest = decodeURIComponent(path.slice(SPOOL_PATH.length));
    if (!DIGEST.test(digest)) return reply(400, 'bad digest');
    let dl = opts.blobs.localDownload(digest);
    // The lease is taken a moment before the download starts: give it that moment.
    for (let waited = 0; !dl && opts.leases.held.has(digest) && waited < 5000; waited += 20) {
      await sleep(20);
      dl = opts.blobs.localDownload(digest);
    }
    if (!dl) return reply(404, 'no download of this blob here');
    try {
      await dl.headers();
    } catch {
      return reply(404, 'the download failed');
    }
    const range = req.headers.range === undefined ? undefined : parseByteRange(req.headers.range, dl.size);
    if (range === 'invalid') return reply(416, 'bad range');
    res.setHeader('content-type', 'application/octet-stream');
    if (range) {
      res.statusCode = 206;
      res.setHeader('content-length', range.end - range.start + 1);
      res.setHeader('content-range', contentRange(range, dl.size));
    } else {
      res.statusCode = 200;
      if (dl.size !== undefined) res.setHeader('content-length', dl.size);
    }
    if (req.method === 'HEAD') {
      res.end();
      return true;
    }
    try {
      await pipeline(dl.open(range), res);
    } catch {
      // The download failed or the other replica went away: a cut response is the signal.
      res.destroy();
    }
    return true;
  };
}
