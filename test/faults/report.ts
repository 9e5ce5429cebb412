// The fault suite's results, recorded by each test as it runs and rendered into docs/reliability.md
// by `npm run report:faults` (scripts/render-reliability.mjs). Rows are observations, not expectations:
// each is written after the test's assertions about it passed.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export interface FaultRow {
  /** Issue section, e.g. "1 upstream down", "9 hostile input". */
  readonly group: string;
  /** What was done to relais. */
  readonly fault: string;
  /** The client used (skopeo, dockerd, curl, undici...). */
  readonly client: string;
  /** What the client saw (status, error code, digest verified...). */
  readonly clientSaw: string;
  /** What the upstream saw, from its access log ("-" when no upstream was involved). */
  readonly upstreamSaw: string;
  /** What was left on disk (blobs, temp files, index rows). */
  readonly onDisk: string;
}

export const RESULTS_FILE = join(process.cwd(), 'test-output', 'faults.jsonl');

export function recordFault(row: FaultRow): void {
  mkdirSync(join(process.cwd(), 'test-output'), { recursive: true });
  appendFileSync(RESULTS_FILE, `${JSON.stringify({ ...row, at: new Date().toISOString() })}\n`);
}
