// The proxy-door rows of the bench (docs/performance.md "Proxy door", docs/proxy.md "Performance"): the same
// cold and warm pulls through relais's HTTPS proxy door (CONNECT + TLS, relais's CA trusted) next to its HTTP
// door in the same run, and what bounds the difference: the cipher the door negotiates, what one core of this
// machine encrypts with it (`openssl speed`), and the CPU the TLS side costs relais and the clients.
import { request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { median, overRounds } from './report.js';

const GB = 1e9;
const MB = 1e6;

/** CPU-seconds per pulled GB (10^9 bytes); undefined without bytes. */
export function cpuSecondsPerGb(cpuSeconds: number, bytes: number): number | undefined {
  if (!(bytes > 0) || !Number.isFinite(cpuSeconds)) return undefined;
  return cpuSeconds / (bytes / GB);
}

/**
 * The bytes/s of `openssl speed -evp CIPHER -bytes N` (its last column, "in 1000s of bytes per second"), from
 * the line that names the cipher (e.g. "AES-128-GCM   3590225.92k"); undefined when there is none.
 */
export function parseOpensslSpeed(text: string, cipher: string): number | undefined {
  const want = cipher.toLowerCase();
  for (const line of text.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 2 || cols[0]?.toLowerCase() !== want) continue;
    const last = cols[cols.length - 1] ?? '';
    const m = /^([0-9.]+)k$/.exec(last);
    if (m?.[1] !== undefined) return Number(m[1]) * 1000;
  }
  return undefined;
}

/** The `openssl speed -evp` name of a negotiated TLS cipher suite (OpenSSL or IANA spelling); undefined if unknown. */
export function evpOfCipher(suite: string): string | undefined {
  const s = suite.toUpperCase().replace(/-/g, '_');
  if (s.includes('CHACHA20')) return 'chacha20-poly1305';
  if (s.includes('AES_256_GCM') || s.includes('AES256_GCM')) return 'aes-256-gcm';
  if (s.includes('AES_128_GCM') || s.includes('AES128_GCM')) return 'aes-128-gcm';
  return undefined;
}

/** One pull (cold or warm) through one door, as the bench measured it. */
export interface DoorPull {
  readonly mbPerSec: number;
  /** Bytes delivered to all clients. */
  readonly bytes: number;
  /** CPU-seconds of relais's process tree during the pull. */
  readonly cpuSeconds: number;
  /** CPU-seconds of the load-client processes. */
  readonly clientCpuSeconds: number;
  /** 2xx blob GETs the upstream saw during the pull. */
  readonly blobGets: number;
  /** Client errors (a wrong byte, a non-200, a timeout). */
  readonly errors: number;
}

export interface DoorRounds {
  readonly cold: readonly DoorPull[];
  readonly warm: readonly DoorPull[];
}

export interface ProxyRow {
  readonly id: string;
  readonly label: string;
  readonly unit: string;
  readonly http: number | null;
  /** relais's HTTP door with sendfile off (server.sendfile: false): blobs streamed through user space, as through TLS. */
  readonly streamed: number | null;
  readonly proxy: number | null;
  /** proxy / HTTP. */
  readonly ratio: number | null;
  readonly target: string | null;
  readonly verdict: 'PASS' | 'FAIL' | 'n/a' | null;
  readonly notes: { readonly http?: string; readonly streamed?: string; readonly proxy?: string };
}

/** The warm-pull target of issue 15: the proxy door at >= 0.5x the HTTP door's throughput. */
export const WARM_RATIO_TARGET = 0.5;

/**
 * The rows, medians over the rounds. Both doors are relais, so both are judged strictly (any client error in
 * any round voids the figure, as for relais in the main table). `uniqueBlobs`: the blobs a linux/amd64 client
 * of the pulled images fetches; a cold pull through either door must cost one upstream GET per blob, a warm
 * one none.
 */
export function proxyRows(http: DoorRounds, proxy: DoorRounds, uniqueBlobs: number, streamed?: DoorRounds): ProxyRow[] {
  const fig = (pulls: readonly DoorPull[], get: (p: DoorPull) => number | undefined): { value?: number; note?: string } => {
    const r = overRounds(pulls.map((p) => ({ value: get(p) ?? Number.NaN, errors: p.errors })), true);
    return pulls.length === 0 ? {} : r;
  };
  const row = (
    id: string,
    label: string,
    unit: string,
    pick: (d: DoorRounds) => readonly DoorPull[],
    get: (p: DoorPull) => number | undefined,
    target?: { text: string; check: (h: number | undefined, p: number | undefined, ratio: number | undefined) => boolean | undefined },
  ): ProxyRow => {
    const h = fig(pick(http), get);
    const p = fig(pick(proxy), get);
    const st = streamed === undefined ? {} : fig(pick(streamed), get);
    const ratio = h.value !== undefined && p.value !== undefined && h.value !== 0 ? p.value / h.value : undefined;
    let verdict: ProxyRow['verdict'] = null;
    if (target !== undefined) {
      const ok = target.check(h.value, p.value, ratio);
      verdict = p.note !== undefined || h.note !== undefined ? 'FAIL' : ok === undefined ? 'n/a' : ok ? 'PASS' : 'FAIL';
    }
    return {
      id,
      label,
      unit,
      http: h.value ?? null,
      streamed: st.value ?? null,
      proxy: p.value ?? null,
      ratio: ratio ?? null,
      target: target?.text ?? null,
      verdict,
      notes: {
        ...(h.note === undefined ? {} : { http: h.note }),
        ...(st.note === undefined ? {} : { streamed: st.note }),
        ...(p.note === undefined ? {} : { proxy: p.note }),
      },
    };
  };
  const perBlob = (p: DoorPull): number | undefined => (uniqueBlobs > 0 ? p.blobGets / uniqueBlobs : undefined);
  const both = (h: number | undefined, p: number | undefined, want: number): boolean | undefined =>
    h === undefined || p === undefined ? undefined : Math.round(h * 100) / 100 === want && Math.round(p * 100) / 100 === want;
  return [
    row('proxy_cold_mbps', 'cold pull', 'MB/s', (d) => d.cold, (p) => p.mbPerSec),
    row('proxy_warm_mbps', 'warm pull', 'MB/s', (d) => d.warm, (p) => p.mbPerSec, {
      text: `proxy >= ${WARM_RATIO_TARGET}x HTTP`,
      check: (_h, _p, r) => (r === undefined ? undefined : r >= WARM_RATIO_TARGET),
    }),
    row('proxy_cold_cpu_per_gb', 'relais CPU per pulled GB, cold', 's/GB', (d) => d.cold, (p) => cpuSecondsPerGb(p.cpuSeconds, p.bytes)),
    row('proxy_warm_cpu_per_gb', 'relais CPU per pulled GB, warm', 's/GB', (d) => d.warm, (p) => cpuSecondsPerGb(p.cpuSeconds, p.bytes)),
    row('proxy_warm_client_cpu_per_gb', 'client CPU per pulled GB, warm', 's/GB', (d) => d.warm, (p) => cpuSecondsPerGb(p.clientCpuSeconds, p.bytes)),
    row('proxy_cold_upstream_gets', 'upstream blob GETs per blob, cold', 'ratio', (d) => d.cold, perBlob, {
      text: '= 1.00 both doors',
      check: (h, p) => both(h, p, 1),
    }),
    row('proxy_warm_upstream_gets', 'upstream blob GETs, warm', 'count', (d) => d.warm, (p) => p.blobGets, {
      text: '= 0 both doors',
      check: (h, p) => both(h, p, 0),
    }),
  ];
}

function fmt(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** A Markdown table like the main one's. */
export function renderProxyTable(rows: readonly ProxyRow[]): string {
  const header = ['metric', 'HTTP door', 'HTTP, sendfile off', 'proxy door (TLS)', 'proxy/HTTP', 'target', 'result'];
  const lines = rows.map((r) => [
    `${r.label} (${r.unit})`,
    `${fmt(r.http)}${r.notes.http === undefined ? '' : ` (${r.notes.http})`}`,
    `${fmt(r.streamed)}${r.notes.streamed === undefined ? '' : ` (${r.notes.streamed})`}`,
    `${fmt(r.proxy)}${r.notes.proxy === undefined ? '' : ` (${r.notes.proxy})`}`,
    r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
    r.target ?? '',
    r.verdict ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 ? `-${'-'.repeat(w)}-` : `-${'-'.repeat(w - 1)}:`)).join('|')}|`;
  return [line(header), sep, ...lines.map(line)].join('\n');
}

export interface TlsBoundInput {
  /** Warm pulls through each door (medians are taken). */
  readonly http: readonly DoorPull[];
  readonly proxy: readonly DoorPull[];
  /** The same through the HTTP door with sendfile off, when measured: splits relais's extra CPU into no-sendfile and TLS. */
  readonly streamed?: readonly DoorPull[];
  /** Bytes/s one core encrypts (or decrypts) with the negotiated cipher (openssl speed); undefined if unmeasured. */
  readonly cipherBytesPerSec: number | undefined;
  readonly cores: number;
}

export interface TlsBound {
  /** Extra CPU-seconds of the warm pull through the proxy door over the HTTP door's: relais, the clients. */
  readonly extraRelaisCpu: number;
  readonly extraClientCpu: number;
  /** Of extraRelaisCpu: what streaming through user space costs (sendfile off, no TLS), and what TLS adds on top. */
  readonly noSendfileRelaisCpu: number | undefined;
  readonly tlsRelaisCpu: number | undefined;
  /** CPU-seconds the cipher alone needs for the warm pull's bytes, once to encrypt (relais) and once to decrypt (clients). */
  readonly cipherCpuEachSide: number | undefined;
  /**
   * The best proxy/HTTP warm ratio when TLS cost nothing but the cipher: the HTTP door's relais + client CPU plus
   * the cipher on both sides, spread over the cores (the warm pulls here are CPU-bound: clients and relais share
   * the cores).
   */
  readonly cipherOnlyRatio: number | undefined;
  /** The same bound from the CPU actually measured through the proxy door (close to the measured ratio when CPU-bound). */
  readonly measuredCpuRatio: number | undefined;
}

/** What bounds the warm pull through the proxy door, from quantities measured in the same run. */
export function tlsBound(i: TlsBoundInput): TlsBound | undefined {
  const med = (xs: readonly DoorPull[], f: (p: DoorPull) => number): number | undefined => median(xs.filter((p) => p.errors === 0).map(f));
  const hRelais = med(i.http, (p) => p.cpuSeconds);
  const hClient = med(i.http, (p) => p.clientCpuSeconds);
  const pRelais = med(i.proxy, (p) => p.cpuSeconds);
  const pClient = med(i.proxy, (p) => p.clientCpuSeconds);
  const hBytes = med(i.http, (p) => p.bytes);
  const pBytes = med(i.proxy, (p) => p.bytes);
  const hMbps = med(i.http, (p) => p.mbPerSec);
  if (hRelais === undefined || hClient === undefined || pRelais === undefined || pClient === undefined || hBytes === undefined || pBytes === undefined || hMbps === undefined) {
    return undefined;
  }
  const sRelais = i.streamed === undefined ? undefined : med(i.streamed, (p) => p.cpuSeconds);
  const cpuBoundMbps = (cpu: number, bytes: number): number => bytes / MB / (cpu / i.cores);
  const httpCpuBound = cpuBoundMbps(hRelais + hClient, hBytes);
  const cipherCpuEachSide = i.cipherBytesPerSec === undefined ? undefined : pBytes / i.cipherBytesPerSec;
  // Ratios of CPU bounds (not of the HTTP door's measured rate), so that the two bounds compare alike.
  const cipherOnlyRatio = cipherCpuEachSide === undefined ? undefined : cpuBoundMbps(hRelais + hClient + 2 * cipherCpuEachSide, pBytes) / httpCpuBound;
  return {
    extraRelaisCpu: pRelais - hRelais,
    extraClientCpu: pClient - hClient,
    noSendfileRelaisCpu: sRelais === undefined ? undefined : sRelais - hRelais,
    tlsRelaisCpu: sRelais === undefined ? undefined : pRelais - sRelais,
    cipherCpuEachSide,
    cipherOnlyRatio,
    measuredCpuRatio: cpuBoundMbps(pRelais + pClient, pBytes) / httpCpuBound,
  };
}

/** The protocol and cipher suite relais's proxy door negotiates with a Node client (undici's TLS is Node's). */
export async function probeTls(proxyUrl: string, registry: string, ca: string): Promise<{ protocol: string; cipher: string }> {
  const proxy = new URL(proxyUrl);
  const host = new URL(registry).hostname;
  const target = `${host}:443`;
  const socket = await new Promise<Socket>((resolve, reject) => {
    const req = httpRequest({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: target, headers: { host: target } });
    req.once('connect', (res, sock) => {
      if (res.statusCode !== 200) {
        sock.destroy();
        reject(new Error(`CONNECT ${target} answered ${res.statusCode ?? 0}`));
      } else resolve(sock);
    });
    req.once('error', reject);
    req.end();
  });
  return new Promise((resolve, reject) => {
    const t = tlsConnect({ socket, servername: host, ca, ALPNProtocols: ['http/1.1'] }, () => {
      const r = { protocol: t.getProtocol() ?? 'unknown', cipher: t.getCipher().standardName };
      t.destroy();
      resolve(r);
    });
    t.once('error', (e: Error) => {
      socket.destroy();
      reject(e);
    });
  });
}
