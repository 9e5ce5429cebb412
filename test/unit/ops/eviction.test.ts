// The eviction planner: LRU images down to the low watermark, shared blobs, pins, busy content, idle age.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildImages, dependentManifests, parsePin, pinMatchesTag, planEviction, type EvictionSettings, type PinContext, type Snapshot, type SnapshotContent } from '../../../src/eviction/eviction-plan.js';

const ctx: PinContext = { defaultUpstream: 'docker.io', libraryPrefix: (u) => u === 'docker.io' };
const MT = 'application/vnd.oci.image.manifest.v1+json';

/** A tiny cache: images made of a manifest and blobs, some blobs shared. */
function cache(): Snapshot {
  const content: SnapshotContent[] = [
    { digest: 'm:a', size: 10, mediaType: MT, lastAccess: 100 },
    { digest: 'm:b', size: 10, mediaType: MT, lastAccess: 200 },
    { digest: 'm:c', size: 10, mediaType: MT, lastAccess: 300 },
    { digest: 'b:base', size: 1000, mediaType: undefined, lastAccess: 300 },
    { digest: 'b:a', size: 500, mediaType: undefined, lastAccess: 100 },
    { digest: 'b:b', size: 400, mediaType: undefined, lastAccess: 200 },
    { digest: 'b:c', size: 300, mediaType: undefined, lastAccess: 300 },
  ];
  return {
    content,
    references: [
      { manifest: 'm:a', child: 'b:base' },
      { manifest: 'm:a', child: 'b:a' },
      { manifest: 'm:b', child: 'b:base' },
      { manifest: 'm:b', child: 'b:b' },
      { manifest: 'm:c', child: 'b:c' },
    ],
    tags: [
      { upstream: 'docker.io', repo: 'library/a', tag: 'v1', digest: 'm:a' },
      { upstream: 'docker.io', repo: 'library/b', tag: 'v1', digest: 'm:b' },
      { upstream: 'ghcr.io', repo: 'org/c', tag: 'main', digest: 'm:c' },
    ],
  };
}

const total = (s: Snapshot): number => s.content.reduce((n, c) => n + c.size, 0);

function settings(over: Partial<EvictionSettings>): EvictionSettings {
  return { maxSize: undefined, lowWatermark: 1, maxIdleAge: undefined, pins: [], now: 1000, busy: new Set(), ...over };
}

test('under the budget nothing goes', () => {
  const s = cache();
  const plan = planEviction(s, settings({ maxSize: total(s) }));
  assert.deepEqual(plan.digests, []);
  assert.equal(plan.usageAfter, total(s));
});

test('over the budget: least recently used image first, down to the low watermark; the shared base stays while b is kept', () => {
  const s = cache(); // 2230 bytes
  const plan = planEviction(s, settings({ maxSize: 2000, lowWatermark: 0.9 })); // target 1800
  assert.deepEqual(plan.images.map((i) => i.root), ['m:a']);
  assert.deepEqual(new Set(plan.digests), new Set(['m:a', 'b:a']), 'base layer is still held by b');
  assert.equal(plan.bytes, 510);
  assert.equal(plan.usageAfter, 1720);
  assert.ok(plan.usageAfter <= 1800);
  assert.equal(plan.images[0]?.reason, 'size');
  assert.deepEqual(plan.images[0]?.names, ['docker.io/library/a:v1']);
});

test('a shared blob goes with the last image that holds it', () => {
  const s = cache();
  const plan = planEviction(s, settings({ maxSize: 300, lowWatermark: 1 }));
  assert.deepEqual(plan.images.map((i) => i.root), ['m:a', 'm:b', 'm:c']);
  assert.ok(plan.digests.includes('b:base'));
  assert.equal(plan.usageAfter, 0);
  // with a and b gone, usage 310 is under the 500 target: c stays
  const partial = planEviction(s, settings({ maxSize: 1000, lowWatermark: 0.5 }));
  assert.deepEqual(partial.images.map((i) => i.root), ['m:a', 'm:b']);
  assert.ok(partial.digests.includes('b:base'));
  assert.equal(partial.usageAfter, 310);
});

test('pins: glob patterns on upstream/repo:tag with the library/ rule; pinned images are never evicted', () => {
  const s = cache();
  const plan = planEviction(s, settings({ maxSize: 100, lowWatermark: 1, pins: [parsePin('a:v*', ctx)] }));
  assert.deepEqual(plan.images.map((i) => i.root).sort(), ['m:b', 'm:c']);
  assert.ok(!plan.digests.includes('b:base'), 'held by the pinned image a');
  assert.ok(!plan.digests.includes('b:a'));
  assert.ok(plan.shortBy > 0, 'the budget cannot be met: reported');

  const dind = parsePin('docker.io/library/docker:*-dind', ctx);
  assert.ok(pinMatchesTag(dind, { upstream: 'docker.io', repo: 'library/docker', tag: '27.3-dind', digest: 'x' }));
  assert.ok(!pinMatchesTag(dind, { upstream: 'docker.io', repo: 'library/docker', tag: '27.3-cli', digest: 'x' }));
  assert.ok(!pinMatchesTag(parsePin('docker:*-dind', ctx), { upstream: 'docker.io', repo: 'library/docker', tag: 'dind', digest: 'x' }));
  assert.ok(pinMatchesTag(parsePin('docker:*dind', ctx), { upstream: 'docker.io', repo: 'library/docker', tag: 'dind', digest: 'x' }));
  const org = parsePin('ghcr.io/org/*', ctx);
  assert.ok(pinMatchesTag(org, { upstream: 'ghcr.io', repo: 'org/c', tag: 'anything', digest: 'x' }));
  assert.ok(!pinMatchesTag(org, { upstream: 'ghcr.io', repo: 'org/c/deeper', tag: 'x', digest: 'x' }), '* stays in one path component');
  assert.ok(pinMatchesTag(parsePin('ghcr.io/org/**', ctx), { upstream: 'ghcr.io', repo: 'org/c/deeper', tag: 'x', digest: 'x' }));
  assert.ok(!pinMatchesTag(parsePin('alpine', ctx), { upstream: 'ghcr.io', repo: 'library/alpine', tag: 'x', digest: 'x' }), 'no host: the default upstream');
  assert.ok(pinMatchesTag(parsePin('*/library/alpine:3.*', ctx), { upstream: 'quay.io', repo: 'library/alpine', tag: '3.20', digest: 'x' }));
  assert.ok(pinMatchesTag(parsePin('alpine@sha256:ab12', ctx), { upstream: 'docker.io', repo: 'library/alpine', tag: 'x', digest: 'sha256:ab12' }));
  assert.throws(() => parsePin('alpine@nodigest', ctx));
});

test('a repository pin without a tag also keeps images of that repository pulled by digest', () => {
  const s: Snapshot = { ...cache(), tags: [], links: [{ upstream: 'docker.io', repo: 'library/b', digest: 'm:b' }] };
  const plan = planEviction(s, settings({ maxSize: 0, pins: [parsePin('b', ctx)] }));
  assert.ok(!plan.images.some((i) => i.root === 'm:b'));
  assert.ok(plan.images.some((i) => i.root === 'm:a'));
});

test('an image with content being downloaded or served is kept', () => {
  const s = cache();
  const plan = planEviction(s, settings({ maxSize: 0, busy: new Set(['b:a']) }));
  assert.ok(!plan.images.some((i) => i.root === 'm:a'));
  assert.ok(!plan.digests.includes('b:base'));
  assert.ok(plan.digests.includes('m:c'));
});

test('max idle age evicts old images whatever the size; recent ones stay', () => {
  const s = cache();
  const plan = planEviction(s, settings({ maxIdleAge: 750, now: 1000 })); // cutoff 250
  assert.deepEqual(plan.images.map((i) => [i.root, i.reason]), [['m:a', 'idle'], ['m:b', 'idle']]);
  assert.ok(plan.digests.includes('b:base'), 'both holders of the base were idle');
  assert.ok(!plan.digests.includes('m:c'));
});

test('multi-platform index: one image with its child manifests; last use is the latest of its manifests', () => {
  const content: SnapshotContent[] = [
    { digest: 'i:x', size: 5, mediaType: MT, lastAccess: 10 },
    { digest: 'm:x1', size: 5, mediaType: MT, lastAccess: 500 },
    { digest: 'm:x2', size: 5, mediaType: MT, lastAccess: 10 },
    { digest: 'b:x1', size: 100, mediaType: undefined, lastAccess: 999 },
    { digest: 'b:x2', size: 100, mediaType: undefined, lastAccess: 10 },
    { digest: 'b:lone', size: 50, mediaType: undefined, lastAccess: 200 },
  ];
  const s: Snapshot = {
    content,
    references: [
      { manifest: 'i:x', child: 'm:x1' },
      { manifest: 'i:x', child: 'm:x2' },
      { manifest: 'm:x1', child: 'b:x1' },
      { manifest: 'm:x2', child: 'b:x2' },
      { manifest: 'm:x2', child: 'b:notcached' },
    ],
    tags: [{ upstream: 'docker.io', repo: 'library/x', tag: 'v1', digest: 'i:x' }],
  };
  const units = buildImages(s, [], new Set());
  assert.equal(units.length, 2);
  const x = units.find((u) => u.root === 'i:x');
  assert.ok(x);
  assert.equal(x.members.length, 5);
  assert.equal(x.lastAccess, 500);
  const plan = planEviction(s, settings({ maxSize: 100, lowWatermark: 1 }));
  assert.deepEqual(plan.images.map((i) => i.root), ['b:lone', 'i:x'], 'the lone blob (used at 200) goes before the index (used at 500)');
});

test('the plan is deterministic and sizes add up', () => {
  const s = cache();
  const a = planEviction(s, settings({ maxSize: 1500, lowWatermark: 0.5 }));
  const b = planEviction({ ...s, content: [...s.content].reverse(), references: [...s.references].reverse() }, settings({ maxSize: 1500, lowWatermark: 0.5 }));
  assert.deepEqual(a.images, b.images);
  const sizes = new Map(s.content.map((c) => [c.digest, c.size]));
  assert.equal(a.bytes, a.digests.reduce((n, d) => n + (sizes.get(d) ?? 0), 0));
  assert.equal(a.usageAfter, a.usageBefore - a.bytes);
});

test('manifests depending on missing content: parents up the tree', () => {
  const refs = [
    { manifest: 'i:x', child: 'm:x1' },
    { manifest: 'm:x1', child: 'b:1' },
    { manifest: 'm:y', child: 'b:2' },
  ];
  assert.deepEqual([...dependentManifests(['b:1'], refs)].sort(), ['i:x', 'm:x1']);
  assert.deepEqual([...dependentManifests(['b:3'], refs)], []);
});
