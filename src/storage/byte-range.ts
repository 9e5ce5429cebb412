// The one place that reads and writes HTTP byte ranges (RFC 9110 14.1-14.4): the Range a client (or another
// replica) asks for, and the Content-Range an upstream answers a resume with. relais serves one range per
// response (no multipart/byteranges). Request ranges are parsed by range-parser (what Express uses).
import parseRange from 'range-parser';
import type { ByteRange } from './driver.js';

/** Longer Range headers are refused unread (a list of thousands of ranges is an attack, not a client). */
export const MAX_RANGE_HEADER = 256;

/**
 * The one satisfiable range a Range header asks for, or 'invalid' (malformed, several ranges, not bytes,
 * or not satisfiable: the answer is a 416). Overlapping ranges are combined, an end past the blob is cut
 * to its last byte, "bytes=-N" is the last N bytes. While the size is not known yet (a download whose
 * upstream has not said), only a closed range "bytes=A-B" can be answered.
 */
export function parseByteRange(header: string, size: number | undefined): ByteRange | 'invalid' {
  if (header.length > MAX_RANGE_HEADER) return 'invalid';
  if (size === undefined) {
    const m = /^\s*bytes=(\d+)-(\d+)\s*$/.exec(header);
    if (m?.[1] === undefined || m[2] === undefined) return 'invalid';
    const start = Number(m[1]);
    const end = Number(m[2]);
    return Number.isSafeInteger(start) && Number.isSafeInteger(end) && start <= end ? { start, end } : 'invalid';
  }
  const parsed = parseRange(size, header, { combine: true });
  if (parsed === -1 || parsed === -2 || parsed.type !== 'bytes' || parsed.length !== 1) return 'invalid';
  const first = parsed[0];
  return first === undefined ? 'invalid' : { start: first.start, end: first.end };
}

/** The Range request header for a range ("bytes=A-B"), or from an offset to the end ("bytes=A-"). */
export function rangeHeader(range: ByteRange | { readonly start: number }): string {
  return 'end' in range ? `bytes=${range.start}-${range.end}` : `bytes=${range.start}-`;
}

/** The Content-Range response header of a 206 ("bytes A-B/SIZE", or "/*" while the size is unknown). */
export function contentRange(range: ByteRange, size: number | undefined): string {
  return `bytes ${range.start}-${range.end}/${size ?? '*'}`;
}

/** A 206's Content-Range ("bytes A-B/SIZE" or "bytes A-B/*"), or undefined if it is not one. */
export function parseContentRange(header: string | undefined): { start: number; end: number; size: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? '');
  if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const size = m[3] === '*' ? undefined : Number(m[3]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start || (size !== undefined && (!Number.isSafeInteger(size) || end >= size))) return undefined;
  return { start, end, size };
}
