// The request log: one JSON line per request, in the same shape as every other log line (pino's: level, time,
// service, the fields, msg), written in batches. The lines are formatted here rather than by pino: their fields
// are fixed and never hold a secret, and pino's generic serialisation plus its destination's per-line
// bookkeeping (a UTF-8 length per line, a string append) cost 4-5 us a request, a fifth of the time a hot
// manifest takes. Lifecycle events and warnings still go through pino (src/observability/logger.ts), unbuffered.
import { pino } from 'pino';

/** What a request line says. */
export interface RequestLine {
  readonly method: string;
  /** The raw request target (path and query). */
  readonly path: string;
  readonly status: number;
  readonly bytes: number | undefined;
  readonly ms: number;
  readonly cache: string | undefined;
  readonly upstream: string | undefined;
  /** The client went away before the response was complete. */
  readonly aborted: boolean;
}

/** Where batches of lines go: stdout's pino destination, a test's stream. */
export interface LineSink {
  write(chunk: string): unknown;
  /** Writes whatever the sink holds synchronously (called at exit). */
  flushSync?(): void;
}

export interface RequestLogOptions {
  /** Characters of lines gathered before a write; 0 writes every line at once. */
  readonly bufferBytes: number;
  /** The longest a line waits in the buffer, in ms. */
  readonly flushMs: number;
}

/** Bytes of request lines gathered before a write. */
export const REQUEST_LOG_BUFFER_BYTES = 16 * 1024;
/** The longest a request line waits in the buffer. */
export const REQUEST_LOG_FLUSH_MS = 1000;

const LEVEL_INFO = 30;

/** The line for one request, newline included: pino's layout, undefined fields left out. */
export function formatRequestLine(l: RequestLine, time: number): string {
  return (
    `{"level":${LEVEL_INFO},"time":${time},"service":"relais","method":${JSON.stringify(l.method)},"path":${JSON.stringify(l.path)},"status":${l.status}` +
    (l.bytes === undefined ? '' : `,"bytes":${l.bytes}`) +
    `,"ms":${l.ms}` +
    (l.cache === undefined ? '' : `,"cache":${JSON.stringify(l.cache)}`) +
    (l.upstream === undefined ? '' : `,"upstream":${JSON.stringify(l.upstream)}`) +
    (l.aborted ? ',"aborted":true' : '') +
    ',"msg":"request"}\n'
  );
}

/** Logs that still hold lines when the process exits (one exit hook for all of them). */
const live = new Set<RequestLog>();
let exitHooked = false;

export class RequestLog {
  private buffer = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sink: LineSink,
    private readonly opts: RequestLogOptions = { bufferBytes: REQUEST_LOG_BUFFER_BYTES, flushMs: REQUEST_LOG_FLUSH_MS },
  ) {
    if (opts.bufferBytes > 0) {
      live.add(this);
      if (!exitHooked) {
        exitHooked = true;
        // Also after an uncaught exception; only a SIGKILL or an OOM kill loses up to flushMs of lines.
        process.once('exit', () => {
          for (const log of live) {
            try {
              log.flushSync();
            } catch {
              // A destination that is gone (closed stdout) has nowhere to put the lines.
            }
          }
        });
      }
    }
  }

  write(line: RequestLine): void {
    this.buffer += formatRequestLine(line, Date.now());
    if (this.buffer.length >= this.opts.bufferBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.opts.flushMs).unref();
  }

  /** Hands the gathered lines to the sink. */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.buffer === '') return;
    const chunk = this.buffer;
    this.buffer = '';
    this.sink.write(chunk);
  }

  /** Hands the gathered lines to the sink and has it write them before returning (exit). */
  flushSync(): void {
    this.flush();
    this.sink.flushSync?.();
  }

  /** Flushes and stops the exit hook from holding this log. */
  close(): void {
    this.flushSync();
    live.delete(this);
  }
}

/** The production request log: batched lines to stdout, through the same kind of destination pino uses. */
export function createRequestLog(): RequestLog {
  return new RequestLog(pino.destination({ dest: 1, sync: false }));
}
