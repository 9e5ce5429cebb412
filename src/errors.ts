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
  /** `why`: a reference that cannot name any manifest (bad tag or digest grammar) is unknown too, and says why. */
  manifestUnknown: (name: string, reference: string, why?: string) =>
    new RelaisError('MANIFEST_UNKNOWN', `manifest unknown: ${name}:${reference}${why === undefined ? '' : ` (${why})`}`, {
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
} as const;
