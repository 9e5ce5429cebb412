#!/usr/bin/env node
// `npm test`: build, lint, run every test; fails when any of them fails. The phases overlap where nothing
// depends on the other: tsc, eslint and the architecture lint start together, and the tests (which run the
// compiled files) start as soon as tsc is done, while the lints may still run. The lints' output is held
// and printed once the tests are done (or at once, if tsc failed); each phase's time goes to stderr at the end.
// Arguments are passed to scripts/run-tests.mjs (e.g. `npm test -- unit`).
import { spawn } from 'node:child_process';

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const t0 = performance.now();
const phases = [];

/** Runs a command; `hold` buffers its output (printed later), else it goes straight to ours. */
function phase(name, cmd, args, hold) {
  const started = performance.now();
  const child = spawn(cmd, args, { stdio: hold ? ['ignore', 'pipe', 'pipe'] : 'inherit' });
  let output = '';
  if (hold) {
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
  }
  const done = new Promise((resolve) => {
    child.on('error', (e) => resolve({ name, code: 1, output: `${output}${String(e)}\n` }));
    child.on('close', (code, signal) => resolve({ name, code: code ?? (signal ? 1 : 0), output }));
  }).then((r) => {
    const p = { ...r, seconds: (performance.now() - started) / 1000, startedAt: (started - t0) / 1000 };
    phases.push(p);
    return p;
  });
  return { child, done };
}

function finish(results) {
  for (const r of results) if (r.output) process.stdout.write(`\n--- ${r.name} ---\n${r.output}`);
  const failed = results.filter((r) => r.code !== 0);
  const lines = phases.map((p) => `  ${p.name.padEnd(9)} ${p.seconds.toFixed(1).padStart(6)} s (from ${p.startedAt.toFixed(1)} s)${p.code === 0 ? '' : '  FAILED'}`);
  process.stderr.write(`\nnpm test phases (wall ${((performance.now() - t0) / 1000).toFixed(1)} s):\n${lines.join('\n')}\n`);
  if (failed.length > 0) process.stderr.write(`failed: ${failed.map((r) => r.name).join(', ')}\n`);
  process.exit(failed.length > 0 ? 1 : 0);
}

const tsc = phase('tsc', npm, ['run', '--silent', 'build'], false);
const eslint = phase('eslint', npm, ['run', '--silent', 'lint'], true);
const arch = phase('lint:arch', npm, ['run', '--silent', 'lint:arch'], true);
const built = await tsc.done;
if (built.code !== 0) {
  // Nothing to test: stop the lints we started, report what there is.
  for (const p of [eslint, arch]) if (p.child.exitCode === null) p.child.kill('SIGTERM');
  finish([built, await eslint.done, await arch.done]);
}
const tests = await phase('tests', process.execPath, ['scripts/run-tests.mjs', ...process.argv.slice(2)], false).done;
finish([await eslint.done, await arch.done, tests]);
