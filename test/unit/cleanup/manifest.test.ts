import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildkitCreated, configCreated, kindOf, parseManifest, readCreated } from '../../../src/retention/manifest-refs.js';

const d = (n: number): string => `sha256:${String(n).padStart(64, '0')}`;
const j = (x: unknown): Buffer => Buffer.from(JSON.stringify(x));

void test('BuildKit registry cache: legacy index of blobs and image-manifest form are both recognised', () => {
  // type=registry (default image-manifest=false): an OCI index listing layer blobs and the cache config.
  const legacy = parseManifest(
    j({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d(1), size: 10, annotations: { 'buildkit/createdat': '2026-05-01T10:00:00.123456789Z', 'containerd.io/uncompressed': d(9) } },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d(2), size: 10, annotations: { 'buildkit/createdat': '2026-05-03T10:00:00Z' } },
        { mediaType: 'application/vnd.buildkit.cacheconfig.v0', digest: d(3), size: 10 },
      ],
    }),
    '',
  );
  assert.equal(kindOf(legacy), 'buildkit-cache');
  assert.deepEqual(legacy.children, [], 'blob entries are not manifests of the digest graph');
  assert.equal(buildkitCreated(legacy)?.toISOString(), '2026-05-03T10:00:00.000Z');
  // image-manifest=true: an OCI manifest whose config is the cache config.
  const modern = parseManifest(
    j({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.buildkit.cacheconfig.v0', digest: d(3), size: 10 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d(1), size: 10, annotations: { 'buildkit/createdat': '2026-05-01T10:00:00.5Z' } }],
    }),
    '',
  );
  assert.equal(kindOf(modern), 'buildkit-cache');
  assert.equal(buildkitCreated(modern)?.toISOString(), '2026-05-01T10:00:00.500Z');
});

void test('indexes, images, artifacts, referrers and schema 1', () => {
  const idx = parseManifest(
    j({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', manifests: [{ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: d(5), size: 1, platform: { os: 'linux', architecture: 'amd64' } }] }),
    'application/vnd.docker.distribution.manifest.list.v2+json',
  );
  assert.equal(kindOf(idx), 'index');
  assert.deepEqual(idx.children.map((c) => c.digest), [d(5)]);
  const img = parseManifest(j({ schemaVersion: 2, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: d(6), size: 1 }, layers: [] }), 'application/vnd.docker.distribution.manifest.v2+json');
  assert.equal(kindOf(img), 'image');
  const sbom = parseManifest(
    j({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/spdx+json', config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: d(7), size: 2 }, layers: [], subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d(6), size: 1 } }),
    '',
  );
  assert.equal(kindOf(sbom), 'artifact');
  assert.equal(sbom.subject, d(6));
  const s1 = parseManifest(j({ schemaVersion: 1, name: 'x', tag: 'y', history: [{ v1Compatibility: JSON.stringify({ created: '2019-03-01T00:00:00Z' }) }] }), 'application/vnd.docker.distribution.manifest.v1+prettyjws');
  assert.equal(kindOf(s1), 'image');
  assert.equal(s1.schema1Created, '2019-03-01T00:00:00Z');
});

void test('config created: ok, missing, epoch (reproducible builds, jib, nix), invalid', () => {
  assert.equal(configCreated(j({ created: '2026-01-02T03:04:05.123456789Z' })).date?.toISOString(), '2026-01-02T03:04:05.123Z');
  assert.deepEqual(configCreated(j({ architecture: 'amd64' })), { date: null, flag: 'missing' });
  assert.deepEqual(configCreated(j({ created: '1970-01-01T00:00:00Z' })), { date: null, flag: 'epoch' });
  assert.deepEqual(configCreated(j({ created: '1970-01-01T00:00:01Z' })), { date: null, flag: 'epoch' });
  assert.deepEqual(configCreated(j({ created: '1980-01-01T00:00:00Z' })), { date: null, flag: 'epoch' });
  assert.deepEqual(readCreated('yesterday'), { date: null, flag: 'invalid' });
  assert.deepEqual(configCreated(Buffer.from('not json')), { date: null, flag: 'invalid' });
});
