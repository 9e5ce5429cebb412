// Refresh-ahead policy: which tags are hot, when one is due, which start, and the bounds on bytes and room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admitBytes, effectiveLead, fitsWithoutEviction, HOUR, isForgettable, isHot, pickRefreshes, pruneSpends, recordPull, refreshDue, spentLastHour } from '../../../src/policy/refresh.js';

const rule = { minPulls: 3, window: 60_000 };

test('a tag is hot with minPulls pulls within the window, and only then', () => {
  let t: number[] = [];
  t = recordPull(t, 1_000, rule);
  t = recordPull(t, 2_000, rule);
  assert.equal(isHot(t, 2_000, rule), false, 'two pulls of three');
  t = recordPull(t, 3_000, rule);
  assert.equal(isHot(t, 3_000, rule), true);
  assert.equal(isHot(t, 61_000, rule), true, 'the oldest of the three is exactly one window old');
  assert.equal(isHot(t, 61_001, rule), false, 'the oldest of the three fell out of the window');
  t = recordPull(t, 61_001, rule);
  assert.equal(isHot(t, 61_001, rule), true, 'a new pull: the last three are within the window again');
});

test('pull times are bounded by minPulls, oldest dropped', () => {
  let t: number[] = [];
  for (let i = 0; i < 100; i++) t = recordPull(t, i, rule);
  assert.deepEqual(t, [97, 98, 99]);
});

test('a tag not pulled within the window can be forgotten', () => {
  assert.equal(isForgettable([], 0, rule), true);
  assert.equal(isForgettable([1_000], 61_000, rule), false);
  assert.equal(isForgettable([1_000], 61_001, rule), true);
});

test('due within the lead before the TTL ends; the lead is at most half the TTL', () => {
  const ttl = 300_000;
  assert.equal(refreshDue(0, 269_999, ttl, 30_000), false);
  assert.equal(refreshDue(0, 270_000, ttl, 30_000), true);
  assert.equal(refreshDue(0, 400_000, ttl, 30_000), true, 'past the TTL: still due');
  assert.equal(effectiveLead(ttl, 10 * ttl), 150_000);
  assert.equal(refreshDue(0, 149_999, ttl, 10 * ttl), false, 'a lead longer than the TTL does not refresh a tag just confirmed');
  assert.equal(refreshDue(0, 150_000, ttl, 10 * ttl), true);
});

test('the most pulled due tags start first, within the concurrency left', () => {
  const c = [
    { key: 'a', pulls: 3, checkedAt: 10 },
    { key: 'b', pulls: 9, checkedAt: 20 },
    { key: 'c', pulls: 3, checkedAt: 5 },
    { key: 'd', pulls: 9, checkedAt: 1 },
  ];
  assert.deepEqual(pickRefreshes(c, new Set(), 3), ['d', 'b', 'c']);
  assert.deepEqual(pickRefreshes(c, new Set(['d']), 3), ['b', 'c'], 'one slot taken, and d is running already');
  assert.deepEqual(pickRefreshes(c, new Set(['x', 'y']), 2), []);
});

test('bytes per sliding hour', () => {
  const spends = [
    { at: 0, bytes: 100 },
    { at: HOUR / 2, bytes: 50 },
  ];
  assert.equal(spentLastHour(spends, HOUR / 2), 150);
  assert.equal(spentLastHour(spends, HOUR), 50, 'the first spend is an hour old');
  assert.deepEqual(pruneSpends(spends, HOUR), [{ at: HOUR / 2, bytes: 50 }]);
  assert.equal(admitBytes(150, 50, 200), true);
  assert.equal(admitBytes(150, 51, 200), false);
  assert.equal(admitBytes(0, 1, 0), false, 'maxBytesPerHour 0: no blobs');
  assert.equal(admitBytes(1e15, 1, undefined), true);
});

test('never over the cache budget: a refresh that would need eviction is skipped', () => {
  assert.equal(fitsWithoutEviction(900, 100, 1000), true);
  assert.equal(fitsWithoutEviction(901, 100, 1000), false);
  assert.equal(fitsWithoutEviction(1e12, 1e12, undefined), true, 'no storage.maxSize: nothing is ever evicted for room');
});
