import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { inspectRepository } from '../../../src/products/cleanup/registry-inspect.js';
import { planRepository } from '../../../src/retention/retention-plan.js';
import { buildPolicy } from '../../../src/retention/retention-policy.js';
import { MemoryRegistry } from './memory-registry.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

function image(reg: MemoryRegistry, tag: string | null, created: string | null, subject?: string): string {
  const cfg = Buffer.from(JSON.stringify({ ...(created === null ? {} : { created }), rootfs: { type: 'layers', diff_ids: [] }, n: Math.random() }));
  const cd = `sha256:${createHash('sha256').update(cfg).digest('hex')}`;
  reg.configs.set(cd, cfg);
  return reg.push(
    tag,
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length },
      layers: [],
      ...(subject !== undefined ? { subject: { mediaType: OCI_MANIFEST, digest: subject, size: 1 } } : {}),
    }),
  );
}

function world(referrersApi: boolean): { reg: MemoryRegistry; keep: string; old: string; sbomKeep: string; sbomOld: string; index: string; c1: string; c1sig: string } {
  const reg = new MemoryRegistry('spec');
  const keep = image(reg, 'keep-me', '2026-05-01T00:00:00Z');
  const old = image(reg, 'old', '2025-01-01T00:00:00Z');
  // Untagged referrers (an SBOM each): only the referrers API (or their subject field) reveals them.
  const sbomKeep = image(reg, null, '2026-05-01T00:00:00Z', keep);
  const sbomOld = image(reg, null, '2025-01-01T00:00:00Z', old);
  const c1 = image(reg, null, '2026-03-01T00:00:00Z');
  const c2 = image(reg, null, '2026-04-01T00:00:00Z');
  const c1sig = image(reg, null, '2026-03-01T00:00:00Z', c1);
  const index = reg.push('v1', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [c1, c2].map((d) => ({ mediaType: OCI_MANIFEST, digest: d, size: 1 })) }), OCI_INDEX);
  reg.tags.set('arm-only', c2);
  if (referrersApi)
    reg.referrerIndex = new Map([
      [keep, [{ mediaType: OCI_MANIFEST, digest: sbomKeep, size: 1 }]],
      [old, [{ mediaType: OCI_MANIFEST, digest: sbomOld, size: 1 }]],
      [c1, [{ mediaType: OCI_MANIFEST, digest: c1sig, size: 1 }]],
    ]);
  return { reg, keep, old, sbomKeep, sbomOld, index, c1, c1sig };
}

void test('inspect: ages from config blobs, index age from its newest child, referrers through the API', async () => {
  const w = world(true);
  const ins = await inspectRepository(w.reg, 'app', { concurrency: 3, kanikoCacheRepos: [] });
  const byTag = new Map(ins.tags.map((t) => [t.tag, t]));
  assert.equal(byTag.get('keep-me')?.created?.toISOString(), '2026-05-01T00:00:00.000Z');
  assert.equal(byTag.get('v1')?.kind, 'index');
  assert.equal(byTag.get('v1')?.createdSource, 'children');
  assert.equal(byTag.get('v1')?.created?.toISOString(), '2026-04-01T00:00:00.000Z');
  assert.deepEqual(ins.graph.get(w.keep)?.referrers, [w.sbomKeep]);
  assert.deepEqual(ins.graph.get(w.c1)?.referrers, [w.c1sig]);
  assert.deepEqual(ins.graph.get(w.index)?.children.length, 2);

  // Deleting "old" frees its SBOM too; the kept image's SBOM and the index child's signature stay.
  const policy = buildPolicy(undefined, { maxDeleteShare: 1 });
  const p = planRepository('app', ins.tags, ins.graph, { ...policy, rules: [{ name: 'old ones', action: 'delete', tags: [/^(old|arm-only)$/] }] }, { now: new Date('2026-06-01T00:00:00Z'), liveBranches: null });
  assert.deepEqual(p.digestsToDelete, [w.old, w.sbomOld]);
  assert.deepEqual(p.entries.find((e) => e.tag === 'arm-only')?.sharedWith, ['v1']);
});

void test('inspect: a registry without the referrers API is asked once, and subject fields still link referrers', async () => {
  const w = world(false);
  // Tag the SBOM of "old" so the inspector reads it: its subject field makes it a referrer.
  w.reg.tags.set('old-sbom', w.sbomOld);
  const ins = await inspectRepository(w.reg, 'app', { concurrency: 2, kanikoCacheRepos: [] });
  assert.equal(w.reg.calls.filter((c) => c.startsWith('REFERRERS')).length, 1);
  assert.deepEqual(ins.graph.get(w.old)?.referrers, [w.sbomOld]);
  assert.deepEqual(ins.graph.get(w.keep)?.referrers, []);
});
