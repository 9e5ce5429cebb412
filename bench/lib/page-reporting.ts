// Free page reporting (virtio-balloon's VIRTIO_BALLOON_F_REPORTING): a VM guest tells the host about the
// memory it frees and the host drops it, so the next process that takes that memory pays a host-side fault
// for every page it touches. On this bench's machine (a Firecracker guest, 2026-12-04) it was the largest
// source of run-to-run noise: the same 224 MB of spool writes cost relais's thread pool 0.05 s of CPU in one
// round and 0.31 s in the next (perf: copy_folio_from_iter_atomic, the copy into fresh page-cache pages,
// 18x slower), depending on whether the target before it had just freed its cache; writing 2 GiB to a
// tmpfs took 0.74 s or 1.3-1.6 s the same way.
//
// The bench pauses reporting while it runs (page_reporting_order set above the largest block the buddy
// allocator has, so no free block qualifies), touches enough memory once so that every target draws on
// pages the host already backs, and restores the old order when it ends. This is root-only and
// Linux-only; elsewhere, or with --keep-page-reporting, nothing is changed and the run says so.
import { spawn } from 'node:child_process';
import { access, constants, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const PAGE_REPORTING_DIR = '/sys/module/page_reporting/parameters';
const BUDDYINFO = '/proc/buddyinfo';

export interface PageReporting {
  /** absent: the kernel has no free page reporting; kept: left as it was (asked, or not root); paused; failed. */
  readonly state: 'absent' | 'kept' | 'paused' | 'failed';
  readonly detail: string;
  /** Puts the old order back (once; a no-op unless paused). */
  restore(): Promise<void>;
}

/** The order that no free block reaches: one above the largest order /proc/buddyinfo lists (11 on x86-64). */
export function orderAboveMax(buddyinfo: string): number | undefined {
  let most = 0;
  for (const line of buddyinfo.split('\n')) {
    // "Node 0, zone   Normal   6928   6609 ..." : one count per order, from order 0.
    const m = /^Node\s+\d+,\s*zone\s+\S+\s+(.*)$/.exec(line.trim());
    if (!m?.[1]) continue;
    most = Math.max(most, m[1].trim().split(/\s+/).length);
  }
  return most > 0 ? most : undefined;
}

const keep = (state: PageReporting['state'], detail: string): PageReporting => ({ state, detail, restore: () => Promise.resolve() });

/** Pauses free page reporting if the kernel has it and this process may change it (see the top of the file). */
export async function pausePageReporting(o: { readonly dir?: string; readonly buddyinfo?: string } = {}): Promise<PageReporting> {
  const file = join(o.dir ?? PAGE_REPORTING_DIR, 'page_reporting_order');
  let was: string;
  try {
    was = (await readFile(file, 'utf8')).trim();
  } catch {
    return keep('absent', 'this kernel has no free page reporting');
  }
  try {
    await access(file, constants.W_OK);
  } catch {
    return keep('kept', `free page reporting is on (order ${was}) and ${file} is not writable (run as root to pause it): figures may swing between runs`);
  }
  let target: number | undefined;
  try {
    target = orderAboveMax(await readFile(o.buddyinfo ?? BUDDYINFO, 'utf8'));
  } catch {
    target = undefined;
  }
  if (target === undefined) return keep('failed', `free page reporting is on (order ${was}); the largest block order is unknown (no ${o.buddyinfo ?? BUDDYINFO})`);
  if (Number(was) >= target) return keep('kept', `free page reporting is already paused (order ${was})`);
  try {
    await writeFile(file, `${target}\n`);
  } catch (e) {
    return keep('failed', `could not pause free page reporting (order ${was} -> ${target}: ${(e as Error).message}): figures may swing between runs`);
  }
  let restored = false;
  return {
    state: 'paused',
    detail: `free page reporting paused for the run (page_reporting_order ${was} -> ${target}, restored at the end)`,
    restore: async () => {
      if (restored) return;
      restored = true;
      await writeFile(file, `${was}\n`);
    },
  };
}

/**
 * Touches `bytes` of fresh memory in a child process and frees it: with reporting paused, those pages stay
 * backed by the host, so the targets' page cache and heaps are not the first to fault them in.
 */
export function touchMemory(bytes: number, signal?: AbortSignal): Promise<void> {
  const chunk = 64 * 1024 * 1024;
  const script = `const b=[];let left=${Math.max(0, Math.floor(bytes))};while(left>0){const n=Math.min(left,${chunk});b.push(Buffer.allocUnsafeSlow(n).fill(1));left-=n}`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--max-old-space-size=64', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'], signal });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`touching ${bytes} bytes of memory failed (exit ${code ?? 'signal'}): ${err.slice(0, 200)}`))));
  });
}
