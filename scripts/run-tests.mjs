#!/usr/bin/env node
// Runs the compiled test files with node's own test runner (run() from node:test, spec output).
// `node scripts/run-tests.mjs [unit|integration|faults|all] [filter...] [--update-durations]`
//
// Files start longest first (durations measured on a full run, in scripts/test-durations.json; files not
// listed there start before all others, by name), so that no long file starts last while the other slots
// idle. (`node --test` sorts its files by name, hence run() here.) RELAIS_TEST_ORDER=name starts them by
// name instead.
// RELAIS_TEST_CONCURRENCY: how many files run at once (default 3).
// RELAIS_TEST_TIMINGS=<file>: write how long each file took (JSON: file, ms, start and end within the run)
// and print a summary to stderr after the run; with --update-durations, scripts/test-durations.json is
// rewritten from it.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

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
const concurrency = Number(process.env.RELAIS_TEST_CONCURRENCY ?? '3');
const timingsFile = process.env.RELAIS_TEST_TIMINGS;

const t0 = Date.now();
const stream = run({ files: selected.map((f) => resolve(f)), concurrency });
// Any failure (a test, a hook, a file whose process died) fails the run.
stream.on('test:fail', () => {
  process.exitCode = 1;
});
// Node 20 reports each file as a top-level test named after its absolute path: dequeued when its process
// starts, complete (with its duration) when it ends, both as they happen.
const timings = new Map();
const timing = (file) => {
  const name = relative(process.cwd(), file);
  let e = timings.get(name);
  if (!e) timings.set(name, (e = { file: name, ms: 0, startMs: undefined, endMs: undefined, ok: true }));
  return e;
};
const isFile = (d) => d.nesting === 0 && typeof d.file === 'string' && d.name === d.file;
stream.on('test:dequeue', (d) => {
  if (isFile(d)) timing(d.file).startMs ??= Date.now() - t0;
});
stream.on('test:complete', (d) => {
  if (!isFile(d)) return;
  const e = timing(d.file);
  e.ms = Math.round(d.details?.duration_ms ?? 0);
  e.endMs = Date.now() - t0;
  e.ok = d.details?.passed !== false;
});
const out = stream.compose(spec);
out.pipe(process.stdout);
out.once('end', () => {
  if (!timingsFile) return;
  const list = [...timings.values()].sort((a, b) => b.ms - a.ms || (a.file < b.file ? -1 : 1));
  const wallMs = Date.now() - t0;
  const sumMs = list.reduce((s, e) => s + e.ms, 0);
  writeFileSync(timingsFile, `${JSON.stringify({ concurrency, wallMs, sumMs, files: list }, null, 1)}\n`);
  const top = list.slice(0, 15).map((e) => `  ${(e.ms / 1000).toFixed(1).padStart(6)} s  ${e.file}${e.ok ? '' : '  (failed)'}`);
  console.error(
    `\ntest files: ${list.length}, concurrency ${concurrency}, wall ${(wallMs / 1000).toFixed(1)} s, sum of file times ${(sumMs / 1000).toFixed(1)} s ` +
      `(${((sumMs / (wallMs * concurrency)) * 100).toFixed(0)}% of ${concurrency} slots); longest:\n${top.join('\n')}\n(all in ${timingsFile})`,
  );
  if (updateDurations) {
    const next = { ...known };
    for (const e of list) next[e.file] = Math.round(e.ms / 100) / 10;
    const sorted = Object.fromEntries(Object.entries(next).filter(([f]) => existsSync(f)).sort(([a], [b]) => (a < b ? -1 : 1)));
    writeFileSync(DURATIONS, `${JSON.stringify(sorted, null, 1)}\n`);
    console.error(`updated ${DURATIONS}`);
  }
});
