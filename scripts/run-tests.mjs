#!/usr/bin/env node
// Runs the compiled test files with node's own test runner.
// `node scripts/run-tests.mjs [unit|integration|faults|all] [filter...]`
//
// Files start longest first (durations measured on a full run, in scripts/test-durations.json; files not
// listed there start before all others, by name), so that no long file starts last while the other slots
// idle. RELAIS_TEST_ORDER=name starts them by name instead.
// RELAIS_TEST_CONCURRENCY: how many files run at once (default 2).
// RELAIS_TEST_TIMINGS=<file>: also write how long each file took (JSON, scripts/timing-reporter.mjs) and
// print a summary to stderr after the run; `--update-durations` with it rewrites scripts/test-durations.json.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const updateDurations = args.includes('--update-durations');
const [kind = 'all', ...filters] = args.filter((a) => a !== '--update-durations');
const root = 'dist/test';
const DURATIONS = 'scripts/test-durations.json';
const files = [];
const walk = (dir) => {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.test.js')) files.push(p);
  }
};
walk(root);
const known = existsSync(DURATIONS) ? JSON.parse(readFileSync(DURATIONS, 'utf8')) : {};
const seconds = (f) => known[f] ?? Infinity;
const byName = process.env.RELAIS_TEST_ORDER === 'name';
const selected = files
  .filter((f) => kind === 'all' || f.startsWith(join(root, kind)))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort((a, b) => (byName ? 0 : seconds(b) - seconds(a)) || (a < b ? -1 : a > b ? 1 : 0));
if (selected.length === 0) {
  console.error(`no test files for ${kind} ${filters.join(' ')}`);
  process.exit(1);
}
const concurrency = process.env.RELAIS_TEST_CONCURRENCY ?? '2';
const timings = process.env.RELAIS_TEST_TIMINGS;
const reporters = timings
  ? ['--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=./scripts/timing-reporter.mjs', `--test-reporter-destination=${timings}`]
  : ['--test-reporter=spec'];
const started = Date.now();
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...reporters, ...selected], { stdio: 'inherit' });
if (timings && existsSync(timings)) {
  const report = JSON.parse(readFileSync(timings, 'utf8'));
  const wall = (Date.now() - started) / 1000;
  const sum = report.sumMs / 1000;
  const lines = report.files.slice(0, 15).map((e) => `  ${(e.ms / 1000).toFixed(1).padStart(6)} s  ${e.file}${e.ok ? '' : '  (failed)'}`);
  console.error(
    `\ntest files: ${report.files.length}, concurrency ${concurrency}, wall ${wall.toFixed(1)} s, sum of file times ${sum.toFixed(1)} s ` +
      `(${((sum / (wall * Number(concurrency))) * 100).toFixed(0)}% of ${concurrency} slots); longest:\n${lines.join('\n')}\n(all in ${timings})`,
  );
  if (updateDurations) {
    const next = { ...known };
    for (const e of report.files) next[e.file] = Math.round(e.ms / 100) / 10;
    const sorted = Object.fromEntries(Object.entries(next).filter(([f]) => existsSync(f)).sort(([a], [b]) => (a < b ? -1 : 1)));
    writeFileSync(DURATIONS, `${JSON.stringify(sorted, null, 1)}\n`);
    console.error(`updated ${DURATIONS}`);
  }
}
process.exit(r.status ?? 1);
