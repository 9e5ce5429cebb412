// Fills a real distribution registry with what a CI pipeline leaves behind: branch slug tags,
// commit-SHA tags, semver releases, a multi-arch index, two tags on one digest, BuildKit registry
// caches (crafted to BuildKit's media types and annotations) and an image with an epoch `created`.
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { MEDIA } from '../../peers/images.js';
import { pushBlob, putManifest, type Creds } from '../../peers/registry-client.js';

export const DAY = 86_400_000;

export interface Pushed {
  readonly digest: string;
  readonly manifest: Buffer;
  readonly mediaType: string;
  /** Blob digests and sizes (config + layers). */
  readonly blobs: { digest: string; size: number }[];
}

export function isoDaysAgo(days: number): string {
  return new Date(Date.now() - days * DAY).toISOString();
}

/** An OCI image with one random layer and a config whose `created` is given (null: no field). */
export async function pushImage(url: string, repo: string, tag: string, created: string | null, layerBytes: number, creds?: Creds): Promise<Pushed> {
  const layer = randomBytes(layerBytes);
  const ld = await pushBlob(url, repo, layer, creds);
  const config = Buffer.from(
    JSON.stringify({
      ...(created === null ? {} : { created }),
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: [ld] },
    }),
  );
  const cd = await pushBlob(url, repo, config, creds);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: MEDIA.ociConfig, digest: cd, size: config.length },
      layers: [{ mediaType: MEDIA.ociLayerGzip, digest: ld, size: layer.length }],
    }),
  );
  const digest = await putManifest(url, repo, tag, manifest, MEDIA.ociManifest, creds);
  return { digest, manifest, mediaType: MEDIA.ociManifest, blobs: [{ digest: ld, size: layer.length }, { digest: cd, size: config.length }] };
}

/** Another tag on the very same manifest (same digest). */
export async function tagAgain(url: string, repo: string, tag: string, p: Pushed, creds?: Creds): Promise<void> {
  const d = await putManifest(url, repo, tag, p.manifest, p.mediaType, creds);
  if (d !== p.digest) throw new Error(`re-tagging ${tag} gave ${d}, expected ${p.digest}`);
}

/**
 * A BuildKit registry cache as `--export-cache type=registry,image-manifest=true` writes it: an OCI
 * manifest whose config is application/vnd.buildkit.cacheconfig.v0 and whose layers carry
 * buildkit/createdat and containerd.io/uncompressed annotations. The config has no `created`.
 */
export async function pushBuildkitCache(url: string, repo: string, tag: string, createdAt: string, layerBytes: number): Promise<Pushed> {
  const layer = randomBytes(layerBytes);
  const ld = await pushBlob(url, repo, layer);
  const uncompressed = `sha256:${createHash('sha256').update(layer).update('u').digest('hex')}`;
  const cacheConfig = Buffer.from(
    JSON.stringify({
      layers: [{ blob: ld, parent: -1, annotations: { createdAt, mediaType: MEDIA.ociLayerGzip, diffID: uncompressed, size: layer.length } }],
      records: [{ digest: `sha256:${createHash('sha256').update(tag).digest('hex')}`, results: [{ layer: 0, createdAt }] }],
    }),
  );
  const cd = await pushBlob(url, repo, cacheConfig);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      config: { mediaType: 'application/vnd.buildkit.cacheconfig.v0', digest: cd, size: cacheConfig.length },
      layers: [
        {
          mediaType: MEDIA.ociLayerGzip,
          digest: ld,
          size: layer.length,
          annotations: { 'buildkit/createdat': createdAt, 'containerd.io/uncompressed': uncompressed },
        },
      ],
    }),
  );
  const digest = await putManifest(url, repo, tag, manifest, MEDIA.ociManifest);
  return { digest, manifest, mediaType: MEDIA.ociManifest, blobs: [{ digest: ld, size: layer.length }, { digest: cd, size: cacheConfig.length }] };
}

/** sha256 over every file's relative path and content under dir, plus the total bytes. */
export async function hashTree(dir: string): Promise<{ hash: string; bytes: number; files: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  let files = 0;
  const walk = async (d: string, rel: string): Promise<void> => {
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const p = join(d, e.name);
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) {
        h.update(`d ${r}\n`);
        await walk(p, r);
      } else {
        const data = await readFile(p);
        h.update(`f ${r} ${createHash('sha256').update(data).digest('hex')}\n`);
        bytes += (await stat(p)).size;
        files++;
      }
    }
  };
  await walk(dir, '');
  return { hash: h.digest('hex'), bytes, files };
}

/** BuildKit's default registry cache form: an OCI index listing the layer blobs and the cache config. */
export async function pushBuildkitCacheIndex(url: string, repo: string, tag: string, createdAt: string, layerBytes: number): Promise<Pushed> {
  const layer = randomBytes(layerBytes);
  const ld = await pushBlob(url, repo, layer);
  const cacheConfig = Buffer.from(JSON.stringify({ layers: [{ blob: ld, parent: -1 }], records: [{ digest: `sha256:${createHash('sha256').update(tag).digest('hex')}`, results: [{ layer: 0 }] }] }));
  const cd = await pushBlob(url, repo, cacheConfig);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: [
        { mediaType: MEDIA.ociLayerGzip, digest: ld, size: layer.length, annotations: { 'buildkit/createdat': createdAt, 'containerd.io/uncompressed': ld } },
        { mediaType: 'application/vnd.buildkit.cacheconfig.v0', digest: cd, size: cacheConfig.length },
      ],
    }),
  );
  const digest = await putManifest(url, repo, tag, index, MEDIA.ociIndex);
  return { digest, manifest: index, mediaType: MEDIA.ociIndex, blobs: [{ digest: ld, size: layer.length }, { digest: cd, size: cacheConfig.length }] };
}

/** A cosign-style signature: an OCI artifact with `subject`, tagged sha256-<hex>.sig (the tag schema). */
export async function pushSignature(url: string, repo: string, subject: Pushed, bytes: number): Promise<Pushed & { tag: string }> {
  const empty = Buffer.from('{}');
  const ed = await pushBlob(url, repo, empty);
  const sig = randomBytes(bytes);
  const sd = await pushBlob(url, repo, sig);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociManifest,
      artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: ed, size: 2 },
      layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: sd, size: sig.length }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.manifest.length },
    }),
  );
  const tag = `${subject.digest.replace(':', '-')}.sig`;
  const digest = await putManifest(url, repo, tag, manifest, MEDIA.ociManifest);
  return { tag, digest, manifest, mediaType: MEDIA.ociManifest, blobs: [{ digest: sd, size: sig.length }] };
}
