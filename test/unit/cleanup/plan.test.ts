import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planRepository, type RepoPlan } from '../../../src/retention/retention-plan.js';
import { buildPolicy, parsePolicyYaml, type PolicyFlags } from '../../../src/retention/retention-policy.js';
import { assignFamilies, DEFAULT_FAMILY_PATTERNS, type LiveBranch } from '../../../src/retention/families.js';
import { refSlug } from '../../../src/gitlab-slug.js';
import type { DigestGraph, DigestNode, TagInfo } from '../../../src/retention/retention-types.js';

const NOW = new Date('2026-06-01T00:00:00Z');
const daysAgo = (d: number): Date => new Date(NOW.getTime() - d * 86_400_000);
const dg = (n: number | string): string => `sha256:${String(n).padStart(64, '0')}`;

function tag(name: string, digest: string, ageDays: number | null, extra: Partial<TagInfo> = {}): TagInfo {
  return {
    repo: 'app',
    tag: name,
    digest,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    kind: 'image',
    created: ageDays === null ? null : daysAgo(ageDays),
    createdSource: ageDays === null ? 'none' : 'config',
    createdFlag: ageDays === null ? 'epoch' : 'ok',
    ...extra,
  };
}

function graphOf(tags: readonly TagInfo[], extra: DigestNode[] = []): DigestGraph {
  const g = new Map<string, DigestNode>();
  for (const t of tags) g.set(t.digest, { digest: t.digest, mediaType: t.mediaType, children: [], referrers: [] });
  for (const n of extra) g.set(n.digest, n);
  return g;
}

function decisions(p: RepoPlan): Record<string, string> {
  return Object.fromEntries(p.entries.map((e) => [e.tag, `${e.action} ${e.rule}`]));
}

const branch = (name: string, commit?: string): LiveBranch => ({ name, slug: refSlug(name), ...(commit ? { commit } : {}) });

function plan(tags: TagInfo[], flags: PolicyFlags, yaml = '', live: LiveBranch[] | null = null, extraNodes: DigestNode[] = []): RepoPlan {
  const policy = buildPolicy(yaml === '' ? undefined : parsePolicyYaml(yaml), { maxDeleteShare: 1, ...flags });
  return planRepository('app', tags, graphOf(tags, extraNodes), policy, { now: NOW, liveBranches: live });
}

void test('families: slug tags, commit tags by branch head or by shared image, patterns, semver, cache', () => {
  const tags = [
    tag('feature-x', dg(1), 1),
    tag('a1b2c3d4', dg(1), 1), // same image as feature-x
    tag('deadbeefcafe', dg(2), 2), // head of main per ls-remote
    tag('0123456', dg(3), 3), // unknown commit
    tag('v1.2.3', dg(4), 4),
    tag('cache-feature-x', dg(5), 5, { kind: 'buildkit-cache' }),
    tag('feature-x-0badc0de', dg(6), 6),
  ];
  const f = assignFamilies(tags, { patterns: DEFAULT_FAMILY_PATTERNS, liveBranches: [branch('main', 'deadbeefcafe' + '0'.repeat(28))] });
  assert.deepEqual(Object.fromEntries([...f].map(([k, v]) => [k, `${v.family ?? '-'}/${v.source}`])), {
    'feature-x': 'feature-x/slug',
    a1b2c3d4: 'feature-x/digest',
    deadbeefcafe: 'main/commit',
    '0123456': '-/none',
    'v1.2.3': 'semver/semver',
    'cache-feature-x': 'feature-x/pattern',
    'feature-x-0badc0de': 'feature-x/pattern',
  });
});

void test('--keep-last counts images (digests) per family, not tags; protections always win', () => {
  const tags = [
    tag('main', dg(10), 0),
    tag('c0ffee10', dg(10), 0), // same image as main
    tag('c0ffee11', dg(11), 1),
    tag('c0ffee12', dg(12), 2),
    tag('latest', dg(10), 0),
    tag('v2.0.0', dg(13), 100),
    tag('feature-a', dg(20), 3),
    tag('fa000021', dg(21), 4),
  ];
  // c0ffee11/12 have no slug tag on their image and no branch commit: family "none" (one group).
  const p = plan(tags, { keepLast: 1, defaultBranch: 'main' });
  assert.deepEqual(decisions(p), {
    main: 'KEEP protected: default branch',
    latest: 'KEEP protected: latest',
    'v2.0.0': 'KEEP protected: semver',
    c0ffee10: 'KEEP keep last 1',
    'feature-a': 'KEEP keep last 1',
    c0ffee11: 'KEEP keep last 1',
    c0ffee12: 'DELETE beyond last 1',
    fa000021: 'DELETE beyond last 1',
  });
  assert.deepEqual([...p.digestsToDelete].sort(), [dg(12), dg(21)]);
  assert.equal(p.aborted, null);
});

void test('branch gone: tags of deleted branches go, whatever their age; live ones follow the next rules', () => {
  const headOfLive = 'abcdef1' + '0'.repeat(33);
  const tags = [
    tag('feature-live', dg(1), 40),
    tag('abcdef1', dg(2), 41), // head of feature/live by commit
    tag('feature-gone', dg(3), 1),
    tag('f00d0003', dg(3), 1), // same image as feature-gone: same family
    tag('cache-feature-gone', dg(4), 1, { kind: 'buildkit-cache' }),
    tag('main', dg(5), 2),
  ];
  const p = plan(tags, { liveBranches: 'x', olderThan: '30d' }, '', [branch('feature/live', headOfLive), branch('main')]);
  assert.deepEqual(decisions(p), {
    'feature-live': 'DELETE older than 30d',
    abcdef1: 'DELETE older than 30d',
    'feature-gone': 'DELETE branch gone',
    f00d0003: 'DELETE branch gone',
    'cache-feature-gone': 'DELETE branch gone',
    main: 'KEEP default (keep)',
  });
  // Without live branches, "branch gone" never matches and the plan says why.
  const p2 = plan(tags, {}, 'rules:\n  - {action: delete, branchGone: true}\n');
  assert.ok(p2.entries.every((e) => e.action === 'KEEP'));
  assert.match(p2.warnings.join(), /no live branches/);
});

void test('undated images (epoch/missing created): kept by default, never "older than", policy can choose', () => {
  const tags = [tag('repro-1', dg(1), null), tag('old', dg(2), 400), tag('new', dg(3), 1)];
  assert.deepEqual(decisions(plan(tags, { olderThan: '30d' })), {
    'repro-1': 'KEEP undated (epoch): policy undated=keep',
    old: 'DELETE older than 30d',
    new: 'KEEP default (keep)',
  });
  assert.equal(decisions(plan(tags, { olderThan: '30d' }, 'undated: delete\n'))['repro-1'], 'DELETE undated (epoch): policy undated=delete');
  // undated: rules -> age rules do not match them; an explicit undated rule does.
  assert.equal(decisions(plan(tags, { olderThan: '30d' }, 'undated: rules\n'))['repro-1'], 'KEEP default (keep)');
  assert.equal(
    decisions(plan(tags, {}, 'undated: rules\nrules:\n  - {name: drop-undated, action: delete, undated: true}\n'))['repro-1'],
    'DELETE drop-undated',
  );
});

void test('BuildKit caches expire by age per branch with a kind rule', () => {
  const tags = [
    tag('cache-main', dg(1), 40, { kind: 'buildkit-cache', createdSource: 'buildkit-layers', createdFlag: 'not-applicable' }),
    tag('cache-feature-b', dg(2), 2, { kind: 'buildkit-cache', createdSource: 'buildkit-layers', createdFlag: 'not-applicable' }),
    tag('main', dg(3), 40),
  ];
  const p = plan(tags, {}, 'rules:\n  - {name: stale-cache, action: delete, kinds: [buildkit-cache], olderThan: 14d}\n');
  assert.deepEqual(decisions(p), { 'cache-main': 'DELETE stale-cache', 'cache-feature-b': 'KEEP default (keep)', main: 'KEEP default (keep)' });
});

void test('safety: max share aborts, never zero tags, minKeep keeps the newest', () => {
  const tags = [tag('a', dg(1), 100), tag('b', dg(2), 50), tag('c', dg(3), 60), tag('d', dg(4), 1)];
  const p = planRepository('app', tags, graphOf(tags), buildPolicy(undefined, { olderThan: '30d' }), { now: NOW, liveBranches: null });
  assert.equal(p.summary.delete, 3);
  assert.match(p.aborted ?? '', /would delete 3 of 4 tags \(75%\), more than the limit of 50%/);
  const all = plan(tags, { olderThan: '1h' });
  assert.deepEqual(decisions(all), { a: 'DELETE older than 1h', b: 'DELETE older than 1h', c: 'DELETE older than 1h', d: 'KEEP safety: keep at least 1 tag' });
  const two = plan(tags, { olderThan: '1h' }, 'limits: {minKeep: 2}\n');
  assert.equal(two.summary.keep, 2);
  assert.equal(decisions(two).b, 'KEEP safety: keep at least 2 tags');
});

void test('digest graph: a tag on an image a kept tag reaches is only untagged; nothing kept is deleted by digest', () => {
  const index = dg(100);
  const amd = dg(101);
  const arm = dg(102);
  const sig = dg(103); // referrer of the index
  const lone = dg(200);
  const loneSbom = dg(201); // referrer of the lone image
  const tags = [
    tag('release', index, 1, { kind: 'index', mediaType: 'application/vnd.oci.image.index.v1+json' }),
    tag('amd64-only', amd, 200), // a tag on a child of the kept index
    tag('twin-a', dg(300), 1),
    tag('twin-b', dg(300), 200), // same digest as twin-a (kept)
    tag('lonely', lone, 200),
    tag(`sha256-${'0'.repeat(61)}200`, loneSbom, 200, { kind: 'attachment', subject: lone }),
    tag(`sha256-${'0'.repeat(61)}100.sig`, sig, 1, { kind: 'attachment', subject: index }),
  ];
  const nodes: DigestNode[] = [
    { digest: index, mediaType: 'application/vnd.oci.image.index.v1+json', children: [amd, arm], referrers: [sig] },
    { digest: amd, mediaType: 'application/vnd.oci.image.manifest.v1+json', children: [], referrers: [] },
    { digest: arm, mediaType: 'application/vnd.oci.image.manifest.v1+json', children: [], referrers: [] },
    { digest: lone, mediaType: 'application/vnd.oci.image.manifest.v1+json', children: [], referrers: [loneSbom] },
  ];
  const p = plan(tags, {}, 'rules:\n  - {name: old, action: delete, olderThan: 30d, tags: ["^(amd64-only|twin-b|lonely)$"]}\n', null, nodes);
  const byTag = new Map(p.entries.map((e) => [e.tag, e]));
  assert.equal(byTag.get('amd64-only')?.action, 'DELETE');
  assert.deepEqual(byTag.get('amd64-only')?.sharedWith, ['release']);
  assert.deepEqual(byTag.get('twin-b')?.sharedWith, ['twin-a']);
  assert.equal(byTag.get('lonely')?.sharedWith, undefined);
  assert.equal(byTag.get(`sha256-${'0'.repeat(61)}200`)?.rule, 'attached to a deleted image');
  assert.equal(byTag.get(`sha256-${'0'.repeat(61)}100.sig`)?.rule, 'attached to a kept image');
  // Only the lone image and its SBOM go by digest, subject first; the index, its children, its
  // signature and the twin's shared image stay.
  assert.deepEqual(p.digestsToDelete, [lone, loneSbom]);
});

void test('count rules rank undated images as oldest and can work per repository', () => {
  const tags = [tag('x1', dg(1), 5), tag('x2', dg(2), null), tag('y1', dg(3), 1)];
  const p = plan(tags, {}, 'undated: rules\nrules:\n  - {name: top2, action: keep, newest: 2, per: repository}\n  - {name: rest, action: delete}\n');
  assert.deepEqual(decisions(p), { x1: 'KEEP top2', x2: 'DELETE rest', y1: 'KEEP top2' });
  const q = plan(tags, {}, 'rules:\n  - {name: trim, action: delete, exceptNewest: 1, per: repository, excludeTags: ["^y"]}\n');
  assert.deepEqual(decisions(q), { x1: 'KEEP default (keep)', x2: 'KEEP undated (epoch): policy undated=keep', y1: 'KEEP default (keep)' });
});
