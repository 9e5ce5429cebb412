// Cleanup policies: a YAML file (validated with zod; errors name the field) and/or the CLI shorthands
// (--keep-last, --older-than, --protect, --live-branches). Rules are evaluated in priority order
// (ECR lifecycle rules and GitLab's cleanup policy are the models; see plan.ts).
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { errors, RelaisError } from '../errors.js';
import { parseDuration } from '../config/units.js';
import { IMAGE_KINDS, type ImageKind } from './retention-types.js';

const regex = z.string().min(1).superRefine((s, ctx) => {
  try {
    new RegExp(s, 'u');
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: `invalid regular expression: ${(e as Error).message}` });
  }
});

const familyRegex = regex.refine((s) => s.includes('(?<family>'), { error: 'needs a named group (?<family>...)' });

const duration = z.string().superRefine((s, ctx) => {
  if (/^\s*\d+\s*$/.test(s)) ctx.addIssue({ code: 'custom', message: `"${s}" has no unit: write e.g. "${s.trim()}d" (days) or "${s.trim()}h"` });
  else if (parseDuration(s) === undefined) ctx.addIssue({ code: 'custom', message: `invalid duration "${s}" (examples: 30d, 12h, 2w)` });
});

const kind = z.enum(IMAGE_KINDS as [ImageKind, ...ImageKind[]]);

export const RuleSchema = z
  .strictObject({
    name: z.string().min(1).optional(),
    /** Lower numbers are evaluated first; rules without one keep their order after those with one. */
    priority: z.number().int().optional(),
    action: z.enum(['keep', 'delete']),
    tags: z.array(regex).optional(),
    excludeTags: z.array(regex).optional(),
    families: z.array(regex).optional(),
    kinds: z.array(kind).optional(),
    branchGone: z.boolean().optional(),
    olderThan: duration.optional(),
    newerThan: duration.optional(),
    undated: z.boolean().optional(),
    newest: z.number().int().positive().optional(),
    exceptNewest: z.number().int().nonnegative().optional(),
    per: z.enum(['family', 'repository']).optional(),
  })
  .superRefine((r, ctx) => {
    if (r.newest !== undefined && r.exceptNewest !== undefined)
      ctx.addIssue({ code: 'custom', message: 'use either newest or exceptNewest, not both', path: ['exceptNewest'] });
    if (r.per !== undefined && r.newest === undefined && r.exceptNewest === undefined)
      ctx.addIssue({ code: 'custom', message: 'per only applies with newest or exceptNewest', path: ['per'] });
  });

export const PolicySchema = z.strictObject({
  version: z.literal(1).optional(),
  /** The default branch: its slug tag is protected. */
  defaultBranch: z.string().min(1).optional(),
  /** Extra protected tag patterns (never deleted, whatever the rules say). */
  protect: z.array(regex).optional(),
  /** Protect `latest`, semver tags and the default branch (default true). */
  defaultProtections: z.boolean().optional(),
  /** Extra family patterns, each with a (?<family>...) group; tried before the built-in ones. */
  families: z.array(familyRegex).optional(),
  defaultFamilies: z.boolean().optional(),
  /** FILE (one branch per line) or git:REMOTE (git ls-remote --heads). */
  liveBranches: z.string().min(1).optional(),
  /** Images whose config has no trustworthy `created`: keep them, delete them, or let the rules decide. */
  undated: z.enum(['keep', 'delete', 'rules']).optional(),
  /** What happens to a tag no rule decides. */
  default: z.enum(['keep', 'delete']).optional(),
  /** Repositories (regex on the name) whose tags are kaniko cache keys; default: names ending in /cache. */
  kanikoCacheRepos: z.array(regex).optional(),
  limits: z
    .strictObject({
      maxDeleteShare: z.number().min(0).max(1).optional(),
      minKeep: z.number().int().min(1).optional(),
    })
    .optional(),
  rules: z.array(RuleSchema).optional(),
});

export type RuleInput = z.infer<typeof RuleSchema>;
export type PolicyInput = z.infer<typeof PolicySchema>;

export interface Rule {
  readonly name: string;
  readonly action: 'keep' | 'delete';
  readonly tags?: readonly RegExp[];
  readonly excludeTags?: readonly RegExp[];
  readonly families?: readonly RegExp[];
  readonly kinds?: readonly ImageKind[];
  readonly branchGone?: boolean;
  readonly olderThanMs?: number;
  readonly newerThanMs?: number;
  readonly undated?: boolean;
  readonly count?: { readonly mode: 'newest' | 'exceptNewest'; readonly n: number; readonly per: 'family' | 'repository' };
}

export interface Policy {
  readonly defaultBranch: string | undefined;
  readonly protect: readonly RegExp[];
  readonly defaultProtections: boolean;
  readonly familyPatterns: readonly RegExp[];
  readonly defaultFamilies: boolean;
  readonly liveBranches: string | undefined;
  readonly undated: 'keep' | 'delete' | 'rules';
  readonly defaultAction: 'keep' | 'delete';
  readonly kanikoCacheRepos: readonly RegExp[];
  readonly maxDeleteShare: number;
  readonly minKeep: number;
  readonly rules: readonly Rule[];
}

export const DEFAULT_MAX_DELETE_SHARE = 0.5;

/** Shorthands from the command line; they add to (and come after) the file's rules. */
export interface PolicyFlags {
  readonly keepLast?: number;
  readonly olderThan?: string;
  readonly protect?: readonly string[];
  readonly liveBranches?: string;
  readonly defaultBranch?: string;
  readonly maxDeleteShare?: number;
}

function policyError(source: string, message: string, hint?: string): RelaisError {
  return errors.cleanupPolicyInvalid(source, message, hint);
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out === '' ? '' : '.'}${String(p)}`;
  return out === '' ? '(top level)' : out;
}

/** Validates a parsed policy document; errors name the field (e.g. `rules[1].olderThan`). */
export function validatePolicy(doc: unknown, source = 'policy'): PolicyInput {
  const r = PolicySchema.safeParse(doc ?? {});
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const unknownKeys = i.code === 'unrecognized_keys' ? ` (${i.keys.join(', ')})` : '';
    return `${formatPath(i.path)}: ${i.message}${unknownKeys}`;
  });
  throw policyError(source, `invalid policy: ${lines.join('; ')}`, 'see docs/cleanup.md for the policy format');
}

export function parsePolicyYaml(text: string, source = 'policy'): PolicyInput {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw policyError(source, `not valid YAML: ${(e as Error).message}`);
  }
  return validatePolicy(doc, source);
}

export async function loadPolicyFile(path: string): Promise<PolicyInput> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw policyError(path, `cannot read the policy file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parsePolicyYaml(text, path);
}

function durationMs(s: string): number {
  const v = parseDuration(s);
  if (v === undefined) throw new Error(`unreachable: unvalidated duration ${s}`);
  return v;
}

function ruleName(r: RuleInput, index: number): string {
  if (r.name !== undefined) return r.name;
  const parts: string[] = [r.action];
  if (r.newest !== undefined) parts.push(`newest ${r.newest}${r.per === 'repository' ? '' : '/family'}`);
  if (r.exceptNewest !== undefined) parts.push(`all but newest ${r.exceptNewest}${r.per === 'repository' ? '' : '/family'}`);
  if (r.branchGone === true) parts.push('branch gone');
  if (r.olderThan !== undefined) parts.push(`older than ${r.olderThan}`);
  if (r.newerThan !== undefined) parts.push(`newer than ${r.newerThan}`);
  if (r.undated === true) parts.push('undated');
  if (r.kinds !== undefined) parts.push(r.kinds.join('|'));
  if (r.tags !== undefined) parts.push(`/${r.tags.join('|')}/`);
  if (r.families !== undefined) parts.push(`family /${r.families.join('|')}/`);
  return parts.length === 1 ? `rule ${index + 1}` : parts.join(' ');
}

function compileRule(r: RuleInput, index: number): Rule {
  const re = (xs: readonly string[] | undefined): RegExp[] | undefined => xs?.map((x) => new RegExp(x, 'u'));
  const count =
    r.newest !== undefined
      ? { mode: 'newest' as const, n: r.newest, per: r.per ?? 'family' }
      : r.exceptNewest !== undefined
        ? { mode: 'exceptNewest' as const, n: r.exceptNewest, per: r.per ?? 'family' }
        : undefined;
  const tags = re(r.tags);
  const excludeTags = re(r.excludeTags);
  const families = re(r.families);
  return {
    name: ruleName(r, index),
    action: r.action,
    ...(tags ? { tags } : {}),
    ...(excludeTags ? { excludeTags } : {}),
    ...(families ? { families } : {}),
    ...(r.kinds ? { kinds: r.kinds } : {}),
    ...(r.branchGone !== undefined ? { branchGone: r.branchGone } : {}),
    ...(r.olderThan !== undefined ? { olderThanMs: durationMs(r.olderThan) } : {}),
    ...(r.newerThan !== undefined ? { newerThanMs: durationMs(r.newerThan) } : {}),
    ...(r.undated !== undefined ? { undated: r.undated } : {}),
    ...(count ? { count } : {}),
  };
}

/** The rules the CLI shorthands stand for (GitLab's keep_n + older_than semantics, plus branches). */
export function flagRules(flags: PolicyFlags): RuleInput[] {
  const rules: RuleInput[] = [];
  if (flags.liveBranches !== undefined) rules.push({ name: 'branch gone', action: 'delete', branchGone: true });
  if (flags.keepLast !== undefined) {
    rules.push({ name: `keep last ${flags.keepLast}`, action: 'keep', newest: flags.keepLast });
    if (flags.olderThan === undefined) rules.push({ name: `beyond last ${flags.keepLast}`, action: 'delete' });
  }
  if (flags.olderThan !== undefined) rules.push({ name: `older than ${flags.olderThan}`, action: 'delete', olderThan: flags.olderThan });
  return rules;
}

/** Combines a policy file (optional) and the CLI shorthands into one validated, compiled policy. */
export function buildPolicy(file: PolicyInput | undefined, flags: PolicyFlags, source = 'command line'): Policy {
  if (flags.keepLast !== undefined && (!Number.isInteger(flags.keepLast) || flags.keepLast < 1))
    throw policyError(source, `--keep-last must be a whole number of at least 1 (got ${flags.keepLast})`);
  if (flags.maxDeleteShare !== undefined && !(flags.maxDeleteShare >= 0 && flags.maxDeleteShare <= 1))
    throw policyError(source, `--max-delete-share must be between 0 and 1 (got ${flags.maxDeleteShare})`);
  // Validate the flag-made parts through the same schema so errors read the same.
  const extra = validatePolicy({ rules: flagRules(flags), protect: flags.protect ?? [] }, source);
  const base = file ?? {};
  const inputs = [...(base.rules ?? []), ...(extra.rules ?? [])];
  // Stable sort by priority: rules with a priority first (ascending), then the rest in order.
  const ordered = inputs
    .map((r, i) => ({ r, i }))
    .sort((a, b) => (a.r.priority ?? Number.MAX_SAFE_INTEGER) - (b.r.priority ?? Number.MAX_SAFE_INTEGER) || a.i - b.i);
  return {
    defaultBranch: flags.defaultBranch ?? base.defaultBranch,
    protect: [...(base.protect ?? []), ...(extra.protect ?? [])].map((p) => new RegExp(p, 'u')),
    defaultProtections: base.defaultProtections ?? true,
    familyPatterns: (base.families ?? []).map((p) => new RegExp(p, 'u')),
    defaultFamilies: base.defaultFamilies ?? true,
    liveBranches: flags.liveBranches ?? base.liveBranches,
    undated: base.undated ?? 'keep',
    defaultAction: base.default ?? 'keep',
    kanikoCacheRepos: (base.kanikoCacheRepos ?? ['(^|/)cache$']).map((p) => new RegExp(p, 'u')),
    maxDeleteShare: flags.maxDeleteShare ?? base.limits?.maxDeleteShare ?? DEFAULT_MAX_DELETE_SHARE,
    minKeep: base.limits?.minKeep ?? 1,
    rules: ordered.map(({ r, i }) => compileRule(r, i)),
  };
}

/**
 * The policy of a run: the file (if any) merged with the flags. A branches file named in the policy is
 * relative to the policy file, not to where relais runs. Refuses a run with no rule at all.
 */
export async function resolvePolicy(policyFile: string | undefined, flags: PolicyFlags): Promise<Policy> {
  let file = policyFile !== undefined ? await loadPolicyFile(policyFile) : undefined;
  const lb = file?.liveBranches;
  if (file && policyFile !== undefined && lb !== undefined && lb !== 'gitlab' && !lb.startsWith('git:') && !isAbsolute(lb))
    file = { ...file, liveBranches: resolve(dirname(policyFile), lb) };
  const policy = buildPolicy(file, flags);
  if (file === undefined && policy.rules.length === 0)
    throw errors.cleanupNoRule();
  return policy;
}
