// Reading manifests and image configs for retention: what kind of thing a tag points to, what it
// references, and how old it is (config `created`, flagged when missing or the epoch).
import { INDEX_TYPES, MANIFEST_TYPES, MT } from '../upstream/media-types.js';
import type { Descriptor } from './registry-backend.js';
import type { CreatedFlag, ImageKind } from './retention-types.js';

export interface ParsedManifest {
  readonly mediaType: string;
  readonly isIndex: boolean;
  readonly config: Descriptor | undefined;
  readonly layers: readonly Descriptor[];
  /** Index entries that are manifests (platform images). */
  readonly children: readonly Descriptor[];
  /** Index entries that are blobs (BuildKit's legacy cache index lists layers and its cache config). */
  readonly blobEntries: readonly Descriptor[];
  readonly subject: string | undefined;
  readonly annotations: Readonly<Record<string, string>>;
  readonly artifactType: string | undefined;
  /** Schema 1 only: `created` from the newest history entry. */
  readonly schema1Created: string | undefined;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function str(x: unknown): string | undefined {
  return typeof x === 'string' ? x : undefined;
}

function strRecord(x: unknown): Record<string, string> {
  if (!isRecord(x)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(x)) if (typeof v === 'string') out[k] = v;
  return out;
}

function descriptor(x: unknown): Descriptor | undefined {
  if (!isRecord(x)) return undefined;
  const digest = str(x.digest);
  if (digest === undefined) return undefined;
  const platform = isRecord(x.platform) ? { os: str(x.platform.os), architecture: str(x.platform.architecture), variant: str(x.platform.variant) } : undefined;
  const artifactType = str(x.artifactType);
  return {
    mediaType: str(x.mediaType) ?? '',
    digest,
    size: typeof x.size === 'number' ? x.size : 0,
    annotations: strRecord(x.annotations),
    ...(artifactType !== undefined ? { artifactType } : {}),
    ...(platform ? { platform: platform } : {}),
  };
}

function descriptors(x: unknown): Descriptor[] {
  return Array.isArray(x) ? x.map(descriptor).filter((d): d is Descriptor => d !== undefined) : [];
}

/** Parses a manifest body; the media type comes from the body, else from the response header. */
export function parseManifest(body: Buffer, headerMediaType: string): ParsedManifest {
  let j: unknown;
  try {
    j = JSON.parse(body.toString('utf8'));
  } catch {
    j = {};
  }
  const o = isRecord(j) ? j : {};
  const mediaType = str(o.mediaType) ?? (headerMediaType !== '' ? headerMediaType : Array.isArray(o.manifests) ? MT.ociIndex : MT.ociManifest);
  const isIndex = INDEX_TYPES.has(mediaType) || (Array.isArray(o.manifests) && !isRecord(o.config));
  const entries = descriptors(o.manifests);
  let schema1Created: string | undefined;
  if (Array.isArray(o.history) && isRecord(o.history[0])) {
    try {
      const v1 = JSON.parse(str(o.history[0].v1Compatibility) ?? '{}') as unknown;
      if (isRecord(v1)) schema1Created = str(v1.created);
    } catch {
      /* ignore */
    }
  }
  const subject = descriptor(o.subject)?.digest;
  const artifactType = str(o.artifactType);
  return {
    mediaType,
    isIndex,
    config: descriptor(o.config),
    layers: descriptors(o.layers ?? o.blobs),
    children: entries.filter((d) => d.mediaType === '' || MANIFEST_TYPES.has(d.mediaType)),
    blobEntries: entries.filter((d) => d.mediaType !== '' && !MANIFEST_TYPES.has(d.mediaType)),
    subject,
    annotations: strRecord(o.annotations),
    artifactType,
    schema1Created,
  };
}

export function isBuildkitCache(m: ParsedManifest): boolean {
  if (m.config?.mediaType === MT.buildkitCacheConfig) return true;
  return m.isIndex && m.blobEntries.some((d) => d.mediaType === MT.buildkitCacheConfig);
}

const IMAGE_CONFIG_TYPES: ReadonlySet<string> = new Set([MT.ociConfig, MT.dockerConfig]);

export function kindOf(m: ParsedManifest): ImageKind {
  if (isBuildkitCache(m)) return 'buildkit-cache';
  if (m.isIndex) return 'index';
  if (m.schema1Created !== undefined || m.mediaType === MT.dockerSchema1 || m.mediaType === MT.dockerSchema1Signed) return 'image';
  if (m.artifactType !== undefined || m.mediaType === MT.ociArtifact) return 'artifact';
  if (m.config && !IMAGE_CONFIG_TYPES.has(m.config.mediaType)) return 'artifact';
  return m.config ? 'image' : 'unknown';
}

export function wantsConfig(m: ParsedManifest): boolean {
  return m.config !== undefined && IMAGE_CONFIG_TYPES.has(m.config.mediaType);
}

/** Before this, a `created` is a placeholder (SOURCE_DATE_EPOCH=0, jib, ko, nix use 1970 or 1980). */
const EPOCH_LIMIT = Date.parse('1980-01-02T00:00:00Z');

export interface CreatedReading {
  readonly date: Date | null;
  readonly flag: CreatedFlag;
}

/** Reads `created` from an image config JSON (or a schema 1 history entry). */
export function readCreated(value: unknown): CreatedReading {
  if (value === undefined || value === null || value === '') return { date: null, flag: 'missing' };
  if (typeof value !== 'string') return { date: null, flag: 'invalid' };
  const t = Date.parse(value);
  if (Number.isNaN(t)) return { date: null, flag: 'invalid' };
  if (t < EPOCH_LIMIT) return { date: null, flag: 'epoch' };
  return { date: new Date(t), flag: 'ok' };
}

export function configCreated(body: Buffer): CreatedReading {
  try {
    const j = JSON.parse(body.toString('utf8')) as unknown;
    return readCreated(isRecord(j) ? j.created : undefined);
  } catch {
    return { date: null, flag: 'invalid' };
  }
}

/** `org.opencontainers.image.created` from the manifest's annotations, when it is a real date. */
export function annotationCreated(m: ParsedManifest): Date | null {
  return readCreated(m.annotations['org.opencontainers.image.created']).date;
}

/** A BuildKit cache's age: the newest `buildkit/createdat` of its layers. */
export function buildkitCreated(m: ParsedManifest): Date | null {
  let newest: Date | null = null;
  for (const d of [...m.layers, ...m.blobEntries]) {
    const r = readCreated(d.annotations?.['buildkit/createdat']);
    if (r.date && (newest === null || r.date > newest)) newest = r.date;
  }
  return newest;
}
