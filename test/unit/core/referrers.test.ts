import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referrersFreshness, referrersTtl } from '../../../src/policy/referrers.js';
import { fallbackTag, filterByArtifactType, indexDescriptors, referrersIndex, type ReferrerDescriptor } from '../../../src/cache/referrers.js';

const S = { tagTtl: 300_000, notFoundTtl: 30_000, maxStale: 3_600_000 };

test('fallback tag schema: <alg>-<ref>, ref cut to 64 characters', () => {
  const hex = 'ab'.repeat(32);
  assert.equal(fallbackTag(`sha256:${hex}`), `sha256-${hex}`);
  const long = 'cd'.repeat(64);
  assert.equal(fallbackTag(`sha512:${long}`), `sha512-${long.slice(0, 64)}`);
  assert.ok(fallbackTag(`sha512:${long}`).length <= 128, 'a valid tag');
});

test('index descriptors: well-formed entries kept, malformed ones dropped, a non-index refused', () => {
  const good = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'1'.repeat(64)}`, size: 10, artifactType: 'a/b' };
  assert.deepEqual(indexDescriptors({ schemaVersion: 2, manifests: [good, { digest: 'x' }, null, 'str'] }), [good]);
  assert.deepEqual(indexDescriptors({ schemaVersion: 2 }), [], 'no manifests: an empty list');
  assert.equal(indexDescriptors({ manifests: 'nope' }), undefined);
  assert.equal(indexDescriptors('text'), undefined);
});

test('artifactType filter keeps exact matches only; the answer is an OCI image index', () => {
  const d = (n: string, artifactType?: string): ReferrerDescriptor => ({ mediaType: 'm', digest: `sha256:${n.repeat(64)}`, size: 1, ...(artifactType === undefined ? {} : { artifactType }) });
  const list = [d('1', 'application/vnd.example.sbom'), d('2', 'application/vnd.example.sig'), d('3')];
  assert.deepEqual(filterByArtifactType(list, 'application/vnd.example.sig'), [list[1]]);
  assert.deepEqual(filterByArtifactType(list, 'application/vnd.example'), []);
  assert.deepEqual(JSON.parse(referrersIndex([]).toString()), { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
});

test('referrers freshness: a list for tagTtl, an empty list for notFoundTtl (never longer than tagTtl), then stale-if-error up to maxStale', () => {
  assert.equal(referrersTtl(2, S), 300_000);
  assert.equal(referrersTtl(0, S), 30_000);
  assert.equal(referrersTtl(0, { ...S, tagTtl: 10_000 }), 10_000);
  assert.equal(referrersFreshness(0, 2, 299_999, S), 'fresh');
  assert.equal(referrersFreshness(0, 2, 300_000, S), 'stale-usable');
  assert.equal(referrersFreshness(0, 0, 30_000, S), 'stale-usable');
  assert.equal(referrersFreshness(0, 0, 29_999, S), 'fresh');
  assert.equal(referrersFreshness(0, 2, 300_000 + 3_600_000, S), 'stale-usable');
  assert.equal(referrersFreshness(0, 2, 300_001 + 3_600_000, S), 'expired');
});
