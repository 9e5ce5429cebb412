// The lock on a data directory: DATA/relais.lock says which process works on it (pid, command, since).
// `relais serve` holds it while it serves; `relais gc` takes it when nobody serves (so no relais can start
// on the directory under an offline gc), and runs alongside a serving relais, with the grace period.
// A second `relais serve` on a directory in use refuses to start and names the holder.
//
// The lock file is created with O_EXCL, so of two processes starting at once exactly one gets it. A lock
// whose process is dead (kill -9, power loss) is stale: it is taken over through a short-lived second file
// (relais.lock.takeover, also O_EXCL), so that of two processes finding the same stale lock only one
// removes it. A pid reused by an unrelated process is told apart by the process start time (/proc).
import { readFileSync } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { errors } from '../errors.js';

export const LOCK_FILE = 'relais.lock';
const TAKEOVER_FILE = 'relais.lock.takeover';
/** A takeover file older than this was left by a process that died while taking over. */
const TAKEOVER_STALE_MS = 10_000;
/** An empty lock file younger than this may be being written by the process that created it. */
const HALF_WRITTEN_STALE_MS = 2000;

export interface LockHolder {
  readonly pid: number;
  /** What holds it: "serve", "gc", "prefetch"... */
  readonly command: string;
  /** When it took the lock (ISO time). */
  readonly since: string;
  readonly host: string;
  /** The holder's start time in clock ticks since boot (/proc/PID/stat field 22), when known. */
  readonly startTicks?: number | undefined;
}

export interface DataLock {
  readonly holder: LockHolder;
  /** Removes the lock, if it is still ours. */
  release(): Promise<void>;
}

/** A process's start time in clock ticks since boot, or undefined where /proc is not there. */
export function processStartTicks(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ..." - comm may hold spaces and parentheses: split after the last ")".
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const v = Number(fields[19]);
    return Number.isSafeInteger(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote the lock still runs (on this host; another host's lock is taken as live). */
export function holderAlive(h: LockHolder): boolean {
  if (h.host !== hostname()) return true;
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    // EPERM: alive, owned by someone else.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (h.startTicks === undefined) return true;
  const now = processStartTicks(h.pid);
  // A different start time: the pid was reused by another process after the holder died.
  return now === undefined || now === h.startTicks;
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockHolder>;
    if (typeof v.pid !== 'number' || !Number.isSafeInteger(v.pid) || v.pid <= 0) return undefined;
    return {
      pid: v.pid,
      command: typeof v.command === 'string' ? v.command : 'unknown',
      since: typeof v.since === 'string' ? v.since : '',
      host: typeof v.host === 'string' ? v.host : hostname(),
      startTicks: typeof v.startTicks === 'number' ? v.startTicks : undefined,
    };
  } catch {
    return undefined;
  }
}

/** Who holds the directory's lock, alive or not; undefined when there is no (readable) lock. */
export async function readLock(dataDir: string): Promise<{ holder: LockHolder; alive: boolean } | undefined> {
  const text = await readFile(join(dataDir, LOCK_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const holder = parseHolder(text);
  // Unreadable content: a process died between creating and writing the file (it is written at once).
  if (!holder) return undefined;
  return { holder, alive: holderAlive(holder) };
}

async function createExclusive(file: string, content: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Takes the lock on `dataDir` for `command`, or throws DATA_DIR_IN_USE naming the live holder.
 * A stale lock (its process is gone) is taken over.
 */
export async function acquireDataLock(dataDir: string, command: string): Promise<DataLock> {
  const file = join(dataDir, LOCK_FILE);
  const holder: LockHolder = { pid: process.pid, command, since: new Date().toISOString(), host: hostname(), startTicks: processStartTicks(process.pid) };
  const content = `${JSON.stringify(holder)}\n`;
  const release = async (): Promise<void> => {
    // Only our own: never remove a lock someone else holds.
    const now = await readFile(file, 'utf8').catch(() => '');
    if (now === content) await rm(file, { force: true });
  };
  for (let attempt = 0; attempt < 50; attempt++) {
    if (await createExclusive(file, content)) return { holder, release };
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // released meanwhile: try again
    const current = parseHolder(text);
    if (current && holderAlive(current)) throw errors.dataDirInUse(dataDir, current);
    if (!current) {
      // Empty or unreadable: another process may be between creating and writing it. Stale only when old.
      const age = await stat(file).then((s) => Date.now() - s.mtimeMs, () => Infinity);
      if (age < HALF_WRITTEN_STALE_MS) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
    }
    // Stale (or half-written by a process that died): take it over, one process at a time.
    const takeover = join(dataDir, TAKEOVER_FILE);
    if (!(await createExclusive(takeover, content))) {
      const age = await stat(takeover).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > TAKEOVER_STALE_MS) await rm(takeover, { force: true });
      else await new Promise((r) => setTimeout(r, 20 + 10 * Math.min(attempt, 10)));
      continue;
    }
    try {
      // Still the same stale lock? (another process may have taken it over and released it meanwhile)
      const again = await readFile(file, 'utf8').catch(() => undefined);
      if (again === text) await rm(file, { force: true });
    } finally {
      await rm(takeover, { force: true });
    }
  }
  const last = await readLock(dataDir);
  if (last?.alive === true) throw errors.dataDirInUse(dataDir, last.holder);
  throw errors.internal(`could not take the lock ${file}`);
}

/** The pid of a live relais serving the directory, or undefined (none, or it died without cleaning up). */
export async function liveServerPid(dataDir: string): Promise<number | undefined> {
  const lock = await readLock(dataDir);
  return lock?.alive === true && lock.holder.command === 'serve' ? lock.holder.pid : undefined;
}
