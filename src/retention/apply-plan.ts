// Applying a plan. Tags are removed one by one, never by deleting a digest another tag needs:
//   - the spec's tag delete (DELETE /v2/<name>/manifests/<tag>) where the registry supports it,
//     checked once per run: after the first tag delete, the image must still be there by digest
//     (a registry that deleted the whole manifest instead is not trusted with shared images);
//   - otherwise regclient's method: PUT a unique throw-away manifest (an empty OCI index with a
//     nonce) under the tag, then DELETE that throw-away by digest: only the tag goes.
// A tag that moved since the plan is left alone. Then the registry is read again: the manifests the
// plan freed are deleted by digest only if no remaining tag reaches them (so distribution's garbage
// collector can free their blobs).
import { randomUUID } from 'node:crypto';
import { errors, RelaisError } from '../errors.js';
import { MT } from '../upstream/media-types.js';
import type { DeleteOutcome, RegistryBackend } from './registry-backend.js';
import { Limiter, mapLimit } from './limit.js';
import { parseManifest } from './manifest-refs.js';
import type { RepoPlan } from './retention-plan.js';
import { reachable, type DigestGraph, type DigestNode } from './retention-types.js';

const NO_SUCH_DIGEST = `sha256:${'0'.repeat(64)}`;

export type TagDeleteMethod = 'tag-delete' | 'throwaway' | 'bulk';

export interface ApplyResult {
  readonly repo: string;
  readonly method: TagDeleteMethod | null;
  readonly untagged: string[];
  readonly skipped: { tag: string; reason: string }[];
  readonly failed: { tag: string; error: string }[];
  readonly digestsDeleted: string[];
  readonly digestsKept: { digest: string; reason: string }[];
  /** Kept tags that no longer resolve to their planned digest after the run (must stay empty). */
  readonly keptTagsChanged: { tag: string; planned: string; now: string | null }[];
}

export interface ApplyOptions {
  readonly concurrency: number;
  readonly onProgress?: (phase: string, done: number, total: number) => void;
}

export function throwawayManifest(): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociIndex,
      manifests: [],
      annotations: { 'io.relais.cleanup.placeholder': randomUUID(), 'org.opencontainers.image.created': new Date().toISOString() },
    }),
  );
}

export async function applyPlan(backend: RegistryBackend, plan: RepoPlan, graph: DigestGraph, opts: ApplyOptions): Promise<ApplyResult> {
  if (plan.aborted !== null) throw errors.cleanupAborted(plan.repo, plan.aborted);
  const progress = opts.onProgress ?? (() => undefined);
  const result: ApplyResult = { repo: plan.repo, method: null, untagged: [], skipped: [], failed: [], digestsDeleted: [], digestsKept: [], keptTagsChanged: [] };
  let method: TagDeleteMethod | null = null;
  const repo = plan.repo;
  const deletions = plan.entries.filter((e) => e.action === 'DELETE');

  let deletesProbed = false;
  const throwawayLock = new Limiter(1);
  const viaThrowaway = async (tag: string): Promise<void> => {
    if (!deletesProbed) {
      // Before pointing a tag anywhere, make sure the registry deletes manifests at all: a DELETE of a
      // digest nobody has answers 404 where deletes work and 405 UNSUPPORTED where they are off.
      deletesProbed = true;
      if ((await backend.deleteManifest(repo, NO_SUCH_DIGEST)) === 'unsupported')
        throw errors.cleanupDeletesRefused(backend.description, repo);
    }
    // One placeholder at a time: distribution's delete-by-digest walks every tag of the repository
    // to untag it, and concurrent deletes there can leave a tag behind.
    const r = await throwawayLock.run(async () => {
      const d = await backend.putManifest(repo, tag, MT.ociIndex, throwawayManifest());
      return { d, r: await backend.deleteManifest(repo, d) };
    });
    const d = r.d;
    if (r.r === 'unsupported')
      throw errors.cleanupDeletesPlaceholder(backend.description, tag, d);
  };

  const untag = async (tag: string, digest: string, shared: boolean): Promise<void> => {
    if (backend.canReadManifests) {
      const now = await backend.headManifest(repo, tag);
      if (now === null) {
        result.skipped.push({ tag, reason: 'already gone' });
        return;
      }
      if (now.digest !== digest) {
        result.skipped.push({ tag, reason: `moved since the plan (now ${now.digest})` });
        return;
      }
    }
    if (method === 'throwaway') await viaThrowaway(tag);
    else if (method === 'tag-delete' || !backend.canReadManifests) {
      const r = await backend.deleteManifest(repo, tag);
      if (r === 'unsupported') throw errors.cleanupNoTagDelete(backend.description);
      method = 'tag-delete';
      if (r === 'not-found') {
        result.skipped.push({ tag, reason: 'already gone' });
        return;
      }
    } else {
      // First tag of the run: find out what the registry does with a tag delete.
      const r: DeleteOutcome = shared ? 'unsupported' : await backend.deleteManifest(repo, tag);
      if (r === 'deleted') {
        const still = await backend.headManifest(repo, digest);
        if (still === null) {
          // The registry deleted the manifest, not the tag: only ever use the throw-away method from now on.
          method = 'throwaway';
          result.skipped.push({ tag, reason: 'registry deleted the image on tag delete (no other tag needed it); using the throw-away method from now on' });
          result.untagged.push(tag);
          return;
        }
        method = 'tag-delete';
      } else if (r === 'not-found' && (await backend.headManifest(repo, tag)) === null) {
        result.skipped.push({ tag, reason: 'already gone' });
        return;
      } else {
        // Refused, or "not found" for a tag that is there: the registry has no tag delete.
        method = 'throwaway';
        await viaThrowaway(tag);
      }
    }
    result.untagged.push(tag);
  };

  // Bulk (GitLab): one call for the repository.
  if (backend.deleteTagsBulk && deletions.length > 1) {
    const scheduled = await backend.deleteTagsBulk(repo, deletions.map((e) => e.tag));
    result.untagged.push(...scheduled);
    return { ...result, method: 'bulk' };
  }

  // The first deletion alone (it decides the method), preferring one whose image no kept tag needs.
  const ordered = [...deletions].sort((a, b) => Number(a.sharedWith !== undefined) - Number(b.sharedWith !== undefined));
  let done = 0;
  const one = async (e: (typeof ordered)[number]): Promise<void> => {
    try {
      await untag(e.tag, e.digest, e.sharedWith !== undefined);
    } catch (err) {
      // Whole-run problems (no permission, no delete support) stop the run instead of failing every tag.
      if (err instanceof RelaisError && (err.code === 'UNSUPPORTED' || err.code === 'UNAUTHORIZED' || err.code === 'DENIED')) throw err;
      result.failed.push({ tag: e.tag, error: err instanceof Error ? err.message : String(err) });
    }
    progress('deleting tags', ++done, ordered.length);
  };
  const [first, ...rest] = ordered;
  if (first) await one(first);
  await mapLimit(rest, opts.concurrency, one);

  if (backend.canReadManifests) {
    await verifyUntagged(backend, plan, result, viaThrowaway);
    await deleteOrphans(backend, plan, graph, opts, result);
  }
  return { ...result, method };
}

/**
 * Checks that every tag reported untagged is really gone from tags/list. A tag still listed whose
 * manifest is gone (distribution can leave such a tag when deletes race) is removed again with a
 * fresh placeholder; a tag pushed again meanwhile is left alone.
 */
async function verifyUntagged(backend: RegistryBackend, plan: RepoPlan, result: ApplyResult, viaThrowaway: (tag: string) => Promise<void>): Promise<void> {
  const planned = new Map(plan.entries.map((e) => [e.tag, e.digest]));
  for (let round = 0; round < 3; round++) {
    const listed = new Set(await backend.listTags(plan.repo));
    const left = result.untagged.filter((t) => listed.has(t));
    if (left.length === 0) return;
    for (const tag of left) {
      const now = await backend.headManifest(plan.repo, tag);
      if (now !== null && now.digest !== planned.get(tag)) {
        result.untagged.splice(result.untagged.indexOf(tag), 1);
        result.skipped.push({ tag, reason: `pushed again during the run (now ${now.digest})` });
      } else if (round === 2) {
        result.untagged.splice(result.untagged.indexOf(tag), 1);
        result.failed.push({ tag, error: 'still listed by the registry after it was deleted' });
      } else {
        await viaThrowaway(tag);
      }
    }
  }
}

/** Re-reads the repository and deletes, by digest, the planned manifests no remaining tag reaches. */
async function deleteOrphans(backend: RegistryBackend, plan: RepoPlan, graph: DigestGraph, opts: ApplyOptions, result: ApplyResult): Promise<void> {
  const repo = plan.repo;
  const remaining = await backend.listTags(repo);
  const heads = await mapLimit(remaining, opts.concurrency, (t) => backend.headManifest(repo, t));
  const live = new Map<string, string>();
  remaining.forEach((t, i) => {
    const hd = heads[i];
    if (hd) live.set(t, hd.digest);
  });
  for (const e of plan.entries)
    if (e.action === 'KEEP' && live.get(e.tag) !== e.digest) result.keptTagsChanged.push({ tag: e.tag, planned: e.digest, now: live.get(e.tag) ?? null });

  // Digests we have not seen (pushed since the plan): read them so their children count as reachable.
  const g = new Map<string, DigestNode>(graph);
  let frontier = [...new Set(live.values())].filter((d) => !g.has(d));
  for (let depth = 0; depth < 4 && frontier.length > 0; depth++) {
    const fetched = await mapLimit(frontier, opts.concurrency, (d) => backend.getManifest(repo, d));
    const next: string[] = [];
    frontier.forEach((d, i) => {
      const m = fetched[i];
      if (!m) return;
      const p = parseManifest(m.body, m.mediaType);
      g.set(d, { digest: d, mediaType: p.mediaType, children: p.children.map((c) => c.digest), referrers: [] });
      if (p.subject !== undefined) {
        const s = g.get(p.subject);
        if (s) g.set(p.subject, { ...s, referrers: [...s.referrers, d] });
      }
      for (const c of p.children) if (!g.has(c.digest)) next.push(c.digest);
    });
    frontier = next;
  }
  const needed = reachable(g, live.values());
  let done = 0;
  for (const d of plan.digestsToDelete) {
    if (needed.has(d)) {
      result.digestsKept.push({ digest: d, reason: 'a remaining tag still reaches it' });
    } else {
      const r = await backend.deleteManifest(repo, d);
      if (r === 'deleted') result.digestsDeleted.push(d);
      else if (r === 'not-found') result.digestsKept.push({ digest: d, reason: 'already gone' });
      else result.digestsKept.push({ digest: d, reason: 'the registry refuses manifest deletes' });
    }
    opts.onProgress?.('deleting untagged manifests', ++done, plan.digestsToDelete.length);
  }
}
