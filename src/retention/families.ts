// Tag families: which tags belong together for "keep the N newest per family" and "the branch is gone".
//
// A CI pipeline in the recipe this project starts from tags every build twice: with the branch's
// CI_COMMIT_REF_SLUG (moves with the branch) and with CI_COMMIT_SHA (stays), and pushes a cache ref
// per branch. The family of a tag is, in this order:
//   1. "semver" for release tags (v1.2.3, 1.2, 2.0.0-rc.1);
//   2. the `family` group of the first family pattern that matches (policy `families`, plus defaults
//      for cache tags like cache-<slug> / <slug>-cache and <slug>-<sha> tags);
//   3. for a commit-SHA tag (7-40 hex): the branch whose head commit it is (live branches with
//      commits), else the family of a slug tag pointing to the same image, else none;
//   4. for a kaniko cache layer: "kaniko-cache" (its tags are cache keys, not branches);
//   5. otherwise the tag itself (it is a branch slug, or a name like "stable").
import type { ImageKind } from './retention-types.js';

export type FamilySource = 'semver' | 'pattern' | 'commit' | 'digest' | 'slug' | 'kind' | 'subject' | 'none';

export interface FamilyAssignment {
  readonly family: string | null;
  readonly source: FamilySource;
}

export interface LiveBranch {
  readonly name: string;
  readonly slug: string;
  /** Head commit (full SHA) when known (git ls-remote, GitLab API). */
  readonly commit?: string;
}

export const SEMVER_TAG = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)(\.(0|[1-9]\d*))?(-[0-9A-Za-z][0-9A-Za-z.-]*)?$/;
export const COMMIT_TAG = /^[0-9a-f]{7,40}$/;
/** OCI referrers tag schema (sha256-<hex>) and cosign's sha256-<hex>.sig/.att/.sbom. */
export const ATTACHMENT_TAG = /^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})(\.[a-z]+)?$/;

export const DEFAULT_FAMILY_PATTERNS: readonly RegExp[] = [
  /^(?:build-?cache|cache)-(?<family>.+)$/,
  /^(?<family>.+)-(?:build-?cache|cache)$/,
  /^(?<family>.+)-(?:[0-9a-f]{7,40})$/,
];

export interface TagForFamily {
  readonly tag: string;
  readonly digest: string;
  readonly kind: ImageKind;
  readonly subject?: string;
}

export interface FamilyContext {
  readonly patterns: readonly RegExp[];
  readonly liveBranches: readonly LiveBranch[] | null;
}

/** Assigns a family to every tag of one repository. */
export function assignFamilies(tags: readonly TagForFamily[], ctx: FamilyContext): Map<string, FamilyAssignment> {
  const out = new Map<string, FamilyAssignment>();
  const pending: TagForFamily[] = [];
  for (const t of tags) {
    const a = directFamily(t, ctx);
    if (a) out.set(t.tag, a);
    else pending.push(t);
  }
  // Families known for a digest through a slug/pattern tag: a SHA tag of the same image joins them.
  const byDigest = new Map<string, string>();
  for (const t of tags) {
    const a = out.get(t.tag);
    if (a?.family != null && (a.source === 'slug' || a.source === 'pattern') && !byDigest.has(t.digest)) byDigest.set(t.digest, a.family);
  }
  for (const t of pending) {
    // Commit tags: the branch whose head this commit is wins; then the image's slug tag.
    const branch = ctx.liveBranches?.find((b) => b.commit !== undefined && b.commit.startsWith(t.tag));
    if (branch) {
      out.set(t.tag, { family: branch.slug, source: 'commit' });
      continue;
    }
    const f = byDigest.get(t.digest);
    out.set(t.tag, f === undefined ? { family: null, source: 'none' } : { family: f, source: 'digest' });
  }
  // Attachments follow the image they are attached to.
  const familyOfDigest = new Map<string, FamilyAssignment>();
  for (const t of tags) {
    const a = out.get(t.tag);
    if (a && t.kind !== 'attachment' && a.family !== null && !familyOfDigest.has(t.digest)) familyOfDigest.set(t.digest, a);
  }
  for (const t of tags) {
    if (t.kind !== 'attachment' || t.subject === undefined) continue;
    const a = familyOfDigest.get(t.subject);
    out.set(t.tag, a ? { family: a.family, source: 'subject' } : { family: null, source: 'none' });
  }
  return out;
}

function directFamily(t: TagForFamily, ctx: FamilyContext): FamilyAssignment | undefined {
  if (t.kind === 'attachment') return { family: null, source: 'none' };
  if (SEMVER_TAG.test(t.tag)) return { family: 'semver', source: 'semver' };
  if (t.kind === 'kaniko-cache') return { family: 'kaniko-cache', source: 'kind' };
  for (const p of ctx.patterns) {
    const m = p.exec(t.tag);
    const f = m?.groups?.family;
    if (f !== undefined && f !== '') return { family: f, source: 'pattern' };
  }
  if (COMMIT_TAG.test(t.tag)) return undefined;
  return { family: t.tag, source: 'slug' };
}

/** Whether a family is a branch slug whose branch no longer exists (null when it cannot be told). */
export function branchGone(a: FamilyAssignment, liveSlugs: ReadonlySet<string> | null): boolean {
  if (liveSlugs === null || a.family === null) return false;
  if (a.source === 'semver' || a.source === 'kind' || a.source === 'none') return false;
  return !liveSlugs.has(a.family);
}
