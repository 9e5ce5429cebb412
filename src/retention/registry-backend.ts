// The registry operations cleanup needs, behind one small interface with two implementations:
// any OCI distribution registry (oci.ts) and GitLab's container registry API (gitlab.ts).

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly artifactType?: string;
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string };
}

export interface ManifestRef {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
}

export interface FetchedManifest extends ManifestRef {
  readonly body: Buffer;
}

/** What a tag resolves to when the backend only offers tag details (GitLab API). */
export interface TagDetails {
  readonly digest: string;
  readonly created: Date | null;
  readonly size?: number;
}

export type DeleteOutcome = 'deleted' | 'not-found' | 'unsupported';

export interface RegistryBackend {
  /** For messages: "registry http://127.0.0.1:5000" or "GitLab project 42 at https://...". */
  readonly description: string;
  /** Whether manifests and blobs can be read (false for the GitLab API backend). */
  readonly canReadManifests: boolean;
  /** Repositories this backend knows (GitLab: the project's); undefined when it cannot list them. */
  listRepositories?(): Promise<string[]>;
  listTags(repo: string): Promise<string[]>;
  /** HEAD with the full Accept list; null when the tag or digest does not exist. */
  headManifest(repo: string, ref: string): Promise<ManifestRef | null>;
  getManifest(repo: string, ref: string): Promise<FetchedManifest | null>;
  /** A blob, at most maxBytes (larger ones are refused); null when it does not exist. */
  getBlob(repo: string, digest: string, maxBytes: number): Promise<Buffer | null>;
  /** The referrers API; null when the registry does not support it. */
  referrers(repo: string, digest: string): Promise<Descriptor[] | null>;
  /** Tag details without manifests (GitLab API); undefined when the backend reads manifests instead. */
  tagDetails?(repo: string, tag: string): Promise<TagDetails | null>;
  /** DELETE /manifests/<ref>: a tag (untag) or a digest (the manifest and every tag on it). */
  deleteManifest(repo: string, ref: string): Promise<DeleteOutcome>;
  /** Untags several tags at once when the backend has a bulk call (GitLab); returns the ones it scheduled. */
  deleteTagsBulk?(repo: string, tags: readonly string[]): Promise<readonly string[]>;
  putManifest(repo: string, ref: string, mediaType: string, body: Buffer): Promise<string>;
  close(): Promise<void>;
}
