// Shared by the fault suite: what relais left on disk, raw clients (curl, undici) that report how a
// transfer ended, and relais's fault-test settings (short timeouts so each fault takes seconds).
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { run, startProcess, waitForHttp, type ManagedProcess } from '../peers/proc.js';

/** Upstream settings for fault tests: faults surface in about a second. */
export const FAST_UPSTREAM = {
  timeouts: { connect: '1s', headers: '2s', idle: '1s' },
  retries: { attempts: 3, backoff: '50ms', maxRetryAfter: '2s' },
  circuitBreaker: { failures: 5, cooldown: '2s' },
} as const;

export interface DiskState {
  /** Files under <data>/storage/_tmp (spool and temp files). */
  readonly tmpFiles: string[];
  /** Blob files under <data>/storage/blobs, by digest, with their size. */
  readonly files: Map<string, number>;
  /** Content rows of the index (digest -> size). */
  readonly rows: Map<string, number>;
  /** Index rows whose file is missing or has another size. */
  readonly rowsWithoutFile: string[];
  /** Files whose bytes do not hash to their name. */
  readonly corruptFiles: string[];
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw e;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

/**
 * What relais left in its data dir. Call it after relais stopped: the index is opened read-only
 * with better-sqlite3, every stored file is hashed.
 */
export async function inspectDisk(dataDir: string): Promise<DiskState> {
  const storage = join(dataDir, 'storage');
  const tmpFiles = (await walk(join(storage, '_tmp'))).map((p) => p.slice(storage.length + 1));
  const files = new Map<string, number>();
  const corruptFiles: string[] = [];
  for (const p of await walk(join(storage, 'blobs'))) {
    const parts = p.split('/');
    const digest = `${parts.at(-3) ?? ''}:${parts.at(-1) ?? ''}`;
    files.set(digest, (await stat(p)).size);
    if (digest.startsWith('sha256:') && (await sha256File(p)) !== digest) corruptFiles.push(digest);
  }
  const rows = new Map<string, number>();
  const dbFile = join(dataDir, 'index.db');
  if (existsSync(dbFile)) {
    const db = new Database(dbFile, { readonly: true, fileMustExist: true });
    try {
      for (const r of db.prepare<[], { digest: string; size: number }>('SELECT digest, size FROM content').all()) rows.set(r.digest, r.size);
    } finally {
      db.close();
    }
  }
  const rowsWithoutFile = [...rows].filter(([d, size]) => files.get(d) !== size).map(([d]) => d);
  return { tmpFiles, files, rows, rowsWithoutFile, corruptFiles };
}

/** A one-line summary of a DiskState for the report. */
export function describeDisk(d: DiskState, note = ''): string {
  return `${d.rows.size} index rows, ${d.files.size} blob files, ${d.rowsWithoutFile.length} rows without file, ${d.corruptFiles.length} corrupt files, ${d.tmpFiles.length} temp files${note === '' ? '' : `; ${note}`}`;
}

export interface CurlResult {
  /** curl's exit code (0 = complete transfer; 18 = partial file; 56 = receive failure). */
  readonly exit: number | null;
  /** HTTP status of the response (0 when none). */
  readonly status: number;
  readonly bytes: number;
  readonly digest: string;
  readonly ms: number;
  readonly stderr: string;
}

/** `curl URL` with the body hashed: how the transfer ended as curl saw it. */
export async function curlGet(url: string, opts: { maxTimeS?: number; headers?: Record<string, string> } = {}): Promise<CurlResult> {
  const dir = await mkdtemp(join(tmpdir(), 'relais-curl-'));
  const out = join(dir, 'body');
  const started = Date.now();
  try {
    const args = ['-sS', '--max-time', String(opts.maxTimeS ?? 60), '-o', out, '-w', '%{http_code} %{size_download}'];
    for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
    const r = await run('curl', [...args, url], { timeoutMs: ((opts.maxTimeS ?? 60) + 10) * 1000 });
    const ms = Date.now() - started;
    const [status = '0', bytes = '0'] = r.stdout.trim().split(/\s+/);
    const digest = existsSync(out) ? await sha256File(out) : sha256(Buffer.alloc(0));
    return { exit: r.code, status: Number(status), bytes: Number(bytes), digest, ms, stderr: r.stderr.trim() };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface UndiciResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  /** The error that ended the body, when it did not complete. */
  readonly error: string | undefined;
  readonly ms: number;
}

/** GET with undici; a body that breaks off is reported, not thrown. */
export async function undiciGet(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<UndiciResult> {
  const started = Date.now();
  const res = await request(url, { method, headers });
  const chunks: Buffer[] = [];
  let error: string | undefined;
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch (e) {
    error = (e as { code?: string }).code ?? (e as Error).message;
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), error, ms: Date.now() - started };
}

export function ociErrorCode(body: Buffer): string | undefined {
  try {
    return (JSON.parse(body.toString('utf8')) as { errors: { code: string }[] }).errors[0]?.code;
  } catch {
    return undefined;
  }
}

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Path regex of one blob at the upstream. */
export function blobPath(digest: string): RegExp {
  return new RegExp(`/blobs/${digest}$`);
}

export interface RelaisChild {
  readonly url: string;
  readonly host: string;
  readonly proc: ManagedProcess;
}

/** `relais serve` as a child process (the real CLI, compiled), on a given port and data dir. */
export async function spawnRelais(dataDir: string, port: number, upstreamUrl: string, logDir: string): Promise<RelaisChild> {
  const main = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
  const proc = await startProcess(process.execPath, [main, 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--upstream', `docker.io=${upstreamUrl}`], {
    name: 'relais',
    logDir,
    appendLogs: true,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/healthz`, 15_000, { process: proc, accept: (s) => s === 200 });
  return { url, host: `127.0.0.1:${port}`, proc };
}

/** Peak and current resident memory of a process, in KiB (VmHWM and VmRSS of /proc/PID/status). */
export async function memoryOf(pid: number): Promise<{ peakKiB: number; rssKiB: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { peakKiB: field('VmHWM'), rssKiB: field('VmRSS') };
}

/** Files under `dir` that process `pid` holds open (from /proc/PID/fd; deleted files included). */
export async function openFilesUnder(dir: string, pid: number | 'self' = 'self'): Promise<string[]> {
  const fdDir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const fd of await readdir(fdDir).catch(() => [])) {
    const target = await readlink(join(fdDir, fd)).catch(() => '');
    if (target.startsWith(`${dir}/`)) out.push(target);
  }
  return out;
}
