// Container images made on the spot (no internet) and pushed with skopeo to a registry peer.
//
// Images are written in containers/image's `dir:` layout (manifest.json, one file per blob named
// by its hex digest, `<hex>.manifest.json` per child of an index) and pushed with
// `skopeo copy --preserve-digests`, so the digests returned here are exactly the bytes the
// registry serves. Layers are either random bytes ('random': incompressible, not a valid tar:
// fine for skopeo/relais pull tests) or a gzip'd tar holding one random file ('tar': what
// dockerd/containerd can unpack; gzip level 0 (stored blocks) keeps the size close to the file size and is fast).
import { createHash, randomFillSync } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { copyFile, link, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';
import { removeDir, removeDirSync, runOk, tempDir, tempDirSync } from './proc.js';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export type ImageFormat = 'oci' | 'docker';
export type LayerKind = 'random' | 'tar';

export interface Creds {
  username: string;
  password: string;
}

export interface BuiltLayer {
  digest: string;
  size: number;
  mediaType: string;
  /** sha256 of the uncompressed content (for 'random' layers: of the bytes themselves). */
  diffId: string;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface BuiltImage {
  /** HOST/REPO:TAG (or HOST/REPO@DIGEST for a child of an index). */
  ref: string;
  repo: string;
  /** '' for a child of an index (pushed by digest only). */
  tag: string;
  manifestDigest: string;
  manifestMediaType: string;
  manifest: Buffer;
  configDigest: string;
  config: Buffer;
  layers: BuiltLayer[];
  /** Bytes of every blob: config + layers (what a pull downloads besides the manifest). */
  totalBytes: number;
  platform: Platform;
}

export interface BuiltIndex {
  ref: string;
  repo: string;
  tag: string;
  indexDigest: string;
  indexMediaType: string;
  index: Buffer;
  children: BuiltImage[];
}

/** A layer to generate, or one generated before (for images sharing layers). */
export type LayerSpec = number | { size: number; kind?: LayerKind } | { reuse: BuiltLayer };

export interface PushOptions {
  layers: LayerSpec[];
  format?: ImageFormat;
  /** Kind of generated layers; default 'random'. */
  layerKind?: LayerKind;
  creds?: Creds;
  platform?: Platform;
  /** Extra fields for the image config's `config` (Cmd, Env, Labels...). */
  imageConfig?: Record<string, unknown>;
  /** Annotations on an OCI manifest. */
  annotations?: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Blob store: every generated blob lives in one process-wide temp dir, by digest, so a later
// image can reuse a layer; removed when the process exits.

let blobStoreDir: string | null = null;
function blobStore(): string {
  if (blobStoreDir === null) {
    const dir = tempDirSync('blobs');
    blobStoreDir = dir;
    process.on('exit', () => {
      removeDirSync(dir);
    });
  }
  return blobStoreDir;
}

function hex(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}

function blobPath(digest: string): string {
  return join(blobStore(), hex(digest));
}

async function storeBuffer(data: Buffer): Promise<string> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  await writeFile(blobPath(digest), data);
  return digest;
}

export function hostArchitecture(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' };
  return map[process.arch] ?? process.arch;
}

// ---------------------------------------------------------------------------------------------
// Tar writing (ustar, enough for files, directories and symlinks).

export interface TarEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  mode?: number;
  /** For files: the content (or use size+random). */
  data?: Buffer;
  linkTarget?: string;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

/** A 512-byte ustar header. */
export function tarHeader(entry: { path: string; type: 'file' | 'dir' | 'symlink'; mode: number; size: number; linkTarget?: string }): Buffer {
  const h = Buffer.alloc(512);
  let name = entry.path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', name.length - 2);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
    if (Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) throw new Error(`tar path too long: ${entry.path}`);
  }
  h.write(name, 0, 100, 'utf8');
  h.write(octal(entry.mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(entry.type === 'file' ? entry.size : 0, 12), 124, 'ascii');
  h.write(octal(1_700_000_000, 12), 136, 'ascii'); // fixed mtime: reproducible layers
  h.write('        ', 148, 'ascii'); // checksum placeholder
  h.write(entry.type === 'file' ? '0' : entry.type === 'dir' ? '5' : '2', 156, 'ascii');
  if (entry.linkTarget !== undefined) h.write(entry.linkTarget, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

/** A complete tar archive of some entries. */
export function tarArchive(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === 'file' ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0);
    const header: { path: string; type: TarEntry['type']; mode: number; size: number; linkTarget?: string } = {
      path: e.path,
      type: e.type,
      mode: e.mode ?? (e.type === 'dir' ? 0o755 : 0o644),
      size: data.length,
    };
    if (e.linkTarget !== undefined) header.linkTarget = e.linkTarget;
    parts.push(tarHeader(header));
    parts.push(data);
    const pad = (512 - (data.length % 512)) % 512;
    if (pad > 0) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function* randomChunks(size: number): Generator<Buffer> {
  const chunk = 1 << 20;
  for (let done = 0; done < size; done += chunk) {
    yield randomFillSync(Buffer.allocUnsafe(Math.min(chunk, size - done)));
  }
}

/** Passes bytes through while hashing and counting them. */
class Hasher extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

async function generateLayer(size: number, kind: LayerKind, mediaType: string): Promise<BuiltLayer> {
  const tmp = join(blobStore(), `tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const outer = new Hasher();
  let diffId: string | null = null;
  if (kind === 'random') {
    await pipeline(Readable.from(randomChunks(size)), outer, createWriteStream(tmp));
  } else {
    const inner = new Hasher();
    const tarStream = function* (): Generator<Buffer> {
      yield tarHeader({ path: 'data/', type: 'dir', mode: 0o755, size: 0 });
      yield tarHeader({ path: 'data/random.bin', type: 'file', mode: 0o644, size });
      yield* randomChunks(size);
      const pad = (512 - (size % 512)) % 512;
      if (pad > 0) yield Buffer.alloc(pad);
      yield Buffer.alloc(1024);
    };
    await pipeline(Readable.from(tarStream()), inner, createGzip({ level: 0 }), outer, createWriteStream(tmp));
    diffId = `sha256:${inner.hash.digest('hex')}`;
  }
  const digest = `sha256:${outer.hash.digest('hex')}`;
  diffId ??= digest; // a random layer is its own "uncompressed content"
  await rename(tmp, blobPath(digest));
  return { digest, size: outer.bytes, mediaType, diffId };
}

// ---------------------------------------------------------------------------------------------
// Manifests

interface ImageParts {
  manifest: Buffer;
  manifestDigest: string;
  manifestMediaType: string;
  config: Buffer;
  configDigest: string;
  layers: BuiltLayer[];
  platform: Platform;
}

async function buildImage(opts: PushOptions, layersOverride?: BuiltLayer[]): Promise<ImageParts> {
  const format = opts.format ?? 'oci';
  const layerMedia = format === 'oci' ? MEDIA.ociLayerGzip : MEDIA.dockerLayerGzip;
  const layers: BuiltLayer[] = layersOverride ?? [];
  if (layersOverride === undefined) {
    for (const spec of opts.layers) {
      if (typeof spec === 'number') layers.push(await generateLayer(spec, opts.layerKind ?? 'random', layerMedia));
      else if ('reuse' in spec) layers.push({ ...spec.reuse, mediaType: layerMedia });
      else layers.push(await generateLayer(spec.size, spec.kind ?? opts.layerKind ?? 'random', layerMedia));
    }
  }
  const platform = opts.platform ?? { os: 'linux', architecture: hostArchitecture() };
  const configJson: Record<string, unknown> = {
    created: '2024-01-01T00:00:00Z',
    architecture: platform.architecture,
    os: platform.os,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...(opts.imageConfig ?? {}) },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `relais test layer ${i}` })),
  };
  if (platform.variant !== undefined) configJson.variant = platform.variant;
  const config = Buffer.from(JSON.stringify(configJson));
  const configDigest = await storeBuffer(config);
  const manifestMediaType = format === 'oci' ? MEDIA.ociManifest : MEDIA.dockerManifest;
  const manifestJson: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: manifestMediaType,
    config: { mediaType: format === 'oci' ? MEDIA.ociConfig : MEDIA.dockerConfig, digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  if (opts.annotations !== undefined && format === 'oci') manifestJson.annotations = opts.annotations;
  const manifest = Buffer.from(JSON.stringify(manifestJson, null, 2));
  const manifestDigest = await storeBuffer(manifest);
  return { manifest, manifestDigest, manifestMediaType, config, configDigest, layers, platform };
}

function splitRef(repoTag: string): { repo: string; tag: string } {
  const slash = repoTag.lastIndexOf('/');
  const colon = repoTag.lastIndexOf(':');
  if (colon <= slash) return { repo: repoTag, tag: 'latest' };
  return { repo: repoTag.slice(0, colon), tag: repoTag.slice(colon + 1) };
}

async function placeBlob(digest: string, dir: string): Promise<void> {
  const to = join(dir, hex(digest));
  try {
    await stat(to);
    return;
  } catch {
    // not there yet
  }
  try {
    await link(blobPath(digest), to);
  } catch {
    await copyFile(blobPath(digest), to);
  }
}

async function skopeoPushDir(dir: string, ref: string, creds: Creds | undefined, all: boolean): Promise<void> {
  const args = ['copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests'];
  if (all) args.push('--all');
  if (creds !== undefined) args.push('--dest-creds', `${creds.username}:${creds.password}`);
  args.push(`dir:${dir}`, `docker://${ref}`);
  await runOk('skopeo', args, { timeoutMs: 300_000 });
}

async function writeDirLayout(parts: ImageParts, dir: string, manifestName = 'manifest.json'): Promise<void> {
  await writeFile(join(dir, manifestName), parts.manifest);
  await placeBlob(parts.configDigest, dir);
  for (const l of parts.layers) await placeBlob(l.digest, dir);
}

function toBuilt(parts: ImageParts, host: string, repo: string, tag: string): BuiltImage {
  return {
    ref: tag === '' ? `${host}/${repo}@${parts.manifestDigest}` : `${host}/${repo}:${tag}`,
    repo,
    tag,
    manifestDigest: parts.manifestDigest,
    manifestMediaType: parts.manifestMediaType,
    manifest: parts.manifest,
    configDigest: parts.configDigest,
    config: parts.config,
    layers: parts.layers.map((l) => ({ ...l })),
    totalBytes: parts.config.length + parts.layers.reduce((a, l) => a + l.size, 0),
    platform: { ...parts.platform },
  };
}

async function pushParts(parts: ImageParts, registryHost: string, repoTag: string, creds?: Creds): Promise<BuiltImage> {
  const { repo, tag } = splitRef(repoTag);
  const dir = await tempDir('image');
  try {
    await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
    await writeDirLayout(parts, dir);
    await skopeoPushDir(dir, `${registryHost}/${repo}:${tag}`, creds, false);
  } finally {
    await removeDir(dir);
  }
  return toBuilt(parts, registryHost, repo, tag);
}

/**
 * Generates an image with one layer per entry of `layers` (sizes in bytes, or earlier layers to
 * reuse) and pushes it to `registryHost` (HOST:PORT, plain HTTP) as `repo:tag`.
 */
export async function pushRandomImage(registryHost: string, repoTag: string, opts: PushOptions): Promise<BuiltImage> {
  const parts = await buildImage(opts);
  return pushParts(parts, registryHost, repoTag, opts.creds);
}

/** Pushes an image built before (same manifest, same digests) under another registry/repo/tag. */
export async function pushBuiltImage(image: BuiltImage, registryHost: string, repoTag: string, creds?: Creds): Promise<BuiltImage> {
  return pushParts(
    {
      manifest: image.manifest,
      manifestDigest: image.manifestDigest,
      manifestMediaType: image.manifestMediaType,
      config: image.config,
      configDigest: image.configDigest,
      layers: image.layers,
      platform: image.platform,
    },
    registryHost,
    repoTag,
    creds,
  );
}

export interface PlatformSpec extends Platform {
  layers: LayerSpec[];
}

/**
 * Pushes a multi-platform image: an OCI index (format 'oci') or a Docker manifest list
 * ('docker') whose children are pushed by digest.
 */
export async function pushIndex(
  registryHost: string,
  repoTag: string,
  platforms: PlatformSpec[],
  opts: { format?: ImageFormat; layerKind?: LayerKind; creds?: Creds } = {},
): Promise<BuiltIndex> {
  const format = opts.format ?? 'oci';
  const { repo, tag } = splitRef(repoTag);
  const children: ImageParts[] = [];
  for (const p of platforms) {
    const platform: Platform = { os: p.os, architecture: p.architecture };
    if (p.variant !== undefined) platform.variant = p.variant;
    const childOpts: PushOptions = { layers: p.layers, format, platform };
    if (opts.layerKind !== undefined) childOpts.layerKind = opts.layerKind;
    children.push(await buildImage(childOpts));
  }
  const indexMediaType = format === 'oci' ? MEDIA.ociIndex : MEDIA.dockerList;
  const index = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: indexMediaType,
        manifests: children.map((c) => ({
          mediaType: c.manifestMediaType,
          digest: c.manifestDigest,
          size: c.manifest.length,
          platform: c.platform,
        })),
      },
      null,
      2,
    ),
  );
  const indexDigest = await storeBuffer(index);
  const dir = await tempDir('index');
  try {
    await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
    await writeFile(join(dir, 'manifest.json'), index);
    for (const c of children) await writeDirLayout(c, dir, `${hex(c.manifestDigest)}.manifest.json`);
    await skopeoPushDir(dir, `${registryHost}/${repo}:${tag}`, opts.creds, true);
  } finally {
    await removeDir(dir);
  }
  return {
    ref: `${registryHost}/${repo}:${tag}`,
    repo,
    tag,
    indexDigest,
    indexMediaType,
    index,
    children: children.map((c) => toBuilt(c, registryHost, repo, '')),
  };
}

/**
 * Pushes a tiny image that `docker run --rm --network none IMG sh -c 'echo ok'` can run: one
 * gzip'd tar layer with /bin/busybox (from busybox-static) and /bin/sh -> busybox.
 */
export async function pushRunnableImage(
  registryHost: string,
  repoTag: string,
  opts: { format?: ImageFormat; creds?: Creds; /** Config labels: a way to get a distinct image with the same layer. */ labels?: Record<string, string> } = {},
): Promise<BuiltImage> {
  let busybox: Buffer;
  try {
    busybox = await readFile('/bin/busybox');
  } catch {
    throw new Error("/bin/busybox is missing: install busybox-static (run 'sudo bash scripts/setup-peers.sh')");
  }
  const applets = ['sh', 'echo', 'cat', 'ls', 'sleep', 'true', 'false', 'env', 'id', 'uname', 'wget'];
  const tar = tarArchive([
    { path: 'bin/', type: 'dir' },
    { path: 'bin/busybox', type: 'file', mode: 0o755, data: busybox },
    ...applets.map((a): TarEntry => ({ path: `bin/${a}`, type: 'symlink', mode: 0o777, linkTarget: 'busybox' })),
    { path: 'etc/', type: 'dir' },
    { path: 'etc/passwd', type: 'file', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') },
    { path: 'etc/group', type: 'file', data: Buffer.from('root:x:0:\n') },
    { path: 'tmp/', type: 'dir', mode: 0o1777 },
    { path: 'root/', type: 'dir', mode: 0o700 },
  ]);
  const gz = gzipSync(tar, { level: 6 });
  const format = opts.format ?? 'docker';
  const layer: BuiltLayer = {
    digest: await storeBuffer(gz),
    size: gz.length,
    mediaType: format === 'oci' ? MEDIA.ociLayerGzip : MEDIA.dockerLayerGzip,
    diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}`,
  };
  const imageConfig: Record<string, unknown> = { Cmd: ['sh'], Env: ['PATH=/bin'] };
  if (opts.labels !== undefined) imageConfig.Labels = opts.labels;
  const buildOpts: PushOptions = { layers: [], format, imageConfig };
  const parts = await buildImage(buildOpts, [layer]);
  return pushParts(parts, registryHost, repoTag, opts.creds);
}
