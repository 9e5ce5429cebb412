// `node dist/bench/compare.js --a DIR --b DIR [--rounds N] [-- bench options]`: before/after of two
// relais builds in one run. The same bench harness (this checkout's dist/bench/run.js) measures
// relais from tree A, then from tree B, then A, then B ... (--rounds times each), each run against
// its own fresh upstream and empty cache; the figures of each side are the medians over its runs,
// with the min..max spread so that noise from other work on the machine is visible.
// Each DIR is a built checkout (its dist/src/cli/main.js and native addon); see docs/performance.md
// ("Before/after of two commits") for how to make one from a commit with git archive.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from './lib/report.js';

const USAGE = `usage: node dist/bench/compare.js --a DIR --b DIR [--rounds N] [--out FILE] [-- bench options]

  --a DIR      the "before" tree (built: DIR/dist/src/cli/main.js)
  --b DIR      the "after" tree
  --rounds N   runs per side, alternated A B A B ... (default 3)
  --out FILE   JSON with every run's table and the medians (default: none)
  after --      passed to bench/run.ts for every run (default: --targets relais --skip-docker --slow-link off)`;

interface Row {
  id: string;
  label: string;
  unit: string;
  relais?: number;
}

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));

function fail(msg: string): never {
  process.stderr.write(`compare: ${msg}\n`);
  process.exit(2);
}

function runBench(args: readonly string[]): Promise<void> {
  return new Promise((ok, ko) => {
    const p = spawn(process.execPath, [join(BENCH_DIR, 'run.js'), ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('error', ko);
    p.on('exit', (code) => (code === 0 ? ok() : ko(new Error(`bench exited with ${String(code)}`))));
  });
}

const fmt = (v: number | undefined): string => (v === undefined ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf('--');
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const pass = dash < 0 ? ['--targets', 'relais', '--skip-docker', '--slow-link', 'off'] : argv.slice(dash + 1);
  let v;
  try {
    v = parseArgs({ args: own, options: { a: { type: 'string' }, b: { type: 'string' }, rounds: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }).values;
  } catch (e) {
    fail(`${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
  }
  if (v.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (v.a === undefined || v.b === undefined) fail(`--a and --b are required\n\n${USAGE}`);
  const rounds = v.rounds === undefined ? 3 : Number(v.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) fail(`--rounds must be a positive integer, got "${v.rounds ?? ''}"`);
  const sides = { A: resolve(v.a), B: resolve(v.b) } as const;
  for (const dir of Object.values(sides)) {
    if (!existsSync(join(dir, 'dist', 'src', 'cli', 'main.js'))) fail(`${dir}/dist/src/cli/main.js not found: build that tree first (npx tsc -p tsconfig.json)`);
  }
  const work = await mkdtemp(join(tmpdir(), 'relais-compare-'));
  const runs: { side: 'A' | 'B'; round: number; rows: Row[] }[] = [];
  const load0 = loadavg();
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const side of ['A', 'B'] as const) {
        const out = join(work, `${side}-${round}.json`);
        process.stderr.write(`[compare] round ${round}/${rounds}: ${side} (${sides[side]})\n`);
        await runBench([...pass, '--relais-main', join(sides[side], 'dist', 'src', 'cli', 'main.js'), '--out', out]);
        const json = JSON.parse(await readFile(out, 'utf8')) as { table: Row[]; floor: { requestsPerSec: number } | null };
        // The manifest rate over the node:http floor measured in the same run: less moved by the machine's load.
        const rps = json.table.find((r) => r.id === 'manifest_rps')?.relais;
        const floor = json.floor?.requestsPerSec;
        const extra: Row[] =
          rps === undefined || floor === undefined || floor === 0
            ? []
            : [{ id: 'manifest_rps_over_floor', label: 'manifest GET by tag / node:http floor (same run)', unit: 'ratio', relais: rps / floor }];
        runs.push({ side, round, rows: [...json.table, ...extra] });
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const ids = runs[0]?.rows.map((r) => r.id) ?? [];
  const lines = [`A = ${sides.A}`, `B = ${sides.B}`, `${rounds} runs per side, alternated A B; load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`, ''];
  const header = ['figure', 'unit', 'A median', 'A min..max', 'B median', 'B min..max', 'B/A'];
  const table: string[][] = [];
  const summary: Record<string, { a?: number; b?: number; aAll: number[]; bAll: number[] }> = {};
  for (const id of ids) {
    const of = (side: 'A' | 'B'): number[] =>
      runs.filter((r) => r.side === side).flatMap((r) => r.rows.filter((x) => x.id === id && x.relais !== undefined).map((x) => x.relais ?? 0));
    const a = of('A');
    const b = of('B');
    const ma = median(a);
    const mb = median(b);
    const row = runs[0]?.rows.find((r) => r.id === id);
    summary[id] = { ...(ma === undefined ? {} : { a: ma }), ...(mb === undefined ? {} : { b: mb }), aAll: a, bAll: b };
    const span = (xs: number[]): string => (xs.length === 0 ? '-' : `${fmt(Math.min(...xs))}..${fmt(Math.max(...xs))}`);
    table.push([row?.label ?? id, row?.unit ?? '', fmt(ma), span(a), fmt(mb), span(b), ma === undefined || mb === undefined || ma === 0 ? '-' : (mb / ma).toFixed(2)]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] ?? '').length)));
  const render = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ');
  lines.push(render(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...table.map(render));
  process.stdout.write(`\n${lines.join('\n')}\n`);
  if (v.out !== undefined) await writeFile(v.out, `${JSON.stringify({ sides, rounds, pass, runs, summary }, null, 2)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`compare: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
