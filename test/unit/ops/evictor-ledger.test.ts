// The evictor and the storage budget's ledger (src/policy/storage-budget.ts): an evicted file counts against the
// budget from before its index rows go until it is really unlinked (a busy one until a later run deletes it), and
// runs go one at a time, an admission's room rechecked when its turn comes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Evictor } from '../../../src/eviction/evictor.js';
import type { CacheIndex, ContentEntry } from '../../../src/index/cache-index.js';
import type { Logger } from '../../../src/observability/logger.js';
import { StorageBudgetLedger } from '../../../src/policy/storage-budget.js';
import type { StorageDriver } from '../../../src/storage/driver.js';
import { storageSchema } from '../../../src/config/schema.js';

const MiB = 1024 * 1024;

/** Lone blobs of 1 MiB, oldest first; the index in memory, the storage's deletes held until released. */
function setup(n: number, busy: Set<string>, afterRowsDeleted?: (digests: readonly string[]) => void) {
  const content = new Map<string, ContentEntry>();
  for (let i = 0; i < n; i++) content.set(`sha256:${String(i).padStart(64, '0')}`, { digest: `sha256:${String(i).padStart(64, '0')}`, size: MiB, mediaType: undefined, lastAccess: i } as ContentEntry);
  const files = new Set(content.keys());
  const waiting: (() => void)[] = [];
  const index = {
    usage: () => Promise.resolve({ bytes: [...content.values()].reduce((a, c) => a + c.size, 0) }),
    flush: () => Promise.resolve(),
    listContent: () => Promise.resolve([...content.values()]),
    listReferences: () => Promise.resolve([]),
    listAllTags: () => Promise.resolve([]),
    listLinks: () => Promise.resolve([]),
    getContent: (d: string) => Promise.resolve(content.get(d)),
    deleteContent: (ds: readonly string[]) => {
      for (const d of ds) content.delete(d);
      afterRowsDeleted?.(ds);
      return Promise.resolve();
    },
  } as unknown as CacheIndex;
  const storage = {
    delete: (key: string) =>
      new Promise<void>((resolve) =>
        waiting.push(() => {
          files.delete(`sha256:${key.slice(key.lastIndexOf('/') + 1)}`);
          resolve();
        }),
      ),
  } as unknown as StorageDriver;
  const ledger = new StorageBudgetLedger(n * MiB);
  const logger = { info: () => undefined, warn: () => undefined } as unknown as Logger;
  const evictor = new Evictor({
    index,
    storage,
    ledger,
    blobs: { busyDigests: () => new Set(busy), isBusy: (d) => busy.has(d) },
    settings: storageSchema.parse({ maxSize: n * MiB }),
    pinContext: { defaultUpstream: 'docker.io', libraryPrefix: () => false },
    logger,
  });
  const unlinkNext = async (): Promise<void> => {
    while (waiting.length === 0) await new Promise((r) => setImmediate(r));
    waiting.shift()?.();
    await new Promise((r) => setImmediate(r));
  };
  return { content, files, ledger, evictor, unlinkNext };
}

test('an evicted file counts on the ledger until it is unlinked; the index and the ledger never miss it', async () => {
  const { content, files, ledger, evictor, unlinkNext } = setup(10, new Set());
  const run = evictor.makeRoom(2 * MiB);
  await unlinkNext();
  // One of the two unlinked, the other still on disk: its row is gone, the ledger has it.
  assert.equal(content.size, 8);
  assert.equal(files.size, 9);
  assert.equal(ledger.unlinkingBytes, MiB);
  await unlinkNext();
  assert.equal(await run, 2 * MiB);
  assert.equal(files.size, 8);
  assert.equal(ledger.unlinkingBytes, 0);
});

test('a file busy when its turn comes stays on the ledger until a later run deletes it', async () => {
  const busy = new Set<string>();
  // A client takes the evicted blob between the plan and its file's turn.
  const { files, ledger, evictor, unlinkNext } = setup(4, busy, (ds) => ds.forEach((d) => busy.add(d)));
  const oldest = `sha256:${'0'.padStart(64, '0')}`;
  assert.equal(await evictor.makeRoom(MiB), MiB);
  assert.ok(files.has(oldest), 'kept while in use');
  assert.equal(ledger.unlinkingBytes, MiB, 'and counted');
  busy.clear();
  const next = evictor.makeRoom(MiB, () => Promise.resolve(0));
  await unlinkNext();
  assert.equal(await next, 0, 'nothing more to evict');
  assert.equal(files.has(oldest), false, 'the next run deleted it');
  assert.equal(ledger.unlinkingBytes, 0);
});

test('runs go one at a time: an admission\'s room is rechecked once the run before it has unlinked its files', async () => {
  const { ledger, evictor, unlinkNext } = setup(10, new Set());
  const first = evictor.makeRoom(2 * MiB);
  const seen: number[] = [];
  const second = evictor.makeRoom(2 * MiB, () => {
    seen.push(ledger.unlinkingBytes);
    return Promise.resolve(0);
  });
  await unlinkNext();
  assert.deepEqual(seen, [], 'not before the first run ends');
  await unlinkNext();
  await first;
  assert.equal(await second, 0, 'nothing more needed: nothing evicted twice');
  assert.deepEqual(seen, [0], 'asked after the first run unlinked its files');
});
