// One error type for everything a client or operator can see. It carries the OCI
// distribution error code and the HTTP status; the HTTP edge turns it into the spec's
// JSON body exactly once (src/http/errors.ts). A stable `code` and an optional `hint`
// follow the pnpm model: the message says what happened, the hint what to do.

/** Error codes from the OCI distribution spec, plus relais's own for upstream failures. */
export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  | 'UPSTREAM_UNAVAILABLE'
  | 'UPSTREAM_TIMEOUT'
  | 'UPSTREAM_ERROR'
  | 'UPSTREAM_DIGEST_MISMATCH'
  | 'STORAGE_FULL'
  | 'STORAGE_ERROR'
  | 'CONFIG_INVALID'
  | 'DATA_DIR_IN_USE'
  | 'STARTUP_FAILED'
  | 'UPSTREAM_CHECK_FAILED'
  | 'INTERNAL';

export interface RelaisErrorOptions {
  readonly status: number;
  readonly detail?: unknown;
  readonly hint?: string;
  readonly cause?: unknown;
  /** Extra response headers (e.g. Retry-After, WWW-Authenticate). */
  readonly headers?: Readonly<Record<string, string>>;
}

export class RelaisError extends Error {
  override readonly name = 'RelaisError';
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly hint: string | undefined;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: OciErrorCode, message: string, options: RelaisErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status;
    this.detail = options.detail;
    this.hint = options.hint;
    this.headers = options.headers ?? {};
  }
}

export function isRelaisError(e: unknown): e is RelaisError {
  return e instanceof RelaisError;
}

// Constructors for the common cases, so call sites stay short and consistent.
export const errors = {
  nameInvalid: (name: string, why: string) =>
    new RelaisError('NAME_INVALID', `invalid repository name "${name}": ${why}`, { status: 400, detail: { name } }),
  nameUnknown: (name: string, why: string, hint?: string) =>
    new RelaisError('NAME_UNKNOWN', `repository name not known to registry: ${name} (${why})`, {
      status: 404,
      detail: { name },
      ...(hint === undefined ? {} : { hint }),
    }),
  digestInvalid: (digest: string, why: string) =>
    new RelaisError('DIGEST_INVALID', `invalid digest "${digest}": ${why}`, { status: 400, detail: { digest } }),
  manifestUnknown: (name: string, reference: string) =>
    new RelaisError('MANIFEST_UNKNOWN', `manifest unknown: ${name}:${reference}`, {
      status: 404,
      detail: { name, reference },
    }),
  tagInvalid: (tag: string) =>
    new RelaisError('MANIFEST_INVALID', `invalid tag "${tag.slice(0, 140)}": must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, {
      status: 400,
      detail: { tag: tag.slice(0, 140) },
    }),
  manifestInvalid: (why: string) => new RelaisError('MANIFEST_INVALID', `manifest invalid: ${why}`, { status: 502 }),
  blobUnknown: (name: string, digest: string) =>
    new RelaisError('BLOB_UNKNOWN', `blob unknown to registry: ${name}@${digest}`, { status: 404, detail: { digest } }),
  unsupported: (what: string) =>
    new RelaisError('UNSUPPORTED', `${what} is not supported: relais is a read-only pull-through cache`, {
      status: 405,
    }),
  rangeInvalid: (range: string, size: number) =>
    new RelaisError('RANGE_INVALID', `requested range not satisfiable: ${range}`, {
      status: 416,
      headers: { 'content-range': `bytes */${size}` },
    }),
  paginationInvalid: (why: string) => new RelaisError('PAGINATION_NUMBER_INVALID', `invalid pagination: ${why}`, { status: 400 }),
  unauthorized: (realm: string) =>
    new RelaisError('UNAUTHORIZED', 'authentication required', {
      status: 401,
      headers: { 'www-authenticate': `Basic realm="${realm}"` },
    }),
  denied: (what: string) => new RelaisError('DENIED', `requested access to the resource is denied: ${what}`, { status: 403 }),
  internal: (message: string, cause?: unknown) => new RelaisError('INTERNAL', message, { status: 500, cause }),
  // Operator-facing runtime errors (start-up, data directory): what happened, and what to do.
  dataDirInUse: (dir: string, holder: { readonly pid: number; readonly command: string; readonly since: string }) =>
    new RelaisError('DATA_DIR_IN_USE', `the data directory ${dir} is in use by relais ${holder.command} (pid ${holder.pid}, since ${holder.since})`, {
      status: 500,
      detail: { dir, pid: holder.pid, command: holder.command },
      hint: `stop that process first (kill ${holder.pid}), or give this one its own --data directory; two relais on one directory would corrupt each other's downloads`,
    }),
  listenInUse: (address: string, cause: unknown) =>
    new RelaisError('STARTUP_FAILED', `cannot listen on ${address}: the address is already in use (EADDRINUSE)`, {
      status: 500,
      cause,
      hint: 'another process listens there (another relais? `ss -ltnp` names it): stop it, or choose another port with --listen HOST:PORT',
    }),
  listenDenied: (address: string, cause: unknown) =>
    new RelaisError('STARTUP_FAILED', `cannot listen on ${address}: permission denied (EACCES)`, {
      status: 500,
      cause,
      hint: 'ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port like 5000, or grant the capability',
    }),
  listenUnavailable: (address: string, cause: unknown) =>
    new RelaisError('STARTUP_FAILED', `cannot listen on ${address}: no such local address (EADDRNOTAVAIL)`, {
      status: 500,
      cause,
      hint: 'listen on an address of this machine (`ip addr`), or 0.0.0.0 for all of them',
    }),
  dataDirUnusable: (dir: string, code: string, cause: unknown) =>
    new RelaisError('STARTUP_FAILED', `cannot use the data directory ${dir} (${code})`, {
      status: 500,
      cause,
      hint:
        code === 'EACCES' || code === 'EPERM'
          ? `the user running relais (uid ${process.getuid?.() ?? '?'}) may not write there: choose another --data directory or change its owner (chown)`
          : code === 'ENOSPC'
            ? 'the disk is full: free space or choose another --data directory'
            : code === 'EROFS'
              ? 'the filesystem is read-only: choose a writable --data directory'
              : 'choose another --data directory',
    }),
  storageUnusable: (what: string, cause: unknown) => {
    const why = describeCause(cause);
    return new RelaisError('STARTUP_FAILED', `cannot use ${what}${why === '' ? '' : ` (${why})`}`, {
      status: 500,
      cause,
      hint: 'check storage.s3 (endpoint, bucket, region, credentials), that the bucket exists and that the S3 service is reachable from here',
    });
  },
  upstreamCheckFailed: (problems: readonly string[], hint: string) =>
    new RelaisError('UPSTREAM_CHECK_FAILED', `upstream check failed:\n${problems.map((p) => `  ${p}`).join('\n')}`, { status: 500, hint }),
} as const;

/**
 * What really went wrong, in a few words, for errors that wrap others: the AWS SDK's named errors and HTTP
 * status, Node's errno codes, and the first of an AggregateError's errors (a refused connection to every
 * address of a host), instead of a bare "Error".
 */
export function describeCause(e: unknown, depth = 0): string {
  if (e === null || e === undefined || depth > 3) return '';
  if (typeof e !== 'object') return typeof e === 'string' || typeof e === 'number' ? String(e) : '';
  const c = e as { name?: unknown; code?: unknown; message?: unknown; cause?: unknown; errors?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const parts: string[] = [];
  if (typeof c.code === 'string') parts.push(c.code);
  else if (typeof c.name === 'string' && c.name !== 'Error' && c.name !== 'AggregateError') parts.push(c.name);
  if (typeof c.$metadata?.httpStatusCode === 'number') parts.push(`HTTP ${c.$metadata.httpStatusCode}`);
  if (typeof c.message === 'string' && c.message !== '' && c.message !== c.code && c.message !== c.name) parts.push(c.message);
  const own = parts.join(': ');
  const inner = Array.isArray(c.errors) && c.errors.length > 0 ? describeCause(c.errors[0], depth + 1) : describeCause(c.cause, depth + 1);
  if (inner === '' || own.includes(inner)) return own;
  return own === '' ? inner : `${own} (${inner})`;
}
