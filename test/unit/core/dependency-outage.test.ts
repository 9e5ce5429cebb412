// What counts as an outage of PostgreSQL or S3 (src/index/outage.ts, src/storage/outage.ts), and the
// boundary wrapper that turns exactly those failures into the table's 503 with Retry-After.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OUTAGE_RETRY_AFTER_S, RelaisError } from '../../../src/errors.js';
import { guardPostgresOutages, isPostgresDown } from '../../../src/index/outage.js';
import type { CacheIndex } from '../../../src/index/cache-index.js';
import { StorageNotFound } from '../../../src/storage/driver.js';
import { isS3Down } from '../../../src/storage/outage.js';

const withCode = (code: string, message = code): Error => Object.assign(new Error(message), { code });

test('PostgreSQL: refused/reset connections, pool timeouts, dead connections and shutdown SQLSTATEs are outages; query errors are not', () => {
  assert.ok(isPostgresDown(withCode('ECONNREFUSED')));
  assert.ok(isPostgresDown(new AggregateError([withCode('ECONNREFUSED'), withCode('ECONNREFUSED')], 'connect')));
  assert.ok(isPostgresDown(new Error('timeout exceeded when trying to connect')));
  assert.ok(isPostgresDown(new Error('Connection terminated unexpectedly')));
  assert.ok(isPostgresDown(withCode('57P01', 'terminating connection due to administrator command')));
  assert.ok(isPostgresDown(withCode('08006')));
  assert.ok(isPostgresDown(new Error('wrapped', { cause: withCode('ECONNRESET') })));
  assert.ok(!isPostgresDown(withCode('23505', 'duplicate key value violates unique constraint')));
  assert.ok(!isPostgresDown(withCode('42P01', 'relation "x" does not exist')));
  assert.ok(!isPostgresDown(new Error('something else')));
});

test('S3: network failures, timeouts and 5xx are outages; a missing object or refused credentials are not', () => {
  assert.ok(isS3Down(withCode('ECONNREFUSED')));
  assert.ok(isS3Down(Object.assign(new Error('x'), { name: 'TimeoutError' })));
  assert.ok(isS3Down(Object.assign(new Error('x'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 } })));
  assert.ok(isS3Down(Object.assign(new Error('x'), { name: 'Unknown', $metadata: { httpStatusCode: 500 } })));
  assert.ok(!isS3Down(new StorageNotFound('blobs/x')));
  assert.ok(!isS3Down(Object.assign(new Error('x'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } })));
  assert.ok(!isS3Down(Object.assign(new Error('x'), { name: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } })));
});

test('the guarded index answers an outage as 503 UNAVAILABLE with Retry-After, and passes everything else through', async () => {
  const down = withCode('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432');
  const other = withCode('23505');
  const fake = {
    getContent: () => Promise.reject(down),
    getTag: () => Promise.reject(other),
    touch: () => undefined,
    count: 3,
  };
  const guarded = guardPostgresOutages(fake as unknown as CacheIndex) as unknown as typeof fake;
  await assert.rejects(guarded.getContent(), (e: unknown) => {
    assert.ok(e instanceof RelaisError);
    assert.equal(e.status, 503);
    assert.equal(e.code, 'UNAVAILABLE');
    assert.deepEqual(e.headers, { 'retry-after': String(OUTAGE_RETRY_AFTER_S) });
    assert.match(e.message, /cache index \(PostgreSQL\) is unavailable \(ECONNREFUSED/);
    assert.ok(e.hint !== undefined);
    assert.equal(e.cause, down);
    return true;
  });
  await assert.rejects(guarded.getTag(), (e: unknown) => e === other);
  assert.equal(guarded.touch(), undefined);
  assert.equal(guarded.count, 3);
});
