// The HTTPS forward-proxy front door (docs/proxy.md). Clients set HTTPS_PROXY=http://relais:3128; for each
// `CONNECT host:port`:
// - a host of a configured upstream (upstreams.NAME.hosts): relais terminates TLS with a leaf certificate of
//   its CA and hands the decrypted connection to the same request handling as the HTTP door (accept());
// - a host in proxy.tunnel, or a token service an upstream's own challenge named: a plain TCP tunnel;
// - anything else, IP literals included: 403 with what to configure. relais is never an open proxy.
// Requests that are not CONNECT (absolute-URI plain-HTTP proxying) are refused too.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { errors, isRelaisError, type RelaisError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import type { ProxyCa } from './ca.js';

/** What an intercepted connection is bound to: the upstream, the host name the client used, who it is. */
export interface ProxyBinding<P = unknown> {
  readonly upstream: string;
  /** host:port as the client named it in CONNECT. */
  readonly target: string;
  readonly principal: P;
}

export interface ProxyDoorDeps<P> {
  readonly ca: ProxyCa;
  /** host:port (lowercase) -> upstream name: the intercepted hosts. */
  readonly intercepted: ReadonlyMap<string, string>;
  /** host:port (lowercase): plain TCP tunnels the operator allowed (proxy.tunnel). */
  readonly tunnels: ReadonlySet<string>;
  /** Token services named by an upstream's challenges (host:port), tunnelled without being listed. */
  readonly learned: { has(target: string): boolean };
  /**
   * Who is asking (Proxy-Authorization) and whether they may use this upstream (undefined: a tunnel).
   * Throws a RelaisError (407 or 403) to refuse.
   */
  readonly authorize: (proxyAuthorization: string | undefined, upstream: string | undefined) => Promise<P>;
  /** Hands a decrypted connection to the HTTP request handling, bound to an upstream. */
  readonly accept: (socket: TLSSocket, binding: ProxyBinding<P>) => void;
  readonly logger: Logger;
  /** Connect timeout for tunnels (ms). */
  readonly connectTimeout: number;
}

export interface ProxyDoor {
  readonly server: Server;
  /** Open tunnels and connections not yet handed over. */
  readonly open: () => number;
  close(): Promise<void>;
}

/** Parses a CONNECT authority: host:port with a lowercase host (no trailing dot), or undefined. */
export function parseTarget(authority: string | undefined): { host: string; port: number; key: string } | undefined {
  if (authority === undefined) return undefined;
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(authority);
  if (!m?.[1] || !m[2]) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  const host = m[1].toLowerCase().replace(/\.$/, '');
  return { host, port, key: `${host}:${port}` };
}

function refuse(socket: Duplex, err: RelaisError): void {
  const reason = err.status === 407 ? 'Proxy Authentication Required' : err.status === 403 ? 'Forbidden' : err.status === 400 ? 'Bad Request' : 'Bad Gateway';
  const body = `${err.message}\n${err.hint === undefined ? '' : `hint: ${err.hint}\n`}`;
  const extra = Object.entries(err.headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(`HTTP/1.1 ${err.status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`);
}

export function createProxyDoor<P>(deps: ProxyDoorDeps<P>): ProxyDoor {
  const sockets = new Set<Duplex>();
  const track = (s: Duplex): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  // Plain requests to the proxy port: absolute-URI proxying (http://host/...) is never done.
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '';
    const err = /^[a-z][a-z0-9+.-]*:\/\//i.test(url)
      ? errors.proxyRefused(`${req.method ?? 'GET'} ${url}`, 'relais does not forward plain-HTTP proxy requests; registries are reached with CONNECT (HTTPS_PROXY)')
      : errors.proxyRefused(`${req.method ?? 'GET'} ${url}`, 'this is relais\'s proxy port; the registry API and /_relais/ca.crt are on its HTTP port (listen)');
    const body = `${err.message}\nhint: ${err.hint ?? ''}\n`;
    res.writeHead(err.status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
    deps.logger.warn({ method: req.method, url: url.slice(0, 200) }, 'proxy: plain request refused');
  };

  const onConnect = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    track(socket);
    socket.on('error', () => socket.destroy());
    void (async () => {
      const target = parseTarget(req.url);
      try {
        if (!target) throw errors.proxyBadTarget(String(req.url));
        const upstream = deps.intercepted.get(target.key);
        if (upstream !== undefined) {
          const principal = await deps.authorize(req.headers['proxy-authorization'], upstream);
          const secureContext = await deps.ca.contextFor(target.host);
          if (socket.destroyed) return;
          socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          if (head.length > 0) socket.unshift(head);
          const tls = new TLSSocket(socket, { isServer: true, secureContext, ALPNProtocols: ['http/1.1'] });
          // From here the HTTP server owns the connection (and drains it gracefully on shutdown).
          sockets.delete(socket);
          tls.on('error', () => {
            tls.destroy();
            socket.destroy();
          });
          deps.accept(tls, { upstream, target: target.key, principal });
          return;
        }
        if (deps.tunnels.has(target.key) || deps.learned.has(target.key)) {
          await deps.authorize(req.headers['proxy-authorization'], undefined);
          tunnel(target, socket, head);
          return;
        }
        const why = isIP(target.host.replace(/^\[|\]$/g, '')) !== 0 ? 'an IP address is never proxied' : `${target.key} is not the host of a configured upstream (upstreams.NAME.hosts) nor in proxy.tunnel`;
        throw errors.proxyRefused(`CONNECT ${target.key}`, why);
      } catch (e) {
        const err = isRelaisError(e) ? e : errors.internal('proxy: CONNECT failed', e);
        if (err.status !== 407) deps.logger.warn({ target: String(req.url).slice(0, 200), code: err.code, status: err.status }, `proxy: ${err.message}`);
        if (!socket.destroyed) refuse(socket, err);
      }
    })();
  };

  const tunnel = (target: { host: string; port: number; key: string }, client: Duplex, head: Buffer): void => {
    const host = target.host.replace(/^\[|\]$/g, '');
    const out = connect({ host, port: target.port, timeout: deps.connectTimeout });
    track(out);
    let connected = false;
    out.once('connect', () => {
      connected = true;
      out.setTimeout(0);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) out.write(head);
      client.pipe(out);
      out.pipe(client);
    });
    out.once('timeout', () => out.destroy(new Error('connect timeout')));
    out.on('error', (e) => {
      if (!connected) {
        deps.logger.warn({ target: target.key, err: e.message }, 'proxy: tunnel connect failed');
        refuse(client, errors.proxyTunnelFailed(target.key, e.message));
      } else client.destroy();
    });
    client.once('close', () => out.destroy());
    out.once('close', () => client.destroy());
  };

  const server = createServer({ headersTimeout: 20_000, requestTimeout: 60_000 }, onRequest);
  server.on('connect', onConnect);
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });

  return {
    server,
    open: () => sockets.size,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
