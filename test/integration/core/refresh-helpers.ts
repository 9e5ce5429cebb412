// Shared by the refresh-ahead and pull-budget tests: reading relais's /metrics, awaiting a condition.
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';

/** The value of one series of relais's /metrics (labels matched exactly, in any order); 0 when absent. */
export async function metricValue(base: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await request(`${base}/metrics`);
  const text = await res.body.text();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const kv of (m[2] ?? '').split(',')) {
      const p = /^([a-z_]+)="(.*)"$/.exec(kv);
      if (p?.[1] !== undefined && p[2] !== undefined) got[p[1]] = p[2];
    }
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(m[3]);
  }
  return 0;
}

/** Polls `cond` (every 50 ms) until it holds; fails naming `what` after timeoutMs. */
export async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}
