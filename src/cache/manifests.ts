// Manifests: by digest they are immutable once cached; by tag they are cached for the upstream's tagTtl,
// then revalidated with HEAD (which does not count against Docker Hub's pull limit; GET does). When the
// upstream fails, the last known digest is served up to maxStale (stale-if-error). 404s are remembered
// for notFoundTtl. Concurrent lookups of the same tag or digest share one upstream call.
// Bytes are served exactly as the upstream sent them: no conversion between Docker and OCI formats.
import { createHash } from 'node:crypto';
import { errors, RelaisError } from '../errors.js';
import type { CacheIndex, TagEntry } from '../index/cache-index.js';
import { isStaleEligibleFailure, mayServeStale, tagFreshness, type FreshnessSettings } from '../policy/freshness.js';
import { blobKey, type StorageDriver } from '../storage/driver.js';
import { discard, header, type UpstreamClient, type UpstreamResponse } from '../upstream/client.js';
import { ACCEPT_CACHED_MANIFESTS, MT } from '../upstream/media-types.js';
import type { CacheResult } from './blobs.js';
import { asStorageFull } from './download.js';
import { isDigest, validateDigest } from './reference.js';
import type { UpstreamRoute } from './routing.js';


/** Tag mappings kept in memory. */
const MAX_MEMORY_TAGS = 10_000;

export interface ManifestResult {
  readonly digest: string;
  readonly mediaType: string;
  readonly body: Buffer;
  readonly result: CacheResult;
  /** For a tag served from cache without asking the upstream: until when (ms since epoch) it stays fresh. */
  readonly freshUntil?: number;
}

export interface ManifestSettings extends FreshnessSettings {
  readonly notFoundTtl: number;
}

export interface ManifestServiceOptions {
  readonly storage: StorageDriver;
  readonly index: CacheIndex;
  readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  readonly settings: (upstream: string) => ManifestSettings;
  readonly maxManifestSize: number;
  /** Bytes of manifests kept in memory for hot tags. */
  readonly memoryBytes?: number;
  readonly now?: () => number;
  /** Cluster mode: one replica at a time fetches or revalidates a given manifest (src/cluster/manifest-flight.ts). */
  readonly coordinator?: ManifestCoordinator | undefined;
  /**
   * The upstream's pull budget (src/policy/budget.ts): when it says no, a tag whose digest moved is served
   * stale (within maxStale) instead of spending a GET on it; `heldBack` is told each time.
   */
  readonly budget?: { maySpend(upstream: string): boolean; heldBack?(route: UpstreamRoute, tag: string): void } | undefined;
  /**
   * storage.maxSize: a manifest's room is reserved before it is written and released once the index counts it
   * (BlobService.storeWithinBudget), so that the budget's bound counts manifests too.
   */
  readonly space?: { storeWithinBudget(digest: string, size: number, write: () => Promise<void>, index: () => Promise<void>): Promise<void> } | undefined;
}

/** What refreshTag() found (refresh-ahead, src/upkeep/refresh-ahead.ts). */
export type RefreshOutcome =
  | { readonly kind: 'unchanged'; readonly digest: string }
  | { readonly kind: 'moved'; readonly from: string; readonly to: string }
  /** The digest moved but mayGet() said no: nothing fetched, the tag left as it was. */
  | { readonly kind: 'held'; readonly from: string; readonly to: string }
  /** Not cached, or gone upstream (the next pull finds out as usual). */
  | { readonly kind: 'missing' };

/**
 * Makes a manifest fetch cluster-wide single-flight: `work` runs on the one replica that holds the key's lease;
 * the others poll `done` (what the shared index and storage now hold) and return what it finds.
 */
export interface ManifestCoordinator {
  once<T>(key: string, work: () => Promise<T>, done: () => Promise<T | undefined>): Promise<T>;
}

/**
 * What this process changed in the index that another process's memory may still hold. A cluster's replicas
 * share the index but not their memories (tag mappings, remembered 404s, bodies, prepared responses): the
 * cluster carries each change to the other replicas (src/cluster/invalidations.ts), which apply it with
 * `applyChange`. Kept small: it travels in a PostgreSQL notification. Every item stands alone, so a change
 * may be split into parts and applied part by part.
 */
export type ManifestChange =
  /**
   * References (tags or digests) of a repository written or deleted at the upstream: their tag mappings and
   * remembered 404s are out of date, and so are the prepared responses and tag mappings naming `digests`.
   */
  | { readonly kind: 'references'; readonly upstream: string; readonly repo: string; readonly references: readonly string[]; readonly digests: readonly string[] }
  /** Manifests eviction or gc removed from the index (and the tags pointing to them). */
  | { readonly kind: 'forgotten'; readonly digests: readonly string[] };

interface MemEntry {
  readonly mediaType: string;
  readonly body: Buffer;
}

/** A small LRU of manifest bodies by digest, bounded in bytes. */
class ManifestMemory {
  private readonly map = new Map<string, MemEntry>();
  private bytes = 0;
  constructor(private readonly limit: number) {}
  get(digest: string): MemEntry | undefined {
    const e = this.map.get(digest);
    if (e) {
      this.map.delete(digest);
      this.map.set(digest, e);
    }
    return e;
  }
  set(digest: string, e: MemEntry): void {
    if (e.body.byteLength > this.limit / 4) return;
    const old = this.map.get(digest);
    if (old) {
      this.bytes -= old.body.byteLength;
      this.map.delete(digest);
    }
    this.map.set(digest, e);
    this.bytes += e.body.byteLength;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.limit) break;
      this.map.delete(k);
      this.bytes -= v.body.byteLength;
    }
  }
  delete(digest: string): void {
    const old = this.map.get(digest);
    if (old) {
      this.bytes -= old.body.byteLength;
      this.map.delete(digest);
    }
  }
}

/** Digests a manifest points to: config, layers, index children, subject, artifact blobs. */
export function manifestReferences(doc: unknown): string[] {
  const out = new Set<string>();
  if (doc === null || typeof doc !== 'object') return [];
  const d = doc as Record<string, unknown>;
  const add = (x: unknown): void => {
    if (x !== null && typeof x === 'object') {
      const digest = (x as { digest?: unknown }).digest;
      if (typeof digest === 'string') out.add(digest);
    }
  };
  add(d.config);
  add(d.subject);
  for (const k of ['layers', 'manifests', 'blobs']) {
    const arr = d[k];
    if (Array.isArray(arr)) arr.forEach(add);
  }
  return [...out];
}

export class ManifestService {
  private readonly memory: ManifestMemory;
  private readonly pending = new Map<string, Promise<ManifestResult>>();
  /** Tag -> digest mappings seen lately, so a fresh hit costs no index read. */
  private readonly tags = new Map<string, TagEntry>();
  /** Remembered 404s: key -> expiry time. */
  private readonly notFound = new Map<string, number>();
  private readonly now: () => number;
  /** Told which manifests eviction or gc removed (prepared responses built from them must go too); 'all': everything. */
  private readonly forgetListeners: ((digests: ReadonlySet<string> | 'all') => void)[] = [];
  /** Told what this process changed in the index (a cluster passes it on to the other replicas). */
  private readonly changeListeners: ((change: ManifestChange) => void)[] = [];

  constructor(private readonly opts: ManifestServiceOptions) {
    this.memory = new ManifestMemory(opts.memoryBytes ?? 64 * 1024 * 1024);
    this.now = opts.now ?? Date.now;
  }

  private upstream(name: string): UpstreamClient {
    const u = this.opts.upstreams.get(name);
    if (!u) throw errors.internal(`upstream ${name} is not configured`);
    return u;
  }

  async get(route: UpstreamRoute, reference: string, signal?: AbortSignal): Promise<ManifestResult> {
    const key = `${route.upstream}/${route.repo}:${reference}`;
    const nf = this.notFound.get(key);
    if (nf !== undefined) {
      if (nf > this.now()) throw errors.manifestUnknown(route.repo, reference);
      this.notFound.delete(key);
    }
    if (isDigest(reference)) {
      validateDigest(reference);
      const local = await this.loadLinked(route, reference);
      if (local) return { ...local, result: 'hit' };
      return this.coalesce(key, () => this.fetch(route, reference), () => this.loadLinked(route, reference).then((l) => (l ? { ...l, result: 'hit' as const } : undefined)));
    }
    let entry = this.tags.get(key);
    if (!entry) {
      entry = await this.opts.index.getTag(route.upstream, route.repo, reference);
      if (entry) this.rememberTag(key, entry);
    }
    const hit = entry && (await this.freshHit(route, entry));
    if (hit) {
      this.opts.index.touch(hit.digest, this.now());
      return hit;
    }
    return this.coalesce(key, () => this.revalidateOrFetch(route, reference, signal), () => this.freshFromIndex(route, reference));
  }

  /** A tag another replica has just fetched or revalidated: fresh in the shared index, body in shared storage. */
  private async freshFromIndex(route: UpstreamRoute, tag: string): Promise<ManifestResult | undefined> {
    const entry = await this.opts.index.getTag(route.upstream, route.repo, tag);
    const hit = entry && (await this.freshHit(route, entry));
    if (entry && hit) this.rememberTag(`${route.upstream}/${route.repo}:${tag}`, entry);
    return hit;
  }

  /** The tag's manifest when the tag is fresh and its body is at hand, with the time its freshness ends. */
  private async freshHit(route: UpstreamRoute, entry: TagEntry): Promise<ManifestResult | undefined> {
    const settings = this.opts.settings(route.upstream);
    if (tagFreshness(entry, this.now(), settings) !== 'fresh') return undefined;
    const local = await this.load(entry.digest);
    return local && { ...local, result: 'hit', freshUntil: entry.checkedAt + settings.tagTtl };
  }

  /**
   * One fetch per key at a time: in this process (the pending map), and across a cluster's replicas (the
   * coordinator), where a replica that finds another one on it waits for the shared index instead.
   */
  private coalesce(key: string, fn: () => Promise<ManifestResult>, done: () => Promise<ManifestResult | undefined>): Promise<ManifestResult> {
    const existing = this.pending.get(key);
    if (existing) return existing;
    const coordinator = this.opts.coordinator;
    const run = coordinator ? () => coordinator.once(`manifest:${key}`, fn, done) : fn;
    // The shared call must not die with the first client: it runs without the client's signal.
    const p = run().finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private async load(digest: string): Promise<{ digest: string; mediaType: string; body: Buffer } | undefined> {
    const mem = this.memory.get(digest);
    if (mem) return { digest, ...mem };
    const meta = await this.opts.index.getContent(digest);
    if (meta?.mediaType === undefined) return undefined;
    const body = await this.opts.storage.getContent(blobKey(digest));
    if (!body) return undefined;
    this.memory.set(digest, { mediaType: meta.mediaType, body });
    return { digest, mediaType: meta.mediaType, body };
  }

  private async loadLinked(route: UpstreamRoute, digest: string): Promise<{ digest: string; mediaType: string; body: Buffer } | undefined> {
    const local = await this.load(digest);
    if (!local) return undefined;
    if (!(await this.opts.index.isLinked(route.upstream, route.repo, digest))) return undefined;
    this.opts.index.touch(digest, this.now());
    return local;
  }

  private async revalidateOrFetch(route: UpstreamRoute, tag: string, _signal?: AbortSignal): Promise<ManifestResult> {
    const entry = await this.opts.index.getTag(route.upstream, route.repo, tag);
    const settings = this.opts.settings(route.upstream);
    const now = this.now();
    const hit = entry && (await this.freshHit(route, entry));
    if (hit) return hit;
    if (!entry) return this.fetch(route, tag);
    try {
      // Revalidate with HEAD: free against Docker Hub's pull limit.
      const res = await this.upstream(route.upstream).send({
        method: 'HEAD',
        repo: route.repo,
        credential: route.credential,
        path: `/v2/${route.repo}/manifests/${tag}`,
        headers: { accept: ACCEPT_CACHED_MANIFESTS },
      });
      discard(res.body);
      if (res.status === 404) {
        await this.opts.index.deleteTag(route.upstream, route.repo, tag);
        this.tags.delete(`${route.upstream}/${route.repo}:${tag}`);
        this.rememberNotFound(route, tag);
        throw errors.manifestUnknown(route.repo, tag);
      }
      if (res.status !== 200) throw errors.upstreamUnexpected(route.upstream, res.status, 'to HEAD manifest');
      const upstreamDigest = header(res.headers, 'docker-content-digest');
      if (upstreamDigest === entry.digest) {
        const local = await this.load(entry.digest);
        if (local) {
          const checkedAt = this.now();
          await this.opts.index.markTagChecked(route.upstream, route.repo, tag, checkedAt);
          this.rememberTag(`${route.upstream}/${route.repo}:${tag}`, { ...entry, checkedAt });
          // A use like any hit: eviction is least-recently-used.
          this.opts.index.touch(entry.digest, checkedAt);
          return { ...local, result: 'revalidated' };
        }
      }
      // Under the upstream's pull reserve, a moved tag is served stale rather than spending a GET on it.
      if (this.opts.budget?.maySpend(route.upstream) === false && mayServeStale(entry, now, settings)) {
        const local = await this.load(entry.digest);
        if (local) {
          this.opts.budget.heldBack?.(route, tag);
          this.opts.index.touch(entry.digest, this.now());
          return { ...local, result: 'stale' };
        }
      }
      return await this.fetch(route, tag);
    } catch (e) {
      if (e instanceof RelaisError && isStaleEligibleFailure(e.status) && mayServeStale(entry, now, settings)) {
        const local = await this.load(entry.digest);
        if (local) {
          this.opts.index.touch(entry.digest, this.now());
          return { ...local, result: 'stale' };
        }
      }
      throw e;
    }
  }

  /**
   * The upstream accepted a DELETE of a manifest (through the proxy door): the repository's tags naming it (or
   * the tag deleted) are forgotten, so the next pull asks the upstream. Returns the tags forgotten.
   */
  async forgetDeleted(route: UpstreamRoute, reference: string): Promise<string[]> {
    const gone: string[] = [];
    const digests = new Set<string>();
    const candidates = isDigest(reference) ? await this.opts.index.listTags(route.upstream, route.repo) : [reference];
    for (const tag of candidates) {
      const entry = await this.opts.index.getTag(route.upstream, route.repo, tag);
      if (!entry || (isDigest(reference) && entry.digest !== reference)) continue;
      await this.opts.index.deleteTag(route.upstream, route.repo, tag);
      this.tags.delete(`${route.upstream}/${route.repo}:${tag}`);
      digests.add(entry.digest);
      gone.push(tag);
    }
    // Prepared responses answer by URL until their freshness ends: the ones of these digests must go.
    if (digests.size > 0) for (const l of this.forgetListeners) l(digests);
    if (gone.length > 0) this.emit({ kind: 'references', upstream: route.upstream, repo: route.repo, references: gone, digests: [...digests] });
    return gone;
  }

  /** A manifest was just pushed under this reference: a 404 remembered for it is no longer true. */
  forgetNotFound(route: UpstreamRoute, reference: string): void {
    this.notFound.delete(`${route.upstream}/${route.repo}:${reference}`);
  }

  /**
   * A manifest a client pushed (through the proxy door) and the upstream accepted: stored and recorded as a
   * fetch would record it, by digest and for its tag, confirmed now (so fresh for the upstream's tagTtl, then
   * revalidated with HEAD like any tag). Kept only when the digest of the bytes equals the digest the upstream
   * answered (Docker-Content-Digest) and, for a push by digest, the reference. Prepared responses for the
   * tag's previous digest are dropped, so the next pull of the tag gets what was pushed.
   */
  async keepPushed(route: UpstreamRoute, reference: string, body: Buffer, contentType: string | undefined, upstreamDigest: string | undefined): Promise<{ readonly kept: true; readonly digest: string } | { readonly kept: false; readonly reason: string }> {
    const expected = isDigest(reference) ? reference : upstreamDigest;
    if (expected === undefined) return { kept: false, reason: 'the upstream sent no Docker-Content-Digest' };
    if (upstreamDigest !== undefined && upstreamDigest !== expected) return { kept: false, reason: 'the upstream\'s digest differs from the reference' };
    const alg = expected.startsWith('sha512:') ? 'sha512' : 'sha256';
    const digest = `${alg}:${createHash(alg).update(body).digest('hex')}`;
    if (digest !== expected) return { kept: false, reason: 'digest mismatch' };
    if (body.byteLength > this.opts.maxManifestSize) return { kept: false, reason: 'over server.maxManifestSize' };
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      return { kept: false, reason: 'not JSON' };
    }
    const declared = doc !== null && typeof doc === 'object' ? (doc as { mediaType?: unknown }).mediaType : undefined;
    const ct = contentType?.split(';')[0]?.trim();
    const mediaType = ct !== undefined && ct !== '' && ct !== 'application/json' ? ct : typeof declared === 'string' ? declared : MT.ociManifest;
    const tag = isDigest(reference) ? undefined : reference;
    const key = `${route.upstream}/${route.repo}:${reference}`;
    const previous = tag === undefined ? undefined : (this.tags.get(key) ?? (await this.opts.index.getTag(route.upstream, route.repo, tag)));
    const now = this.now();
    try {
      await this.store(digest, body, () => this.opts.index.putManifest({ upstream: route.upstream, repo: route.repo, digest, size: body.byteLength, mediaType, references: manifestReferences(doc), tag, now }));
    } catch (e) {
      throw asStorageFull(e) ?? e;
    }
    this.memory.set(digest, { mediaType, body });
    this.notFound.delete(key);
    if (tag !== undefined) {
      this.rememberTag(key, { digest, fetchedAt: now, checkedAt: now });
      // Prepared responses answer by URL until their freshness ends: the ones of the tag's old digest must go.
      if (previous !== undefined && previous.digest !== digest) for (const l of this.forgetListeners) l(new Set([previous.digest]));
    }
    this.emit({ kind: 'references', upstream: route.upstream, repo: route.repo, references: [reference], digests: previous !== undefined && previous.digest !== digest ? [previous.digest] : [] });
    return { kept: true, digest };
  }

  // --- Refresh-ahead (src/upkeep/refresh-ahead.ts) -------------------------------------------------------
  /**
   * Revalidates a cached tag ahead of its TTL: HEAD first (free against Docker Hub's limit). Unchanged: the
   * tag is confirmed (fresh for another tagTtl). Moved: when `mayGet()` allows, the new manifest is fetched by
   * digest (verified, stored, linked), `warm` fetches what clients will need, and only then does the tag point
   * to it. If `warm` throws, the tag stays as it was (the next pull after its TTL revalidates as usual).
   */
  async refreshTag(
    route: UpstreamRoute,
    tag: string,
    opts: { mayGet(): boolean; warm(next: ManifestResult, previous: ManifestResult | undefined): Promise<void> },
  ): Promise<RefreshOutcome> {
    const key = `${route.upstream}/${route.repo}:${tag}`;
    const entry = await this.opts.index.getTag(route.upstream, route.repo, tag);
    if (!entry) return { kind: 'missing' };
    const res = await this.upstream(route.upstream).send({ method: 'HEAD', repo: route.repo, credential: route.credential, path: `/v2/${route.repo}/manifests/${tag}`, headers: { accept: ACCEPT_CACHED_MANIFESTS } });
    discard(res.body);
    if (res.status === 404) return { kind: 'missing' };
    if (res.status !== 200) throw errors.upstreamUnexpected(route.upstream, res.status, 'to HEAD manifest');
    const digest = header(res.headers, 'docker-content-digest');
    if (digest === undefined) throw errors.upstreamNoDigest(route.upstream, `${route.repo}:${tag}`);
    if (digest === entry.digest && (await this.load(digest))) {
      const checkedAt = this.now();
      await this.opts.index.markTagChecked(route.upstream, route.repo, tag, checkedAt);
      this.rememberTag(key, { ...entry, checkedAt });
      return { kind: 'unchanged', digest };
    }
    if (!opts.mayGet()) return { kind: 'held', from: entry.digest, to: digest };
    const previous = await this.load(entry.digest);
    const next = await this.get(route, digest);
    await opts.warm(next, previous && { ...previous, result: 'hit' });
    const now = this.now();
    let doc: unknown;
    try {
      doc = JSON.parse(next.body.toString('utf8'));
    } catch {
      doc = undefined;
    }
    await this.opts.index.putManifest({ upstream: route.upstream, repo: route.repo, digest, size: next.body.byteLength, mediaType: next.mediaType, references: manifestReferences(doc), tag, now });
    this.rememberTag(key, { digest, fetchedAt: now, checkedAt: now });
    return { kind: 'moved', from: entry.digest, to: digest };
  }
  // --- end of refresh-ahead -------------------------------------------------------------------------

  /**
   * Eviction and gc hook: forgets manifests they removed from the index, and the tags pointing to them, so
   * the next pull fetches (and indexes) them again instead of serving them from memory unknown to the index.
   */
  forget(digests: Iterable<string>): void {
    const gone = new Set(digests);
    if (gone.size === 0) return;
    this.forgetLocally(gone);
    this.emit({ kind: 'forgotten', digests: [...gone] });
  }

  private forgetLocally(gone: ReadonlySet<string>): void {
    for (const d of gone) this.memory.delete(d);
    for (const [key, entry] of this.tags) if (gone.has(entry.digest)) this.tags.delete(key);
    for (const l of this.forgetListeners) l(gone);
  }

  /**
   * A change another process made to the shared index (a cluster's replica; src/cluster/invalidations.ts): what
   * this process remembers of it is dropped, so the next request reads the index. Nothing is emitted again.
   */
  applyChange(change: ManifestChange): void {
    if (change.kind === 'forgotten') {
      if (change.digests.length > 0) this.forgetLocally(new Set(change.digests));
      return;
    }
    const stale = new Set(change.digests);
    for (const reference of change.references) {
      const key = `${change.upstream}/${change.repo}:${reference}`;
      this.notFound.delete(key);
      // This process's own mapping may name another digest than the writer knew: its prepared responses go too.
      const mine = this.tags.get(key);
      if (mine !== undefined) stale.add(mine.digest);
      this.tags.delete(key);
    }
    if (stale.size === 0) return;
    for (const [key, entry] of this.tags) if (stale.has(entry.digest)) this.tags.delete(key);
    for (const l of this.forgetListeners) l(stale);
  }

  /**
   * Drops every tag mapping, remembered 404 and prepared response (not the bodies: a digest's bytes never
   * change, and a manifest by digest is served only when the index links it). For a cluster replica that may
   * have missed changes of the other replicas: the next requests read the shared index.
   */
  dropMemory(): { readonly tags: number; readonly notFound: number } {
    const dropped = { tags: this.tags.size, notFound: this.notFound.size };
    this.tags.clear();
    this.notFound.clear();
    for (const l of this.forgetListeners) l('all');
    return dropped;
  }

  /** Calls `listener` with each change this process makes to the index that other processes may remember. */
  onChange(listener: (change: ManifestChange) => void): void {
    this.changeListeners.push(listener);
  }

  private emit(change: ManifestChange): void {
    for (const l of this.changeListeners) l(change);
  }

  /**
   * A client wrote this tag or digest at the upstream (a push forwarded by the proxy door): a remembered 404
   * and the tag's mapping are out of date, so the next pull asks the upstream instead of answering from them.
   */
  async written(route: UpstreamRoute, reference: string): Promise<void> {
    const key = `${route.upstream}/${route.repo}:${reference}`;
    this.notFound.delete(key);
    if (isDigest(reference)) {
      this.emit({ kind: 'references', upstream: route.upstream, repo: route.repo, references: [reference], digests: [] });
      return;
    }
    this.tags.delete(key);
    const old = await this.opts.index.getTag(route.upstream, route.repo, reference);
    await this.opts.index.deleteTag(route.upstream, route.repo, reference);
    // Prepared responses answer by URL until their freshness ends: the old digest's must go too.
    if (old) for (const l of this.forgetListeners) l(new Set([old.digest]));
    this.emit({ kind: 'references', upstream: route.upstream, repo: route.repo, references: [reference], digests: old ? [old.digest] : [] });
  }

  /**
   * Calls `listener` with the digests each time relais forgets manifests (eviction, gc, a push or delete), or
   * with 'all' when it drops everything it remembered (dropMemory).
   */
  onForget(listener: (digests: ReadonlySet<string> | 'all') => void): void {
    this.forgetListeners.push(listener);
  }

  /** Records a use of a cached manifest served without a lookup (its last-access time, for eviction). */
  touch(digest: string): void {
    this.opts.index.touch(digest, this.now());
  }

  /** Keeps the hot tags in memory (the index stays the source of truth across restarts). */
  private rememberTag(key: string, entry: TagEntry): void {
    this.tags.delete(key);
    this.tags.set(key, entry);
    if (this.tags.size > MAX_MEMORY_TAGS) {
      const oldest = this.tags.keys().next();
      if (oldest.done !== true) this.tags.delete(oldest.value);
    }
  }

  private rememberNotFound(route: UpstreamRoute, reference: string): void {
    const ttl = this.opts.settings(route.upstream).notFoundTtl;
    if (ttl > 0) this.notFound.set(`${route.upstream}/${route.repo}:${reference}`, this.now() + ttl);
    if (this.notFound.size > 10_000) {
      const now = this.now();
      for (const [k, exp] of this.notFound) if (exp <= now) this.notFound.delete(k);
    }
  }

  /** GET from the upstream, verify, store, index. `reference` is a tag or a digest. */
  private async fetch(route: UpstreamRoute, reference: string, signal?: AbortSignal): Promise<ManifestResult> {
    const res = await this.upstream(route.upstream).send({
      method: 'GET',
      repo: route.repo,
      credential: route.credential,
      path: `/v2/${route.repo}/manifests/${reference}`,
      headers: { accept: ACCEPT_CACHED_MANIFESTS },
      signal,
    });
    if (res.status === 404) {
      discard(res.body);
      this.rememberNotFound(route, reference);
      throw errors.manifestUnknown(route.repo, reference);
    }
    if (res.status !== 200) {
      discard(res.body);
      throw errors.upstreamUnexpected(route.upstream, res.status, `for manifest ${route.repo}:${reference}`);
    }
    const body = await this.readCapped(route.upstream, res);
    const expected = isDigest(reference) ? reference : header(res.headers, 'docker-content-digest');
    const alg = expected?.startsWith('sha512:') === true ? 'sha512' : 'sha256';
    const digest = `${alg}:${createHash(alg).update(body).digest('hex')}`;
    if (expected !== undefined && expected !== digest) {
      throw errors.upstreamManifestDigestMismatch(route.upstream, `${route.repo}:${reference}`, digest, expected);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      throw errors.manifestInvalid(`upstream ${route.upstream} sent a manifest that is not JSON`);
    }
    const declared = doc !== null && typeof doc === 'object' ? (doc as { mediaType?: unknown }).mediaType : undefined;
    const contentType = header(res.headers, 'content-type')?.split(';')[0]?.trim();
    const mediaType = contentType !== undefined && contentType !== '' && contentType !== 'application/json' ? contentType : typeof declared === 'string' ? declared : MT.ociManifest;
    try {
      await this.store(digest, body, () => this.opts.index.putManifest({
        upstream: route.upstream,
        repo: route.repo,
        digest,
        size: body.byteLength,
        mediaType,
        references: manifestReferences(doc),
        tag: isDigest(reference) ? undefined : reference,
        now: this.now(),
      }));
    } catch (e) {
      // A full disk is the operator's to fix: say so (503 STORAGE_FULL), not "internal error".
      throw asStorageFull(e) ?? e;
    }
    this.memory.set(digest, { mediaType, body });
    if (!isDigest(reference)) {
      const now = this.now();
      this.rememberTag(`${route.upstream}/${route.repo}:${reference}`, { digest, fetchedAt: now, checkedAt: now });
    }
    return { digest, mediaType, body, result: 'miss' };
  }

  /** Writes a manifest to storage, then its index row: within the storage budget when one is configured. */
  private async store(digest: string, body: Buffer, index: () => Promise<void>): Promise<void> {
    const write = (): Promise<void> => this.opts.storage.putContent(blobKey(digest), body);
    if (this.opts.space) return this.opts.space.storeWithinBudget(digest, body.byteLength, write, index);
    await write();
    await index();
  }

  private async readCapped(upstream: string, res: UpstreamResponse): Promise<Buffer> {
    const max = this.opts.maxManifestSize;
    const len = Number(header(res.headers, 'content-length'));
    if (Number.isFinite(len) && len > max) {
      discard(res.body);
      throw errors.manifestInvalid(`upstream ${upstream} sent a manifest of ${len} bytes, over the ${max}-byte limit (server.maxManifestSize)`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of res.body as AsyncIterable<Buffer>) {
      total += c.byteLength;
      if (total > max) {
        discard(res.body);
        throw errors.manifestInvalid(`upstream ${upstream} sent a manifest over the ${max}-byte limit (server.maxManifestSize)`);
      }
      chunks.push(c);
    }
    return Buffer.concat(chunks, total);
  }
}
