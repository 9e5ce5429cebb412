// Generated images of realistic shapes for the bench: layers are real (uncompressed) tar archives
// holding one file of random, incompressible bytes, so the same images serve the HTTP load client
// and `docker pull` (dockerd extracts layers and checks diff_ids). Written as an OCI image layout and
// pushed to the upstream with skopeo (--preserve-digests: the registry must hold exactly these bytes).
import { createHash, randomFillSync } from 'node:crypto';
import { mkdir, open, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCmd } from './procs.js';

export interface Blob {
  readonly digest: string;
  readonly size: number;
  readonly mediaType: string;
}

export interface ImageSpec {
  /** Repository under library/, e.g. "mixed". */
  readonly name: string;
  readonly tag: string;
  /** Layer sizes (file content bytes; the tar adds 1.5 KiB). */
  readonly layers: readonly number[];
  /** Also push an arm64 variant and tag a multi-arch index instead of the manifest. */
  readonly multiArch?: boolean;
}

export interface BuiltImage {
  readonly spec: ImageSpec;
  readonly repo: string; // library/NAME
  /** What a linux/amd64 client pulls: config and layers. */
  readonly blobs: readonly Blob[];
  readonly manifestDigest: string;
  readonly indexDigest?: string;
  readonly bytes: number;
  /** Blobs of the other platform of a multi-arch image (never pulled by a linux/amd64 client). */
  readonly otherBlobs: readonly Blob[];
}

const LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar';
const CONFIG_TYPE = 'application/vnd.oci.image.config.v1+json';
const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';
const INDEX_TYPE = 'application/vnd.oci.image.index.v1+json';

function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number): void => {
    h.write(s.slice(0, len), off, 'ascii');
  };
  const oct = (n: number, len: number): string => `${n.toString(8).padStart(len - 1, '0')}\0`;
  put(name, 0, 100);
  put(oct(0o644, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(size, 12), 124, 12);
  put(oct(1_700_000_000, 12), 136, 12);
  put('        ', 148, 8);
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return h;
}

async function writeBlob(dir: string, data: Buffer, mediaType: string): Promise<Blob> {
  const hex = createHash('sha256').update(data).digest('hex');
  await writeFile(join(dir, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length, mediaType };
}

/** A tar with one file of `size` random bytes, streamed to disk while hashing. */
async function writeRandomLayer(dir: string, fileName: string, size: number): Promise<Blob> {
  const tmp = join(dir, 'blobs', `tmp-${fileName}`);
  const fh = await open(tmp, 'w');
  const hash = createHash('sha256');
  let total = 0;
  const put = async (b: Buffer): Promise<void> => {
    hash.update(b);
    total += b.length;
    await fh.write(b);
  };
  try {
    await put(tarHeader(fileName, size));
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let left = size; left > 0; left -= chunk.length) {
      const n = Math.min(left, chunk.length);
      randomFillSync(chunk, 0, n);
      await put(chunk.subarray(0, n));
    }
    const pad = (512 - (size % 512)) % 512;
    await put(Buffer.alloc(pad + 1024));
  } finally {
    await fh.close();
  }
  const hex = hash.digest('hex');
  await rename(tmp, join(dir, 'blobs', 'sha256', hex));
  return { digest: `sha256:${hex}`, size: total, mediaType: LAYER_TYPE };
}

async function buildManifest(
  dir: string,
  spec: ImageSpec,
  arch: string,
  layerSizes: readonly number[],
): Promise<{ manifest: Blob; blobs: Blob[] }> {
  const layers: Blob[] = [];
  for (const [i, size] of layerSizes.entries()) {
    layers.push(await writeRandomLayer(dir, `${spec.name}-${arch}-layer${i}.bin`, size));
  }
  const config = {
    architecture: arch,
    os: 'linux',
    created: '2026-01-01T00:00:00Z',
    config: { Cmd: ['/bin/sh'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history: layers.map((_, i) => ({ created: '2026-01-01T00:00:00Z', created_by: `relais bench layer ${i}` })),
  };
  const configBlob = await writeBlob(dir, Buffer.from(JSON.stringify(config)), CONFIG_TYPE);
  const manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_TYPE,
    config: { mediaType: CONFIG_TYPE, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const manifestBlob = await writeBlob(dir, Buffer.from(JSON.stringify(manifest)), MANIFEST_TYPE);
  return { manifest: manifestBlob, blobs: [configBlob, ...layers] };
}

/** Writes the image as an OCI layout in `dir` and pushes it to registryHost (http). */
export async function buildAndPush(spec: ImageSpec, dir: string, registryHost: string): Promise<BuiltImage> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const amd = await buildManifest(dir, spec, 'amd64', spec.layers);
  let top: Blob = amd.manifest;
  let indexDigest: string | undefined;
  let otherBlobs: Blob[] = [];
  if (spec.multiArch === true) {
    const arm = await buildManifest(dir, spec, 'arm64', [Math.max(1024, Math.round((spec.layers[0] ?? 0) / 8))]);
    const index = {
      schemaVersion: 2,
      mediaType: INDEX_TYPE,
      manifests: [
        { mediaType: MANIFEST_TYPE, digest: amd.manifest.digest, size: amd.manifest.size, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: MANIFEST_TYPE, digest: arm.manifest.digest, size: arm.manifest.size, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    };
    otherBlobs = arm.blobs;
    top = await writeBlob(dir, Buffer.from(JSON.stringify(index)), INDEX_TYPE);
    indexDigest = top.digest;
  }
  const layoutIndex = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: top.mediaType,
        digest: top.digest,
        size: top.size,
        annotations: { 'org.opencontainers.image.ref.name': spec.tag },
      },
    ],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(layoutIndex));
  const repo = `library/${spec.name}`;
  await runCmd(
    'skopeo',
    [
      'copy',
      '--all',
      '--preserve-digests',
      '--dest-tls-verify=false',
      '--quiet',
      `oci:${dir}:${spec.tag}`,
      `docker://${registryHost}/${repo}:${spec.tag}`,
    ],
    { timeoutMs: 300_000 },
  );
  const bytes = amd.blobs.reduce((s, b) => s + b.size, 0);
  return indexDigest === undefined
    ? { spec, repo, blobs: amd.blobs, manifestDigest: amd.manifest.digest, bytes, otherBlobs }
    : { spec, repo, blobs: amd.blobs, manifestDigest: amd.manifest.digest, indexDigest, bytes, otherBlobs };
}
