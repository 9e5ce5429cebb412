// Tag retention for relais's own cache (`relais gc --policy FILE` / `--keep-last` / `--older-than`): the
// planner of `relais cleanup` (src/retention/retention-plan.ts, unchanged) run on the cache index instead of a registry.
//
//   1. snapshot: the index's tag rows, content rows and reference rows (whole-table reads);
//   2. TagInfo per cached tag (pure): its repository is `UPSTREAM/REPO`, its age is when relais last
//      fetched the tag from the upstream (the tag row's fetched time: when relais cached or last updated
//      it) or, with `--age created`, the image's own date read from the cached config blob (as relais
//      cleanup does; the fetch time when that blob is not cached), its kind from the manifest's media
//      type, refined by the manifest body when it is cached;
//   3. DigestGraph (pure): cached manifests; an index's references are its children, a manifest that
//      references another cached manifest is its referrer (OCI `subject`);
//   4. planRepository per cached repository, rendered with the cleanup renderer;
//   5. content to free (pure): everything the deleted tags reach (manifests and blobs) that no remaining
//      tag, no other cached manifest (pulled by digest) and nothing used within the grace period reaches;
//   6. apply: the tag rows go, the index is read again and step 5 recomputed on it (a client may have pulled
//      a tag since), then the content rows and their files go.
import { mapLimit } from '../retention/limit.js';
import { INDEX_TYPES, MT } from '../upstream/media-types.js';
import { ATTACHMENT_TAG, type LiveBranch } from '../retention/families.js';
import { annotationCreated, buildkitCreated, configCreated, kindOf, parseManifest, wantsConfig, type ParsedManifest } from '../retention/manifest-refs.js';
import { planRepository, type RepoPlan } from '../retention/retention-plan.js';
import type { Policy } from '../retention/retention-policy.js';
import type { CreatedFlag, CreatedSource, DigestGraph, DigestNode, ImageKind, TagInfo } from '../retention/retention-types.js';
import type { CacheIndex, ContentEntry, ReferenceRow, TagRow } from '../index/cache-index.js';
import { blobKey, type StorageDriver } from '../storage/driver.js';

/** What the planner needs from the index, read once. */
export interface CacheSnapshot {
  readonly tags: readonly TagRow[];
  readonly content: readonly ContentEntry[];
  readonly references: readonly ReferenceRow[];
}

/** The name a cached repository goes by in plans: the upstream's name, then the repository. */
export function cacheRepoName(t: { readonly upstream: string; readonly repo: string }): string {
  return `${t.upstream}/${t.repo}`;
}

function tagKey(t: { readonly upstream: string; readonly repo: string; readonly tag: string }): string {
  return `${t.upstream}\u0000${t.repo}\u0000${t.tag}`;
}

const KANIKO_KEY = /^[0-9a-f]{64}$/;

/** A manifest's kind from its media type alone (when its body is not at hand). */
function kindOfMediaType(mediaType: string | undefined): ImageKind {
  if (mediaType === undefined) return 'unknown';
  if (INDEX_TYPES.has(mediaType)) return 'index';
  if (mediaType === MT.ociArtifact) return 'artifact';
  return 'image';
}

/** An image's own date (what `--age created` plans with). */
export interface CacheAge {
  readonly created: Date | null;
  readonly source: CreatedSource;
  readonly flag: CreatedFlag;
}

/**
 * TagInfo for every cached tag, grouped by repository (`UPSTREAM/REPO`). Pure.
 * `manifests` (optional): parsed bodies of tagged manifests, to tell BuildKit caches and artifacts from
 * images and to know an attachment's subject. `ages` (optional): the image's own date by digest; a tag
 * without one is aged by when relais fetched it.
 */
export function cacheTagInfos(
  snap: Pick<CacheSnapshot, 'tags' | 'content'>,
  opts: { readonly kanikoCacheRepos: readonly RegExp[]; readonly manifests?: ReadonlyMap<string, ParsedManifest>; readonly ages?: ReadonlyMap<string, CacheAge> },
): Map<string, TagInfo[]> {
  const content = new Map(snap.content.map((c) => [c.digest, c]));
  const out = new Map<string, TagInfo[]>();
  for (const t of snap.tags) {
    const repo = cacheRepoName(t);
    const c = content.get(t.digest);
    const parsed = opts.manifests?.get(t.digest);
    let kind: ImageKind = parsed ? kindOf(parsed) : c ? kindOfMediaType(c.mediaType) : 'unknown';
    let subject = parsed?.subject;
    const att = ATTACHMENT_TAG.exec(t.tag);
    if (att?.[1] !== undefined && att[2] !== undefined) {
      kind = 'attachment';
      subject = `${att[1]}:${att[2]}`;
    } else if (kind === 'image' && KANIKO_KEY.test(t.tag) && opts.kanikoCacheRepos.some((re) => re.test(repo))) kind = 'kaniko-cache';
    const info: TagInfo = {
      repo,
      tag: t.tag,
      digest: t.digest,
      mediaType: parsed?.mediaType ?? c?.mediaType ?? '',
      kind,
      ...ageFields(opts.ages?.get(t.digest), t.fetchedAt),
      ...(subject !== undefined ? { subject } : {}),
    };
    const list = out.get(repo);
    if (list) list.push(info);
    else out.set(repo, [info]);
  }
  for (const list of out.values()) list.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  return out;
}

function ageFields(age: CacheAge | undefined, fetchedAt: number): Pick<TagInfo, 'created' | 'createdSource' | 'createdFlag'> {
  if (age) return { created: age.created, createdSource: age.source, createdFlag: age.flag };
  return { created: new Date(fetchedAt), createdSource: 'registry', createdFlag: 'not-applicable' };
}

/**
 * The images' own dates, from what is cached (pure): an image's config `created` (flagged when missing
 * or the epoch, as relais cleanup does), an index's newest cached child, a BuildKit cache's layer dates.
 * `manifests` holds the parsed manifests at hand (tagged ones and the children of tagged indexes),
 * `configs` the config blobs at hand. Nothing for a digest whose date is not in the cache.
 */
export function cachedAges(tagged: Iterable<string>, manifests: ReadonlyMap<string, ParsedManifest>, configs: ReadonlyMap<string, Buffer>): Map<string, CacheAge> {
  const imageAge = (m: ParsedManifest): CacheAge | undefined => {
    const cfg = m.config;
    if (!cfg || !wantsConfig(m)) return undefined;
    const body = configs.get(cfg.digest);
    if (!body) return undefined;
    const r = configCreated(body);
    if (r.date) return { created: r.date, source: 'config', flag: 'ok' };
    const ann = annotationCreated(m);
    return { created: ann, source: ann ? 'annotation' : 'none', flag: r.flag };
  };
  const out = new Map<string, CacheAge>();
  for (const d of tagged) {
    const m = manifests.get(d);
    if (!m || out.has(d)) continue;
    let age: CacheAge | undefined;
    if (kindOf(m) === 'buildkit-cache') {
      const b = buildkitCreated(m);
      const ann = annotationCreated(m);
      if (b) age = { created: b, source: 'buildkit-layers', flag: 'not-applicable' };
      else if (ann) age = { created: ann, source: 'annotation', flag: 'not-applicable' };
    } else if (m.isIndex) {
      const kids = m.children.map((c) => manifests.get(c.digest)).flatMap((k) => (k ? [imageAge(k)] : []));
      const dated = kids.flatMap((k) => (k?.created ? [k.created.getTime()] : []));
      const ann = annotationCreated(m);
      if (dated.length > 0) age = { created: new Date(Math.max(...dated)), source: 'children', flag: 'ok' };
      else if (ann) age = { created: ann, source: 'annotation', flag: 'ok' };
      else if (kids.length > 0 && kids.every((k) => k !== undefined)) age = { created: null, source: 'none', flag: kids[0]?.flag ?? 'missing' };
    } else age = imageAge(m);
    if (age) out.set(d, age);
  }
  return out;
}

/**
 * The digest graph of the cached manifests (content rows with a media type). Pure.
 * An index's references are its children (cached or not); a non-index manifest's reference to another
 * cached manifest is its `subject`, so it becomes a referrer of that manifest. Blobs are not nodes.
 */
export function cacheDigestGraph(snap: Pick<CacheSnapshot, 'content' | 'references'>): DigestGraph {
  const manifests = new Map<string, string>();
  const cached = new Set<string>();
  for (const c of snap.content) {
    cached.add(c.digest);
    if (c.mediaType !== undefined) manifests.set(c.digest, c.mediaType);
  }
  const children = new Map<string, string[]>();
  const referrers = new Map<string, string[]>();
  const push = (m: Map<string, string[]>, k: string, v: string): void => {
    const l = m.get(k);
    if (l) {
      if (!l.includes(v)) l.push(v);
    } else m.set(k, [v]);
  };
  for (const r of snap.references) {
    const mt = manifests.get(r.manifest);
    if (mt === undefined) continue;
    if (INDEX_TYPES.has(mt)) {
      // Blob entries of an index (BuildKit's cache config) are references too: only cached manifests and
      // references that are not cached at all (platforms nobody pulled) can be children.
      if (manifests.has(r.child) || !cached.has(r.child)) push(children, r.manifest, r.child);
    } else if (manifests.has(r.child)) push(referrers, r.child, r.manifest);
  }
  const graph = new Map<string, DigestNode>();
  for (const [digest, mediaType] of [...manifests].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    graph.set(digest, { digest, mediaType, children: (children.get(digest) ?? []).sort(), referrers: (referrers.get(digest) ?? []).sort() });
  return graph;
}

/** A tag the plan deletes, by its index coordinates. */
export interface CachedTagRef {
  readonly upstream: string;
  readonly repo: string;
  readonly tag: string;
  readonly digest: string;
}

export interface ContentToFree {
  /** Manifests and blobs to forget and delete, in no particular order. */
  readonly digests: readonly string[];
  readonly manifests: number;
  readonly blobs: number;
  /** Bytes the index records for them. */
  readonly bytes: number;
  /** Content the deleted tags reach that stays, and why (a digest each; shared or recently used). */
  readonly keptShared: number;
}

/**
 * What freeing the content reached from `roots` (the digests of deleted tags) would take away. Pure.
 * A digest is freed only if nothing that stays reaches it: the tags in `snap` that are not in `deleting`,
 * every cached manifest the roots do not reach (pulled by digest, or held by another tag), and `keep`.
 */
export function contentToFree(snap: CacheSnapshot, roots: Iterable<string>, deleting: ReadonlySet<string>, keep: ReadonlySet<string> = new Set()): ContentToFree {
  const content = new Map(snap.content.map((c) => [c.digest, c]));
  const refs = new Map<string, string[]>();
  for (const r of snap.references) {
    const l = refs.get(r.manifest);
    if (l) l.push(r.child);
    else refs.set(r.manifest, [r.child]);
  }
  const closure = (from: Iterable<string>): Set<string> => {
    const seen = new Set<string>();
    const stack = [...from];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      if (seen.has(d) || !content.has(d)) continue;
      seen.add(d);
      for (const c of refs.get(d) ?? []) stack.push(c);
    }
    return seen;
  };
  const candidates = closure(roots);
  const keepRoots = new Set<string>(keep);
  for (const t of snap.tags) if (!deleting.has(tagKey(t))) keepRoots.add(t.digest);
  for (const c of snap.content) if (c.mediaType !== undefined && !candidates.has(c.digest)) keepRoots.add(c.digest);
  const kept = closure(keepRoots);
  const digests = [...candidates].filter((d) => !kept.has(d)).sort();
  let bytes = 0;
  let manifests = 0;
  for (const d of digests) {
    const c = content.get(d);
    bytes += c?.size ?? 0;
    if (c?.mediaType !== undefined) manifests++;
  }
  return { digests, manifests, blobs: digests.length - manifests, bytes, keptShared: candidates.size - digests.length };
}

export interface CacheRetentionPlan {
  readonly plans: readonly RepoPlan[];
  /** Tags to delete: those of repositories whose plan was not aborted by a safety limit. */
  readonly deleteTags: readonly CachedTagRef[];
  /** What freeing would take, as the index stands now. */
  readonly free: ContentToFree;
}

/** Plans every cached repository (or those `only` accepts) with the cleanup planner. Pure. */
export function planCacheRetention(
  snap: CacheSnapshot,
  policy: Policy,
  ctx: {
    readonly now: Date;
    readonly liveBranches: readonly LiveBranch[] | null;
    readonly manifests?: ReadonlyMap<string, ParsedManifest>;
    readonly ages?: ReadonlyMap<string, CacheAge>;
    readonly only?: (repo: string) => boolean;
  },
): CacheRetentionPlan {
  const infos = cacheTagInfos(snap, { kanikoCacheRepos: policy.kanikoCacheRepos, ...(ctx.manifests ? { manifests: ctx.manifests } : {}), ...(ctx.ages ? { ages: ctx.ages } : {}) });
  const graph = cacheDigestGraph(snap);
  const rows = new Map(snap.tags.map((t) => [`${cacheRepoName(t)}\u0000${t.tag}`, t]));
  const plans: RepoPlan[] = [];
  const deleteTags: CachedTagRef[] = [];
  for (const repo of [...infos.keys()].sort()) {
    if (ctx.only && !ctx.only(repo)) continue;
    const plan = planRepository(repo, infos.get(repo) ?? [], graph, policy, { now: ctx.now, liveBranches: ctx.liveBranches });
    plans.push(plan);
    if (plan.aborted !== null) continue;
    for (const e of plan.entries) {
      const row = rows.get(`${repo}\u0000${e.tag}`);
      if (e.action === 'DELETE' && row) deleteTags.push({ upstream: row.upstream, repo: row.repo, tag: row.tag, digest: row.digest });
    }
  }
  const free = contentToFree(snap, deleteTags.map((t) => t.digest), new Set(deleteTags.map(tagKey)));
  return { plans, deleteTags, free };
}

/** Reads the index once (after a flush of pending access times). */
export async function readCacheSnapshot(index: CacheIndex): Promise<CacheSnapshot> {
  await index.flush();
  const [tags, content, references] = await Promise.all([index.listAllTags(), index.listContent(), index.listReferences()]);
  return { tags, content, references };
}

const MAX_SMALL_BYTES = 4 * 1024 * 1024;

/** Reads small cached objects (manifests, configs) by digest; a missing, large or unreadable one is skipped. */
async function readSmall(snap: CacheSnapshot, storage: StorageDriver, digests: Iterable<string>, concurrency: number, manifestsOnly: boolean): Promise<Map<string, { body: Buffer; mediaType: string }>> {
  const rows = new Map(snap.content.map((c) => [c.digest, c]));
  const wanted = [...new Set(digests)].filter((d) => {
    const c = rows.get(d);
    return c !== undefined && c.size <= MAX_SMALL_BYTES && (!manifestsOnly || c.mediaType !== undefined);
  });
  const out = new Map<string, { body: Buffer; mediaType: string }>();
  await mapLimit(wanted, concurrency, async (d) => {
    const body = await storage.getContent(blobKey(d)).catch(() => undefined);
    if (body) out.set(d, { body, mediaType: rows.get(d)?.mediaType ?? '' });
  });
  return out;
}

/** Parses the cached bodies of the tagged manifests (small files; a missing or odd one is skipped). */
export async function readTaggedManifests(snap: CacheSnapshot, storage: StorageDriver, concurrency = 8): Promise<Map<string, ParsedManifest>> {
  const out = new Map<string, ParsedManifest>();
  for (const [d, r] of await readSmall(snap, storage, snap.tags.map((t) => t.digest), concurrency, true)) out.set(d, parseManifest(r.body, r.mediaType));
  return out;
}

/** `--age created`: reads the cached children of tagged indexes and the cached config blobs, and dates the tagged images. */
export async function readCachedAges(snap: CacheSnapshot, storage: StorageDriver, tagged: ReadonlyMap<string, ParsedManifest>, concurrency = 8): Promise<Map<string, CacheAge>> {
  const manifests = new Map(tagged);
  const children = [...tagged.values()].flatMap((m) => (m.isIndex ? m.children.map((c) => c.digest) : [])).filter((d) => !manifests.has(d));
  for (const [d, r] of await readSmall(snap, storage, children, concurrency, true)) manifests.set(d, parseManifest(r.body, r.mediaType));
  const configDigests = [...manifests.values()].flatMap((m) => (m.config && wantsConfig(m) ? [m.config.digest] : []));
  const configs = new Map<string, Buffer>();
  for (const [d, r] of await readSmall(snap, storage, configDigests, concurrency, false)) configs.set(d, r.body);
  return cachedAges(tagged.keys(), manifests, configs);
}

export interface CacheRetentionResult {
  /** Tag rows deleted. */
  readonly deletedTags: readonly CachedTagRef[];
  /** Tags left alone because they point elsewhere than planned (a client pulled a new version since). */
  readonly changedTags: readonly { readonly tag: CachedTagRef; readonly now: string | null }[];
  readonly freedManifests: number;
  readonly freedBlobs: number;
  /** Bytes of the files deleted from storage (what the disk got back). */
  readonly freedBytes: number;
  /** Content the deleted tags reached that stays: shared with kept tags or cached manifests, or used within the grace period. */
  readonly keptShared: number;
}

/**
 * Deletes the planned tag rows, then the content only they held, rows first and files after (a file whose
 * row came back meanwhile stays). Content used within `graceMs` of `now` stays with everything it reaches.
 */
export async function applyCacheRetention(
  index: CacheIndex,
  storage: StorageDriver,
  plan: CacheRetentionPlan,
  opts: { readonly graceMs: number; readonly now: number },
): Promise<CacheRetentionResult> {
  const deletedTags: CachedTagRef[] = [];
  const changedTags: { tag: CachedTagRef; now: string | null }[] = [];
  for (const t of plan.deleteTags) {
    const cur = await index.getTag(t.upstream, t.repo, t.tag);
    if (cur?.digest !== t.digest) {
      changedTags.push({ tag: t, now: cur?.digest ?? null });
      continue;
    }
    await index.deleteTag(t.upstream, t.repo, t.tag);
    deletedTags.push(t);
  }
  // The index again, as it is now: what a concurrent pull added is kept.
  const snap = await readCacheSnapshot(index);
  const recent = new Set(snap.content.filter((c) => c.lastAccess > opts.now - opts.graceMs).map((c) => c.digest));
  const free = contentToFree(snap, deletedTags.map((t) => t.digest), new Set(), opts.graceMs > 0 ? recent : new Set());
  if (free.digests.length > 0) await index.deleteContent(free.digests);
  let freedBytes = 0;
  for (const d of free.digests) {
    if ((await index.getContent(d)) !== undefined) continue;
    const key = blobKey(d);
    const st = await storage.stat(key);
    await storage.delete(key);
    freedBytes += st?.size ?? 0;
  }
  return { deletedTags, changedTags, freedManifests: free.manifests, freedBlobs: free.blobs, freedBytes, keptShared: free.keptShared };
}
