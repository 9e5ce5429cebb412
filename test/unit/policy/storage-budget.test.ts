// storage.maxSize held strictly: the pure shortfall (eviction/eviction-plan.ts) and the admission that evicts it
// before a blob is stored (cache/admission.ts), counting the downloads in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { budgetShortfall } from '../../../src/policy/storage-budget.js';
import { SpaceAdmission } from '../../../src/cache/admission.js';

const MiB = 1024 * 1024;

test('budgetShortfall: the cache, the downloads in flight and the new blob together against the budget', () => {
  assert.equal(budgetShortfall({ used: 60 * MiB, reserved: 0, size: 10 * MiB, maxSize: 100 * MiB }), 0);
  assert.equal(budgetShortfall({ used: 60 * MiB, reserved: 30 * MiB, size: 10 * MiB, maxSize: 100 * MiB }), 0, 'exactly full fits');
  assert.equal(budgetShortfall({ used: 60 * MiB, reserved: 36 * MiB, size: 10 * MiB, maxSize: 100 * MiB }), 6 * MiB, 'what is in flight counts');
  assert.equal(budgetShortfall({ used: 120 * MiB, reserved: 0, size: 1, maxSize: 100 * MiB }), 20 * MiB + 1, 'already over: all of it');
});

function admission(state: { used: number; reserved: number; evictable: number }, maxSize: number, calls: number[]): SpaceAdmission {
  return new SpaceAdmission({
    storage: { freeSpace: () => Promise.resolve(10_000 * MiB) },
    pending: () => 0,
    makeRoom: (bytes) => {
      calls.push(bytes);
      const freed = Math.min(bytes, state.evictable);
      state.evictable -= freed;
      state.used -= freed;
      return Promise.resolve(freed);
    },
    budget: { maxSize, usage: () => Promise.resolve(state.used), reserved: () => state.reserved },
  });
}

test('admission evicts the shortfall before the blob is stored, counting the other downloads in flight', async () => {
  const calls: number[] = [];
  const state = { used: 80 * MiB, reserved: 15 * MiB, evictable: 50 * MiB };
  const a = admission(state, 100 * MiB, calls);
  const out = await a.reserveInBudget('sha256:a', 10 * MiB);
  assert.deepEqual(calls, [5 * MiB], 'evicts exactly what the budget needs');
  assert.deepEqual(out, { shortBefore: 5 * MiB, shortAfter: 0 });
  assert.equal(state.used + state.reserved + 10 * MiB, 100 * MiB, 'then it fits exactly');
  await a.admit('sha256:b', 0);
  assert.equal(calls.length, 1, 'nothing to evict when it fits');
});

test('admission when what is left cannot be evicted (in use, pinned): admitted, the overshoot reported', async () => {
  const calls: number[] = [];
  const state = { used: 95 * MiB, reserved: 0, evictable: 2 * MiB };
  const out = await admission(state, 100 * MiB, calls).reserveInBudget('sha256:a', 10 * MiB);
  assert.deepEqual(out, { shortBefore: 5 * MiB, shortAfter: 3 * MiB });
  await admission(state, 100 * MiB, calls).admit('sha256:a', 10 * MiB);
});

test('no budget configured: nothing is evicted for it', async () => {
  let asked = 0;
  const a = new SpaceAdmission({
    storage: { freeSpace: () => Promise.resolve(10_000 * MiB) },
    pending: () => 0,
    makeRoom: () => {
      asked++;
      return Promise.resolve(0);
    },
  });
  assert.equal(await a.reserveInBudget('sha256:a', 10 * MiB), undefined);
  await a.admit('sha256:a', 10 * MiB);
  assert.equal(asked, 0);
});
