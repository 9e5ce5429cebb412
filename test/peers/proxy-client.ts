// A client of relais's proxy door for tests: a raw CONNECT (to see refusals exactly), and HTTPS requests
// through the door to an intercepted host, trusting relais's CA.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

export interface ConnectResult {
  /** The proxy's status for the CONNECT. */
  readonly status: number;
  /** The head and body of the proxy's answer when it refused (text). */
  readonly text: string;
  /** The tunnel, when the proxy answered 200 (the caller must destroy it). */
  readonly socket?: Socket;
}

/** Sends CONNECT target through the proxy at 127.0.0.1:proxyPort and reads its answer. */
export function connectThrough(proxyPort: number, target: string, headers: Record<string, string> = {}, timeoutMs = 5000): Promise<ConnectResult> {
  return new Promise((resolve, reject) => {
    const sock = connect(proxyPort, '127.0.0.1');
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`CONNECT ${target}: no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      const extra = Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${extra}\r\n`);
    });
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = got.subarray(0, end).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      if (status === 200) {
        clearTimeout(timer);
        sock.off('data', onData);
        const rest = got.subarray(end + 4);
        if (rest.length > 0) sock.unshift(rest);
        resolve({ status, text: head, socket: sock });
      }
    };
    sock.on('data', onData);
    sock.on('error', () => undefined);
    sock.once('close', () => {
      clearTimeout(timer);
      const text = got.toString('utf8');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), text });
    });
  });
}

/** TLS over a CONNECT tunnel, verifying the host's certificate against `ca` only. */
export async function tlsThrough(proxyPort: number, host: string, ca: string, port = 443): Promise<TLSSocket> {
  const c = await connectThrough(proxyPort, `${host}:${port}`);
  if (c.status !== 200 || !c.socket) throw new Error(`CONNECT ${host}:${port} answered ${c.status}: ${c.text}`);
  const tunnel = c.socket;
  return new Promise((resolve, reject) => {
    const t = tlsConnect({ socket: tunnel, servername: host, ca, ALPNProtocols: ['http/1.1'] }, () => resolve(t));
    t.once('error', reject);
  });
}

export interface RawHttpResult {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/** One HTTP/1.1 request (Connection: close) written as is over an established socket; reads to the end. */
export function rawHttp(socket: Socket | TLSSocket, request: string | Buffer, timeoutMs = 10_000): Promise<RawHttpResult> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no complete answer in time'));
    }, timeoutMs);
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(got);
      const end = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, end === -1 ? all.length : end).toString('latin1');
      const headers: Record<string, string> = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body: Buffer = end === -1 ? Buffer.alloc(0) : all.subarray(end + 4);
      if (headers['transfer-encoding'] === 'chunked') body = dechunk(body);
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), headers, body });
    });
    socket.write(request);
  });
}

function dechunk(b: Buffer): Buffer {
  const out: Buffer[] = [];
  let i = 0;
  for (;;) {
    const nl = b.indexOf('\r\n', i);
    if (nl === -1) break;
    const n = parseInt(b.subarray(i, nl).toString('latin1'), 16);
    if (!(n > 0)) break;
    out.push(b.subarray(nl + 2, nl + 2 + n));
    i = nl + 2 + n + 2;
  }
  return Buffer.concat(out);
}

/** GET (or another method) of https://host/path through the proxy door, as one Connection: close exchange. */
export async function fetchThrough(proxyPort: number, host: string, ca: string, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<RawHttpResult> {
  const t = await tlsThrough(proxyPort, host, ca);
  const extra = Object.entries(opts.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return rawHttp(t, `${opts.method ?? 'GET'} ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`);
}
