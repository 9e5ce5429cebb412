// `relais gc --policy FILE | --keep-last N | --older-than D ... [--apply]`: the cleanup policy on relais's own
// cache. Loads the policy (same file format and flags as `relais cleanup`), plans every cached repository,
// renders the plan with the cleanup renderer and, with --apply, deletes tags and the content only they held.
import { loadLiveBranches } from '../retention/branches.js';
import { resolvePolicy, type PolicyFlags } from '../retention/retention-policy.js';
import { renderPlanTable } from '../retention/plan-render.js';
import { shortDigest } from '../retention/retention-types.js';
import { formatBytes } from '../config/units.js';
import { errors } from '../errors.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { StorageDriver } from '../storage/driver.js';
import { applyCacheRetention, planCacheRetention, readCacheSnapshot, readCachedAges, readTaggedManifests, type CacheRetentionPlan, type CacheRetentionResult } from './cache-retention.js';

export interface CacheRetentionOptions extends PolicyFlags {
  readonly policyFile?: string | undefined;
  readonly apply: boolean;
  /** Only these repositories: `UPSTREAM/REPO`, or `REPO` under any upstream. Empty: all. */
  readonly repos?: readonly string[];
  /**
   * What a tag's age is: the image's own `created` where its config is cached, else when relais fetched it
   * (created, the default: a branch's newest build is never older than a build pulled after it), or only
   * when relais fetched it (cached).
   */
  readonly age?: 'cached' | 'created';
  /** Where `git ls-remote` runs for --live-branches git:REMOTE. */
  readonly cwd?: string;
}

export interface CacheRetentionRun {
  readonly now: Date;
  readonly plan: CacheRetentionPlan;
  readonly applied: CacheRetentionResult | null;
}

/** Whether the gc command was given a retention policy (a file or one of the rule flags). */
export function wantsRetention(o: { readonly policyFile?: string | undefined; readonly keepLast?: number | undefined; readonly olderThan?: string | undefined; readonly liveBranches?: string | undefined }): boolean {
  return o.policyFile !== undefined || o.keepLast !== undefined || o.olderThan !== undefined || o.liveBranches !== undefined;
}

export function repoFilter(repos: readonly string[] | undefined): ((repo: string) => boolean) | undefined {
  if (repos === undefined || repos.length === 0) return undefined;
  const wanted = new Set(repos);
  return (name) => wanted.has(name) || wanted.has(name.slice(name.indexOf('/') + 1));
}

export async function runCacheRetention(
  index: CacheIndex,
  storage: StorageDriver,
  opts: CacheRetentionOptions,
  env: { readonly graceMs: number; readonly now?: Date },
): Promise<CacheRetentionRun> {
  const now = env.now ?? new Date();
  const policy = await resolvePolicy(opts.policyFile, opts);
  if (policy.liveBranches === 'gitlab')
    throw errors.gcNoGitlab();
  const liveBranches = policy.liveBranches === undefined ? null : await loadLiveBranches(policy.liveBranches, opts.cwd);
  const snap = await readCacheSnapshot(index);
  const manifests = await readTaggedManifests(snap, storage);
  const ages = opts.age !== 'cached' ? await readCachedAges(snap, storage, manifests) : undefined;
  const only = repoFilter(opts.repos);
  const plan = planCacheRetention(snap, policy, { now, liveBranches, manifests, ...(ages ? { ages } : {}), ...(only ? { only } : {}) });
  if (only && plan.plans.length === 0)
    throw errors.gcNoCachedTags((opts.repos ?? []).join(', '));
  const applied = opts.apply ? await applyCacheRetention(index, storage, plan, { graceMs: env.graceMs, now: now.getTime() }) : null;
  return { now, plan, applied };
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The plan table (the cleanup renderer's), then what was or would be freed. */
export function renderCacheRetention(run: CacheRetentionRun): string {
  const p = run.plan;
  const out: string[] = [renderPlanTable(p.plans, run.now)];
  const repos = new Set(p.deleteTags.map((t) => `${t.upstream}/${t.repo}`)).size;
  const a = run.applied;
  if (a === null) {
    out.push(
      `cache: would delete ${plural(p.deleteTags.length, 'cached tag')} in ${plural(repos, 'repository', 'repositories')}, ` +
        `freeing ${plural(p.free.manifests, 'manifest')} and ${plural(p.free.blobs, 'blob')} (${formatBytes(p.free.bytes)}); ` +
        `${plural(p.free.keptShared, 'item')} they reach stay${p.free.keptShared === 1 ? 's' : ''} (shared with kept tags or other cached images)\n`,
    );
  } else {
    for (const c of a.changedTags)
      out.push(`  skipped ${c.tag.upstream}/${c.tag.repo}:${c.tag.tag}: ${c.now === null ? 'gone already' : `now points to ${shortDigest(c.now)}`} (planned ${shortDigest(c.tag.digest)})\n`);
    out.push(
      `cache: deleted ${plural(a.deletedTags.length, 'cached tag')}; freed ${plural(a.freedManifests, 'manifest')} and ${plural(a.freedBlobs, 'blob')}, ` +
        `${formatBytes(a.freedBytes)} on disk; ${plural(a.keptShared, 'item')} they reached stay${a.keptShared === 1 ? 's' : ''} (shared with kept tags or other cached images, or used within the grace period)\n`,
    );
  }
  return out.join('');
}

/** The run for scripts (--json). */
export function cacheRetentionJson(run: CacheRetentionRun): Record<string, unknown> {
  return {
    mode: run.applied === null ? 'plan' : 'apply',
    generatedAt: run.now.toISOString(),
    repositories: run.plan.plans,
    deleteTags: run.plan.deleteTags,
    wouldFree: run.plan.free,
    applied: run.applied,
  };
}
