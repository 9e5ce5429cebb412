// Eviction planning: pure functions from a snapshot of the index to the content to drop.
//
// The unit of eviction is an image: a top-level manifest (an index, or a manifest no cached index points
// to) with everything it references, down to the blobs. Images are taken least-recently-used first; a
// blob goes only when every image holding it goes (shared base layers stay while any user of them stays).
// Pinned images (by pattern) and images with content being downloaded or served are never taken. Blobs no
// cached manifest points to are images of their own. An image unused for longer than maxIdleAge goes
// whatever the size; otherwise eviction only starts above maxSize and stops at the low watermark.

export interface SnapshotContent {
  readonly digest: string;
  readonly size: number;
  /** Set for manifests. */
  readonly mediaType: string | undefined;
  readonly lastAccess: number;
}

export interface SnapshotTag {
  readonly upstream: string;
  readonly repo: string;
  readonly tag: string;
  readonly digest: string;
}

export interface Snapshot {
  readonly content: readonly SnapshotContent[];
  readonly references: readonly { readonly manifest: string; readonly child: string }[];
  readonly tags: readonly SnapshotTag[];
  /** Which repositories hold a digest (for patterns without a tag, and to name images without tags). */
  readonly links?: readonly { readonly upstream: string; readonly repo: string; readonly digest: string }[];
}

export interface EvictionSettings {
  /** Bytes; undefined = no size budget. */
  readonly maxSize: number | undefined;
  /** Share of maxSize where eviction stops (0 < x <= 1). */
  readonly lowWatermark: number;
  /** Milliseconds; undefined = no idle limit. */
  readonly maxIdleAge: number | undefined;
  readonly pins: readonly PinPattern[];
  readonly now: number;
  /** Digests being downloaded or served: their images are kept. */
  readonly busy: ReadonlySet<string>;
}

export type EvictionReason = 'idle' | 'size';

export interface ImageUnit {
  /** The top-level manifest, or the blob itself for a blob no manifest points to. */
  readonly root: string;
  /** Every digest the image holds (root included). */
  readonly members: readonly string[];
  /** Names for people: upstream/repo:tag of every tag pointing to the root. */
  readonly names: readonly string[];
  /** Last use: the latest access of its manifests (of the blob, for a lone blob). */
  readonly lastAccess: number;
  readonly pinned: boolean;
  readonly busy: boolean;
}

export interface EvictedImage {
  readonly root: string;
  readonly names: readonly string[];
  readonly reason: EvictionReason;
  readonly lastAccess: number;
}

export interface EvictionPlan {
  /** Content to forget and delete (manifests and blobs no kept image holds). */
  readonly digests: readonly string[];
  readonly bytes: number;
  readonly images: readonly EvictedImage[];
  readonly usageBefore: number;
  readonly usageAfter: number;
  /** Set when the budget could not be met (everything left is pinned or busy). */
  readonly shortBy: number;
}

// ------------------------------------------------------------------------------------------------
// Pin patterns

export interface PinPattern {
  readonly source: string;
  readonly upstream: RegExp;
  readonly repo: RegExp;
  /** Undefined: any tag (and digests linked to the repository). */
  readonly tag: RegExp | undefined;
  readonly digest: string | undefined;
}

export interface PinContext {
  readonly defaultUpstream: string;
  /** Whether the upstream applies Docker Hub's library/ rule to one-component names. */
  readonly libraryPrefix: (upstream: string) => boolean;
}

function globToRegExp(glob: string, crossSlash: boolean): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob.charAt(i);
    if (c === '*') {
      if (glob.charAt(i + 1) === '*') {
        re += '.*';
        i++;
      } else re += crossSlash ? '.*' : '[^/]*';
    } else if (c === '?') re += crossSlash ? '.' : '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * Parses a pin: `[REGISTRY/]REPO[:TAG|@DIGEST]` with `*` (one path component, or any part of a tag) and
 * `**` (any number of components). No registry host means the default upstream, with Docker Hub's
 * library/ rule where it applies: `docker:*-dind` is `docker.io/library/docker:*-dind`.
 */
export function parsePin(pattern: string, ctx: PinContext): PinPattern {
  let rest = pattern.trim();
  if (rest === '') throw new Error('empty pin pattern');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^[a-z0-9]+:[a-f0-9]+$/.test(digest)) throw new Error(`pin "${pattern}": a digest must be ALG:HEX`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon !== -1) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const parts = rest.split('/');
  const first = parts[0] ?? '';
  let upstream: string;
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.includes('*'))) {
    upstream = first;
    parts.shift();
  } else upstream = ctx.defaultUpstream;
  if (parts.length === 0 || parts.some((p) => p === '')) throw new Error(`pin "${pattern}": no repository`);
  const exact = !upstream.includes('*') && !upstream.includes('?');
  if (parts.length === 1 && exact && ctx.libraryPrefix(upstream) && !(parts[0] ?? '').startsWith('*')) parts.unshift('library');
  return {
    source: pattern,
    upstream: globToRegExp(upstream, false),
    repo: globToRegExp(parts.join('/'), false),
    tag: tag === undefined || tag === '' ? undefined : globToRegExp(tag, true),
    digest,
  };
}

export function pinMatchesTag(p: PinPattern, t: { upstream: string; repo: string; tag: string; digest: string }): boolean {
  if (!p.upstream.test(t.upstream) || !p.repo.test(t.repo)) return false;
  if (p.digest !== undefined) return t.digest === p.digest;
  return p.tag === undefined || p.tag.test(t.tag);
}

// ------------------------------------------------------------------------------------------------
// Images

/** Groups the snapshot into images (see the file comment). */
export function buildImages(snap: Snapshot, pins: readonly PinPattern[], busy: ReadonlySet<string>): ImageUnit[] {
  const content = new Map(snap.content.map((c) => [c.digest, c]));
  const children = new Map<string, string[]>();
  const hasParent = new Set<string>();
  for (const r of snap.references) {
    // Only edges between cached things matter; a reference to content that is not cached holds nothing.
    if (!content.has(r.manifest) || !content.has(r.child)) continue;
    let list = children.get(r.manifest);
    if (!list) children.set(r.manifest, (list = []));
    list.push(r.child);
    hasParent.add(r.child);
  }
  const names = new Map<string, string[]>();
  const pinnedRoots = new Set<string>();
  for (const t of snap.tags) {
    let list = names.get(t.digest);
    if (!list) names.set(t.digest, (list = []));
    list.push(`${t.upstream}/${t.repo}:${t.tag}`);
    if (pins.some((p) => pinMatchesTag(p, t))) pinnedRoots.add(t.digest);
  }
  // Patterns without a tag also pin digests linked to a matching repository (images pulled by digest).
  const repoPins = pins.filter((p) => p.tag === undefined && p.digest === undefined);
  const pinnedByDigest = new Set(pins.flatMap((p) => (p.digest === undefined ? [] : [p.digest])));
  if (repoPins.length > 0 && snap.links) {
    for (const l of snap.links) {
      if (content.get(l.digest)?.mediaType !== undefined && repoPins.some((p) => p.upstream.test(l.upstream) && p.repo.test(l.repo))) pinnedRoots.add(l.digest);
    }
  }
  const units: ImageUnit[] = [];
  for (const c of snap.content) {
    if (hasParent.has(c.digest)) continue;
    const members: string[] = [];
    const seen = new Set<string>();
    const stack = [c.digest];
    let lastAccess = 0;
    let pinned = false;
    let isBusy = false;
    while (stack.length > 0) {
      const d = stack.pop();
      if (d === undefined || seen.has(d)) continue;
      seen.add(d);
      members.push(d);
      const meta = content.get(d);
      if (meta && (meta.mediaType !== undefined || d === c.digest)) lastAccess = Math.max(lastAccess, meta.lastAccess);
      if (pinnedRoots.has(d) || pinnedByDigest.has(d)) pinned = true;
      if (busy.has(d)) isBusy = true;
      for (const ch of children.get(d) ?? []) stack.push(ch);
    }
    units.push({ root: c.digest, members, names: names.get(c.digest) ?? [], lastAccess, pinned, busy: isBusy });
  }
  return units;
}

/** Decides what to evict. Pure: the same snapshot and settings give the same plan. */
export function planEviction(snap: Snapshot, s: EvictionSettings): EvictionPlan {
  const size = new Map(snap.content.map((c) => [c.digest, c.size]));
  const usageBefore = snap.content.reduce((n, c) => n + c.size, 0);
  const units = buildImages(snap, s.pins, s.busy);
  // How many images hold each digest: a digest is freed when the last of them goes.
  const holders = new Map<string, number>();
  for (const u of units) for (const d of u.members) holders.set(d, (holders.get(d) ?? 0) + 1);

  let usage = usageBefore;
  const evicted: EvictedImage[] = [];
  const freed: string[] = [];
  const take = (u: ImageUnit, reason: EvictionReason): void => {
    evicted.push({ root: u.root, names: u.names, reason, lastAccess: u.lastAccess });
    for (const d of u.members) {
      const left = (holders.get(d) ?? 1) - 1;
      holders.set(d, left);
      if (left === 0) {
        freed.push(d);
        usage -= size.get(d) ?? 0;
      }
    }
  };
  // Oldest first; ties broken by digest so the plan is deterministic.
  const candidates = units.filter((u) => !u.pinned && !u.busy).sort((a, b) => a.lastAccess - b.lastAccess || (a.root < b.root ? -1 : a.root > b.root ? 1 : 0));
  const taken = new Set<string>();
  if (s.maxIdleAge !== undefined) {
    const cutoff = s.now - s.maxIdleAge;
    for (const u of candidates) {
      if (u.lastAccess >= cutoff) break;
      take(u, 'idle');
      taken.add(u.root);
    }
  }
  let shortBy = 0;
  if (s.maxSize !== undefined && usage > s.maxSize) {
    const target = Math.floor(s.maxSize * s.lowWatermark);
    for (const u of candidates) {
      if (usage <= target) break;
      if (taken.has(u.root)) continue;
      take(u, 'size');
      taken.add(u.root);
    }
    shortBy = Math.max(0, usage - s.maxSize);
  }
  const bytes = usageBefore - usage;
  return { digests: freed, bytes, images: evicted, usageBefore, usageAfter: usage, shortBy };
}

/**
 * Manifests that must go with content that is gone (gc found their blobs missing): every manifest that
 * references a missing digest, and up the tree (an index whose child is gone).
 */
export function dependentManifests(missing: Iterable<string>, references: readonly { readonly manifest: string; readonly child: string }[]): Set<string> {
  const parents = new Map<string, string[]>();
  for (const r of references) {
    let list = parents.get(r.child);
    if (!list) parents.set(r.child, (list = []));
    list.push(r.manifest);
  }
  const out = new Set<string>();
  const stack = [...missing];
  while (stack.length > 0) {
    const d = stack.pop();
    if (d === undefined) continue;
    for (const p of parents.get(d) ?? []) {
      if (!out.has(p)) {
        out.add(p);
        stack.push(p);
      }
    }
  }
  return out;
}
