// An HTTP-aware fault-injecting proxy for tests: sits between relais and a real upstream (distribution)
// on a free loopback port and, per request, passes, throttles, freezes, resets, corrupts or answers
// instead of the upstream. Rules match by method and path and by occurrence (the first N matching
// requests, after skipping some); the first rule that applies wins, unmatched requests pass.
//
// What relais sent and what the proxy forwarded back are recorded per request, so a test can assert
// what the upstream side saw (together with distribution's own access log, which counts what the
// upstream itself served).
import { createServer, request as httpRequest, Agent, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FaultAction {
  /** Answer this status without forwarding (e.g. 429, 500, 503). */
  readonly status?: number;
  /** Headers of that answer (e.g. { 'retry-after': '2' }). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Never answer: keep the connection open without sending headers. */
  readonly hang?: boolean;
  /** Limit the response body to this many bytes per second. */
  readonly throttle?: number;
  /** Send this many body bytes, then stop sending (the connection stays open). */
  readonly freezeAfter?: number;
  /** Send this many body bytes, then destroy the socket (the client sees the connection close mid-body). */
  readonly resetAfter?: number;
  /** Invert the bits of the body byte at this offset. */
  readonly flipAt?: number;
  /** Drop the request's Range header and the response's Accept-Ranges (an upstream without Range support). */
  readonly ignoreRange?: boolean;
  /** Drop Content-Length from the response (chunked encoding: the client learns the size only at the end). */
  readonly stripContentLength?: boolean;
}

export interface FaultRule {
  /** HTTP method, case-insensitive; any when absent. */
  readonly method?: string;
  readonly path: RegExp;
  /** Matching requests to let through untouched before this rule applies (default 0). */
  readonly skip?: number;
  /** Matching requests this rule applies to after the skipped ones (default: all). */
  readonly times?: number;
  readonly action: FaultAction;
}

export interface ProxiedRequest {
  readonly method: string;
  /** Path and query as relais sent it. */
  readonly url: string;
  readonly path: string;
  /** Request headers as received (lower-case names). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** ms since epoch when the request arrived. */
  readonly at: number;
  /** Index of the rule applied, or undefined when passed through. */
  readonly rule: number | undefined;
  /** Status sent to relais (undefined while none was sent). */
  status: number | undefined;
  /** Body bytes sent to relais. */
  bytes: number;
  /** What happened: 'passed', 'answered', 'hung', 'frozen', 'reset', 'flipped', 'upstream-error', 'client-gone'. */
  outcome: string;
  /** True once the exchange ended (completed, reset or abandoned). */
  ended: boolean;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  /** Replaces the rules (occurrence counters restart). */
  setRules(rules: readonly FaultRule[]): void;
  /** Every request received so far. */
  requests(): readonly ProxiedRequest[];
  /** Requests matching method ('*' for any) and path. */
  count(method: string, path: RegExp): number;
  /** Body bytes forwarded to relais for requests matching method and path. */
  bytesForwarded(method: string, path: RegExp): number;
  /** Forget recorded requests. */
  clear(): void;
  /** Resolves once `count(method, path) >= n`. */
  waitFor(method: string, path: RegExp, n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

interface ActiveRule {
  readonly rule: FaultRule;
  seen: number;
}

function matches(method: string, path: string, m: string, re: RegExp): boolean {
  return (m === '*' || method.toUpperCase() === m.toUpperCase()) && re.test(path);
}

/** Starts the proxy in front of `upstreamUrl` (http://HOST:PORT). */
export async function startFaultProxy(upstreamUrl: string, rules: readonly FaultRule[] = []): Promise<FaultProxy> {
  const target = new URL(upstreamUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  let active: ActiveRule[] = rules.map((rule) => ({ rule, seen: 0 }));
  let log: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  /** Resolved at close: releases frozen and hung exchanges. */
  let closing = false;
  const closers = new Set<() => void>();

  const pick = (method: string, path: string): { action: FaultAction; index: number } | undefined => {
    for (const [i, a] of active.entries()) {
      const r = a.rule;
      if (!matches(method, path, r.method ?? '*', r.path)) continue;
      a.seen++;
      const skip = r.skip ?? 0;
      if (a.seen <= skip) continue;
      if (r.times !== undefined && a.seen > skip + r.times) continue;
      return { action: r.action, index: i };
    }
    return undefined;
  };

  /** Waits until the proxy closes or the client goes away. */
  const parkUntilGone = (res: ServerResponse): Promise<void> =>
    new Promise<void>((resolve) => {
      const done = (): void => {
        closers.delete(done);
        resolve();
      };
      if (closing || res.destroyed) {
        resolve();
        return;
      }
      closers.add(done);
      res.once('close', done);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? url;
    const picked = pick(method, path);
    const action = picked?.action ?? {};
    const rec: ProxiedRequest = { method, url, path, headers: { ...req.headers }, at: Date.now(), rule: picked?.index, status: undefined, bytes: 0, outcome: 'passed', ended: false };
    log.push(rec);
    res.once('close', () => {
      if (!res.writableFinished && !rec.ended) rec.outcome = rec.outcome === 'passed' ? 'client-gone' : rec.outcome;
      rec.ended = true;
    });
    req.resume();

    if (action.hang === true) {
      rec.outcome = 'hung';
      await parkUntilGone(res);
      res.destroy();
      return;
    }
    if (action.status !== undefined) {
      rec.outcome = 'answered';
      rec.status = action.status;
      const body = JSON.stringify({ errors: [{ code: action.status === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', message: `fault proxy answered ${action.status}` }] });
      res.writeHead(action.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(action.headers ?? {}) });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }

    const headers: OutgoingHttpHeaders = { ...req.headers, host: target.host };
    if (action.ignoreRange === true) {
      delete headers.range;
      delete headers['if-range'];
    }
    const upReq = httpRequest({ host: target.hostname, port: target.port, method, path: url, headers, agent });
    res.once('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
    let upRes: IncomingMessage;
    try {
      upRes = await new Promise<IncomingMessage>((resolve, reject) => {
        upReq.once('response', resolve);
        upReq.once('error', reject);
        upReq.end();
      });
    } catch {
      rec.outcome = 'upstream-error';
      // The upstream is gone: so is the connection relais made (as if it had reached the upstream itself).
      res.destroy();
      return;
    }
    const outHeaders: OutgoingHttpHeaders = { ...upRes.headers };
    if (action.ignoreRange === true) delete outHeaders['accept-ranges'];
    if (action.stripContentLength === true) delete outHeaders['content-length'];
    rec.status = upRes.statusCode ?? 502;
    res.writeHead(rec.status, outHeaders);

    let offset = 0;
    const cut = action.freezeAfter ?? action.resetAfter;
    const write = (chunk: Buffer): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        if (res.destroyed) {
          reject(new Error('client gone'));
          return;
        }
        res.write(chunk, (err) => (err ? reject(err) : resolve()));
      });
    try {
      for await (const raw of upRes as AsyncIterable<Buffer>) {
        let chunk = raw;
        if (action.flipAt !== undefined && action.flipAt >= offset && action.flipAt < offset + chunk.byteLength) {
          chunk = Buffer.from(chunk);
          const i = action.flipAt - offset;
          chunk[i] = (chunk[i] ?? 0) ^ 0xff;
          rec.outcome = 'flipped';
        }
        if (cut !== undefined && offset + chunk.byteLength >= cut) chunk = chunk.subarray(0, cut - offset);
        // Throttled: slices of 1/20 s worth of bytes.
        const slice = action.throttle !== undefined ? Math.max(1, Math.floor(action.throttle / 20)) : chunk.byteLength;
        for (let p = 0; p < chunk.byteLength; p += slice) {
          const piece = chunk.subarray(p, Math.min(chunk.byteLength, p + slice));
          await write(piece);
          offset += piece.byteLength;
          rec.bytes += piece.byteLength;
          if (action.throttle !== undefined) await sleep(Math.ceil((piece.byteLength / action.throttle) * 1000));
        }
        if (cut !== undefined && offset >= cut) break;
      }
    } catch {
      rec.outcome = rec.outcome === 'passed' ? 'client-gone' : rec.outcome;
      upReq.destroy();
      res.destroy();
      return;
    }
    if (action.freezeAfter !== undefined && offset >= action.freezeAfter) {
      rec.outcome = 'frozen';
      upReq.destroy();
      await parkUntilGone(res);
      res.destroy();
      return;
    }
    if (action.resetAfter !== undefined && offset >= action.resetAfter) {
      rec.outcome = 'reset';
      upReq.destroy();
      // Everything written so far reaches relais, then the connection closes mid-body.
      res.socket?.destroy();
      res.destroy();
      return;
    }
    res.end();
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const count = (method: string, path: RegExp): number => log.filter((r) => matches(r.method, r.path, method, path)).length;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    setRules: (r) => {
      active = r.map((rule) => ({ rule, seen: 0 }));
    },
    requests: () => log,
    count,
    bytesForwarded: (method, path) => log.filter((r) => matches(r.method, r.path, method, path)).reduce((n, r) => n + r.bytes, 0),
    clear: () => {
      log = [];
    },
    waitFor: async (method, path, n, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      while (count(method, path) < n) {
        if (Date.now() > deadline) throw new Error(`fault proxy: ${count(method, path)} of ${n} ${method} ${String(path)} after ${timeoutMs} ms`);
        await sleep(10);
      }
    },
    close: async () => {
      closing = true;
      for (const c of [...closers]) c();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
      agent.destroy();
    },
  };
}
