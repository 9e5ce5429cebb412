// Peak resident memory of a process tree (the target and every descendant: nginx workers,
// cluster workers), sampled from /proc every 50 ms while a measurement runs.
import { readdirSync, readFileSync } from 'node:fs';

function readStatus(pid: number): { rssKb: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(s);
    return { rssKb: m?.[1] === undefined ? 0 : Number(m[1]) };
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so split after the last ')'.
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return undefined;
  }
}

/** pid and all of its descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const ppid = parentOf(pid);
    if (ppid === undefined) continue;
    const list = children.get(ppid);
    if (list === undefined) children.set(ppid, [pid]);
    else list.push(pid);
  }
  const out: number[] = [];
  const stack = [root];
  for (let p = stack.pop(); p !== undefined; p = stack.pop()) {
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Sum of VmRSS over the tree, in bytes. */
export function treeRss(root: number): number {
  let kb = 0;
  for (const pid of processTree(root)) kb += readStatus(pid)?.rssKb ?? 0;
  return kb * 1024;
}

export interface RssSampler {
  /** Stops sampling; returns the peak in bytes (0 if the process was gone). */
  stop(): number;
}

export function sampleRss(root: number, everyMs = 50): RssSampler {
  let peak = treeRss(root);
  const timer = setInterval(() => {
    const v = treeRss(root);
    if (v > peak) peak = v;
  }, everyMs);
  return {
    stop(): number {
      clearInterval(timer);
      const v = treeRss(root);
      return Math.max(peak, v);
    },
  };
}

/** CPU seconds (user + system, including reaped children) used so far by the tree. */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      // After "pid (comm) ": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      /* gone */
    }
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}
