// applyPlan against an in-memory registry with the three tag-delete behaviours found in the wild:
// the spec's untag, "DELETE by tag deletes the whole manifest" (and every tag on it), and no tag
// delete at all (distribution 2.x). Whatever the registry does, kept tags keep their images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyPlan } from '../../../src/retention/apply-plan.js';
import { MemoryRegistry, type Mode } from './memory-registry.js';
import { planRepository } from '../../../src/retention/retention-plan.js';
import { buildPolicy } from '../../../src/retention/retention-policy.js';
import type { DigestNode, TagInfo } from '../../../src/retention/retention-types.js';

function scenario(mode: Mode): { reg: MemoryRegistry; tags: TagInfo[]; graph: Map<string, DigestNode>; child: string; index: string } {
  const reg = new MemoryRegistry(mode);
  const img = (n: string): string => `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:${n.padStart(64, '0')}","size":1},"layers":[]}`;
  const shared = reg.push('v1.0.0', img('1'));
  reg.tags.set('rc-1', shared); // a second tag on the kept image
  const lone = reg.push('feature-gone', img('2'));
  reg.tags.set('b0b0b0b0', lone);
  const child = reg.push(null, img('3'));
  const index = reg.push('v2.0.0', `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"${child}","size":1}]}`, 'application/vnd.oci.image.index.v1+json');
  reg.tags.set('child-tag', child);
  const created = new Date('2026-01-01T00:00:00Z');
  const info = (tag: string, digest: string, kind: TagInfo['kind'] = 'image'): TagInfo => ({ repo: 'app', tag, digest, mediaType: '', kind, created, createdSource: 'config', createdFlag: 'ok' });
  const tags = [info('v1.0.0', shared), info('rc-1', shared), info('feature-gone', lone), info('b0b0b0b0', lone), info('v2.0.0', index, 'index'), info('child-tag', child)];
  const graph = new Map<string, DigestNode>([
    [shared, { digest: shared, mediaType: '', children: [], referrers: [] }],
    [lone, { digest: lone, mediaType: '', children: [], referrers: [] }],
    [child, { digest: child, mediaType: '', children: [], referrers: [] }],
    [index, { digest: index, mediaType: '', children: [child], referrers: [] }],
  ]);
  return { reg, tags, graph, child, index };
}

for (const mode of ['spec', 'digest', 'none', '404'] as const) {
  void test(`apply with a registry whose tag DELETE is "${mode}": kept tags keep their images`, async () => {
    const { reg, tags, graph, child, index } = scenario(mode);
    // Keep the v* tags, delete everything else.
    const policy = buildPolicy(undefined, { maxDeleteShare: 1, protect: ['^v'] });
    const p = planRepository('app', tags, graph, { ...policy, rules: [{ name: 'rest', action: 'delete' }] }, { now: new Date('2026-02-01T00:00:00Z'), liveBranches: null });
    assert.deepEqual(p.entries.filter((e) => e.action === 'DELETE').map((e) => e.tag).sort(), ['b0b0b0b0', 'child-tag', 'feature-gone', 'rc-1']);
    assert.deepEqual(p.digestsToDelete, [tags[2]?.digest]);
    const before = new Map(reg.tags);
    const r = await applyPlan(reg, p, graph, { concurrency: 2 });
    assert.deepEqual([...reg.tags.keys()].sort(), ['v1.0.0', 'v2.0.0']);
    assert.equal(reg.tags.get('v1.0.0'), before.get('v1.0.0'));
    assert.equal(reg.tags.get('v2.0.0'), index);
    assert.ok(reg.manifests.has(child), 'the kept index lost its child');
    assert.ok(!reg.manifests.has(tags[2]?.digest ?? ''), 'the orphan image was not deleted');
    assert.deepEqual(r.failed, []);
    assert.deepEqual(r.keptTagsChanged, []);
    assert.equal(r.method, mode === 'spec' ? 'tag-delete' : 'throwaway');
    // Shared images were never touched by a tag DELETE when the registry could not be trusted with it.
    if (mode !== 'spec') assert.ok(!reg.calls.includes('DELETE rc-1') && !reg.calls.includes('DELETE child-tag'), reg.calls.join('\n'));
  });
}

void test('a tag that moved since the plan is left alone', async () => {
  const { reg, tags, graph } = scenario('spec');
  const p = planRepository('app', tags, graph, { ...buildPolicy(undefined, { maxDeleteShare: 1, protect: ['^v'] }), rules: [{ name: 'rest', action: 'delete' }] }, { now: new Date(), liveBranches: null });
  const moved = reg.push(null, '{"schemaVersion":2,"moved":true}');
  reg.tags.set('feature-gone', moved);
  const r = await applyPlan(reg, p, graph, { concurrency: 1 });
  assert.equal(reg.tags.get('feature-gone'), moved);
  assert.match(r.skipped.find((s) => s.tag === 'feature-gone')?.reason ?? '', /moved since the plan/);
});
