// Zero-copy responses. Node has no sendfile: a blob served the usual way is read into Buffers and written
// to the socket again, which cost relais 13-24x nginx's CPU per byte (docs/performance.md). The native
// addon in native/sendfile hands (socket, file, offset, length) to one background thread that calls
// Linux sendfile(2) until the kernel has every byte, so the bytes go from the page cache to the socket
// without entering the JS heap. Without the addon (not built, not Linux) or on TLS connections, relais
// writes the file from reused buffers (file-writer.ts), or streams what has no local file.
import { createRequire } from 'node:module';
import type { ServerResponse } from 'node:http';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { TLSSocket } from 'node:tls';
import { errors } from '../../errors.js';
import type { FileBody } from '../../cache/blob-source.js';

/** The addon's two functions (native/sendfile/sendfile.c). */
interface NativeSendfile {
  send(sockFd: number, fileFd: number, offset: number, length: number, idleMs: number, cb: (errno: number, sent: number) => void): object;
  cancel(job: object): void;
}

const ADDON = '../../../../native/sendfile/build/Release/relais_sendfile.node';

/** Loads the addon; the reason when it cannot be used. */
export function loadSendfile(): { native: NativeSendfile } | { native?: undefined; reason: string } {
  if (process.platform !== 'linux') return { reason: `sendfile(2) is used on Linux only (this is ${process.platform})` };
  const path = fileURLToPath(new URL(ADDON, import.meta.url));
  try {
    const mod = createRequire(import.meta.url)(path) as Partial<NativeSendfile>;
    if (typeof mod.send !== 'function' || typeof mod.cancel !== 'function') return { reason: `${path} is not relais's sendfile addon` };
    return { native: mod as NativeSendfile };
  } catch (e) {
    return { reason: `the native addon is not built (${(e as Error).message.split('\n')[0] ?? ''})` };
  }
}

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** An error of a transfer, with the errno's name as its code (EPIPE, ECONNRESET, ETIMEDOUT, ...). */
export class SendfileError extends Error {
  override readonly name = 'SendfileError';
  readonly code: string;
  constructor(
    errno: number,
    readonly sent: number,
  ) {
    const code = errnoNames.get(errno) ?? `E${errno}`;
    super(`sendfile: ${code} after ${sent} bytes`);
    this.code = code;
  }
}

/** Errors of a transfer that mean the client closed its connection. */
const CLIENT_GONE = new Set(['EPIPE', 'ECONNRESET', 'ECANCELED']);

interface HandleWithFd {
  _handle?: { fd?: unknown } | null;
}

export class Sendfile {
  /** Since start: responses sent with sendfile, their body bytes, and those that failed (client gone, timeout). */
  readonly stats = { responses: 0, bytes: 0, failures: 0 };

  constructor(
    private readonly native: NativeSendfile,
    /** A transfer with no progress for this long fails (ETIMEDOUT): a client that stopped reading. */
    private readonly idleMs: number,
  ) {}

  /** The socket's fd when this response can be sent with sendfile: plain TCP, still open. */
  private socketFd(res: ServerResponse): number | undefined {
    const socket = res.socket;
    if (!socket || socket instanceof TLSSocket || socket.destroyed) return undefined;
    const fd = (socket as unknown as HandleWithFd)._handle?.fd;
    return typeof fd === 'number' && fd >= 0 ? fd : undefined;
  }

  eligible(res: ServerResponse): boolean {
    return this.socketFd(res) !== undefined;
  }

  /**
   * Sends the response's headers (already set), then the body's bytes, then ends the response. If anything
   * fails after the headers went out, the response is destroyed so that the client sees a broken transfer.
   * The body is closed in every case.
   */
  async send(res: ServerResponse, body: FileBody, onSent?: (bytes: number) => void): Promise<void> {
    const abort = new AbortController();
    const onClose = (): void => abort.abort(errors.internal('client went away'));
    res.once('close', onClose);
    try {
      res.flushHeaders();
      const socket = res.socket;
      // The headers must be in the kernel before the first sendfile byte: an empty write's callback fires
      // once everything written before it has been handed to the kernel.
      if (socket && socket.writableLength > 0) await new Promise<void>((resolve, reject) => socket.write(Buffer.alloc(0), (e) => (e ? reject(e) : resolve())));
      let pos = body.start;
      while (pos < body.end) {
        const upto = Math.min(await body.ready(pos, abort.signal), body.end);
        const fd = this.socketFd(res);
        if (fd === undefined) throw errors.internal('client connection closed');
        await this.transfer(fd, body.fd, pos, upto - pos, abort.signal, onSent);
        pos = upto;
      }
      this.stats.responses++;
      res.end();
    } catch (e) {
      this.stats.failures++;
      res.destroy();
      // A client that went away is not a failure of relais: the request log marks it aborted.
      if (abort.signal.aborted || (e instanceof SendfileError && CLIENT_GONE.has(e.code))) return;
      throw e;
    } finally {
      res.off('close', onClose);
      await body.close();
    }
  }

  private transfer(sockFd: number, fileFd: number, offset: number, length: number, signal: AbortSignal, onSent?: (bytes: number) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let finished = false;
      const job = this.native.send(sockFd, fileFd, offset, length, this.idleMs, (errno, sent) => {
        finished = true;
        signal.removeEventListener('abort', onAbort);
        this.stats.bytes += sent;
        onSent?.(sent);
        if (errno === 0) resolve();
        else reject(new SendfileError(errno, sent));
      });
      const onAbort = (): void => {
        if (!finished) this.native.cancel(job);
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
