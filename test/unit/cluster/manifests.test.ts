// The cluster's manifest coordinator with an in-memory lease table: the work runs once per key, waiters
// take the holder's result from `done`, and a holder that never finishes does not block them forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { leaseCoordinator } from '../../../src/cluster/manifest-flight.js';
import type { AcquireResult } from '../../../src/cluster/leases.js';

/** Leases as the PostgreSQL table behaves for one owner per coordinator. */
function memoryLeases(table: Map<string, string>, owner: string): { tryAcquire(name: string): Promise<AcquireResult>; release(name: string): Promise<void> } {
  return {
    tryAcquire: (name) => {
      const holder = table.get(name);
      if (holder === undefined || holder === owner) {
        table.set(name, owner);
        return Promise.resolve({ acquired: true });
      }
      return Promise.resolve({ acquired: false, holder: { owner: holder, ownerUrl: '', expiresAt: 0 } });
    },
    release: (name) => {
      if (table.get(name) === owner) table.delete(name);
      return Promise.resolve();
    },
  };
}

test('two replicas ask for one key at once: the work runs once, the other gets the stored result', async () => {
  const table = new Map<string, string>();
  const a = leaseCoordinator(memoryLeases(table, 'a'), { pollMs: 5, waitMs: 5_000 });
  const b = leaseCoordinator(memoryLeases(table, 'b'), { pollMs: 5, waitMs: 5_000 });
  let stored: string | undefined;
  let works = 0;
  const work = async (): Promise<string> => {
    works++;
    await sleep(50);
    stored = 'manifest-body';
    return stored;
  };
  const done = (): Promise<string | undefined> => Promise.resolve(stored);
  const [ra, rb] = await Promise.all([a.once('k', work, done), b.once('k', work, done)]);
  assert.equal(ra, 'manifest-body');
  assert.equal(rb, 'manifest-body');
  assert.equal(works, 1, 'one upstream fetch for two replicas');
  assert.equal(table.size, 0, 'the lease is released');
});

test('a holder that never finishes: the waiter does the work itself after waitMs', async () => {
  const table = new Map<string, string>([['k', 'gone-replica']]);
  const c = leaseCoordinator(memoryLeases(table, 'c'), { pollMs: 5, waitMs: 60 });
  const t0 = Date.now();
  const r = await c.once('k', () => Promise.resolve('fetched-myself'), () => Promise.resolve(undefined));
  assert.equal(r, 'fetched-myself');
  assert.ok(Date.now() - t0 >= 60, 'it waited for the holder first');
});

test('the work fails: the lease is released and the error reaches the caller', async () => {
  const table = new Map<string, string>();
  const c = leaseCoordinator(memoryLeases(table, 'c'), { pollMs: 5, waitMs: 1_000 });
  await assert.rejects(c.once('k', () => Promise.reject(new Error('upstream 503')), () => Promise.resolve(undefined)), /upstream 503/);
  assert.equal(table.size, 0);
});
