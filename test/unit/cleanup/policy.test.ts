import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildPolicy, parsePolicyYaml, flagRules } from '../../../src/retention/retention-policy.js';
import { RelaisError } from '../../../src/errors.js';

function errorOf(f: () => unknown): RelaisError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof RelaisError, `expected a RelaisError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected an error');
}

void test('a full policy parses and compiles, rules ordered by priority then position', () => {
  const p = buildPolicy(
    parsePolicyYaml(`
version: 1
defaultBranch: main
protect: ['^stable$']
families: ['^review-(?<family>.+)$']
undated: rules
limits: {maxDeleteShare: 0.9, minKeep: 2}
rules:
  - {name: gone, action: delete, branchGone: true, priority: 2}
  - {action: keep, newest: 3}
  - {name: first, action: keep, tags: ['^v'], priority: 1}
  - {action: delete, olderThan: 30d, kinds: [buildkit-cache]}
`),
    {},
  );
  assert.deepEqual(
    p.rules.map((r) => r.name),
    ['first', 'gone', 'keep newest 3/family', 'delete older than 30d buildkit-cache'],
  );
  assert.equal(p.maxDeleteShare, 0.9);
  assert.equal(p.minKeep, 2);
  assert.equal(p.undated, 'rules');
  assert.equal(p.rules[3]?.olderThanMs, 30 * 24 * 3600 * 1000);
  assert.deepEqual(p.rules[2]?.count, { mode: 'newest', n: 3, per: 'family' });
  assert.ok(p.protect[0]?.test('stable'));
});

void test('errors name the field that is wrong', () => {
  const e1 = errorOf(() => parsePolicyYaml('rules:\n  - {action: delete}\n  - {action: delete, olderThan: 30 dayz}\n', 'p.yaml'));
  assert.equal(e1.code, 'CONFIG_INVALID');
  assert.match(e1.message, /^p\.yaml: invalid policy: rules\[1\]\.olderThan: invalid duration "30 dayz"/);
  const e2 = errorOf(() => parsePolicyYaml('rules:\n  - {action: remove}\n'));
  assert.match(e2.message, /rules\[0\]\.action/);
  const e3 = errorOf(() => parsePolicyYaml('limits: {maxDeleteShare: 2}\n'));
  assert.match(e3.message, /limits\.maxDeleteShare/);
  const e4 = errorOf(() => parsePolicyYaml('rules:\n  - {action: keep, tags: ["(unclosed"]}\n'));
  assert.match(e4.message, /rules\[0\]\.tags\[0\]: invalid regular expression/);
  const e5 = errorOf(() => parsePolicyYaml('rulez: []\n'));
  assert.match(e5.message, /rulez/);
  const e6 = errorOf(() => parsePolicyYaml('rules:\n  - {action: delete, olderThan: "30"}\n'));
  assert.match(e6.message, /rules\[0\]\.olderThan: "30" has no unit/);
  const e7 = errorOf(() => parsePolicyYaml('families: ["^x-(.+)$"]\n'));
  assert.match(e7.message, /families\[0\]: needs a named group/);
  const e8 = errorOf(() => parsePolicyYaml('rules:\n  - {action: keep, newest: 2, exceptNewest: 3}\n'));
  assert.match(e8.message, /rules\[0\]\.exceptNewest: use either newest or exceptNewest/);
  const e9 = errorOf(() => parsePolicyYaml('rules: [\n'));
  assert.match(e9.message, /not valid YAML/);
});

void test('flag shorthands: GitLab semantics for keep-last + older-than, branch rule first', () => {
  assert.deepEqual(
    flagRules({ keepLast: 5, olderThan: '30d', liveBranches: 'git:origin' }).map((r) => r.name),
    ['branch gone', 'keep last 5', 'older than 30d'],
  );
  assert.deepEqual(flagRules({ keepLast: 2 }).map((r) => `${r.name}:${r.action}`), ['keep last 2:keep', 'beyond last 2:delete']);
  assert.match(errorOf(() => buildPolicy(undefined, { olderThan: 'soon' })).message, /olderThan: invalid duration "soon"/);
  assert.match(errorOf(() => buildPolicy(undefined, { keepLast: 0 })).message, /--keep-last/);
  assert.match(errorOf(() => buildPolicy(undefined, { maxDeleteShare: 1.5 })).message, /--max-delete-share/);
});

void test('flags come after the file: file rules win, protections add up, flag limits override', () => {
  const p = buildPolicy(parsePolicyYaml("protect: ['^a$']\nlimits: {maxDeleteShare: 0.3}\nrules:\n  - {name: mine, action: keep, tags: ['^x']}\n"), {
    keepLast: 1,
    protect: ['^b$'],
    maxDeleteShare: 0.7,
  });
  assert.deepEqual(p.rules.map((r) => r.name), ['mine', 'keep last 1', 'beyond last 1']);
  assert.deepEqual(p.protect.map((r) => r.source), ['^a$', '^b$']);
  assert.equal(p.maxDeleteShare, 0.7);
  assert.equal(p.defaultAction, 'keep');
  assert.equal(p.undated, 'keep');
});
