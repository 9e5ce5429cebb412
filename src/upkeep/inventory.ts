// What the cache holds, for `relais ls` and `relais stats`: read from the index only (the SQLite file can
// be read while relais serves: WAL mode).
import type { CacheIndex, IndexUsage } from '../index/cache-index.js';
import { buildImages, pinMatchesTag, type PinPattern } from '../eviction/eviction-plan.js';

export interface ImageRow {
  /** upstream/repo:tag, or upstream/repo@digest for an image cached by digest only. */
  readonly name: string;
  readonly upstream: string;
  readonly repo: string;
  readonly tag: string | undefined;
  readonly digest: string;
  /** Bytes of the image: its manifests and blobs that are cached (shared blobs counted in each image). */
  readonly bytes: number;
  readonly lastUsed: number;
  readonly pinned: boolean;
}

export interface CacheStats {
  readonly usage: IndexUsage;
  readonly images: number;
  readonly upstreams: readonly { readonly upstream: string; readonly repositories: number; readonly tags: number; readonly bytes: number }[];
  /** Bytes that images share (their sizes added up, minus what is stored). */
  readonly sharedBytes: number;
  readonly oldestUse: number | undefined;
  readonly newestUse: number | undefined;
  readonly largest: readonly ImageRow[];
}

export async function listImages(index: CacheIndex, pins: readonly PinPattern[] = []): Promise<ImageRow[]> {
  await index.flush();
  const [content, references, tags, links] = await Promise.all([index.listContent(), index.listReferences(), index.listAllTags(), index.listLinks()]);
  const units = buildImages({ content, references, tags, links }, pins, new Set());
  const size = new Map(content.map((c) => [c.digest, c.size]));
  const byRoot = new Map(units.map((u) => [u.root, u]));
  const isManifest = new Set(content.filter((c) => c.mediaType !== undefined).map((c) => c.digest));
  const rows: ImageRow[] = [];
  const tagged = new Set<string>();
  for (const t of tags) {
    const u = byRoot.get(t.digest);
    if (!u) continue; // a tag whose manifest is a child of a cached index: shown through the index
    tagged.add(t.digest);
    rows.push({
      name: `${t.upstream}/${t.repo}:${t.tag}`,
      upstream: t.upstream,
      repo: t.repo,
      tag: t.tag,
      digest: t.digest,
      bytes: u.members.reduce((n, d) => n + (size.get(d) ?? 0), 0),
      lastUsed: u.lastAccess,
      pinned: pins.some((p) => pinMatchesTag(p, t)),
    });
  }
  // Images pulled by digest only: named after a repository that holds them.
  const linkOf = new Map<string, { upstream: string; repo: string }>();
  for (const l of links) if (!linkOf.has(l.digest)) linkOf.set(l.digest, l);
  for (const u of units) {
    if (tagged.has(u.root)) continue;
    if (!isManifest.has(u.root)) continue; // a blob no manifest points to: counted in stats, not an image
    const l = linkOf.get(u.root);
    rows.push({
      name: `${l ? `${l.upstream}/${l.repo}` : '?'}@${u.root}`,
      upstream: l?.upstream ?? '?',
      repo: l?.repo ?? '?',
      tag: undefined,
      digest: u.root,
      bytes: u.members.reduce((n, d) => n + (size.get(d) ?? 0), 0),
      lastUsed: u.lastAccess,
      pinned: u.pinned,
    });
  }
  return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function cacheStats(index: CacheIndex, pins: readonly PinPattern[] = []): Promise<CacheStats> {
  const usage = await index.usage();
  const rows = await listImages(index, pins);
  const perUpstream = new Map<string, { repos: Set<string>; tags: number; bytes: number }>();
  const seenDigest = new Set<string>();
  for (const r of rows) {
    let e = perUpstream.get(r.upstream);
    if (!e) perUpstream.set(r.upstream, (e = { repos: new Set(), tags: 0, bytes: 0 }));
    e.repos.add(r.repo);
    if (r.tag !== undefined) e.tags++;
    // An image under two tags counts once.
    if (!seenDigest.has(r.digest)) {
      seenDigest.add(r.digest);
      e.bytes += r.bytes;
    }
  }
  const distinct = new Map(rows.map((r) => [r.digest, r.bytes]));
  const imageBytes = [...distinct.values()].reduce((n, b) => n + b, 0);
  const uses = rows.map((r) => r.lastUsed).filter((t) => t > 0);
  return {
    usage,
    images: distinct.size,
    upstreams: [...perUpstream].map(([upstream, e]) => ({ upstream, repositories: e.repos.size, tags: e.tags, bytes: e.bytes })).sort((a, b) => b.bytes - a.bytes),
    sharedBytes: Math.max(0, imageBytes - usage.bytes),
    oldestUse: uses.length > 0 ? Math.min(...uses) : undefined,
    newestUse: uses.length > 0 ? Math.max(...uses) : undefined,
    largest: [...rows].sort((a, b) => b.bytes - a.bytes).slice(0, 10),
  };
}
