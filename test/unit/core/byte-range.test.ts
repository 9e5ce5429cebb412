// The one Range parser (src/storage/byte-range.ts), used by the blob handler (clients), the cluster's spool
// endpoint (other replicas, possibly before the size is known) and the download's resume (Content-Range).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { contentRange, MAX_RANGE_HEADER, parseByteRange, parseContentRange, rangeHeader } from '../../../src/storage/byte-range.js';

test('Range with a known size: one satisfiable range, cut to the blob; anything else invalid', () => {
  assert.deepEqual(parseByteRange('bytes=0-9', 100), { start: 0, end: 9 });
  assert.deepEqual(parseByteRange('bytes=90-', 100), { start: 90, end: 99 });
  assert.deepEqual(parseByteRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.deepEqual(parseByteRange('bytes=0-999', 100), { start: 0, end: 99 });
  assert.deepEqual(parseByteRange('bytes=0-5,3-9', 100), { start: 0, end: 9 }, 'overlapping ranges are combined');
  for (const bad of ['bytes=100-', 'bytes=9-0', 'bytes=0-1,5-6', 'items=0-1', 'bytes=abc', '', 'bytes=', `bytes=${'0-1,'.repeat(100)}0-1`]) {
    assert.equal(parseByteRange(bad, 100), 'invalid', bad);
  }
  assert.equal(parseByteRange(`bytes=0-${'9'.repeat(MAX_RANGE_HEADER)}`, 100), 'invalid', 'over-long headers are not read');
});

test('Range while the size is unknown: only a closed range', () => {
  assert.deepEqual(parseByteRange('bytes=0-9', undefined), { start: 0, end: 9 });
  assert.deepEqual(parseByteRange(' bytes=5-5 ', undefined), { start: 5, end: 5 });
  for (const bad of ['bytes=5-', 'bytes=-5', 'bytes=9-0', 'bytes=0-1,2-3', 'bytes=99999999999999999999-99999999999999999999']) {
    assert.equal(parseByteRange(bad, undefined), 'invalid', bad);
  }
});

test('Range and Content-Range headers are written the way they are read', () => {
  assert.equal(rangeHeader({ start: 3, end: 9 }), 'bytes=3-9');
  assert.equal(rangeHeader({ start: 1024 }), 'bytes=1024-');
  assert.deepEqual(parseByteRange(rangeHeader({ start: 3, end: 9 }), undefined), { start: 3, end: 9 });
  assert.equal(contentRange({ start: 0, end: 9 }, 100), 'bytes 0-9/100');
  assert.equal(contentRange({ start: 0, end: 9 }, undefined), 'bytes 0-9/*');
  assert.deepEqual(parseContentRange(contentRange({ start: 10, end: 99 }, 100)), { start: 10, end: 99, size: 100 });
  assert.deepEqual(parseContentRange('bytes 10-99/*'), { start: 10, end: 99, size: undefined });
  for (const bad of [undefined, '', 'bytes */100', 'bytes 10-9/100', 'bytes 0-100/100', 'items 0-1/2', 'bytes=0-1']) {
    assert.equal(parseContentRange(bad), undefined, String(bad));
  }
});
