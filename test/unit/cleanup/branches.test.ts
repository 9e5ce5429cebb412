import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBranchList } from '../../../src/retention/branches.js';
import { exactTagsRegex } from '../../../src/products/cleanup/gitlab-backend.js';
import { formatAge } from '../../../src/retention/plan-render.js';

void test('branch lists: plain names, git ls-remote output, comments; slugs as GitLab computes them', () => {
  const sha = 'a'.repeat(40);
  const list = parseBranchList(`# live
main
Feature/Login_v2

${sha}\trefs/heads/release/1.2
${'b'.repeat(40)}\trefs/tags/v1.0.0
refs/heads/fix/typo
main
`);
  assert.deepEqual(list, [
    { name: 'main', slug: 'main' },
    { name: 'Feature/Login_v2', slug: 'feature-login-v2' },
    { name: 'release/1.2', slug: 'release-1-2', commit: sha },
    { name: 'fix/typo', slug: 'fix-typo' },
  ]);
});

void test('GitLab bulk regex matches exactly the given tags', () => {
  const re = new RegExp(exactTagsRegex(['v1.0', 'feature-x', 'a_b']));
  for (const t of ['v1.0', 'feature-x', 'a_b']) assert.ok(re.test(t), t);
  for (const t of ['v1x0', 'feature-xy', 'xfeature-x', 'a_', 'v1.0.1']) assert.ok(!re.test(t), t);
});

void test('ages in the plan table', () => {
  const now = new Date('2026-06-01T00:00:00Z');
  assert.equal(formatAge('2026-05-31T23:30:00Z', 'ok', now), '30m');
  assert.equal(formatAge('2026-05-31T00:00:00Z', 'ok', now), '24h');
  assert.equal(formatAge('2026-05-01T00:00:00Z', 'ok', now), '31d');
  assert.equal(formatAge(null, 'epoch', now), '? (epoch)');
  assert.equal(formatAge(null, 'not-applicable', now), '?');
});
