// The planner: tags + digest graph + policy -> KEEP/DELETE for every tag, with the rule that decided.
//
// Order of evaluation (first decision wins, like a firewall; ECR lifecycle rules work the same way):
//   1. protected patterns (latest, semver, the default branch's slug, --protect): KEEP, always;
//   2. attachments (sha256-<hex> tags) are not judged on their own: they follow their subject;
//   3. undated images (config `created` missing or the epoch) when the policy says keep/delete;
//   4. the policy's rules in priority order; a count rule (newest / exceptNewest) ranks the distinct
//      images of each family among the tags that reach it;
//   5. the default action (keep unless the policy says otherwise).
// Then the safety pass: at least `minKeep` tags stay, a DELETE tag whose image a kept tag still
// reaches (same digest, index child, referrer) is only untagged, and if more than `maxDeleteShare` of
// the tags would go, the repository's plan is aborted.
import { assignFamilies, branchGone, DEFAULT_FAMILY_PATTERNS, SEMVER_TAG, type FamilyAssignment, type LiveBranch } from './families.js';
import { refSlug } from '../gitlab-slug.js';
import type { Policy, Rule } from './retention-policy.js';
import { reachable, type DigestGraph, type TagInfo } from './retention-types.js';

export type Action = 'KEEP' | 'DELETE';

export interface PlanEntry {
  readonly tag: string;
  readonly digest: string;
  readonly kind: TagInfo['kind'];
  readonly created: string | null;
  readonly createdSource: TagInfo['createdSource'];
  readonly createdFlag: TagInfo['createdFlag'];
  readonly family: string | null;
  readonly familySource: FamilyAssignment['source'];
  readonly action: Action;
  readonly rule: string;
  /** DELETE entries whose image stays because these kept tags still need it: the tag is only untagged. */
  readonly sharedWith?: readonly string[];
}

export interface RepoPlan {
  readonly repo: string;
  readonly entries: readonly PlanEntry[];
  /** Manifests no kept tag reaches any more: deleted by digest after the tags are gone. */
  readonly digestsToDelete: readonly string[];
  /** Why this repository's plan must not be applied (safety limit), if so. */
  readonly aborted: string | null;
  readonly warnings: readonly string[];
  readonly summary: { readonly tags: number; readonly keep: number; readonly delete: number; readonly shareDeleted: number };
}

export interface PlanContext {
  readonly now: Date;
  /** Live branches, or null when not known (then "branch gone" never matches). */
  readonly liveBranches: readonly LiveBranch[] | null;
}

interface Work {
  readonly info: TagInfo;
  readonly fam: FamilyAssignment;
  decision?: { action: Action; rule: string };
}

const LATEST_TAG = /^latest$/;

/** The protected patterns in force, with a name each for the plan's "rule" column. */
export function protections(policy: Policy): { re: RegExp; name: string }[] {
  const out: { re: RegExp; name: string }[] = [];
  if (policy.defaultProtections) {
    out.push({ re: LATEST_TAG, name: 'protected: latest' });
    out.push({ re: SEMVER_TAG, name: 'protected: semver' });
    if (policy.defaultBranch !== undefined) {
      const slug = refSlug(policy.defaultBranch);
      out.push({ re: new RegExp(`^${slug.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'u'), name: 'protected: default branch' });
    }
  }
  for (const re of policy.protect) out.push({ re, name: `protected: /${re.source}/` });
  return out;
}

function ruleMatches(rule: Rule, w: Work, now: number, liveSlugs: ReadonlySet<string> | null): boolean {
  const t = w.info;
  if (rule.tags && !rule.tags.some((r) => r.test(t.tag))) return false;
  if (rule.excludeTags?.some((r) => r.test(t.tag))) return false;
  if (rule.kinds && !rule.kinds.includes(t.kind)) return false;
  if (rule.families) {
    const f = w.fam.family;
    if (f === null || !rule.families.some((r) => r.test(f))) return false;
  }
  if (rule.branchGone !== undefined && branchGone(w.fam, liveSlugs) !== rule.branchGone) return false;
  if (rule.undated !== undefined && (t.created === null) !== rule.undated) return false;
  // Age conditions never match an image whose age is unknown: an undated image is not "old".
  if (rule.olderThanMs !== undefined && (t.created === null || now - t.created.getTime() <= rule.olderThanMs)) return false;
  if (rule.newerThanMs !== undefined && (t.created === null || now - t.created.getTime() > rule.newerThanMs)) return false;
  return true;
}

/** Newest first; undated images rank as the oldest; ties by tag name for a stable plan. */
function byAgeDesc(a: TagInfo, b: TagInfo): number {
  const ta = a.created?.getTime() ?? Number.NEGATIVE_INFINITY;
  const tb = b.created?.getTime() ?? Number.NEGATIVE_INFINITY;
  if (ta !== tb) return tb > ta ? 1 : -1;
  return a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0;
}

/** Applies a count rule: ranks the distinct images (digests) of each group and selects by rank. */
function countSelect(rule: Rule, candidates: readonly Work[]): Work[] {
  const count = rule.count;
  if (!count) return [...candidates];
  const groups = new Map<string, Work[]>();
  for (const w of candidates) {
    const key = count.per === 'repository' ? '*' : (w.fam.family ?? '\u0000none');
    const g = groups.get(key);
    if (g) g.push(w);
    else groups.set(key, [w]);
  }
  const selected: Work[] = [];
  for (const g of groups.values()) {
    const sorted = [...g].sort((a, b) => byAgeDesc(a.info, b.info));
    const newest = new Set<string>();
    for (const w of sorted) {
      if (newest.size >= count.n) break;
      newest.add(w.info.digest);
    }
    for (const w of g) if (newest.has(w.info.digest) === (count.mode === 'newest')) selected.push(w);
  }
  return selected;
}

export function planRepository(repo: string, tags: readonly TagInfo[], graph: DigestGraph, policy: Policy, ctx: PlanContext): RepoPlan {
  const warnings: string[] = [];
  const patterns = [...policy.familyPatterns, ...(policy.defaultFamilies ? DEFAULT_FAMILY_PATTERNS : [])];
  const fams = assignFamilies(tags, { patterns, liveBranches: ctx.liveBranches });
  const liveSlugs = ctx.liveBranches === null ? null : new Set(ctx.liveBranches.map((b) => b.slug));
  if (liveSlugs === null && policy.rules.some((r) => r.branchGone !== undefined))
    warnings.push('a rule uses branchGone but no live branches were given (--live-branches): it matches nothing');
  const now = ctx.now.getTime();
  const work: Work[] = tags.map((info) => ({ info, fam: fams.get(info.tag) ?? { family: null, source: 'none' } }));
  const decide = (w: Work, action: Action, rule: string): void => {
    w.decision ??= { action, rule };
  };

  // 1. Protected patterns.
  const prot = protections(policy);
  for (const w of work) {
    const p = prot.find((x) => x.re.test(w.info.tag));
    if (p) decide(w, 'KEEP', p.name);
  }
  // 2. Attachments are decided after everything else (they follow their subject).
  const attachments = work.filter((w) => w.info.kind === 'attachment' && w.decision === undefined);
  const judged = work.filter((w) => w.info.kind !== 'attachment');
  // 3. Undated images.
  const undated = judged.filter((w) => w.info.created === null);
  if (undated.length > 0) {
    if (policy.undated === 'keep') for (const w of undated) decide(w, 'KEEP', `undated (${w.info.createdFlag}): policy undated=keep`);
    else if (policy.undated === 'delete') for (const w of undated) decide(w, 'DELETE', `undated (${w.info.createdFlag}): policy undated=delete`);
  }
  // 4. Rules in priority order.
  for (const rule of policy.rules) {
    const candidates = judged.filter((w) => w.decision === undefined && ruleMatches(rule, w, now, liveSlugs));
    for (const w of countSelect(rule, candidates)) decide(w, rule.action === 'keep' ? 'KEEP' : 'DELETE', rule.name);
  }
  // 5. Default.
  for (const w of judged) decide(w, policy.defaultAction === 'keep' ? 'KEEP' : 'DELETE', `default (${policy.defaultAction})`);

  // Safety: never fewer than minKeep tags (the newest DELETE images are kept back).
  const keptCount = (): number => judged.filter((w) => w.decision?.action === 'KEEP').length;
  if (judged.length > 0 && keptCount() < policy.minKeep) {
    const deletions = judged.filter((w) => w.decision?.action === 'DELETE').sort((a, b) => byAgeDesc(a.info, b.info));
    for (const w of deletions) {
      if (keptCount() >= Math.min(policy.minKeep, judged.length)) break;
      w.decision = { action: 'KEEP', rule: `safety: keep at least ${policy.minKeep} tag${policy.minKeep === 1 ? '' : 's'}` };
    }
  }

  // Attachments follow their subject: kept if a kept tag reaches the subject, deleted with it otherwise.
  const keptDigests = (): Set<string> => new Set(work.filter((w) => w.decision?.action === 'KEEP').map((w) => w.info.digest));
  let keptReach = reachable(graph, keptDigests());
  const deletedTagDigests = new Set(judged.filter((w) => w.decision?.action === 'DELETE').map((w) => w.info.digest));
  for (const w of attachments) {
    const s = w.info.subject;
    if (s !== undefined && keptReach.has(s)) decide(w, 'KEEP', 'attached to a kept image');
    else if (s !== undefined && reachable(graph, deletedTagDigests).has(s)) decide(w, 'DELETE', 'attached to a deleted image');
    else decide(w, 'KEEP', 'attachment without a tagged subject (kept)');
  }
  keptReach = reachable(graph, keptDigests());

  // Digest graph: deleting a tag must never delete an image a kept tag still reaches.
  const keptTagsByDigest = new Map<string, string[]>();
  for (const w of work) {
    if (w.decision?.action !== 'KEEP') continue;
    for (const d of reachable(graph, [w.info.digest])) {
      const l = keptTagsByDigest.get(d);
      if (l) l.push(w.info.tag);
      else keptTagsByDigest.set(d, [w.info.tag]);
    }
  }
  const entries: PlanEntry[] = work.map((w) => {
    const d = w.decision ?? { action: 'KEEP' as const, rule: 'default (keep)' };
    const shared = d.action === 'DELETE' ? keptTagsByDigest.get(w.info.digest) : undefined;
    return {
      tag: w.info.tag,
      digest: w.info.digest,
      kind: w.info.kind,
      created: w.info.created?.toISOString() ?? null,
      createdSource: w.info.createdSource,
      createdFlag: w.info.createdFlag,
      family: w.fam.family,
      familySource: w.fam.source,
      action: d.action,
      rule: d.rule,
      ...(shared ? { sharedWith: [...new Set(shared)].sort() } : {}),
    };
  });
  entries.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));

  // Manifests to delete by digest: reachable from deleted tags, not from kept ones. Parents first.
  const delReach = reachable(graph, entries.filter((e) => e.action === 'DELETE').map((e) => e.digest));
  const orphans = [...delReach].filter((d) => !keptReach.has(d) && graph.has(d));
  const digestsToDelete = topoParentsFirst(graph, orphans);

  const del = entries.filter((e) => e.action === 'DELETE').length;
  const share = entries.length === 0 ? 0 : del / entries.length;
  const aborted =
    share > policy.maxDeleteShare
      ? `would delete ${del} of ${entries.length} tags (${pct(share)}), more than the limit of ${pct(policy.maxDeleteShare)}`
      : null;
  return {
    repo,
    entries,
    digestsToDelete,
    aborted,
    warnings,
    summary: { tags: entries.length, keep: entries.length - del, delete: del, shareDeleted: share },
  };
}

function pct(x: number): string {
  return `${Math.round(x * 1000) / 10}%`;
}

/** Orders digests so that an index (or a subject) comes before what it references. */
function topoParentsFirst(graph: DigestGraph, digests: readonly string[]): string[] {
  const set = new Set(digests);
  const out: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  // Depth-first post-order over "child -> parent" gives parents first after reversing children-first.
  const visit = (d: string): void => {
    if (state.get(d) !== undefined) return;
    state.set(d, 'visiting');
    const n = graph.get(d);
    for (const c of [...(n?.children ?? []), ...(n?.referrers ?? [])]) if (set.has(c)) visit(c);
    state.set(d, 'done');
    out.push(d);
  };
  for (const d of [...digests].sort()) visit(d);
  return out.reverse();
}
