// Turns the raw measurements into the table the issue asks for: absolute figures per target,
// ratios relais/nginx and relais/distribution, and PASS/FAIL against the issue's targets.
import type { TargetKind } from './targets.js';

export interface Metric {
  readonly id: string;
  readonly label: string;
  readonly unit: string;
  readonly better: 'higher' | 'lower';
  readonly values: Partial<Record<TargetKind, number>>;
  /** Why a value is missing or invalid (errors during the run), per target. */
  readonly notes?: Partial<Record<TargetKind, string>>;
  readonly target?: TargetCheck;
}

export interface TargetCheck {
  readonly text: string;
  /** Returns true when relais meets the target; undefined when it cannot be judged. */
  readonly check: (v: Partial<Record<TargetKind, number>>) => boolean | undefined;
}

export interface Row {
  readonly id: string;
  readonly label: string;
  readonly unit: string;
  readonly distribution: number | null;
  readonly nginx: number | null;
  readonly relais: number | null;
  readonly relaisOverNginx: number | null;
  readonly relaisOverDistribution: number | null;
  readonly target: string | null;
  readonly verdict: 'PASS' | 'FAIL' | 'n/a' | null;
  readonly notes: Partial<Record<TargetKind, string>>;
}

/** The median; undefined for no values. */
export function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/** One round of a measurement: its figure and the client errors it had. */
export interface Round {
  readonly value: number;
  readonly errors: number;
}

/**
 * A figure over rounds. `strict` (relais): a client error in any round voids the figure. Otherwise (the
 * anchors): the median of the error-free rounds, with the failed rounds noted, so that one failed round of
 * distribution's proxy does not take its ratio out of the table.
 */
export function overRounds(rounds: readonly Round[], strict: boolean): { readonly value?: number; readonly note?: string } {
  const bad = rounds.filter((r) => r.errors > 0);
  const clean = rounds.filter((r) => r.errors === 0 && Number.isFinite(r.value));
  const errs = bad.reduce((a, r) => a + r.errors, 0);
  if (bad.length > 0 && (strict || clean.length === 0)) return { note: `${errs} client errors` };
  const value = median(clean.map((r) => r.value));
  const note = bad.length > 0 ? `${errs} client errors in ${bad.length} of ${rounds.length} rounds; median of the others` : undefined;
  return { ...(value === undefined ? {} : { value }), ...(note === undefined ? {} : { note }) };
}

const ratio = (a: number | undefined, b: number | undefined): number | null =>
  a === undefined || b === undefined || b === 0 || !Number.isFinite(a) || !Number.isFinite(b) ? null : a / b;

export function toRows(metrics: readonly Metric[]): Row[] {
  return metrics.map((m) => {
    let verdict: Row['verdict'] = null;
    if (m.target !== undefined) {
      const ok = m.target.check(m.values);
      // relais failing its clients (a note instead of a figure) fails the target; it is not "n/a".
      verdict = m.notes?.relais !== undefined ? 'FAIL' : ok === undefined ? 'n/a' : ok ? 'PASS' : 'FAIL';
    }
    return {
      id: m.id,
      label: m.label,
      unit: m.unit,
      distribution: m.values.distribution ?? null,
      nginx: m.values.nginx ?? null,
      relais: m.values.relais ?? null,
      relaisOverNginx: ratio(m.values.relais, m.values.nginx),
      relaisOverDistribution: ratio(m.values.relais, m.values.distribution),
      target: m.target?.text ?? null,
      verdict,
      notes: m.notes ?? {},
    };
  });
}

function fmt(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  return a >= 10_000 ? Math.round(v).toLocaleString('en-US') : a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function fmtRatio(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return '-';
  return v >= 100 ? `${v.toFixed(0)}x` : v >= 10 ? `${v.toFixed(1)}x` : `${v.toFixed(2)}x`;
}

/** A Markdown table (readable in a terminal and pasteable into docs/performance.md). */
export function renderTable(rows: readonly Row[]): string {
  const header = ['metric', 'distribution', 'nginx', 'relais', 'relais/nginx', 'relais/distribution', 'target', 'result'];
  const lines: string[][] = rows.map((r) => {
    const cell = (k: TargetKind): string => {
      const n = r.notes[k];
      const v = fmt(r[k]);
      return n === undefined ? v : `${v} (${n})`;
    };
    return [
      `${r.label} (${r.unit})`,
      cell('distribution'),
      cell('nginx'),
      cell('relais'),
      fmtRatio(r.relaisOverNginx),
      fmtRatio(r.relaisOverDistribution),
      r.target ?? '',
      r.verdict ?? '',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const row = (cells: readonly string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 ? `-${'-'.repeat(w)}-` : `-${'-'.repeat(w - 1)}:`)).join('|')}|`;
  return [row(header), sep, ...lines.map(row)].join('\n');
}
