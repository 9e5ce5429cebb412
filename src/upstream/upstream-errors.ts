// Turns what can go wrong while talking to an upstream into RelaisErrors: 502, 503 or 504, never a bare 500.
import { errors, RelaisError } from '../errors.js';
import type { UpstreamFailureKind } from '../types.js';

export type { UpstreamFailureKind };

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);
const REFUSED_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN']);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH']);

function errorCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let depth = 0; depth < 4 && cur !== null && typeof cur === 'object'; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

export function classifyFailure(e: unknown): UpstreamFailureKind {
  if (e instanceof RelaisError) {
    if (e.code === 'UPSTREAM_TIMEOUT') return 'timeout';
    if (e.code === 'UPSTREAM_DIGEST_MISMATCH') return 'digest_mismatch';
    if (e.code === 'TOOMANYREQUESTS') return 'status_429';
    return 'other';
  }
  const code = errorCode(e);
  if (code === undefined) return 'other';
  if (TIMEOUT_CODES.has(code)) return 'timeout';
  if (REFUSED_CODES.has(code)) return 'refused';
  if (DNS_CODES.has(code)) return 'dns';
  if (RESET_CODES.has(code)) return 'reset';
  return 'other';
}

/** Whether another attempt could succeed (the request never reached the application, or the link broke). */
export function isTransient(e: unknown): boolean {
  const k = classifyFailure(e);
  return k === 'timeout' || k === 'refused' || k === 'reset' || k === 'dns';
}

export function isAbort(e: unknown): boolean {
  return e !== null && typeof e === 'object' && ((e as { name?: unknown }).name === 'AbortError' || errorCode(e) === 'ABORT_ERR' || errorCode(e) === 'UND_ERR_ABORTED');
}

export function toUpstreamError(upstream: string, e: unknown): RelaisError {
  if (e instanceof RelaisError) return e;
  const kind = classifyFailure(e);
  const code = errorCode(e) ?? 'unknown error';
  switch (kind) {
    case 'timeout':
      return errors.upstreamTimeout.with({ cause: e }, upstream, code);
    case 'refused':
    case 'dns':
      return errors.upstreamUnreachable.with({ cause: e }, upstream, code);
    case 'reset':
      return errors.upstreamReset.with({ cause: e }, upstream, code);
    default:
      return errors.upstreamFailed.with({ cause: e }, upstream, code);
  }
}
