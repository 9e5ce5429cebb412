// Cache retention's pure parts: TagInfo and the digest graph from index rows, the plan (the cleanup planner
// on the cache), and what freeing takes (never a digest a remaining tag, a cached manifest or `keep` reaches).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildPolicy, parsePolicyYaml, type PolicyFlags } from '../../../src/retention/retention-policy.js';
import { parseManifest } from '../../../src/retention/manifest-refs.js';
import { reachable } from '../../../src/retention/retention-types.js';
import { cachedAges, cacheDigestGraph, cacheRepoName, cacheTagInfos, contentToFree, planCacheRetention, type CacheSnapshot } from '../../../src/upkeep/cache-retention.js';
import { repoFilter, wantsRetention } from '../../../src/upkeep/cache-retention-run.js';
import type { ContentEntry, ReferenceRow, TagRow } from '../../../src/index/cache-index.js';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const NOW = new Date('2026-06-01T00:00:00Z');
const daysAgo = (d: number): number => NOW.getTime() - d * 86_400_000;
const dg = (s: string): string => `sha256:${s.padStart(64, '0')}`;

const blob = (d: string, size: number): ContentEntry => ({ digest: dg(d), size, mediaType: undefined, createdAt: 0, lastAccess: 0 });
const manifest = (d: string, size: number, mediaType = OCI_MANIFEST): ContentEntry => ({ digest: dg(d), size, mediaType, createdAt: 0, lastAccess: 0 });
const ref = (m: string, c: string): ReferenceRow => ({ manifest: dg(m), child: dg(c) });
const tagRow = (tag: string, d: string, ageDays: number, repo = 'team/app', upstream = 'docker.io'): TagRow => ({
  upstream,
  repo,
  tag,
  digest: dg(d),
  fetchedAt: daysAgo(ageDays),
  checkedAt: daysAgo(0),
});

/**
 * A cache: three builds of a branch sharing base layer b0; a release tagged twice; an index i1 (children m5,
 * m6) whose child m5 is also tagged; an index i2 whose child m8 reuses build 2's own layer b2; a manifest
 * m9 pulled by digest only (no tag) that shares b1; a signature s1 whose subject is m3.
 */
function cache(): CacheSnapshot {
  return {
    tags: [
      tagRow('feature-x-aaaa0001', 'm1', 30),
      tagRow('feature-x-aaaa0002', 'm2', 20),
      tagRow('feature-x-aaaa0003', 'm3', 10),
      tagRow('rc-1', 'm4', 25),
      tagRow('v1.0.0', 'm4', 25),
      tagRow('multi-bbbb0001', 'i1', 15),
      tagRow('host-only', 'm5', 15),
      tagRow('multi-bbbb0002', 'i2', 5),
      tagRow('latest', 'm3', 10, 'library/alpine'),
    ],
    content: [
      manifest('m1', 500),
      manifest('m2', 510),
      manifest('m3', 520),
      manifest('m4', 530),
      manifest('m5', 540),
      manifest('m6', 550),
      manifest('m7', 560),
      manifest('m8', 570),
      manifest('m9', 580),
      manifest('i1', 300, OCI_INDEX),
      manifest('i2', 310, DOCKER_LIST),
      manifest('s1', 200),
      blob('c1', 10),
      blob('c2', 11),
      blob('c3', 12),
      blob('c4', 13),
      blob('c5', 14),
      blob('c6', 15),
      blob('c7', 16),
      blob('c8', 17),
      blob('c9', 18),
      blob('b0', 1000),
      blob('b1', 1001),
      blob('b2', 1002),
      blob('b3', 1003),
      blob('b4', 1004),
      blob('b5', 1005),
      blob('b6', 1006),
      blob('b7', 1007),
      blob('cs', 19),
    ],
    references: [
      ...['c1', 'b0', 'b1'].map((c) => ref('m1', c)),
      ...['c2', 'b0', 'b2'].map((c) => ref('m2', c)),
      ...['c3', 'b0', 'b3'].map((c) => ref('m3', c)),
      ...['c4', 'b4'].map((c) => ref('m4', c)),
      ...['c5', 'b5'].map((c) => ref('m5', c)),
      ...['c6', 'b6'].map((c) => ref('m6', c)),
      ...['c7', 'b7'].map((c) => ref('m7', c)),
      ...['c8', 'b2'].map((c) => ref('m8', c)),
      ...['c9', 'b1'].map((c) => ref('m9', c)),
      ref('i1', 'm5'),
      ref('i1', 'm6'),
      ref('i1', 'ff'), // a platform nobody pulled: referenced, not cached
      ref('i2', 'm7'),
      ref('i2', 'm8'),
      ref('s1', 'cs'),
      ref('s1', 'm3'), // s1's subject
    ],
  };
}

const policyOf = (yaml: string, flags: PolicyFlags = {}): ReturnType<typeof buildPolicy> => buildPolicy(yaml === '' ? undefined : parsePolicyYaml(yaml), flags);

void test('TagInfo from index rows: repository UPSTREAM/REPO, age = when relais fetched the tag, kind from the media type', () => {
  const infos = cacheTagInfos(cache(), { kanikoCacheRepos: [] });
  assert.deepEqual([...infos.keys()].sort(), ['docker.io/library/alpine', 'docker.io/team/app']);
  const app = infos.get('docker.io/team/app') ?? [];
  assert.deepEqual(
    app.map((t) => t.tag),
    ['feature-x-aaaa0001', 'feature-x-aaaa0002', 'feature-x-aaaa0003', 'host-only', 'multi-bbbb0001', 'multi-bbbb0002', 'rc-1', 'v1.0.0'],
    'sorted by tag',
  );
  const byTag = new Map(app.map((t) => [t.tag, t]));
  const f1 = byTag.get('feature-x-aaaa0001');
  assert.ok(f1);
  assert.equal(f1.created?.getTime(), daysAgo(30));
  assert.equal(f1.createdSource, 'registry');
  assert.equal(f1.createdFlag, 'not-applicable');
  assert.equal(f1.kind, 'image');
  assert.equal(f1.mediaType, OCI_MANIFEST);
  assert.equal(byTag.get('multi-bbbb0001')?.kind, 'index');
  assert.equal(byTag.get('multi-bbbb0002')?.kind, 'index', 'a Docker manifest list is an index too');
  assert.equal(cacheRepoName({ upstream: 'ghcr.io', repo: 'org/x' }), 'ghcr.io/org/x');
});

void test('TagInfo: attachments by tag schema, kaniko cache keys, unknown content, and the parsed body when cached', () => {
  const hex = 'ab'.repeat(32);
  const snap: Pick<CacheSnapshot, 'tags' | 'content'> = {
    tags: [tagRow(`sha256-${hex}.sig`, 'm1', 1), tagRow('c'.repeat(64), 'm2', 1, 'team/cache'), tagRow('gone', 'zz', 1), tagRow('bk', 'i1', 1)],
    content: [manifest('m1', 1), manifest('m2', 1), manifest('i1', 1, OCI_INDEX)],
  };
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: 'application/vnd.buildkit.cacheconfig.v0', digest: dg('cc'), size: 1 }] }));
  const infos = cacheTagInfos(snap, { kanikoCacheRepos: [/(^|\/)cache$/], manifests: new Map([[dg('i1'), parseManifest(body, OCI_INDEX)]]) });
  const sig = infos.get('docker.io/team/app')?.find((t) => t.tag.startsWith('sha256-'));
  assert.equal(sig?.kind, 'attachment');
  assert.equal(sig?.subject, `sha256:${hex}`);
  assert.equal(infos.get('docker.io/team/cache')?.[0]?.kind, 'kaniko-cache');
  assert.equal(infos.get('docker.io/team/app')?.find((t) => t.tag === 'gone')?.kind, 'unknown', 'a tag whose manifest row is gone');
  assert.equal(infos.get('docker.io/team/app')?.find((t) => t.tag === 'bk')?.kind, 'buildkit-cache', 'told by the cached body');
});

void test('digest graph from reference rows: index children (cached or not), subjects as referrers, blobs are not nodes', () => {
  const g = cacheDigestGraph(cache());
  assert.equal(g.size, 12, 'every cached manifest, no blob');
  assert.equal(g.has(dg('b0')), false);
  assert.deepEqual(g.get(dg('i1'))?.children, [dg('ff'), dg('m5'), dg('m6')]);
  assert.deepEqual(g.get(dg('i2'))?.children, [dg('m7'), dg('m8')]);
  assert.equal(g.get(dg('i2'))?.mediaType, DOCKER_LIST);
  assert.deepEqual(g.get(dg('m1'))?.children, [], 'an image manifest has no manifest children');
  assert.deepEqual(g.get(dg('m3'))?.referrers, [dg('s1')], 's1 names m3 as its subject');
  assert.deepEqual([...reachable(g, [dg('i1')])].sort(), [dg('ff'), dg('i1'), dg('m5'), dg('m6')]);
});

void test('the plan: the cleanup planner per cached repository; freeing spares shared layers, kept index children and digest-pulled images', () => {
  const snap = cache();
  const policy = policyOf(`
rules:
  - { name: release candidates, action: delete, tags: ['^rc-'] }
  - { name: newest per branch, action: keep, newest: 1 }
  - { name: the rest, action: delete }
`);
  const p = planCacheRetention(snap, policy, { now: NOW, liveBranches: null });
  assert.deepEqual(p.plans.map((x) => x.repo), ['docker.io/library/alpine', 'docker.io/team/app']);
  const app = p.plans[1];
  assert.ok(app);
  assert.deepEqual(Object.fromEntries(app.entries.map((e) => [e.tag, `${e.action} ${e.rule}`])), {
    'feature-x-aaaa0001': 'DELETE the rest',
    'feature-x-aaaa0002': 'DELETE the rest',
    'feature-x-aaaa0003': 'KEEP newest per branch',
    'host-only': 'KEEP newest per branch',
    'multi-bbbb0001': 'DELETE the rest',
    'multi-bbbb0002': 'KEEP newest per branch',
    'rc-1': 'DELETE release candidates',
    'v1.0.0': 'KEEP protected: semver',
  });
  assert.deepEqual(app.entries.find((e) => e.tag === 'rc-1')?.sharedWith, ['v1.0.0']);
  assert.deepEqual(p.deleteTags.map((t) => t.tag).sort(), ['feature-x-aaaa0001', 'feature-x-aaaa0002', 'multi-bbbb0001', 'rc-1']);
  // m1 with c1 (b0: build 3 keeps it; b1: the digest-pulled m9 keeps it), m2 with c2 (b2: i2's child m8
  // keeps it), i1 and m6 with c6 and b6 (m5: host-only keeps it); m4: v1.0.0 keeps it.
  assert.deepEqual(p.free.digests, ['b6', 'c1', 'c2', 'c6', 'i1', 'm1', 'm2', 'm6'].map(dg).sort());
  assert.equal(p.free.manifests, 4);
  assert.equal(p.free.blobs, 4);
  assert.equal(p.free.bytes, 500 + 510 + 300 + 550 + 10 + 11 + 15 + 1006);
  // What the deleted tags reach: m1 c1 b0 b1 m2 c2 b2 m4 c4 b4 i1 m5 c5 b5 m6 c6 b6 (17), minus the 8 freed.
  assert.equal(p.free.keptShared, 17 - 8);
});

void test('freeing: a digest another repository or upstream still tags stays; `keep` holds what it reaches', () => {
  const snap = cache();
  const noSig: CacheSnapshot = { ...snap, content: snap.content.filter((c) => c.digest !== dg('s1')), references: snap.references.filter((r) => r.manifest !== dg('s1')) };
  // library/alpine:latest points to m3: deleting team/app's feature-x-aaaa0003 frees nothing of m3.
  const del = new Set(['docker.io\u0000team/app\u0000feature-x-aaaa0003']);
  assert.deepEqual(contentToFree(noSig, [dg('m3')], del).digests, []);
  const both = new Set([...del, 'docker.io\u0000library/alpine\u0000latest']);
  // Both tags go: m3, c3, b3 go; b0 stays (m1, m2 are tagged).
  assert.deepEqual(contentToFree(noSig, [dg('m3')], both).digests, ['b3', 'c3', 'm3'].map(dg).sort());
  // s1 (a signature of m3, cached but untagged) keeps m3 and what it references.
  assert.deepEqual(contentToFree(snap, [dg('m3')], both).digests, []);
  // Recently used content is kept with everything it reaches.
  assert.deepEqual(contentToFree(noSig, [dg('m3')], both, new Set([dg('m3')])).digests, []);
  assert.deepEqual(contentToFree(noSig, [dg('m3')], both, new Set([dg('b3')])).digests, ['c3', 'm3'].map(dg).sort());
  // Roots that are not cached free nothing.
  assert.deepEqual(contentToFree(snap, [dg('ee')], new Set()).digests, []);
});

void test('the plan honours the safety limits and flags of relais cleanup; an aborted repository deletes nothing', () => {
  const snap = cache();
  const strict = planCacheRetention(snap, policyOf('', { olderThan: '1d', maxDeleteShare: 0.1 }), { now: NOW, liveBranches: null });
  const app = strict.plans.find((x) => x.repo === 'docker.io/team/app');
  assert.match(app?.aborted ?? '', /more than the limit of 10%/);
  assert.equal(strict.deleteTags.filter((t) => t.repo === 'team/app').length, 0);
  // library/alpine's only tag is `latest`: protected.
  assert.equal(strict.plans.find((x) => x.repo === 'docker.io/library/alpine')?.entries[0]?.rule, 'protected: latest');
  assert.deepEqual(strict.free.digests, []);
  // --keep-last 2 --older-than 12d: per family the two most recently cached stay, older others go.
  const kl = planCacheRetention(snap, policyOf('', { keepLast: 2, olderThan: '12d' }), { now: NOW, liveBranches: null, only: repoFilter(['team/app']) });
  assert.deepEqual(kl.plans.map((x) => x.repo), ['docker.io/team/app'], '--repo REPO matches under any upstream');
  assert.deepEqual(kl.deleteTags.map((t) => t.tag), ['feature-x-aaaa0001']);
});

void test('wantsRetention and repoFilter', () => {
  assert.equal(wantsRetention({}), false);
  assert.equal(wantsRetention({ keepLast: 3 }), true);
  assert.equal(wantsRetention({ policyFile: 'p.yaml' }), true);
  assert.equal(wantsRetention({ liveBranches: 'git:origin' }), true);
  assert.equal(repoFilter([]), undefined);
  const f = repoFilter(['docker.io/team/app', 'org/x']);
  assert.ok(f);
  assert.equal(f('docker.io/team/app'), true);
  assert.equal(f('ghcr.io/team/app'), false);
  assert.equal(f('ghcr.io/org/x'), true);
});

void test('--age created: config created, flagged epoch, newest cached child of an index, BuildKit layer dates; nothing when not cached', () => {
  const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
  const img = (cfg: string): Buffer => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: dg(cfg), size: 1 }, layers: [] }));
  const cfg = (created: string | undefined): Buffer => Buffer.from(JSON.stringify(created === undefined ? { os: 'linux' } : { created, os: 'linux' }));
  const index = (...kids: string[]): Buffer => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: kids.map((k) => ({ mediaType: OCI_MANIFEST, digest: dg(k), size: 1 })) }));
  const bk = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: dg('l1'), size: 1, annotations: { 'buildkit/createdat': '2026-05-20T00:00:00Z' } },
        { mediaType: 'application/vnd.buildkit.cacheconfig.v0', digest: dg('cc'), size: 1 },
      ],
    }),
  );
  const parsed = new Map(
    (
      [
        ['m1', img('c1')],
        ['m2', img('c2')],
        ['m3', img('c3')],
        ['m4', img('c4')],
        ['i1', index('m1', 'm2')],
        ['i2', index('m4', 'm9')],
        ['bk', bk],
      ] as const
    ).map(([d, b]) => [dg(d), parseManifest(b, '')]),
  );
  const configs = new Map([
    [dg('c1'), cfg('2026-04-01T00:00:00Z')],
    [dg('c2'), cfg('2026-05-01T00:00:00Z')],
    [dg('c3'), cfg('1970-01-01T00:00:00Z')],
  ]);
  const ages = cachedAges(['m1', 'm3', 'm4', 'i1', 'i2', 'bk', 'zz'].map(dg), parsed, configs);
  assert.deepEqual(ages.get(dg('m1')), { created: new Date('2026-04-01T00:00:00Z'), source: 'config', flag: 'ok' });
  assert.deepEqual(ages.get(dg('m3')), { created: null, source: 'none', flag: 'epoch' }, 'an epoch date is undated, as in relais cleanup');
  assert.equal(ages.has(dg('m4')), false, 'config not cached: no date (the fetch time is used)');
  assert.deepEqual(ages.get(dg('i1')), { created: new Date('2026-05-01T00:00:00Z'), source: 'children', flag: 'ok' }, 'newest child');
  assert.equal(ages.has(dg('i2')), false, 'no dated child cached');
  assert.deepEqual(ages.get(dg('bk')), { created: new Date('2026-05-20T00:00:00Z'), source: 'buildkit-layers', flag: 'not-applicable' });
  assert.equal(ages.has(dg('zz')), false);
  // In TagInfo: the image's date where known, the fetch time otherwise.
  const infos = cacheTagInfos({ tags: [tagRow('a', 'm1', 3), tagRow('b', 'm4', 3)], content: [manifest('m1', 1), manifest('m4', 1)] }, { kanikoCacheRepos: [], ages });
  const app = infos.get('docker.io/team/app') ?? [];
  assert.deepEqual(app.map((t) => [t.tag, t.created?.toISOString(), t.createdSource]), [
    ['a', '2026-04-01T00:00:00.000Z', 'config'],
    ['b', new Date(daysAgo(3)).toISOString(), 'registry'],
  ]);
});
