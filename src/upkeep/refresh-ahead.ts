// Refresh-ahead of hot tags (docs/operations.md): relais counts the pulls of each tag; a hot one
// (src/policy/refresh.ts) is revalidated in the background shortly before its tagTtl ends, HEAD first.
// When the digest moved, the new manifest, the child manifests of the platforms clients pulled (those whose
// previous child is in the cache) and their blobs are fetched through the blob service, like a client's
// pull, and only then does the tag point to the new digest: the next pull is a warm one.
// Bounded: `concurrency` tags at once, `blobConcurrency` blobs per tag, `maxBytesPerHour`; never over
// storage.maxSize (that would evict images clients use); no GET while the upstream is under its pull reserve
// (the HEAD still goes: it costs no pull, and its answer says when the budget is back).
import type { RefreshAheadConfig } from '../config/schema.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { Logger } from '../observability/logger.js';
import type { RefreshMetrics, RefreshResult } from '../observability/refresh-metrics.js';
import { admitBytes, fitsWithoutEviction, isForgettable, isHot, pickRefreshes, pruneSpends, recordPull, refreshDue, spentLastHour, type ByteSpend, type RefreshCandidate } from '../policy/refresh.js';
import type { BlobService } from '../cache/blobs.js';
import type { ManifestResult, ManifestService } from '../cache/manifests.js';
import type { UpstreamRoute } from '../cache/routing.js';

/** Tags whose pulls are counted at most (the least recently pulled go first). */
const MAX_TRACKED = 10_000;

interface Tracked {
  readonly route: UpstreamRoute;
  readonly tag: string;
  pulls: number[];
  /** After a skipped or failed refresh: not tried again before this time (ms since epoch). */
  notBefore: number;
}

/** A refresh that was skipped or failed is tried again after this many scans. */
const RETRY_SCANS = 10;

/** Why a refresh stopped before the tag moved (counted and logged, not an error). */
class Skip extends Error {
  constructor(readonly result: RefreshResult, message: string) {
    super(message);
  }
}

export interface RefreshAheadDeps {
  readonly manifests: ManifestService;
  readonly blobs: BlobService;
  readonly index: CacheIndex;
  readonly tagTtl: (upstream: string) => number;
  /** The upstream's pull budget: false under its reserve. */
  readonly maySpend: (upstream: string) => boolean;
  /** storage.maxSize (undefined: unbounded). */
  readonly maxSize: number | undefined;
  readonly logger: Logger;
  readonly now?: () => number;
}

interface Descriptor {
  readonly digest: string;
  readonly size: number;
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string };
}

interface ManifestDoc {
  readonly manifests?: readonly Descriptor[];
  readonly config?: Descriptor;
  readonly layers?: readonly Descriptor[];
}

function parse(m: ManifestResult): ManifestDoc {
  try {
    return JSON.parse(m.body.toString('utf8')) as ManifestDoc;
  } catch {
    return {};
  }
}

function platformOf(d: Descriptor): string {
  const p = d.platform ?? {};
  return [p.os ?? '?', p.architecture ?? '?', p.variant ?? ''].join('/');
}

export class RefreshAhead {
  private readonly tracked = new Map<string, Tracked>();
  private readonly running = new Map<string, Promise<void>>();
  private spends: ByteSpend[] = [];
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  private readonly now: () => number;
  private metrics: RefreshMetrics | undefined;

  constructor(
    private readonly cfg: RefreshAheadConfig,
    private readonly deps: RefreshAheadDeps,
  ) {
    this.now = deps.now ?? Date.now;
  }

  /** The metrics (they read hotTags() and inFlight, so they are made after this). */
  setMetrics(m: RefreshMetrics): void {
    this.metrics = m;
  }

  /** A client pulled (GET or HEAD) this tag's manifest. */
  recordPull(route: UpstreamRoute, tag: string): void {
    if (!this.cfg.enabled) return;
    const key = `${route.upstream}/${route.repo}:${tag}`;
    let t = this.tracked.get(key);
    if (t) this.tracked.delete(key);
    else t = { route, tag, pulls: [], notBefore: 0 };
    t.pulls = recordPull(t.pulls, this.now(), this.cfg);
    this.tracked.set(key, t);
    if (this.tracked.size > MAX_TRACKED) {
      const oldest = this.tracked.keys().next();
      if (oldest.done !== true) this.tracked.delete(oldest.value);
    }
  }

  /** Tags hot right now. */
  hotTags(): number {
    const now = this.now();
    let n = 0;
    for (const t of this.tracked.values()) if (isHot(t.pulls, now, this.cfg)) n++;
    return n;
  }

  get inFlight(): number {
    return this.running.size;
  }

  /** Blob bytes taken on within the last hour. */
  bytesLastHour(): number {
    return spentLastHour(this.spends, this.now());
  }

  start(): void {
    if (!this.cfg.enabled || this.timer) return;
    this.timer = setInterval(() => {
      this.ticking ??= this.tick()
        .catch((e: unknown) => this.deps.logger.warn({ event: 'refresh-ahead', err: e instanceof Error ? e.message : String(e) }, 'refresh-ahead: scan failed'))
        .finally(() => (this.ticking = undefined));
    }, this.cfg.checkEvery);
    this.timer.unref();
  }

  /** Starts no more refreshes; those running finish their current blobs (see idle()). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
  }

  /** Resolves once no refresh runs (after stop(), and once the blob downloads were cancelled, at shutdown). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }

  /** One scan: starts the due refreshes of hot tags that the bounds allow. */
  async tick(): Promise<void> {
    const now = this.now();
    const due: RefreshCandidate[] = [];
    for (const [key, t] of [...this.tracked]) {
      if (isForgettable(t.pulls, now, this.cfg)) {
        this.tracked.delete(key);
        continue;
      }
      if (this.running.has(key) || now < t.notBefore || !isHot(t.pulls, now, this.cfg)) continue;
      const entry = await this.deps.index.getTag(t.route.upstream, t.route.repo, t.tag);
      if (!entry) continue;
      if (refreshDue(entry.checkedAt, now, this.deps.tagTtl(t.route.upstream), this.cfg.lead)) due.push({ key, pulls: t.pulls.length, checkedAt: entry.checkedAt });
    }
    for (const key of pickRefreshes(due, new Set(this.running.keys()), this.cfg.concurrency)) {
      const t = this.tracked.get(key);
      if (!t || this.stopped) continue;
      const p = this.refresh(t).finally(() => this.running.delete(key));
      this.running.set(key, p);
    }
  }

  private async refresh(t: Tracked): Promise<void> {
    const { route, tag } = t;
    // Anything but a completed revalidation waits a few scans before the next try (no hammering, no log flood).
    t.notBefore = this.now() + RETRY_SCANS * this.cfg.checkEvery;
    const image = `${route.upstream}/${route.repo}:${tag}`;
    const count = (result: RefreshResult): void => this.metrics?.refreshes.inc({ upstream: route.upstream, result });
    // Under the upstream's pull reserve the HEAD still goes (Docker Hub does not count it: an unchanged tag is
    // confirmed for free, and its answer tells relais when the budget is back); no GET follows it (mayGet).
    const started = this.now();
    let bytes = 0;
    try {
      const out = await this.deps.manifests.refreshTag(route, tag, {
        mayGet: () => this.deps.maySpend(route.upstream),
        warm: async (next, previous) => {
          bytes = await this.warm(route, next, previous);
        },
      });
      const result: RefreshResult = out.kind === 'held' ? 'held_budget' : out.kind;
      count(result);
      if (out.kind === 'held') this.metrics?.heldBack.inc({ upstream: route.upstream, what: 'refresh' });
      const detail = { event: 'refresh-ahead', image, result, ...(out.kind === 'moved' || out.kind === 'held' ? { from: out.from, to: out.to } : {}), bytes, ms: this.now() - started };
      if (out.kind === 'moved') this.deps.logger.info(detail, `refresh-ahead: ${image} moved upstream; new manifest and blobs fetched before any client asked`);
      else this.deps.logger.debug(detail, `refresh-ahead: ${image} ${result}`);
    } catch (e) {
      if (e instanceof Skip) {
        count(e.result);
        this.deps.logger.info({ event: 'refresh-ahead', image, result: e.result }, `refresh-ahead: ${image} skipped: ${e.message}`);
        return;
      }
      count('failed');
      // At shutdown the downloads are cancelled under it: not worth a warning.
      (this.stopped ? this.deps.logger.debug.bind(this.deps.logger) : this.deps.logger.warn.bind(this.deps.logger))({ event: 'refresh-ahead', image, err: e instanceof Error ? e.message : String(e) }, `refresh-ahead: ${image} failed`);
    }
  }

  /** Fetches what the clients of the previous digest will need from the next one; returns the blob bytes fetched. */
  private async warm(route: UpstreamRoute, next: ManifestResult, previous: ManifestResult | undefined): Promise<number> {
    const doc = parse(next);
    const images: ManifestDoc[] = [];
    if (doc.manifests !== undefined) {
      // The platforms clients pulled: those of the previous index whose child manifest is in the cache.
      const pulled = new Set<string>();
      for (const c of (previous ? parse(previous).manifests : undefined) ?? []) {
        if (await this.deps.index.getContent(c.digest)) pulled.add(platformOf(c));
      }
      for (const c of doc.manifests) {
        if (!pulled.has(platformOf(c))) continue;
        if (!this.deps.maySpend(route.upstream)) throw new Skip('skipped_budget', 'upstream under its pull reserve');
        images.push(parse(await this.deps.manifests.get(route, c.digest)));
      }
    } else {
      images.push(doc);
    }
    const missing: Descriptor[] = [];
    const seen = new Set<string>();
    for (const img of images) {
      for (const d of [img.config, ...(img.layers ?? [])]) {
        if (d === undefined || seen.has(d.digest)) continue;
        seen.add(d.digest);
        if (!(await this.deps.index.getContent(d.digest))) missing.push(d);
      }
    }
    const planned = missing.reduce((n, d) => n + d.size, 0);
    if (planned === 0) return 0;
    const now = this.now();
    this.spends = pruneSpends(this.spends, now);
    if (!admitBytes(spentLastHour(this.spends, now), planned, this.cfg.maxBytesPerHour)) {
      throw new Skip('skipped_bytes', `${planned} bytes would go over refreshAhead.maxBytesPerHour`);
    }
    const usage = await this.deps.index.usage();
    if (!fitsWithoutEviction(usage.bytes, planned, this.deps.maxSize)) {
      throw new Skip('skipped_space', `${planned} bytes would need eviction under storage.maxSize`);
    }
    this.spends.push({ at: now, bytes: planned });
    let fetched = 0;
    let i = 0;
    const worker = async (): Promise<void> => {
      for (;;) {
        const d = missing[i++];
        if (d === undefined || this.stopped) return;
        // Through the blob service like a client's pull: single-flight with clients, verified, committed.
        const handle = await this.deps.blobs.get(route, d.digest);
        const stream = await handle.open();
        for await (const chunk of stream as AsyncIterable<Buffer>) fetched += chunk.byteLength;
        this.metrics?.bytes.inc({ upstream: route.upstream }, d.size);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.cfg.blobConcurrency, missing.length) }, worker));
    if (this.stopped) throw new Skip('failed', 'relais is stopping');
    return fetched;
  }
}
