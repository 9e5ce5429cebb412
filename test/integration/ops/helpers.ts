// Shared by the operations tests: an HTTP proxy in front of the real upstream registry (to slow it down,
// or to add Docker Hub's rate-limit headers), /metrics parsing, disk usage, and the relais CLI.
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { run, type RunResult } from '../../peers/proc.js';

export const CLI = join(process.cwd(), 'dist/src/cli/main.js');

/** Runs the relais CLI (the built one, as users do) and returns its output. */
export function relaisCli(args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { timeoutMs });
}

/** Paces a stream to about `bytesPerSecond`. */
class Throttle extends Transform {
  private sent = 0;
  private readonly started = Date.now();
  constructor(private readonly bytesPerSecond: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const pieces: Buffer[] = [];
    for (let i = 0; i < chunk.byteLength; i += 64 * 1024) pieces.push(chunk.subarray(i, i + 64 * 1024));
    const next = (): void => {
      const p = pieces.shift();
      if (p === undefined) {
        cb();
        return;
      }
      this.sent += p.byteLength;
      this.push(p);
      const due = this.started + (this.sent / this.bytesPerSecond) * 1000;
      setTimeout(next, Math.max(0, due - Date.now()));
    };
    next();
  }
}

export interface UpstreamProxy {
  readonly url: string;
  /** Requests seen: method and path. */
  readonly seen: { method: string; path: string }[];
  close(): Promise<void>;
}

/**
 * An HTTP proxy in front of a registry: every response passes through, blob bodies paced to
 * `bytesPerSecond` (when set), with `extraHeaders` added to every response.
 */
export async function startUpstreamProxy(target: string, opts: { bytesPerSecond?: number; extraHeaders?: () => Record<string, string> } = {}): Promise<UpstreamProxy> {
  const t = new URL(target);
  const seen: { method: string; path: string }[] = [];
  const server: Server = createServer((req, res) => {
    seen.push({ method: req.method ?? 'GET', path: (req.url ?? '/').split('?')[0] ?? '/' });
    const up = httpRequest(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, { ...upRes.headers, ...(opts.extraHeaders?.() ?? {}) });
        const slow = opts.bytesPerSecond !== undefined && /\/blobs\/sha256:/.test(req.url ?? '');
        const body = slow && opts.bytesPerSecond !== undefined ? upRes.pipe(new Throttle(opts.bytesPerSecond)) : upRes;
        pipeline(body, res).catch(() => res.destroy());
      },
    );
    up.on('error', () => res.destroy());
    pipeline(req, up).catch(() => up.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

export interface ParsedMetrics {
  readonly types: Map<string, string>;
  readonly help: Map<string, string>;
  readonly samples: Sample[];
  /** Sum of a metric's samples whose labels include `where`. */
  sum(name: string, where?: Record<string, string | readonly string[]>): number;
}

/** Parses the Prometheus text format (what a scraper reads). */
export function parseMetrics(text: string): ParsedMetrics {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) {
      types.set(m[1] ?? '', m[2] ?? '');
      continue;
    }
    m = /^# HELP (\S+) (.*)$/.exec(line);
    if (m) {
      help.set(m[1] ?? '', m[2] ?? '');
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m) throw new Error(`not a Prometheus text line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] ?? ''] = l[2] ?? '';
    const raw = m[3] ?? '';
    samples.push({ name: m[1] ?? '', labels, value: raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) });
  }
  return {
    types,
    help,
    samples,
    sum(name, where = {}) {
      let n = 0;
      for (const s of samples) {
        if (s.name !== name) continue;
        const ok = Object.entries(where).every(([k, v]) => (typeof v === 'string' ? s.labels[k] === v : v.includes(s.labels[k] ?? '')));
        if (ok) n += s.value;
      }
      return n;
    },
  };
}

/** Bytes of every file below a directory (what the cache takes on disk, before filesystem overhead); a file renamed or deleted while counting is skipped. */
export async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await diskBytes(p);
    else if (e.isFile()) total += await stat(p).then((st) => st.size, () => 0); // renamed or deleted meanwhile
  }
  return total;
}

/** Files directly in a directory, with sizes. */
export async function filesIn(dir: string): Promise<{ name: string; size: number }[]> {
  const out: { name: string; size: number }[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const s = await stat(join(dir, name)).catch(() => undefined);
    if (s?.isFile() === true) out.push({ name, size: s.size });
  }
  return out;
}
