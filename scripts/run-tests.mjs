#!/usr/bin/env node
// Runs the compiled test files with node's own test runner.
// `node scripts/run-tests.mjs [unit|integration|faults|all] [filter...]`
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const [kind = 'all', ...filters] = process.argv.slice(2);
const root = 'dist/test';
const files = [];
const walk = (dir) => {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.test.js')) files.push(p);
  }
};
walk(root);
const selected = files
  .filter((f) => kind === 'all' || f.startsWith(join(root, kind)))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (selected.length === 0) {
  console.error(`no test files for ${kind} ${filters.join(' ')}`);
  process.exit(1);
}
const concurrency = process.env.RELAIS_TEST_CONCURRENCY ?? '2';
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...selected], { stdio: 'inherit' });
process.exit(r.status ?? 1);
