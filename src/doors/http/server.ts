// The HTTP(S) server: connection limits, the fast path, the request log, and graceful drain.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { errors } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import type { RequestLog } from '../../observability/request-log.js';
import type { RequestInfo } from '../../observability/metrics.js';
import type { FastAnswer, RequestContext, RouteHandler } from './context.js';
import { sendError } from './error-response.js';

export type { FastAnswer, RequestContext, RouteHandler };

export interface ServerOptions {
  readonly tls?: { readonly cert: string; readonly key: string } | undefined;
  readonly headersTimeout: number;
  readonly keepAliveTimeout: number;
  readonly requestTimeout: number;
  /** Where request lines go; none without it (log.requests: false). */
  readonly requestLog?: RequestLog | undefined;
  /** Warnings (failed requests). */
  readonly logger: Logger;
  /**
   * Tried first, synchronously: answers the request completely (status, headers, body handed to the connection)
   * and says what it sent, or does nothing and returns undefined.
   */
  readonly fast?: ((req: IncomingMessage, res: ServerResponse) => FastAnswer | undefined) | undefined;
  /** Handlers tried in order; the first that returns true owns the request. */
  readonly handlers: readonly RouteHandler[];
  /** Told about every request once its response is done or abandoned (metrics, status page). */
  readonly onRequestEnd?: (info: RequestInfo) => void;
}

export interface RunningServer {
  readonly server: Server;
  readonly active: () => number;
  /** Serves HTTP on a connection that arrived another way (a TLS connection the proxy door decrypted). */
  accept(socket: Duplex): void;
  /** Stops accepting, waits for in-flight requests up to `timeoutMs`, then closes what is left. */
  drain(timeoutMs: number): Promise<void>;
}

export function createServer(opts: ServerOptions): RunningServer {
  const { fast, requestLog, onRequestEnd } = opts;
  let active = 0;
  let idleWaiters: (() => void)[] = [];

  /** Metrics and the request line of one finished (or abandoned) request. */
  const report = (info: RequestInfo): void => {
    onRequestEnd?.(info);
    requestLog?.write({
      method: info.method,
      path: info.url,
      status: info.status,
      bytes: info.bytes,
      ms: Math.round(info.seconds * 10_000) / 10,
      cache: info.result,
      upstream: info.upstream,
      aborted: !info.finished,
    });
  };

  /** A finished request's figures: what every report shares, plus what its path learned. */
  const requestInfo = (req: IncomingMessage, started: number, rest: Omit<RequestInfo, 'method' | 'url' | 'seconds'>): RequestInfo => ({
    method: req.method ?? 'GET',
    url: req.url ?? '/',
    seconds: (performance.now() - started) / 1000,
    ...rest,
  });

  /** Routing, lookups and access checks: every request the fast path does not answer. */
  const full = (req: IncomingMessage, res: ServerResponse, started: number): void => {
    active++;
    const ctx: RequestContext = {};
    let failure: { code: string; message: string } | undefined;
    // Kept: a response relayed from a stream may leave req.socket unset by the time it is reported.
    const socket = req.socket;
    const socketBytesAtStart = socket.bytesWritten;
    // Reported once the response is closed AND its handler is done: a sendfile body's bytes are only
    // known when its transfer ends, which can be just after a client that had everything hung up.
    let closed = false;
    let handled = false;
    const ended = (): void => {
      if (!closed || !handled) return;
      report(
        requestInfo(req, started, {
          status: res.statusCode,
          kind: ctx.kind ?? 'other',
          image: ctx.image,
          upstream: ctx.upstream,
          result: ctx.result,
          bytes: ctx.bytes,
          finished: res.writableFinished,
          sentBytes: socket.bytesWritten - socketBytesAtStart + (ctx.zeroCopyBytes ?? 0),
          error: failure,
        }),
      );
      active--;
      if (active === 0) {
        const w = idleWaiters;
        idleWaiters = [];
        w.forEach((f) => f());
      }
    };
    res.once('close', () => {
      closed = true;
      ended();
    });
    void (async () => {
      try {
        for (const h of opts.handlers) {
          if (await h(req, res, ctx)) return;
        }
        sendError(res, errors.endpointUnknown(req.url ?? ''), req.method ?? 'GET');
      } catch (e) {
        const err = sendError(res, e, req.method ?? 'GET');
        failure = { code: err.code, message: err.message };
        if (err.status >= 500 || err.code === 'INTERNAL') {
          opts.logger.warn({ err: { code: err.code, message: err.message, cause: describeCause(err.cause) }, path: req.url }, 'request failed');
        }
      } finally {
        handled = true;
        ended();
      }
    })();
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    if (fast !== undefined) {
      let answer: FastAnswer | undefined;
      try {
        answer = fast(req, res);
      } catch (e) {
        // Never expected; a throw in a request listener would take the process down. Before any byte went
        // out, the full path answers; after, the client sees a broken response.
        opts.logger.warn({ err: { message: e instanceof Error ? e.message : String(e) }, path: req.url }, 'fast path failed');
        if (res.headersSent) {
          res.destroy();
          const error = { code: 'INTERNAL', message: 'fast path failed' };
          // The fast path answers manifests only.
          report(requestInfo(req, started, { status: res.statusCode, kind: 'manifest', upstream: undefined, result: undefined, bytes: undefined, finished: false, error }));
          return;
        }
      }
      // The whole response went to the connection synchronously: no close event to wait for, nothing in flight.
      if (answer !== undefined) {
        report(requestInfo(req, started, { status: res.statusCode, kind: answer.kind, image: answer.image, upstream: answer.upstream, result: answer.result, bytes: answer.bytes, finished: !res.destroyed }));
        return;
      }
    }
    full(req, res, started);
  };
  const serverOptions = {
    headersTimeout: opts.headersTimeout,
    keepAliveTimeout: opts.keepAliveTimeout,
    requestTimeout: opts.requestTimeout,
    // How often Node checks headersTimeout/requestTimeout (slowloris): its default is 30 s.
    connectionsCheckingInterval: Math.max(250, Math.min(1000, Math.floor(opts.headersTimeout / 2))),
    maxHeaderSize: 16 * 1024,
    // Refuse ambiguous framing (request smuggling): Node rejects CL+TE and obs-fold by default; keep it strict.
    insecureHTTPParser: false,
  };
  const server = opts.tls
    ? createHttpsServer({ ...serverOptions, cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) }, onRequest)
    : createHttpServer(serverOptions, onRequest);
  // Connections decrypted elsewhere (the proxy door) are plain HTTP to this server, whatever `tls` says.
  const plain = opts.tls ? createHttpServer(serverOptions, onRequest) : server;
  const onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  };
  server.on('clientError', onClientError);
  if (plain !== server) plain.on('clientError', onClientError);
  return {
    server,
    active: () => active,
    accept: (socket) => {
      plain.emit('connection', socket);
    },
    drain: async (timeoutMs) => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (plain !== server) plain.closeIdleConnections();
      if (active > 0) {
        await Promise.race([new Promise<void>((r) => idleWaiters.push(r)), new Promise<void>((r) => setTimeout(r, timeoutMs).unref())]);
      }
      server.closeAllConnections();
      if (plain !== server) plain.closeAllConnections();
      await closed;
    },
  };
}

function describeCause(c: unknown): string | undefined {
  if (c === undefined) return undefined;
  if (c instanceof Error) return `${(c as NodeJS.ErrnoException).code ?? c.name}: ${c.message}`;
  return typeof c === 'string' ? c : JSON.stringify(c);
}
