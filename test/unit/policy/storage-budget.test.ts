// storage.maxSize: the pure shortfall, the ledger of what the index does not count (src/policy/storage-budget.ts),
// and the admission that evicts the shortfall and reserves the room before a blob is stored (src/cache/admission.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { budgetShortfall, StorageBudgetLedger, type Reservation } from '../../../src/policy/storage-budget.js';
import { SpaceAdmission } from '../../../src/cache/admission.js';

const MiB = 1024 * 1024;

test('budgetShortfall: the cache, the downloads in flight and the new blob together against the budget', () => {
  assert.equal(budgetShortfall({ used: 60 * MiB, reserved: 0, size: 10 * MiB, maxSize: 100 * MiB }), 0);
  assert.equal(budgetShortfall({ used: 60 * MiB, reserved: 30 * MiB, size: 10 * MiB, maxSize: 100 * MiB }), 0, 'exactly full fits');
  assert.equal(budgetShortfall({ used: 60 * MiB, reserved: 36 * MiB, size: 10 * MiB, maxSize: 100 * MiB }), 6 * MiB, 'what is in flight counts');
  assert.equal(budgetShortfall({ used: 120 * MiB, reserved: 0, size: 1, maxSize: 100 * MiB }), 20 * MiB + 1, 'already over: all of it');
});

test('ledger: reservations and files still being unlinked count beside the index; an overrun counts every store', () => {
  const l = new StorageBudgetLedger(100 * MiB);
  const a = l.reserve(80 * MiB, 10 * MiB);
  assert.equal(a.overBy, 0);
  assert.deepEqual(l.budgetOverruns(), { admissions: 0, maxBytes: 0, lastBytes: 0 });
  assert.equal(l.shortfall(80 * MiB, 15 * MiB), 5 * MiB, 'the reservation counts');
  const b = l.reserve(80 * MiB, 15 * MiB);
  assert.equal(b.overBy, 5 * MiB);
  const c = l.reserve(80 * MiB, 3 * MiB);
  assert.equal(c.overBy, 8 * MiB, 'concurrent overruns add up: the second one reports both');
  assert.deepEqual(l.budgetOverruns(), { admissions: 2, maxBytes: 8 * MiB, lastBytes: 8 * MiB });
  b.release();
  b.release();
  assert.equal(l.reserved, 13 * MiB, 'a release is idempotent');
  l.unlinkStarted('sha256:x', 20 * MiB);
  l.unlinkStarted('sha256:x', 20 * MiB);
  assert.equal(l.unlinkingBytes, 20 * MiB, 'one file counted once');
  // The index dropped x's 20 MiB (usage 60 MiB) but its file is still there: nothing gained yet.
  assert.equal(l.shortfall(60 * MiB, 10 * MiB), 3 * MiB);
  l.unlinkEnded('sha256:x');
  assert.equal(l.shortfall(60 * MiB, 10 * MiB), 0);
  const d = l.reserve(60 * MiB, 1 * MiB);
  assert.equal(d.overBy, 0);
  assert.deepEqual(l.budgetOverruns(), { admissions: 2, maxBytes: 8 * MiB, lastBytes: 0 }, 'the latest reservation fitted');
  for (const r of [a, c, d]) r.release();
  assert.equal(l.held(), 0);
});

test('ledger: a usage read and a reservation never interleave with an index write and its release', async () => {
  const l = new StorageBudgetLedger(100 * MiB);
  let indexUsage = 90 * MiB;
  const blob = l.reserve(indexUsage, 5 * MiB);
  // The commit: the index write takes a while; the reservation goes in the same exclusive section.
  let finishPut!: () => void;
  const putDone = new Promise<void>((r) => (finishPut = r));
  const commit = l.exclusive(async () => {
    await putDone;
    indexUsage += 5 * MiB;
    blob.release();
  });
  // An admission that reads the usage meanwhile waits for the commit, then sees the blob once.
  const seen: { r?: Reservation } = {};
  const admission = l.exclusive(async () => (seen.r = l.reserve(await Promise.resolve(indexUsage), 10 * MiB)));
  await new Promise((r) => setImmediate(r));
  const reserved = (): Reservation | undefined => seen.r;
  assert.equal(reserved(), undefined, 'waits for the commit');
  finishPut();
  await Promise.all([commit, admission]);
  assert.equal(reserved()?.overBy, 5 * MiB, '95 MiB cached + 10 MiB: the committed blob counted exactly once');
});

test('ledger: what is on disk never exceeds maxSize plus the latest overrun, in any order of stores, commits and evictions', () => {
  // A model of the disk driven by a seeded sequence: every way in and out of it goes through the ledger as relais does.
  let seed = 42;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let round = 0; round < 50; round++) {
    const l = new StorageBudgetLedger(40 * MiB);
    const index = new Map<string, number>();
    const files = new Map<string, number>();
    const inFlight = new Map<string, { size: number; written: number; r: Reservation }>();
    const unlinking = new Set<string>();
    let n = 0;
    const usage = (): number => [...index.values()].reduce((a, b) => a + b, 0);
    for (let step = 0; step < 400; step++) {
      const op = rnd(5);
      if (op === 0 && inFlight.size < 12) {
        const size = (1 + rnd(4)) * MiB;
        const d = `d${n++}`;
        // Admission evicts what it can (whatever is not busy) before reserving: here, sometimes nothing.
        if (rnd(2) === 0) {
          for (const [k, v] of index) {
            if (l.shortfall(usage(), size) === 0) break;
            l.unlinkStarted(k, v);
            index.delete(k);
            unlinking.add(k);
          }
        }
        inFlight.set(d, { size, written: 0, r: l.reserve(usage(), size) });
        files.set(d, 0);
      } else if (op === 1) {
        for (const [d, f] of inFlight) {
          f.written = Math.min(f.size, f.written + MiB);
          files.set(d, f.written);
        }
      } else if (op === 2) {
        const done = [...inFlight].find(([, f]) => f.written === f.size);
        if (done) {
          const [d, f] = done;
          index.set(d, f.size);
          f.r.release();
          inFlight.delete(d);
        }
      } else if (op === 3) {
        const k = [...unlinking][0];
        if (k !== undefined) {
          files.delete(k);
          unlinking.delete(k);
          l.unlinkEnded(k);
        }
      } else {
        const [k, v] = [...index][0] ?? [];
        if (k !== undefined && v !== undefined) {
          l.unlinkStarted(k, v);
          index.delete(k);
          unlinking.add(k);
        }
      }
      const disk = [...files.values()].reduce((a, b) => a + b, 0);
      assert.ok(disk <= usage() + l.held(), 'the ledger and the index count every byte on disk');
      assert.ok(disk <= l.maxSize + l.budgetOverruns().lastBytes, `round ${round} step ${step}: ${disk} on disk, over by ${l.budgetOverruns().lastBytes} reported`);
    }
  }
});

function admission(state: { used: number; evictable: number }, ledger: StorageBudgetLedger, calls: number[]): SpaceAdmission {
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
    budget: { ledger, usage: () => Promise.resolve(state.used) },
  });
}

test('admission evicts the shortfall before the blob is stored, counting the other stores in progress, and reserves it', async () => {
  const calls: number[] = [];
  const state = { used: 80 * MiB, evictable: 50 * MiB };
  const ledger = new StorageBudgetLedger(100 * MiB);
  ledger.reserve(0, 15 * MiB);
  const a = admission(state, ledger, calls);
  const out = await a.reserveInBudget('sha256:a', 10 * MiB);
  assert.deepEqual(calls, [5 * MiB], 'evicts exactly what the budget needs');
  assert.equal(out?.shortBefore, 5 * MiB);
  assert.equal(out.shortAfter, 0);
  assert.equal(ledger.reserved, 25 * MiB, 'then it is reserved');
  assert.equal(state.used + ledger.held(), 100 * MiB, 'and fits exactly');
  await a.indexed(out.reservation, () => {
    state.used += 10 * MiB;
    return Promise.resolve();
  });
  assert.equal(ledger.reserved, 15 * MiB, 'released once indexed');
  await a.admit('sha256:b', 0);
  assert.equal(calls.length, 1, 'nothing to evict when it fits');
});

test('admission when what is left cannot be evicted (in use, pinned): admitted, the overshoot reported', async () => {
  const calls: number[] = [];
  const state = { used: 95 * MiB, evictable: 2 * MiB };
  const ledger = new StorageBudgetLedger(100 * MiB);
  const overruns: number[] = [];
  const a = new SpaceAdmission({
    storage: { freeSpace: () => Promise.resolve(10_000 * MiB) },
    pending: () => 0,
    makeRoom: (bytes) => {
      calls.push(bytes);
      state.used -= state.evictable;
      return Promise.resolve(state.evictable);
    },
    budget: { ledger, usage: () => Promise.resolve(state.used) },
    onOverrun: (_d, bytes) => overruns.push(bytes),
  });
  const out = await a.reserveInBudget('sha256:a', 10 * MiB);
  assert.equal(out?.shortBefore, 5 * MiB);
  assert.equal(out.shortAfter, 3 * MiB);
  assert.deepEqual(overruns, [3 * MiB]);
  assert.deepEqual(ledger.budgetOverruns(), { admissions: 1, maxBytes: 3 * MiB, lastBytes: 3 * MiB });
});

test('no budget configured: nothing is evicted for it, nothing reserved', async () => {
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
  assert.equal(await a.admit('sha256:a', 10 * MiB), undefined);
  assert.equal(asked, 0);
});
