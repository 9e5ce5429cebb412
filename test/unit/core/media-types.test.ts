// The one media-types module (src/upstream/media-types.ts): each Accept list says what its caller can use,
// under its own name; no other module spells a registry media type.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ACCEPT_ALL_MANIFESTS, ACCEPT_CACHED_MANIFESTS, ACCEPT_IMAGES, ACCEPT_REFERRERS, INDEX_TYPES, MANIFEST_TYPES, MT } from '../../../src/upstream/media-types.js';

const list = (accept: string): string[] => accept.split(', ');

test('Accept lists: cleanup sees every manifest type, the cache what it stores, image pulls images only', () => {
  assert.deepEqual(new Set(list(ACCEPT_ALL_MANIFESTS)), MANIFEST_TYPES);
  assert.deepEqual(list(ACCEPT_CACHED_MANIFESTS), [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest, MT.ociArtifact]);
  assert.ok(!list(ACCEPT_CACHED_MANIFESTS).includes(MT.dockerSchema1), 'relais does not cache schema 1');
  assert.deepEqual(list(ACCEPT_IMAGES), [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest]);
  for (const t of list(ACCEPT_IMAGES)) assert.ok(list(ACCEPT_CACHED_MANIFESTS).includes(t), `a cache serves what an image pull asks for: ${t}`);
  for (const t of INDEX_TYPES) assert.ok(MANIFEST_TYPES.has(t));
  assert.equal(ACCEPT_REFERRERS, MT.ociIndex);
  const names = [ACCEPT_ALL_MANIFESTS, ACCEPT_CACHED_MANIFESTS, ACCEPT_IMAGES];
  assert.equal(new Set(names).size, names.length, 'different lists, different names');
});

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('no module but src/upstream/media-types.ts spells a registry media type', () => {
  const files = sources(join(process.cwd(), 'src'));
  assert.ok(files.length > 50);
  const spelled = files.filter((f) => !f.endsWith(join('upstream', 'media-types.ts')) && /['"`]application\/vnd\./.test(readFileSync(f, 'utf8')));
  assert.deepEqual(spelled, [], 'import MT or an ACCEPT_* list from src/upstream/media-types.ts');
});
