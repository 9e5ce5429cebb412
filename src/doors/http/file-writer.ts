// Blob bodies for connections sendfile(2) cannot serve (TLS, i.e. the proxy door; or server.sendfile off):
// the local file is read into a few buffers that are reused, rather than through a read stream that
// allocates a fresh 256 KiB Buffer per chunk. Those Buffers are memory outside V8's heap that V8 only gives
// back in a garbage collection: pulling 440 MB through the proxy door that way, V8's major GC took 44-47 %
// of relais's CPU samples (perf; docs/proxy.md "Performance").
import { read } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { errors } from '../../errors.js';
import type { FileBody } from '../../cache/blob-source.js';

const CHUNK = 256 * 1024;
/** Buffers in flight: one being read while the others are written. */
const BUFFERS = 3;

function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, length, position, (e, n) => (e ? reject(e) : resolve(n))));
}

/**
 * Sends the body's bytes (the headers are already set), then ends the response. A buffer is refilled only once
 * its previous write's callback ran: the socket (or OpenSSL, which encrypts it into its own buffers) has the
 * bytes by then. If anything fails after the headers went out, the response is destroyed so that the client
 * sees a broken transfer. The body is closed in every case.
 */
export async function writeFileBody(res: ServerResponse, body: FileBody): Promise<void> {
  const abort = new AbortController();
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(errors.internal('client went away'));
  });
  aborted.catch(() => undefined);
  const onClose = (): void => {
    abort.abort();
    onAbort();
  };
  res.once('close', onClose);
  const bufs = Array.from({ length: BUFFERS }, () => Buffer.allocUnsafeSlow(CHUNK));
  const writes: (Promise<void> | undefined)[] = Array.from({ length: BUFFERS }, () => undefined);
  try {
    let pos = body.start;
    let i = 0;
    while (pos < body.end) {
      const upto = Math.min(await body.ready(pos, abort.signal), body.end);
      while (pos < upto) {
        const buf = bufs[i];
        if (buf === undefined) throw errors.internal('file writer: no buffer');
        // A write whose socket closed may never call back: the close ends the wait.
        const prev = writes[i];
        if (prev !== undefined) await Promise.race([prev, aborted]);
        const n = await readAt(body.fd, buf, Math.min(CHUNK, upto - pos), pos);
        if (n === 0) throw errors.internal('blob file shorter than its size');
        const w = new Promise<void>((resolve, reject) => res.write(buf.subarray(0, n), (e) => (e ? reject(e) : resolve())));
        w.catch(() => undefined);
        writes[i] = w;
        pos += n;
        i = (i + 1) % BUFFERS;
      }
    }
    await Promise.race([Promise.all(writes.filter((w): w is Promise<void> => w !== undefined)), aborted]);
    res.end();
  } catch (e) {
    res.destroy();
    if (abort.signal.aborted) return;
    throw e;
  } finally {
    res.off('close', onClose);
    await body.close();
  }
}
