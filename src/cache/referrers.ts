// The referrers API (OCI distribution spec 1.1, GET /v2/<name>/referrers/<digest>) for every upstream:
// 1. the upstream has the API: its answer, every page of it, filtered by artifactType here when the upstream
//    did not (it says so with OCI-Filters-Applied);
// 2. it has not (404/405/400 to the referrers URL, as distribution 2.8 and Docker Hub answer): the index the
//    fallback tag schema names (tag `<alg>-<first 64 hex>`, kept up to date by the clients that push
//    referrers to such registries), read through the manifest cache like any tag;
// 3. neither: an empty index.
// Always 200 with an OCI image index for a valid digest. Answers are kept in memory for a short time
// (src/policy/referrers.ts): entries for tagTtl, an empty list for notFoundTtl, stale-if-error up to maxStale.
import { RelaisError, errors } from '../errors.js';
import { MT } from '../upstream/media-types.js';
import { isStaleEligibleFailure } from '../policy/freshness.js';
import { referrersFreshness, type ReferrersFreshnessSettings } from '../policy/referrers.js';
import { discard, header, type UpstreamClient } from '../upstream/client.js';
import type { CacheResult } from './blobs.js';
import type { ManifestResult } from './manifests.js';
import type { UpstreamRoute } from './routing.js';

const OCI_INDEX = MT.ociIndex;
/** Pages of an upstream's paginated referrers answer relais follows (each up to maxBodySize). */
const MAX_PAGES = 16;
/** Answers kept in memory. */
const MAX_ENTRIES = 4096;

/** One entry of a referrers index: a descriptor of a manifest whose subject is the digest asked about. */
export interface ReferrerDescriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly artifactType?: string;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly [k: string]: unknown;
}

/** Where an answer came from. */
export type ReferrersSource = 'api' | 'fallback-tag' | 'none';

export interface ReferrersAnswer {
  /** The OCI image index sent to the client. */
  readonly body: Buffer;
  /** The client asked for an artifactType and the answer is filtered by it (OCI-Filters-Applied: artifactType). */
  readonly filtered: boolean;
  readonly source: ReferrersSource;
  readonly result: CacheResult;
  readonly count: number;
}

export interface ReferrersServiceOptions {
  readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  /** Reads the fallback tag through the manifest cache (tagTtl, HEAD revalidation, remembered 404s). */
  readonly manifest: (route: UpstreamRoute, tag: string) => Promise<ManifestResult>;
  readonly settings: (upstream: string) => ReferrersFreshnessSettings;
  /** Largest page of an upstream's referrers answer. */
  readonly maxBodySize: number;
  readonly now?: () => number;
}

interface Known {
  /** Descriptors as found (before any artifactType filtering done here). */
  readonly descriptors: readonly ReferrerDescriptor[];
  /** The upstream applied the artifactType filter itself. */
  readonly upstreamFiltered: boolean;
  /** The upstream's bytes, when they can be passed on unchanged (one page, nothing to filter here). */
  readonly raw: Buffer | undefined;
  readonly source: ReferrersSource;
  readonly fetchedAt: number;
}

/** The fallback tag schema's tag for a digest: `<alg>-<ref>`, ref cut to 64 characters. */
export function fallbackTag(digest: string): string {
  const colon = digest.indexOf(':');
  return `${digest.slice(0, colon)}-${digest.slice(colon + 1, colon + 1 + 64)}`;
}

/** The descriptors of an image index document, or undefined when it is not one. */
export function indexDescriptors(doc: unknown): ReferrerDescriptor[] | undefined {
  if (doc === null || typeof doc !== 'object') return undefined;
  const manifests = (doc as { manifests?: unknown }).manifests;
  if (manifests === undefined || manifests === null) return [];
  if (!Array.isArray(manifests)) return undefined;
  return manifests.filter((d): d is ReferrerDescriptor => {
    if (d === null || typeof d !== 'object') return false;
    const x = d as Record<string, unknown>;
    return typeof x.digest === 'string' && typeof x.mediaType === 'string' && typeof x.size === 'number';
  });
}

/** The spec's artifactType filter. */
export function filterByArtifactType(descriptors: readonly ReferrerDescriptor[], artifactType: string): ReferrerDescriptor[] {
  return descriptors.filter((d) => d.artifactType === artifactType);
}

/** The referrers answer: an OCI image index with the descriptors. */
export function referrersIndex(descriptors: readonly ReferrerDescriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: descriptors }));
}

/** The path of a Link: rel="next" header, if it stays on the upstream. */
function nextPage(link: string | undefined, client: UpstreamClient): string | undefined {
  const m = link === undefined ? null : /<([^>]*)>\s*;\s*rel="?next"?/.exec(link);
  if (m?.[1] === undefined) return undefined;
  const u = new URL(m[1], client.baseUrl);
  if (u.host !== client.baseUrl.host) return undefined;
  const base = client.baseUrl.pathname.replace(/\/$/, '');
  const path = base !== '' && u.pathname.startsWith(`${base}/`) ? u.pathname.slice(base.length) : u.pathname;
  return `${path}${u.search}`;
}

export class ReferrersService {
  private readonly known = new Map<string, Known>();
  private readonly pending = new Map<string, Promise<Known>>();
  private readonly now: () => number;

  constructor(private readonly opts: ReferrersServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  private upstream(name: string): UpstreamClient {
    const u = this.opts.upstreams.get(name);
    if (!u) throw errors.internal(`upstream ${name} is not configured`);
    return u;
  }

  /** The referrers of `digest` (already validated), filtered by artifactType when given. */
  async get(route: UpstreamRoute, digest: string, artifactType: string | undefined): Promise<ReferrersAnswer> {
    const key = `${route.upstream}/${route.repo}@${digest}${artifactType === undefined ? '' : `?artifactType=${artifactType}`}`;
    const settings = this.opts.settings(route.upstream);
    const cached = this.known.get(key);
    const state = cached && referrersFreshness(cached.fetchedAt, cached.descriptors.length, this.now(), settings);
    if (cached && state === 'fresh') return this.answer(cached, artifactType, 'hit');
    let k: Known;
    try {
      k = await this.coalesce(key, () => this.fetch(route, digest, artifactType));
    } catch (e) {
      if (cached && state === 'stale-usable' && e instanceof RelaisError && isStaleEligibleFailure(e.status)) return this.answer(cached, artifactType, 'stale');
      throw e;
    }
    this.remember(key, k);
    return this.answer(k, artifactType, 'miss');
  }

  private answer(k: Known, artifactType: string | undefined, result: CacheResult): ReferrersAnswer {
    if (artifactType === undefined || k.upstreamFiltered) {
      return { body: k.raw ?? referrersIndex(k.descriptors), filtered: artifactType !== undefined, source: k.source, result, count: k.descriptors.length };
    }
    const kept = filterByArtifactType(k.descriptors, artifactType);
    return { body: referrersIndex(kept), filtered: true, source: k.source, result, count: kept.length };
  }

  private coalesce(key: string, fn: () => Promise<Known>): Promise<Known> {
    const existing = this.pending.get(key);
    if (existing) return existing;
    const p = fn().finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private remember(key: string, k: Known): void {
    this.known.delete(key);
    this.known.set(key, k);
    if (this.known.size > MAX_ENTRIES) {
      const oldest = this.known.keys().next();
      if (oldest.done !== true) this.known.delete(oldest.value);
    }
  }

  private async fetch(route: UpstreamRoute, digest: string, artifactType: string | undefined): Promise<Known> {
    const fromApi = await this.fromApi(route, digest, artifactType);
    if (fromApi) return fromApi;
    return this.fromFallbackTag(route, digest);
  }

  /** The upstream's referrers API, every page; undefined when the upstream has no such API. */
  private async fromApi(route: UpstreamRoute, digest: string, artifactType: string | undefined): Promise<Known | undefined> {
    const client = this.upstream(route.upstream);
    const fetchedAt = this.now();
    let path: string | undefined = `/v2/${route.repo}/referrers/${digest}${artifactType === undefined ? '' : `?artifactType=${encodeURIComponent(artifactType)}`}`;
    const descriptors: ReferrerDescriptor[] = [];
    let upstreamFiltered = true;
    let raw: Buffer | undefined;
    for (let page = 0; path !== undefined; page++) {
      if (page >= MAX_PAGES) throw errors.upstreamReferrersInvalid(route.upstream, `sent more than ${MAX_PAGES} pages of referrers for ${route.repo}@${digest}`);
      const res = await client.send({ method: 'GET', repo: route.repo, credential: route.credential, path, headers: { accept: OCI_INDEX } });
      if (page === 0 && (res.status === 404 || res.status === 405 || res.status === 400)) {
        // No referrers API here (distribution 2.8 answers 404): the fallback tag schema.
        discard(res.body);
        return undefined;
      }
      if (res.status !== 200) {
        discard(res.body);
        throw errors.upstreamUnexpected(route.upstream, res.status, `to referrers of ${route.repo}@${digest}`);
      }
      const body = await readCapped(res.body as AsyncIterable<Buffer>, this.opts.maxBodySize, route.upstream);
      let doc: unknown;
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        throw errors.upstreamReferrersInvalid(route.upstream, 'sent a referrers answer that is not JSON');
      }
      const found = indexDescriptors(doc);
      if (found === undefined) throw errors.upstreamReferrersInvalid(route.upstream, 'sent a referrers answer that is not an image index');
      descriptors.push(...found);
      const applied = (header(res.headers, 'oci-filters-applied') ?? '').split(',').map((s) => s.trim());
      if (!applied.includes('artifactType')) upstreamFiltered = false;
      path = nextPage(header(res.headers, 'link'), client);
      raw = page === 0 && path === undefined ? body : undefined;
    }
    // Bytes are passed on unchanged only when nothing is left to do here.
    const passRaw = artifactType === undefined || upstreamFiltered;
    return { descriptors, upstreamFiltered: artifactType !== undefined && upstreamFiltered, raw: passRaw ? raw : undefined, source: 'api', fetchedAt };
  }

  /** The index under the fallback tag, or an empty list when the upstream has no such tag. */
  private async fromFallbackTag(route: UpstreamRoute, digest: string): Promise<Known> {
    const fetchedAt = this.now();
    let m: ManifestResult;
    try {
      m = await this.opts.manifest(route, fallbackTag(digest));
    } catch (e) {
      // No such tag (or no such repository): nothing refers to the digest as far as anyone can tell.
      if (e instanceof RelaisError && e.status === 404) return { descriptors: [], upstreamFiltered: false, raw: undefined, source: 'none', fetchedAt };
      throw e;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(m.body.toString('utf8'));
    } catch {
      doc = undefined;
    }
    // A tag of that name that is not an index was not written by the fallback schema: it lists nothing.
    const isIndex = m.mediaType === OCI_INDEX || m.mediaType === MT.dockerList;
    const descriptors = isIndex ? (indexDescriptors(doc) ?? []) : [];
    return { descriptors, upstreamFiltered: false, raw: undefined, source: isIndex ? 'fallback-tag' : 'none', fetchedAt };
  }
}

async function readCapped(body: AsyncIterable<Buffer>, max: number, upstream: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of body) {
    total += c.byteLength;
    if (total > max) throw errors.upstreamReferrersInvalid(upstream, `sent a referrers answer over ${max} bytes (server.maxManifestSize)`);
    chunks.push(c);
  }
  return Buffer.concat(chunks, total);
}
