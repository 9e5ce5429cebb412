// Processes the bench starts: each with its output in a log file in the run's temp dir, an
// optional command prefix (`ip netns exec NS`) for the slow-link runs, and a stop that is
// always called (the run keeps a registry of everything still alive and stops it on exit or Ctrl-C).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { request } from 'undici';

const execFileP = promisify(execFile);

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Resolves with the exit code or signal once the process is gone. */
  readonly exited: Promise<string>;
  stop(): Promise<void>;
}

const alive = new Set<Proc>();

export interface StartOptions {
  readonly name: string;
  readonly cmd: string;
  readonly args: readonly string[];
  readonly prefix?: readonly string[];
  readonly logFile: string;
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Called with every complete stdout line (the upstream's access log). */
  readonly onStdoutLine?: (line: string) => void;
}

export function startProc(o: StartOptions): Proc {
  const prefix = o.prefix ?? [];
  const argv = [...prefix, o.cmd, ...o.args];
  const [file, ...rest] = argv as [string, ...string[]];
  const log: WriteStream = createWriteStream(o.logFile, { flags: 'a' });
  log.write(`$ ${argv.join(' ')}\n`);
  const child = spawn(file, rest, {
    cwd: o.cwd,
    env: o.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // own process group: stop() signals the whole group
  });
  let pending = '';
  child.stdout?.on('data', (b: Buffer) => {
    log.write(b);
    if (o.onStdoutLine === undefined) return;
    pending += b.toString('utf8');
    let i = pending.indexOf('\n');
    while (i >= 0) {
      o.onStdoutLine(pending.slice(0, i));
      pending = pending.slice(i + 1);
      i = pending.indexOf('\n');
    }
  });
  child.stderr?.on('data', (b: Buffer) => log.write(b));
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ?? String(code)));
    child.once('error', (e) => resolve(`spawn error: ${e.message}`));
  });
  if (child.pid === undefined) throw new Error(`${o.name}: could not start ${o.cmd}`);
  const pid = child.pid;
  const proc: Proc = {
    name: o.name,
    pid,
    child,
    logFile: o.logFile,
    exited,
    stop: async () => {
      alive.delete(proc);
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
        const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
        if (!done) {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
          await exited;
        }
      }
      await new Promise<void>((r) => log.end(() => r()));
    },
  };
  alive.add(proc);
  return proc;
}

/** Stops every process still running (exit path and signal handlers). */
export async function stopAll(): Promise<void> {
  await Promise.all([...alive].map((p) => p.stop()));
}

/**
 * Waits until `url` answers any HTTP status. With a prefix (another network namespace) it asks
 * curl inside that namespace; otherwise it asks directly.
 */
export async function waitHttp(url: string, p: Proc, timeoutMs: number, prefix: readonly string[] = []): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedWith: string | undefined;
  void p.exited.then((s) => (exitedWith = s));
  for (;;) {
    if (exitedWith !== undefined) {
      throw new Error(`${p.name} exited (${exitedWith}) before answering; its output ends with:\n${await logTail(p.logFile)}`);
    }
    try {
      if (prefix.length > 0) {
        const [file, ...rest] = prefix as [string, ...string[]];
        await execFileP(file, [...rest, 'curl', '-s', '-o', '/dev/null', '--max-time', '2', url], { timeout: 5000 });
      } else {
        const res = await request(url, { headersTimeout: 2000, bodyTimeout: 2000 });
        await res.body.dump();
      }
      return;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(`${p.name} did not answer ${url} within ${timeoutMs} ms; its output ends with:\n${await logTail(p.logFile)}`);
      }
      await sleep(100);
    }
  }
}

/** The last lines of a process's log, for error messages (the temp dir is gone after the run). */
export async function logTail(file: string, lines = 15): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).map((l) => `    ${l.slice(0, 300)}`).join('\n');
  } catch {
    return '    (no log)';
  }
}

/** Runs a command to completion, returning stdout; throws with stderr on failure. */
export async function runCmd(
  cmd: string,
  args: readonly string[],
  opts: { prefix?: readonly string[]; timeoutMs: number; env?: NodeJS.ProcessEnv },
): Promise<string> {
  const argv = [...(opts.prefix ?? []), cmd, ...args];
  const [file, ...rest] = argv as [string, ...string[]];
  try {
    const r = await execFileP(file, rest, { timeout: Math.ceil(opts.timeoutMs), maxBuffer: 64 * 1024 * 1024, env: opts.env ?? process.env });
    return r.stdout;
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    const shown = argv.map((a) => (a.length > 120 ? `${a.slice(0, 117)}...` : a)).join(' ');
    throw new Error(`${shown} failed: ${(err.stderr ?? err.message ?? String(e)).trim().slice(0, 2000)}`);
  }
}
