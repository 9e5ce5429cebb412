// The media types of the registry API, and the Accept lists relais sends, in one place. Each Accept list
// has its own name because each asks for something different: a cache must not be sent a type it cannot
// store, cleanup must see every type a registry may hold (or it could delete a tag it cannot read), and an
// image pull wants images only.

export const MT = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  ociArtifact: 'application/vnd.oci.artifact.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  buildkitCacheConfig: 'application/vnd.buildkit.cacheconfig.v0',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

/** Indexes (multi-platform lists): their children are manifests. */
export const INDEX_TYPES: ReadonlySet<string> = new Set([MT.ociIndex, MT.dockerList]);

/** Every manifest type a registry may hold (schema 1 included: old repositories still have it). */
export const MANIFEST_TYPES: ReadonlySet<string> = new Set([
  MT.ociIndex,
  MT.dockerList,
  MT.ociManifest,
  MT.dockerManifest,
  MT.ociArtifact,
  MT.dockerSchema1Signed,
  MT.dockerSchema1,
]);

/** The pull-through cache: every manifest type relais caches and serves, best first (no schema 1). */
export const ACCEPT_CACHED_MANIFESTS = [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest, MT.ociArtifact].join(', ');

/**
 * Cleanup: every manifest type, or registries answer a HEAD/GET with a converted manifest (another
 * digest) or a 404, and a tag could be judged by what it does not hold.
 */
export const ACCEPT_ALL_MANIFESTS = [...MANIFEST_TYPES].join(', ');

/** Pulling images (prefetch, relais ci): image indexes and image manifests. */
export const ACCEPT_IMAGES = [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest].join(', ');

/** The referrers API answers an OCI index. */
export const ACCEPT_REFERRERS = MT.ociIndex;
