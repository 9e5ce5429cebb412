// Bounded concurrency: a semaphore and a mapLimit built on it.

// The semaphore is the registry client's (the one that bounds requests in flight); mapLimit is cleanup's.
import { Limiter } from '../upstream/registry-client.js';

export { Limiter };

/** Maps with at most `n` calls in flight; results keep the input order; the first error rejects. */
export async function mapLimit<T, R>(items: readonly T[], n: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i] as T, i);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}
