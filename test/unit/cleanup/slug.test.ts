import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refSlug, branchName } from '../../../src/gitlab-slug.js';

// GitLab's own examples: spec/models/ci/build_spec.rb ('#ref_slug') and spec/lib/gitlab/utils_spec.rb
// ('.slugify'), and the definition in "Predefined CI/CD variables" (CI_COMMIT_REF_SLUG).
const gitlabExamples: [string, string][] = [
  ['master', 'master'],
  ['1-foo', '1-foo'],
  ['fix/1-foo', 'fix-1-foo'],
  ['fix-1-foo', 'fix-1-foo'],
  ['a'.repeat(63), 'a'.repeat(63)],
  ['a'.repeat(64), 'a'.repeat(63)],
  ['FOO', 'foo'],
  ['-' + 'a'.repeat(61) + '-', 'a'.repeat(61)],
  ['-' + 'a'.repeat(62) + '-', 'a'.repeat(62)],
  ['-' + 'a'.repeat(63) + '-', 'a'.repeat(62)],
  ['a'.repeat(62) + ' ', 'a'.repeat(62)],
  ['TEST', 'test'],
  ['project_with_underscores', 'project-with-underscores'],
  ['namespace/project', 'namespace-project'],
  ['a'.repeat(70), 'a'.repeat(63)],
  ['test_trailing_', 'test-trailing'],
];

for (const [ref, slug] of gitlabExamples) {
  void test(`refSlug(${JSON.stringify(ref.length > 20 ? `${ref.slice(0, 8)}…(${ref.length})` : ref)}) = GitLab's ${JSON.stringify(slug.length > 20 ? `…(${slug.length})` : slug)}`, () => {
    assert.equal(refSlug(ref), slug);
  });
}

void test('runs of separators are not collapsed, as in GitLab', () => {
  assert.equal(refSlug('feature//Foo__Bar'), 'feature--foo--bar');
  assert.equal(refSlug('release/1.2.x'), 'release-1-2-x');
});

void test('cut happens before the trailing dashes are stripped (63 chars, then strip)', () => {
  const ref = 'a'.repeat(62) + '/b';
  // 'a'*62 + '-' is cut at 63 and the trailing '-' removed: 62 chars, not 63.
  assert.equal(refSlug(ref), 'a'.repeat(62));
  assert.ok(Buffer.byteLength(refSlug('x'.repeat(200))) <= 63);
});

void test('non-ASCII: one dash per code point (Ruby works per character), never more than 63 bytes', () => {
  assert.equal(refSlug('feat/café'), 'feat-caf');
  assert.equal(refSlug('ÄÖÜ-fix'), 'fix');
  // An emoji is two UTF-16 code units but one character in Ruby: one dash.
  assert.equal(refSlug('a🚀b'), 'a-b');
  assert.ok(Buffer.byteLength(refSlug('é'.repeat(100))) <= 63);
});

void test('branchName strips refs/heads/', () => {
  assert.equal(branchName('refs/heads/feature/x'), 'feature/x');
  assert.equal(branchName('main'), 'main');
});
