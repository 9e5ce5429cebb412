// Output of `relais cleanup`: a table for people, JSON for scripts.
import type { ApplyResult } from './apply-plan.js';
import type { PlanEntry, RepoPlan } from './retention-plan.js';
import { shortDigest } from './retention-types.js';

export function formatAge(created: string | null, flag: PlanEntry['createdFlag'], now: Date): string {
  if (created === null) return flag === 'ok' || flag === 'not-applicable' ? '?' : `? (${flag})`;
  const s = Math.max(0, (now.getTime() - Date.parse(created)) / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

export function renderPlanTable(plans: readonly RepoPlan[], now: Date): string {
  const out: string[] = [];
  for (const p of plans) {
    out.push(`${p.repo}: ${p.summary.tags} tags, keep ${p.summary.keep}, delete ${p.summary.delete}` + (p.digestsToDelete.length > 0 ? `, then ${p.digestsToDelete.length} untagged manifest${p.digestsToDelete.length === 1 ? '' : 's'} by digest` : ''));
    if (p.entries.length > 0) {
      const rows = [['TAG', 'DIGEST', 'AGE', 'KIND', 'FAMILY', 'ACTION', 'RULE']];
      for (const e of p.entries) {
        const note = e.sharedWith ? ` (untag only: image kept by ${e.sharedWith.join(', ')})` : '';
        rows.push([e.tag, shortDigest(e.digest), formatAge(e.created, e.createdFlag, now), e.kind, e.family ?? '-', e.action, e.rule + note]);
      }
      out.push(table(rows));
    }
    for (const w of p.warnings) out.push(`warning: ${w}`);
    if (p.aborted !== null) out.push(`ABORTED: ${p.aborted}; nothing will be deleted in ${p.repo} (raise --max-delete-share or limits.maxDeleteShare if this is intended)`);
    out.push('');
  }
  return out.join('\n');
}

export function renderApplyResult(results: readonly ApplyResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    out.push(
      `${r.repo}: deleted ${r.untagged.length} tag${r.untagged.length === 1 ? '' : 's'}${r.method ? ` (${r.method})` : ''}, ` +
        `${r.digestsDeleted.length} manifest${r.digestsDeleted.length === 1 ? '' : 's'} by digest` +
        (r.failed.length > 0 ? `, ${r.failed.length} failed` : '') +
        (r.skipped.length > 0 ? `, ${r.skipped.length} skipped` : ''),
    );
    for (const s of r.skipped) out.push(`  skipped ${s.tag}: ${s.reason}`);
    for (const f of r.failed) out.push(`  FAILED ${f.tag}: ${f.error}`);
    for (const k of r.digestsKept) out.push(`  kept ${shortDigest(k.digest)}: ${k.reason}`);
    for (const c of r.keptTagsChanged) out.push(`  WARNING kept tag ${c.tag} now ${c.now === null ? 'missing' : `points to ${shortDigest(c.now)}`} (planned ${shortDigest(c.planned)})`);
  }
  return out.join('\n') + '\n';
}

export interface JsonReport {
  readonly version: 1;
  readonly registry: string;
  readonly generatedAt: string;
  readonly mode: 'plan' | 'apply';
  readonly repositories: readonly (RepoPlan & { readonly applied: ApplyResult | null })[];
}
