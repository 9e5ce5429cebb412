// How the CLI reports failures: the message, then the hint; no stack traces for expected errors.
import { isRelaisError } from '../errors.js';

export function printError(e: unknown, stream: NodeJS.WritableStream = process.stderr): void {
  if (isRelaisError(e)) {
    stream.write(`relais: ${e.message}\n`);
    if (e.hint !== undefined) stream.write(`hint: ${e.hint}\n`);
    return;
  }
  const err = e as NodeJS.ErrnoException;
  stream.write(`relais: ${err.code !== undefined ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`);
  if (process.env.RELAIS_DEBUG !== undefined && err.stack !== undefined) stream.write(`${err.stack}\n`);
}
