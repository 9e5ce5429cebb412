// Manifest-by-tag request rate with wrk (one tag, the runtime's Accept header).
import { runCmd } from './procs.js';

export interface WrkResult {
  readonly requestsPerSec: number;
  readonly requests: number;
  readonly non2xx: number;
  readonly socketErrors: string | undefined;
  readonly latencyAvg: string | undefined;
}

export function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1];
  if (rps === undefined) throw new Error(`wrk printed no Requests/sec:\n${out}`);
  const requests = /(\d+) requests in/.exec(out)?.[1];
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1];
  const sock = /Socket errors:([^\n]+)/.exec(out)?.[1]?.trim();
  const lat = /Latency\s+(\S+)/.exec(out)?.[1];
  return {
    requestsPerSec: Number(rps),
    requests: Number(requests ?? 0),
    non2xx: Number(non2xx ?? 0),
    socketErrors: sock,
    latencyAvg: lat,
  };
}

export async function runWrk(
  url: string,
  accept: string,
  o: { threads: number; connections: number; seconds: number; prefix?: readonly string[] },
): Promise<WrkResult> {
  const out = await runCmd(
    'wrk',
    [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '10s', '-H', `Accept: ${accept}`, url],
    { timeoutMs: (o.seconds + 30) * 1000, ...(o.prefix === undefined ? {} : { prefix: o.prefix }) },
  );
  return parseWrk(out);
}
