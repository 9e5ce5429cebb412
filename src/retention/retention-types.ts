// Shared shapes of the cleanup planner: what the inspector learns about each tag, and the digest graph.

/** What a tag points to, as far as retention is concerned. */
export type ImageKind =
  | 'image' // a single-platform image manifest
  | 'index' // a manifest list / OCI index of platform images
  | 'buildkit-cache' // a BuildKit registry cache (cacheconfig.v0), index or manifest form
  | 'kaniko-cache' // a layer in a kaniko cache repository (tag = cache key)
  | 'attachment' // a referrers-tag-schema or cosign tag (sha256-<hex>[.sig|.att|.sbom])
  | 'artifact' // any other OCI artifact
  | 'unknown';

export const IMAGE_KINDS: readonly ImageKind[] = ['image', 'index', 'buildkit-cache', 'kaniko-cache', 'attachment', 'artifact', 'unknown'];

/** Status of the image config's `created` field. */
export type CreatedFlag = 'ok' | 'missing' | 'epoch' | 'invalid' | 'not-applicable';

/** Where the age the planner uses came from. */
export type CreatedSource = 'config' | 'annotation' | 'buildkit-layers' | 'children' | 'registry' | 'none';

export interface TagInfo {
  readonly repo: string;
  readonly tag: string;
  readonly digest: string;
  readonly mediaType: string;
  readonly kind: ImageKind;
  /** The trusted creation time, or null when there is none (see createdFlag). */
  readonly created: Date | null;
  readonly createdSource: CreatedSource;
  /** What the config blob said: 'missing'/'epoch'/'invalid' flag images whose age cannot be trusted. */
  readonly createdFlag: CreatedFlag;
  /** For attachments: the digest of the image they are attached to. */
  readonly subject?: string;
}

/** One manifest in the repository's digest graph. */
export interface DigestNode {
  readonly digest: string;
  readonly mediaType: string;
  /** Manifests this one references (index children). Blobs are not nodes. */
  readonly children: readonly string[];
  /** Manifests whose `subject` is this one (referrers API or tag schema). */
  readonly referrers: readonly string[];
}

export type DigestGraph = ReadonlyMap<string, DigestNode>;

/** Everything reachable from `roots` through children and referrers (roots included). */
export function reachable(graph: DigestGraph, roots: Iterable<string>): Set<string> {
  const seen = new Set<string>();
  const stack = [...roots];
  for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
    if (seen.has(d)) continue;
    seen.add(d);
    const node = graph.get(d);
    if (!node) continue;
    for (const c of node.children) stack.push(c);
    for (const r of node.referrers) stack.push(r);
  }
  return seen;
}

export function shortDigest(digest: string): string {
  const i = digest.indexOf(':');
  return i < 0 ? digest.slice(0, 12) : digest.slice(i + 1, i + 13);
}
