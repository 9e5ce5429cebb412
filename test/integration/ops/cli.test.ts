// The operations commands as users meet them: every flag in --help, mistakes answered with a message and a
// hint (never a stack trace) and a non-zero exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { relaisCli } from './helpers.js';

test('--help of gc, ls, stats and prefetch documents every flag', async () => {
  const flags: Record<string, string[]> = {
    gc: ['--dry-run', '--grace', '--json', '--config', '--data'],
    ls: ['--upstream', '--json', '--config', '--data'],
    stats: ['--json', '--config', '--data'],
    prefetch: ['--platform', '--all-platforms', '--server', '--config', '--data', '--upstream', '--concurrency', '--json', '--gitlab-ci', '--dockerfile', '--build-arg', '--variable'],
  };
  const top = await relaisCli(['--help']);
  for (const [cmd, list] of Object.entries(flags)) {
    assert.match(top.stdout, new RegExp(`^  ${cmd} `, 'm'), `relais --help lists ${cmd}`);
    const r = await relaisCli([cmd, '--help']);
    assert.equal(r.code, 0);
    for (const f of list) assert.ok(r.stdout.includes(f), `${cmd} --help: ${f}`);
  }
});

test('mistakes: a message, a hint where one helps, no stack trace, exit 1', async () => {
  const cases: [string[], RegExp][] = [
    [['prefetch', '--platform', 'amd64', 'alpine'], /expected os\/arch/],
    [['prefetch', '--concurrency', '0', 'alpine'], /at least 1/],
    [['prefetch'], /nothing to prefetch/],
    [['gc', '--grace', 'soon', '--data', '/nonexistent-relais-dir'], /no relais cache in \/nonexistent-relais-dir|--grace/],
    [['stats', '--data', '/nonexistent-relais-dir'], /no relais cache in \/nonexistent-relais-dir/],
  ];
  for (const [args, re] of cases) {
    const r = await relaisCli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at .*\.js:\d+/, `${args.join(' ')}: no stack trace`);
  }
  const server = await relaisCli(['prefetch', '--server', 'http://127.0.0.1:9', 'alpine:3.20']);
  assert.equal(server.code, 1);
  assert.match(server.stdout, /FAILED\s+alpine:3\.20: .*ECONNREFUSED/);
});
