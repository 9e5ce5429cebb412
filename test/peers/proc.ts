// Process helpers for tests that run real programs (registries, daemons, clients).
//
// - startProcess(): a long-running process whose stdout and stderr go straight into files (the
//   child writes them itself, so nothing is lost or delayed in a pipe; reading them back is
//   synchronous and sees everything the child wrote so far). Every started process is recorded
//   and killed (its whole process group) when the test process exits, even on a crash or signal,
//   so no test leaves orphans.
// - waitForHttp(): poll a URL until something answers.
// - run(): a short command with a timeout, giving {code, stdout, stderr}.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, statSync, readSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A temp dir under os.tmpdir(), named relais-PREFIX-XXXXXX. */
export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `relais-${prefix}-`));
}

/** Synchronous variant of tempDir(). */
export function tempDirSync(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `relais-${prefix}-`));
}

/** A temp dir (like tempDirSync) deleted when the test process exits. */
export function tempDirRemovedAtExit(prefix: string): string {
  installExitHandlers();
  const dir = tempDirSync(prefix);
  removeAtExit.add(dir);
  return dir;
}

/** Removes a directory tree, retrying a few times (daemons may still be releasing files). */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

/** Raised when a program cannot be started because it is not installed. */
export class MissingProgramError extends Error {
  constructor(readonly program: string) {
    super(`program '${program}' is not installed or not on PATH: run 'sudo bash scripts/setup-peers.sh' (CI does)`);
    this.name = 'MissingProgramError';
  }
}

export interface StartOptions {
  /** A short name for messages and log file names; defaults to the command's base name. */
  name?: string;
  cwd?: string;
  /** Full environment; defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Extra variables merged over env. */
  extraEnv?: Record<string, string>;
  /** Directory for NAME.stdout.log / NAME.stderr.log; defaults to a fresh temp dir. */
  logDir?: string;
  /** Append to existing log files instead of truncating them (for restarts). Default false. */
  appendLogs?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  readonly stdoutFile: string;
  readonly stderrFile: string;
  /** Everything the process wrote to stdout so far (read from its file). */
  stdout(): string;
  /** Everything the process wrote to stderr so far (read from its file). */
  stderr(): string;
  /** stdout then stderr, for failure messages. */
  output(): string;
  /** Bytes of stdout from `offset` on (for incremental parsing) and the new offset. */
  readStdoutFrom(offset: number): { text: string; offset: number };
  /** Null while running. */
  exitInfo(): ExitInfo | null;
  /** Resolves when the process has exited (reading it keeps the test process alive until then). */
  readonly exited: Promise<ExitInfo>;
  /** Polls stdout+stderr until `re` matches; fails early if the process exits. */
  waitForOutput(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /**
   * SIGTERM (to the process, or its whole group with group=true), then SIGKILL to the whole
   * process group after graceMs. Resolves once the process has exited. Idempotent.
   */
  stop(opts?: { graceMs?: number; group?: boolean }): Promise<ExitInfo>;
}

const live = new Set<ManagedProcess>();
const runningShortCommands = new Set<number>();
const removeAtExit = new Set<string>();
let handlersInstalled = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  if (!Number.isInteger(pid) || pid <= 1) return; // never signal init or "every process"
  try {
    process.kill(-pid, signal); // every process is started as its own group leader
  } catch {
    // the group is gone already
  }
}

function killAllNow(): void {
  for (const p of live) {
    // Even when the leader is gone, helpers in its group may not be.
    killGroup(p.pid, 'SIGKILL');
  }
  live.clear();
  for (const pid of runningShortCommands) killGroup(pid, 'SIGKILL');
  runningShortCommands.clear();
}

/** Kills every started process and deletes the dirs registered with removeDirAtExit(). */
function cleanupNow(): void {
  killAllNow();
  for (const dir of removeAtExit) {
    try {
      removeDirSync(dir);
    } catch {
      // e.g. a mount left by a killed daemon: nothing more to do at exit
    }
  }
  removeAtExit.clear();
}

/**
 * Deletes `dir` when the test process exits or is killed by SIGINT/SIGTERM/SIGHUP, in case the
 * test does not get to clean up (removing it earlier is fine).
 */
export function removeDirAtExit(dir: string): void {
  installExitHandlers();
  removeAtExit.add(dir);
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      cleanupNow();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/** Processes started by startProcess() that have not been stopped yet. */
export function liveProcesses(): readonly ManagedProcess[] {
  return [...live];
}

/** Stops every process still running (for a global after hook). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

function readFileFrom(file: string, offset: number): { text: string; offset: number } {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return { text: '', offset };
  }
  if (size <= offset) return { text: '', offset };
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(size - offset);
    let done = 0;
    while (done < buf.length) {
      const n = readSync(fd, buf, done, buf.length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    // Only hand out complete lines so a line being written is not split between two reads.
    const lastNewline = buf.lastIndexOf(0x0a, done - 1);
    if (lastNewline < 0) return { text: '', offset };
    return { text: buf.subarray(0, lastNewline + 1).toString('utf8'), offset: offset + lastNewline + 1 };
  } finally {
    closeSync(fd);
  }
}

function readWhole(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function tail(text: string, max = 4000): string {
  return text.length <= max ? text : `...${text.slice(-max)}`;
}

/**
 * Starts a long-running program in its own process group (setsid), with stdout and stderr going
 * to files. Throws MissingProgramError when the program is not installed.
 */
export async function startProcess(cmd: string, args: readonly string[], opts: StartOptions = {}): Promise<ManagedProcess> {
  installExitHandlers();
  const name = opts.name ?? cmd.split('/').pop() ?? cmd;
  const ownLogDir = opts.logDir === undefined;
  const logDir = opts.logDir ?? (await tempDir(`${name}-logs`));
  // A log dir made here lives until the test process exits (output() stays readable after stop()).
  if (ownLogDir) removeAtExit.add(logDir);
  const stdoutFile = join(logDir, `${name}.stdout.log`);
  const stderrFile = join(logDir, `${name}.stderr.log`);
  const flags = opts.appendLogs === true ? 'a' : 'w';
  const outFd = openSync(stdoutFile, flags);
  const errFd = openSync(stderrFile, flags);
  const env = { ...(opts.env ?? process.env), ...(opts.extraEnv ?? {}) };
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { cwd: opts.cwd, env, stdio: ['ignore', outFd, errFd], detached: true });
  } finally {
    closeSync(outFd);
    closeSync(errFd);
  }
  const spawned = await new Promise<number>((resolve, reject) => {
    child.once('error', () => {
      if (ownLogDir) removeDirSync(logDir);
    });
    child.once('spawn', () => {
      if (child.pid === undefined) reject(new Error(`${cmd}: spawned without a pid`));
      else resolve(child.pid);
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT' ? new MissingProgramError(cmd) : err);
    });
  });
  const pid = spawned;
  // A test that forgets stop() must not hang its process: the exit handler kills the child.
  child.unref();
  let exit: ExitInfo | null = null;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  let stopping: Promise<ExitInfo> | null = null;

  const proc: ManagedProcess = {
    name,
    pid,
    child,
    stdoutFile,
    stderrFile,
    stdout: () => readWhole(stdoutFile),
    stderr: () => readWhole(stderrFile),
    output: () => `--- ${name} stdout ---\n${readWhole(stdoutFile)}--- ${name} stderr ---\n${readWhole(stderrFile)}`,
    readStdoutFrom: (offset) => readFileFrom(stdoutFile, offset),
    exitInfo: () => exit,
    get exited() {
      child.ref(); // someone waits for the exit: keep the event loop alive until it happens
      return exited;
    },
    async waitForOutput(re, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = (readWhole(stdoutFile) + readWhole(stderrFile)).match(re);
        if (m !== null) return m;
        if (exit !== null) {
          throw new Error(`${name} exited (${JSON.stringify(exit)}) before printing ${String(re)}\n${tail(proc.output())}`);
        }
        if (Date.now() > deadline) {
          throw new Error(`${name} did not print ${String(re)} within ${timeoutMs} ms\n${tail(proc.output())}`);
        }
        await sleep(50);
      }
    },
    stop(stopOpts = {}) {
      if (stopping !== null) return stopping;
      const graceMs = stopOpts.graceMs ?? 5000;
      stopping = (async () => {
        child.ref(); // keep the event loop alive until the process is gone
        if (exit === null) {
          if (stopOpts.group === true) killGroup(pid, 'SIGTERM');
          else child.kill('SIGTERM');
          const ac = new AbortController();
          const timer = sleep(graceMs, 'timeout' as const, { signal: ac.signal }).catch(() => 'cancelled' as const);
          const result = await Promise.race([exited, timer]);
          ac.abort(); // do not keep the event loop alive for the grace period
          if (result === 'timeout') killGroup(pid, 'SIGKILL');
        }
        const info = await exited;
        // Anything left in the group (helpers the process started) goes too.
        killGroup(pid, 'SIGKILL');
        live.delete(proc);
        return info;
      })();
      return stopping;
    },
  };
  live.add(proc);
  return proc;
}

/**
 * Polls `url` until it answers with an HTTP status accepted by `accept` (default: any status,
 * i.e. the server is listening and speaking HTTP). Fails early, with the process's output, when
 * `process` exits meanwhile.
 */
export async function waitForHttp(
  url: string,
  timeoutMs: number,
  opts: { accept?: (status: number) => boolean; process?: ManagedProcess } = {},
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000), redirect: 'manual' });
      await res.arrayBuffer().catch(() => undefined);
      if (opts.accept === undefined || opts.accept(res.status)) return res.status;
      lastError = `status ${res.status}`;
    } catch (err) {
      lastError = err instanceof Error ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}` : String(err);
    }
    const p = opts.process;
    if (p !== undefined && p.exitInfo() !== null) {
      throw new Error(`${p.name} exited (${JSON.stringify(p.exitInfo())}) while waiting for ${url}\n${tail(p.output())}`);
    }
    if (Date.now() > deadline) {
      const extra = p === undefined ? '' : `\n${tail(p.output())}`;
      throw new Error(`${url} did not answer within ${timeoutMs} ms (last: ${lastError})${extra}`);
    }
    await sleep(50);
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  extraEnv?: Record<string, string>;
  /** Kill the command (its whole process group) after this long; default 120 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string | Buffer;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Raised by run() when the command outlives its timeout. */
export class RunTimeoutError extends Error {
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`'${command}' did not finish within ${timeoutMs} ms\nstdout: ${tail(stdout)}\nstderr: ${tail(stderr)}`);
    this.name = 'RunTimeoutError';
  }
}

/**
 * Runs a command to completion and returns its exit code and output. Rejects with
 * MissingProgramError when the program is not installed and RunTimeoutError on timeout;
 * a non-zero exit code is NOT an error here (see runOk()).
 */
export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  installExitHandlers();
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const env = { ...(opts.env ?? process.env), ...(opts.extraEnv ?? {}) };
  const child = spawn(cmd, args, { cwd: opts.cwd, env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  child.stdin.on('error', () => undefined); // the command may not read its input
  if (opts.input !== undefined) child.stdin.end(opts.input);
  else child.stdin.end();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
  }, timeoutMs);
  try {
    const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', (e: NodeJS.ErrnoException) => {
        reject(e.code === 'ENOENT' ? new MissingProgramError(cmd) : e);
      });
      child.once('spawn', () => {
        // Recorded so an exiting test process kills it too.
        if (child.pid !== undefined) runningShortCommands.add(child.pid);
      });
      child.once('close', (code, signal) => {
        resolve({ code, signal });
      });
    });
    const stdout = Buffer.concat(out).toString('utf8');
    const stderr = Buffer.concat(err).toString('utf8');
    if (timedOut) throw new RunTimeoutError([cmd, ...args].join(' '), timeoutMs, stdout, stderr);
    return { ...result, stdout, stderr, durationMs: Date.now() - started };
  } finally {
    clearTimeout(timer);
    if (child.pid !== undefined) runningShortCommands.delete(child.pid);
  }
}

/** run(), but rejects with the command's output when it exits non-zero. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(
      `'${[cmd, ...args].join(' ')}' exited with ${r.code ?? r.signal ?? '?'}\nstdout: ${tail(r.stdout)}\nstderr: ${tail(r.stderr)}`,
    );
  }
  return r;
}

/** Removes a directory synchronously (for exit paths). */
export function removeDirSync(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
