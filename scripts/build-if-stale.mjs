#!/usr/bin/env node
// `npm start` runs this first: compile TypeScript only when a source is newer than the compiled entry
// point (dist/src/cli/main.js), so starting relais from a current build costs no recompile.
// `node scripts/build-if-stale.mjs --check` prints whether a build is needed and exits 1 if so.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const ENTRY = 'dist/src/cli/main.js';
const SOURCES = ['src', 'tsconfig.json', 'package.json'];

function newest(path) {
  const s = statSync(path);
  if (!s.isDirectory()) return s.mtimeMs;
  let max = s.mtimeMs;
  for (const e of readdirSync(path)) max = Math.max(max, newest(join(path, e)));
  return max;
}

const built = existsSync(ENTRY) ? statSync(ENTRY).mtimeMs : -1;
const source = Math.max(...SOURCES.filter((p) => existsSync(p)).map(newest));
const stale = built < source;
if (process.argv.includes('--check')) {
  process.stdout.write(stale ? `stale: ${built < 0 ? `${ENTRY} is missing` : 'sources changed since the last build'}\n` : 'current\n');
  process.exit(stale ? 1 : 0);
}
if (stale) {
  process.stderr.write('relais: compiling TypeScript (sources changed since the last build)\n');
  const r = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
