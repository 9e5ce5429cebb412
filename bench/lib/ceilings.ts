// What this machine allows: for each throughput target, the best relais/nginx ratio any cache could reach in
// this run, computed from quantities measured in the same run. A target above its ceiling cannot be met here,
// whatever relais does; a ratio close to its ceiling leaves little to gain.
//
// - Pulls on loopback are bound by CPU: the load clients receive and hash every byte, the upstream serves it,
//   and all of them share the machine's cores with the cache. A run can never take less wall time than
//   (CPU-seconds used by everything) / cores, so with the cache itself at zero CPU the throughput is at most
//   bytes / ((client CPU + upstream CPU) / cores). A cache that verifies digests, as relais does and must, also
//   hashes every unique byte it fetches: with that as its only CPU cost (measured in the run), the cold pull's
//   bound is bytes / ((client CPU + upstream CPU + hash CPU) / cores).
// - A second, tighter CPU bound for the cold pull: a cache that moves the bytes as cheaply as nginx does
//   (receive them, write them to disk, sendfile them to every client: nginx's CPU in the same run) and
//   verifies digests on top. A target above it needs a cache that moves bytes with less CPU than nginx.
// - Pulls over the slow link are bound by the link: every unique blob byte crosses it at least once, at the
//   payload rate measured through it, so N clients get at most N x that rate.
// - The manifest rate is bound by Node's HTTP stack: a bare node:http server answering a constant manifest
//   (bench/floor-server.ts) under the same wrk is the most any Node server does here.

export interface PullCosts {
  /** Body bytes delivered to all clients. */
  readonly bytes: number;
  /** CPU-seconds of the load client processes. */
  readonly clientCpuSeconds: number;
  /** CPU-seconds of the upstream registry during the pull. */
  readonly upstreamCpuSeconds: number;
  /** The least CPU-seconds the cache itself must use (default 0: a cache that costs nothing). */
  readonly cacheCpuSeconds?: number;
}

/** The throughput (bytes/s) of a pull whose cache used no more CPU than cacheCpuSeconds: everything else still needs its CPU. */
export function cpuBoundCeiling(c: PullCosts, cores: number): number | undefined {
  const cpu = c.clientCpuSeconds + c.upstreamCpuSeconds + (c.cacheCpuSeconds ?? 0);
  if (!(cpu > 0) || !(cores > 0) || !(c.bytes > 0)) return undefined;
  return c.bytes / (cpu / cores);
}

/** The throughput (bytes/s) of N clients behind a link that carries `linkBytesPerSec` of payload. */
export function linkBoundCeiling(clients: number, linkBytesPerSec: number): number | undefined {
  if (!(clients > 0) || !(linkBytesPerSec > 0)) return undefined;
  return clients * linkBytesPerSec;
}

export interface Ceiling {
  readonly id: string;
  readonly label: string;
  /** relais / nginx in this run. */
  readonly ratio: number | undefined;
  /** The best relais / nginx this machine allows in this run (ceiling / nginx). */
  readonly ceiling: number | undefined;
  /** The best relais / nginx for a cache that uses nginx's CPU plus the digest checks (cold pulls only). */
  readonly atNginxCpu?: number | undefined;
  /** The issue's target ratio. */
  readonly target: number;
  /** What bounds it, with the measured quantities. */
  readonly boundBy: string;
}

export type Reach = 'met' | 'not met, within reach' | "needs less CPU than nginx" | 'out of reach here' | 'n/a';

/**
 * Whether the target is met, could be met, could be met only by a cache that moves bytes with less CPU than
 * nginx, or is above what the machine allows in this run.
 */
export function reach(c: Ceiling): Reach {
  if (c.ratio === undefined) return 'n/a';
  if (c.ratio >= c.target) return 'met';
  if (c.ceiling === undefined) return 'n/a';
  if (c.ceiling < c.target) return 'out of reach here';
  return c.atNginxCpu !== undefined && c.atNginxCpu < c.target ? 'needs less CPU than nginx' : 'not met, within reach';
}

const x = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '-' : `${v.toFixed(2)}x`);

export function renderCeilings(cs: readonly Ceiling[]): string {
  const header = ['target (relais/nginx)', 'this run', 'best possible here', "at nginx's CPU", 'target', 'verdict', 'bound by'];
  const lines = cs.map((c) => [c.label, x(c.ratio), x(c.ceiling), x(c.atNginxCpu), `>= ${c.target.toFixed(1)}x`, reach(c), c.boundBy]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const row = (cells: readonly string[]): string =>
    `| ${cells.map((s, i) => (i === 0 || i === cells.length - 1 ? s.padEnd(widths[i] ?? 0) : s.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 || i === widths.length - 1 ? `-${'-'.repeat(w)}-` : `-${'-'.repeat(w - 1)}:`)).join('|')}|`;
  return [row(header), sep, ...lines.map(row)].join('\n');
}
