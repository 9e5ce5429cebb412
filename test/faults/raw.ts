// Raw HTTP/1.1 over a socket, for requests no well-behaved client library will send.
import { connect } from 'node:net';

export interface RawResult {
  /** Everything the server sent before closing (or before the timeout). */
  readonly text: string;
  /** First status code in the answer, or undefined if none. */
  readonly status: number | undefined;
  /** Whether the server closed the connection. */
  readonly closed: boolean;
  readonly ms: number;
}

/** Sends `chunks` (with optional delays between them) and collects the answer until close or `timeoutMs`. */
export function rawRequest(port: number, chunks: (string | Buffer | { delayMs: number })[], timeoutMs = 5000): Promise<RawResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const sock = connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let closed = false;
    const finish = (): void => {
      clearTimeout(timer);
      const text = Buffer.concat(got).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      sock.destroy();
      resolve({ text, status: m?.[1] === undefined ? undefined : Number(m[1]), closed, ms: Date.now() - started });
    };
    const timer = setTimeout(finish, timeoutMs);
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('close', () => {
      closed = true;
      finish();
    });
    sock.on('error', () => undefined);
    sock.on('connect', () => {
      void (async () => {
        for (const c of chunks) {
          if (typeof c === 'object' && !Buffer.isBuffer(c)) await new Promise((r) => setTimeout(r, c.delayMs));
          else if (!sock.destroyed) sock.write(c);
        }
      })();
    });
  });
}
