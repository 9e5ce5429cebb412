// Runs a load job in one or more client processes (bench/client.ts) that start together, and
// merges their results: the wall time runs from the first start to the last end.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Job, JobResult, PullJob, PullResult } from './pull.js';

type Timed<T> = T & { startEpochMs: number; endEpochMs: number };

const CLIENT_JS = join(import.meta.dirname, '..', 'client.js');

function startClient(job: Job, prefix: readonly string[]): {
  ready: Promise<void>;
  go: () => void;
  result: Promise<Timed<JobResult>>;
  kill: () => void;
} {
  const argv = [...prefix, process.execPath, CLIENT_JS, JSON.stringify(job)];
  const [file, ...rest] = argv as [string, ...string[]];
  const child = spawn(file, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString('utf8');
    if (out.includes('{"ready":true}\n')) onReady();
  });
  child.stderr.on('data', (b: Buffer) => (err += b.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), job.timeoutMs + 30_000);
  const result = new Promise<Timed<JobResult>>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      if (code === 0 && last.startsWith('{"kind"')) resolve(JSON.parse(last) as Timed<JobResult>);
      else reject(new Error(`load client exited with ${signal ?? String(code)}: ${err.trim().slice(0, 2000)}`));
    });
  });
  // Unblock ready if the process dies before saying so (the result promise carries the error).
  void result.catch(() => undefined).finally(onReady);
  return {
    ready,
    go: () => child.stdin.end('go\n'),
    result,
    kill: () => child.kill('SIGKILL'),
  };
}

/** A TTFB job (or anything not split) in one client process. */
export async function runInClient(job: Job, prefix: readonly string[]): Promise<JobResult> {
  const c = startClient(job, prefix);
  await c.ready;
  c.go();
  return c.result;
}

/** A pull job with its clients spread over `procs` processes started at the same moment. */
export async function runPullSplit(job: PullJob, procs: number, prefix: readonly string[]): Promise<PullResult> {
  const n = Math.max(1, Math.min(procs, job.clients));
  const parts = Array.from({ length: n }, (_, i) => Math.floor(job.clients / n) + (i < job.clients % n ? 1 : 0));
  const cs = parts.map((clients) => startClient({ ...job, clients }, prefix));
  try {
    await Promise.all(cs.map((c) => c.ready));
    for (const c of cs) c.go();
    const rs = (await Promise.all(cs.map((c) => c.result))) as Timed<PullResult>[];
    const start = Math.min(...rs.map((r) => r.startEpochMs));
    const end = Math.max(...rs.map((r) => r.endEpochMs));
    return {
      kind: 'pull',
      wallMs: end - start,
      bytes: rs.reduce((s, r) => s + r.bytes, 0),
      blobBytes: rs.reduce((s, r) => s + r.blobBytes, 0),
      blobs: rs.reduce((s, r) => s + r.blobs, 0),
      manifests: rs.reduce((s, r) => s + r.manifests, 0),
      clientMs: rs.flatMap((r) => r.clientMs.map((ms) => ms + (r.startEpochMs - start))).sort((a, b) => a - b),
      errors: rs.flatMap((r) => r.errors),
      clientCpuSeconds: rs.reduce((s, r) => s + (r.clientCpuSeconds ?? 0), 0),
    };
  } finally {
    for (const c of cs) c.kill();
  }
}
