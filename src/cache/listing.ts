// Tag lists: passed through from the upstream (with the client's name and Link rewritten);
// when the upstream fails, the tag list falls back to the tags relais has cached for the repository.
import { errors, RelaisError } from '../errors.js';
import type { CacheIndex } from '../index/cache-index.js';
import { isStaleEligibleFailure } from '../policy/freshness.js';
import { discard, header, type UpstreamClient } from '../upstream/client.js';
import type { CacheResult } from './blobs.js';
import type { UpstreamRoute } from './routing.js';

export interface TagPage {
  readonly body: { name: string; tags: string[] };
  /** The next page's path and query, for the Link header (already in the client's name space). */
  readonly next: string | undefined;
  readonly result: CacheResult;
}

export interface TagQuery {
  readonly n?: number | undefined;
  readonly last?: string | undefined;
}

const MAX_TAGS_BODY = 16 * 1024 * 1024;

/** Paginates a sorted list the way the spec says: tags after `last`, at most `n`. */
export function paginate(tags: readonly string[], q: TagQuery): { page: string[]; more: boolean } {
  const sorted = [...tags].sort();
  const after = q.last === undefined ? sorted : sorted.filter((t) => t > (q.last ?? ''));
  if (q.n === undefined) return { page: after, more: false };
  return { page: after.slice(0, q.n), more: after.length > q.n };
}

export class ListingService {
  constructor(
    private readonly upstreams: ReadonlyMap<string, UpstreamClient>,
    private readonly index: CacheIndex,
  ) {}

  private upstream(name: string): UpstreamClient {
    const u = this.upstreams.get(name);
    if (!u) throw errors.internal(`upstream ${name} is not configured`);
    return u;
  }

  async tags(route: UpstreamRoute, clientName: string, q: TagQuery, signal?: AbortSignal): Promise<TagPage> {
    const qs = new URLSearchParams();
    if (q.n !== undefined) qs.set('n', String(q.n));
    if (q.last !== undefined) qs.set('last', q.last);
    const suffix = qs.size > 0 ? `?${qs.toString()}` : '';
    try {
      const res = await this.upstream(route.upstream).send({ method: 'GET', repo: route.repo, credential: route.credential, path: `/v2/${route.repo}/tags/list${suffix}`, headers: { accept: 'application/json' }, signal });
      if (res.status === 404) {
        discard(res.body);
        throw errors.nameUnknown(clientName, `unknown to upstream ${route.upstream}`);
      }
      if (res.status !== 200) {
        discard(res.body);
        throw errors.upstreamUnexpected(route.upstream, res.status, 'to tags/list');
      }
      const text = await readLimited(res.body as AsyncIterable<Buffer>, MAX_TAGS_BODY);
      let parsed: { tags?: unknown };
      try {
        parsed = JSON.parse(text) as { tags?: unknown };
      } catch {
        throw errors.upstreamTagListInvalid(route.upstream);
      }
      const tags = Array.isArray(parsed.tags) ? parsed.tags.filter((t): t is string => typeof t === 'string').sort() : [];
      const link = header(res.headers, 'link');
      let next: string | undefined;
      const m = link === undefined ? null : /<([^>]*)>\s*;\s*rel="?next"?/.exec(link);
      if (m?.[1] !== undefined) {
        const u = new URL(m[1], 'http://upstream.invalid');
        const nq = new URLSearchParams();
        const n = u.searchParams.get('n');
        const last = u.searchParams.get('last');
        if (n !== null) nq.set('n', n);
        if (last !== null) nq.set('last', last);
        next = `/v2/${clientName}/tags/list?${nq.toString()}`;
      }
      if (next === undefined) {
        // Some upstreams (distribution 2.8) ignore n and last: paginate here so clients get the spec's behaviour.
        const { page, more } = paginate(tags, q);
        const lastTag = page[page.length - 1];
        if (more && lastTag !== undefined) next = `/v2/${clientName}/tags/list?n=${q.n ?? page.length}&last=${encodeURIComponent(lastTag)}`;
        return { body: { name: clientName, tags: page }, next, result: 'miss' };
      }
      return { body: { name: clientName, tags }, next, result: 'miss' };
    } catch (e) {
      if (!(e instanceof RelaisError) || !isStaleEligibleFailure(e.status)) throw e;
      const known = await this.index.listTags(route.upstream, route.repo);
      if (known.length === 0) throw e;
      const { page, more } = paginate(known, q);
      const lastTag = page[page.length - 1];
      const next = more && lastTag !== undefined ? `/v2/${clientName}/tags/list?n=${q.n ?? page.length}&last=${encodeURIComponent(lastTag)}` : undefined;
      return { body: { name: clientName, tags: page }, next, result: 'stale' };
    }
  }
}

async function readLimited(body: AsyncIterable<Buffer>, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of body) {
    total += c.byteLength;
    if (total > max) throw errors.upstreamResponseTooLarge();
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
