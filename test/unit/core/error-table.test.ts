// The one error table (src/errors.ts): every error relais raises is a row there, with its code, status,
// message template and hint. This test fails when a module builds a RelaisError of its own (an ad-hoc
// code or status), and when a row breaks the table's rules: upstream failures are 502/503/504, never a
// bare 500, and every failure at 500 and above tells the operator what to do (a hint).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { errors, RelaisError, upstreamAnswered, type OciErrorCode } from '../../../src/errors.js';

const SRC = join(process.cwd(), 'src');

/**
 * Modules another branch is rewriting at the time the table was introduced: their call sites are converted
 * after the merge (the rows they need are in the table already). The list may only shrink: a module listed
 * here that no longer builds its own errors fails the test, so its entry is removed with the conversion.
 */
const NOT_YET_CONVERTED: ReadonlyMap<string, string> = new Map<string, string>([]);

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** `new RelaisError(`, also split over lines or through an alias of the class. */
const AD_HOC = /new\s+RelaisError\s*\(|new\s+\(\s*RelaisError\s*\)|=\s*RelaisError\s*;/;

test('no module outside src/errors.ts builds a RelaisError of its own', () => {
  const files = sources(SRC).map((f) => relative(process.cwd(), f).split('\\').join('/'));
  assert.ok(files.length > 50, `found the sources (${files.length} files under ${SRC})`);
  const offenders: string[] = [];
  for (const f of files) {
    if (f === 'src/errors.ts') continue;
    const text = readFileSync(f, 'utf8');
    const adHoc = AD_HOC.test(text);
    if (adHoc && !NOT_YET_CONVERTED.has(f)) offenders.push(f);
    if (!adHoc && NOT_YET_CONVERTED.has(f)) offenders.push(`${f} (converted: remove it from NOT_YET_CONVERTED)`);
  }
  assert.deepEqual(offenders, [], 'add a row to the table in src/errors.ts and call errors.NAME(...) instead');
});

test('the check itself sees an ad-hoc error', () => {
  assert.ok(AD_HOC.test("throw new RelaisError('UPSTREAM_ERROR', 'x', { status: 500 });"));
  assert.ok(AD_HOC.test('throw new RelaisError(\n  code,'));
  assert.ok(!AD_HOC.test('if (e instanceof RelaisError) throw errors.upstreamFailed(u, c);'));
});

const UPSTREAM_CODES: ReadonlySet<OciErrorCode> = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'UPSTREAM_ERROR', 'UPSTREAM_DIGEST_MISMATCH', 'TOOMANYREQUESTS']);

test('table rules: upstream failures are 502/503/504; failures at 500+ carry a hint; statuses are HTTP errors', () => {
  const rows = Object.entries(errors);
  assert.ok(rows.length > 80, `${rows.length} rows`);
  for (const [name, row] of rows) {
    assert.ok(row.status >= 400 && row.status <= 599, `${name}: status ${row.status}`);
    if (UPSTREAM_CODES.has(row.code)) assert.ok([502, 503, 504].includes(row.status), `${name}: ${row.code} must be 502/503/504, is ${row.status}`);
    if (row.status >= 500) assert.ok(row.hinted, `${name}: a ${row.status} needs a hint`);
  }
});

test('a row builds the error it declares: code, status, message, hint, detail, headers, cause', () => {
  const cause = new Error('ECONNREFUSED');
  const e = errors.upstreamUnreachable.with({ cause }, 'docker.io', 'ECONNREFUSED');
  assert.ok(e instanceof RelaisError);
  assert.equal(e.code, 'UPSTREAM_UNAVAILABLE');
  assert.equal(e.status, 503);
  assert.equal(e.message, 'upstream docker.io is unreachable (ECONNREFUSED)');
  assert.match(e.hint ?? '', /reachable/);
  assert.equal(e.cause, cause);

  const open = errors.upstreamCircuitOpen('ghcr.io', 2500);
  assert.equal(open.status, 503);
  assert.equal(open.message, 'upstream ghcr.io is failing; circuit open, next try in 3s');
  assert.deepEqual(open.headers, { 'retry-after': '3' });
  assert.match(open.hint ?? '', /upstreams\.ghcr\.io\.circuitBreaker/);

  const range = errors.rangeInvalid('bytes=9-', 5);
  assert.equal(range.status, 416);
  assert.deepEqual(range.headers, { 'content-range': 'bytes */5' });
  assert.equal(range.hint, undefined, 'client mistakes need no hint');

  const unknown = errors.nameUnknown('library/x', 'unknown to upstream docker.io');
  assert.deepEqual(unknown.detail, { name: 'library/x' });
  assert.equal(unknown.hint, undefined);
  assert.equal(errors.nameUnknown('a', 'b', 'do this').hint, 'do this');
  assert.deepEqual(errors.digestInvalid('sha256:zz', 'bad hex').detail, { digest: 'sha256:zz' });
  assert.equal(errors.internal('boom', cause).cause, cause);
  assert.equal(errors.ciDockerFailed('push', 1, true).hint, 'check CI_REGISTRY and CI_JOB_TOKEN');
  assert.equal(errors.ciDockerFailed('push', 1, false).hint, "docker's output above says why");
});

test('upstreamAnswered: 503 and 504 pass through, any other status is a 502; Retry-After is kept', () => {
  const cases: [number, OciErrorCode, number][] = [
    [500, 'UPSTREAM_ERROR', 502],
    [502, 'UPSTREAM_ERROR', 502],
    [503, 'UPSTREAM_UNAVAILABLE', 503],
    [504, 'UPSTREAM_ERROR', 504],
    [418, 'UPSTREAM_ERROR', 502],
  ];
  for (const [status, code, answer] of cases) {
    const e = upstreamAnswered('quay.io', status, { 'retry-after': '7' });
    assert.equal(e.code, code, String(status));
    assert.equal(e.status, answer, String(status));
    assert.equal(e.message, `upstream quay.io answered ${status}`);
    assert.deepEqual(e.headers, { 'retry-after': '7' });
    assert.ok(e.hint !== undefined);
  }
  assert.deepEqual(upstreamAnswered('quay.io', 500).headers, {});
});
