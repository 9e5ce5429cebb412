// Structured logs (pino): lifecycle and failure events. Request lines: src/observability/request-log.ts.
// Secrets never reach a log line: relais never logs request headers, and redacts known secret fields.
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = {
  paths: ['password', '*.password', 'authorization', '*.authorization', 'token', '*.token', 'headers.authorization', 'config.upstreams.*.password'],
  censor: '[redacted]',
};

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'relais' },
      // Epoch milliseconds (pino's default): formatting an ISO date per line costs more than the rest of the line.
      redact: REDACT,
    },
    // Asynchronous writes, but no batching threshold: a line is written as soon as the event loop allows,
    // so a crash loses at most what is in flight. flushLogger() flushes before exit.
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** Flushes buffered log lines (call before process.exit). */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    logger.flush(() => resolve());
  });
}
