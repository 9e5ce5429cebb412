// The edge: every error becomes the OCI spec's JSON error body here, and only here.
import type { ServerResponse } from 'node:http';
import { errors, isRelaisError, type RelaisError } from '../../errors.js';

export function toRelaisError(e: unknown): RelaisError {
  if (isRelaisError(e)) return e;
  return errors.internal('internal error', e);
}

/** Writes the error response, or destroys the connection if the response had already started. */
export function sendError(res: ServerResponse, e: unknown, method: string): RelaisError {
  const err = toRelaisError(e);
  if (res.headersSent) {
    // A stream failed after the status line: the client must see a failed transfer, not a short success.
    res.destroy(err);
    return err;
  }
  const body = JSON.stringify({
    errors: [{ code: err.code, message: err.message, detail: err.detail ?? null, ...(err.hint !== undefined ? { hint: err.hint } : {}) }],
  });
  res.statusCode = err.status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.setHeader('docker-distribution-api-version', 'registry/2.0');
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  res.end(method === 'HEAD' ? undefined : body);
  return err;
}
