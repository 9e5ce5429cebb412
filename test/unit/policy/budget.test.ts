// The pull budget: Docker Hub's rate-limit headers, the reserve, the rate and when it runs out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addSample, budgetView, parseRateLimit, pullsPerHour, PullBudgets, reservePulls, type BudgetSample } from '../../../src/policy/budget.js';

test('parses Docker Hub rate-limit headers', () => {
  assert.deepEqual(parseRateLimit('100;w=21600'), { count: 100, windowMs: 21_600_000 });
  assert.deepEqual(parseRateLimit(' 76 ; w=21600'), { count: 76, windowMs: 21_600_000 });
  assert.deepEqual(parseRateLimit('5'), { count: 5, windowMs: undefined });
  assert.deepEqual(parseRateLimit(['7;w=60', '8']), { count: 7, windowMs: 60_000 });
  assert.equal(parseRateLimit(undefined), undefined);
  assert.equal(parseRateLimit('many'), undefined);
});

test('the reserve: pulls, or a share of the announced limit', () => {
  assert.equal(reservePulls({ pulls: 20 }, 100), 20);
  assert.equal(reservePulls({ share: 0.1 }, 100), 10);
  assert.equal(reservePulls({ share: 0.1 }, 105), 11, 'rounded up: never less than asked');
  assert.equal(reservePulls({ share: 0.1 }, undefined), 0);
});

const s = (at: number, remaining: number): BudgetSample => ({ at, remaining, limit: 100, windowMs: 6 * 3600_000 });

test('rate: drops of remaining over the time spanned; rises (the window giving back) are not spending', () => {
  assert.equal(pullsPerHour([s(0, 50)]), undefined);
  assert.equal(pullsPerHour([s(0, 50), s(500, 49)]), undefined, 'less than a second');
  assert.equal(pullsPerHour([s(0, 50), s(1800_000, 40)]), 20);
  assert.equal(pullsPerHour([s(0, 50), s(900_000, 45), s(1200_000, 60), s(1800_000, 55)]), 20, '5 + 5 pulls in half an hour');
});

test('under the reserve at or below it; when it runs out at the current rate', () => {
  const samples = [s(0, 50), s(1800_000, 40)];
  const v = budgetView(samples, 1800_000, { pulls: 10 });
  assert.equal(v.known, true);
  assert.equal(v.underReserve, false);
  assert.equal(v.pullsPerHour, 20);
  assert.equal(v.exhaustsAt, 1800_000 + 2 * 3600_000, '40 pulls at 20 an hour');
  assert.equal(v.reserveAt, 1800_000 + 1.5 * 3600_000, '30 pulls to the reserve');
  const low = budgetView([...samples, s(1900_000, 10)], 1900_000, { pulls: 10 });
  assert.equal(low.underReserve, true);
  assert.equal(low.reserveAt, undefined);
  const back = budgetView([...samples, s(1900_000, 10), s(2000_000, 11)], 2000_000, { pulls: 10 });
  assert.equal(back.underReserve, false, 'above the reserve again: resumes');
});

test('no header yet, or the last one older than its window: unknown, never under the reserve', () => {
  assert.equal(budgetView([], 0, { pulls: 10 }).known, false);
  assert.equal(budgetView([], 0, { pulls: 10 }).underReserve, false);
  const old = budgetView([s(0, 0)], 6 * 3600_000 + 1, { pulls: 10 });
  assert.equal(old.known, false);
  assert.equal(old.underReserve, false, 'the window has reset since');
  assert.equal(budgetView([s(0, 0)], 6 * 3600_000, { pulls: 10 }).underReserve, true);
});

test('samples: the last hour, bounded', () => {
  let samples: BudgetSample[] = [];
  for (let i = 0; i < 2000; i++) samples = addSample(samples, s(i * 1000, 100));
  assert.ok(samples.length <= 512);
  assert.equal(samples[samples.length - 1]?.at, 1999_000);
  samples = addSample(samples, s(1999_000 + 3600_001, 1));
  assert.equal(samples.length, 1, 'older than an hour: dropped');
});

test('PullBudgets: fed by response headers, per upstream, with an injected clock', () => {
  let now = 0;
  const b = new PullBudgets((u) => (u === 'docker.io' ? { share: 0.1 } : { pulls: 0 }), () => now);
  assert.equal(b.maySpend('docker.io'), true, 'nothing known yet');
  assert.equal(b.observe('docker.io', { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '50;w=21600' }), undefined);
  b.observe('ghcr.io', { 'content-type': 'x' });
  assert.equal(b.view('docker.io').remaining, 50);
  assert.equal(b.view('ghcr.io').known, false, 'no rate-limit header');
  now = 60_000;
  assert.equal(b.observe('docker.io', { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '10;w=21600' }), 'under', 'the answer that crosses the reserve says so');
  assert.equal(b.observe('docker.io', { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '9;w=21600' }), undefined, 'once');
  assert.equal(b.maySpend('docker.io'), false, '10 left of a 10% reserve');
  assert.equal(b.anyUnderReserve(), 'docker.io');
  assert.equal(b.view('docker.io').pullsPerHour, 2460);
  assert.equal(b.observe('docker.io', { 'ratelimit-remaining': '30;w=21600' }), 'above');
  now = 60_000 + 21_600_001;
  assert.equal(b.maySpend('docker.io'), true, 'a window later, the budget has reset');
});
