// One error type for everything a client or operator can see, and ONE table of every error relais raises
// (`errors` below, as fastify's errors table): each entry fixes the OCI distribution error code, the HTTP
// status, the message template and, for what an operator can act on, the hint. The HTTP edge turns an
// error into the spec's JSON body exactly once (src/doors/http/error-response.ts). A stable `code` and an optional `hint`
// follow the pnpm model: the message says what happened, the hint what to do.
//
// Rules the table keeps (test/unit/core/error-table.test.ts checks them, and that no module outside this
// file builds a RelaisError of its own): upstream failures are 502/503/504, never a bare 500; every
// failure at 500 and above carries a hint.

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
  /** distribution's code for a 503: the service (here: a dependency of relais) is unavailable. */
  | 'UNAVAILABLE'
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

/** Options a call site may add to a table entry: what caused it, and response headers it decides at run time. */
export interface ErrorExtra {
  readonly cause?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

type Text<A extends readonly unknown[]> = string | ((...args: A) => string | undefined);

interface EntrySpec<A extends readonly unknown[]> {
  readonly hint?: Text<A>;
  readonly detail?: (...args: A) => unknown;
  readonly headers?: (...args: A) => Readonly<Record<string, string>> | undefined;
  /** Which argument (if any) is the cause. */
  readonly cause?: (...args: A) => unknown;
}

/** One row of the table: call it with the template's arguments to get the error. */
export interface ErrorEntry<A extends readonly unknown[]> {
  (...args: A): RelaisError;
  readonly code: OciErrorCode;
  readonly status: number;
  /** Whether the entry gives a hint (always, or for some arguments). */
  readonly hinted: boolean;
  /** Builds the error with a cause or extra headers. */
  with(extra: ErrorExtra, ...args: A): RelaisError;
}

function entry<A extends readonly unknown[]>(code: OciErrorCode, status: number, message: (...args: A) => string, spec: EntrySpec<A> = {}): ErrorEntry<A> {
  const build = (extra: ErrorExtra, args: A): RelaisError => {
    const hint = typeof spec.hint === 'function' ? spec.hint(...args) : spec.hint;
    const headers = { ...(spec.headers?.(...args) ?? {}), ...(extra.headers ?? {}) };
    const cause = extra.cause ?? spec.cause?.(...args);
    return new RelaisError(code, message(...args), {
      status,
      ...(spec.detail ? { detail: spec.detail(...args) } : {}),
      ...(hint === undefined ? {} : { hint }),
      ...(cause === undefined ? {} : { cause }),
      ...(Object.keys(headers).length > 0 ? { headers } : {}),
    });
  };
  const fn = (...args: A): RelaisError => build({}, args);
  return Object.assign(fn, { code, status, hinted: spec.hint !== undefined, with: (extra: ErrorExtra, ...args: A) => build(extra, args) });
}

/** Retry-After (seconds) of a dependency outage: about how long a PostgreSQL or S3 restart takes. */
export const OUTAGE_RETRY_AFTER_S = 5;
const UPSTREAM_DOWN_HINT = 'check that the upstream is up and reachable from relais (its URL, DNS, firewall); relais retries and serves what it has cached meanwhile';
const UPSTREAM_BROKEN_HINT = 'the upstream misbehaved: try again; if it persists, check the upstream registry (or the proxy in front of it)';
const BUG_HINT = 'this is a bug in relais: report it with the log line around it';
const CONFIG_HINT = 'fix the configuration; see "Configuration reference" in README.md';
const NO_BRANCHES_HINT = 'an empty list would mark every branch as gone; refusing';
const DELETES_HINT = 'enable deletes in the registry (distribution: storage.delete.enabled: true)';
const CREDENTIALS_HINT = 'pass --username with --password-stdin, or set RELAIS_REGISTRY_USERNAME and RELAIS_REGISTRY_PASSWORD';
const IN_TRANSIT_HINT = 'the registry (or a proxy in front of it) changed the content in transit; nothing was decided on its strength';
const cut = (s: string, n: number): string => s.slice(0, n);

// The table. Grouped by who raises them; the name says what happened.
export const errors = {
  // --- The registry API, as clients see it (4xx from the OCI spec) ---
  nameInvalid: entry('NAME_INVALID', 400, (name: string, why: string) => `invalid repository name "${name}": ${why}`, { detail: (name) => ({ name }) }),
  nameUnknown: entry('NAME_UNKNOWN', 404, (name: string, why: string, _hint?: string) => `repository name not known to registry: ${name} (${why})`, {
    detail: (name) => ({ name }),
    hint: (_n: string, _w: string, hint?: string) => hint,
  }),
  digestInvalid: entry('DIGEST_INVALID', 400, (digest: string, why: string) => `invalid digest "${digest}": ${why}`, { detail: (digest) => ({ digest }) }),
  /** `why`: a reference that cannot name any manifest (bad tag or digest grammar) is unknown too, and says why. */
  manifestUnknown: entry('MANIFEST_UNKNOWN', 404, (name: string, reference: string, why?: string) => `manifest unknown: ${name}:${reference}${why === undefined ? '' : ` (${why})`}`, {
    detail: (name: string, reference: string, _why?: string) => ({ name, reference }),
  }),
  tagInvalid: entry('MANIFEST_INVALID', 400, (tag: string) => `invalid tag "${cut(tag, 140)}": must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, { detail: (tag) => ({ tag: cut(tag, 140) }) }),
  blobUnknown: entry('BLOB_UNKNOWN', 404, (name: string, digest: string) => `blob unknown to registry: ${name}@${digest}`, { detail: (_name, digest) => ({ digest }) }),
  unsupported: entry('UNSUPPORTED', 405, (what: string) => `${what} is not supported: relais is a read-only pull-through cache`),
  rangeInvalid: entry('RANGE_INVALID', 416, (range: string, _size: number) => `requested range not satisfiable: ${range}`, { headers: (_range, size) => ({ 'content-range': `bytes */${size}` }) }),
  paginationInvalid: entry('PAGINATION_NUMBER_INVALID', 400, (why: string) => `invalid pagination: ${why}`),
  unauthorized: entry('UNAUTHORIZED', 401, (_realm: string) => 'authentication required', { headers: (realm) => ({ 'www-authenticate': `Basic realm="${realm}"` }) }),
  denied: entry('DENIED', 403, (what: string) => `requested access to the resource is denied: ${what}`),
  endpointUnknown: entry('NAME_UNKNOWN', 404, (url?: string) => (url === undefined ? 'no such registry API endpoint' : `no such endpoint: ${cut(url, 100)}`)),
  internal: entry('INTERNAL', 500, (message: string, _cause?: unknown) => message, { hint: BUG_HINT, cause: (_m: string, cause?: unknown) => cause }),

  // --- Upstream registries: 502 (it answered wrongly), 503 (unavailable), 504 (too slow) ---
  upstreamTimeout: entry('UPSTREAM_TIMEOUT', 504, (upstream: string, code: string) => `upstream ${upstream} timed out (${code})`, {
    hint: (u) => `the upstream is slow or unreachable; check it, or raise upstreams.${u}.timeouts`,
  }),
  upstreamUnreachable: entry('UPSTREAM_UNAVAILABLE', 503, (upstream: string, code: string) => `upstream ${upstream} is unreachable (${code})`, { hint: UPSTREAM_DOWN_HINT }),
  upstreamReset: entry('UPSTREAM_ERROR', 502, (upstream: string, code: string) => `upstream ${upstream} closed the connection (${code})`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamFailed: entry('UPSTREAM_ERROR', 502, (upstream: string, code: string) => `upstream ${upstream} failed (${code})`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamAnswered: entry('UPSTREAM_ERROR', 502, (upstream: string, status: number) => `upstream ${upstream} answered ${status}`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamAnsweredUnavailable: entry('UPSTREAM_UNAVAILABLE', 503, (upstream: string, status: number) => `upstream ${upstream} answered ${status}`, { hint: UPSTREAM_DOWN_HINT }),
  upstreamAnsweredTimeout: entry('UPSTREAM_ERROR', 504, (upstream: string, status: number) => `upstream ${upstream} answered ${status}`, { hint: UPSTREAM_DOWN_HINT }),
  /** An unexpected status to one request: `what` says which ("to HEAD blob", "for manifest REPO:REF"). */
  upstreamUnexpected: entry('UPSTREAM_ERROR', 502, (upstream: string, status: number, what: string) => `upstream ${upstream} answered ${status} ${what}`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamRateLimited: entry('TOOMANYREQUESTS', 503, (upstream: string) => `upstream ${upstream} is rate-limiting relais (429)`, {
    hint: 'configure credentials for this upstream to raise its limit, or wait',
  }),
  upstreamCircuitOpen: entry('UPSTREAM_UNAVAILABLE', 503, (upstream: string, waitMs: number) => `upstream ${upstream} is failing; circuit open, next try in ${Math.ceil(waitMs / 1000)}s`, {
    headers: (_u, waitMs) => ({ 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) }),
    hint: (u) => `relais stops asking a failing upstream for a while (upstreams.${u}.circuitBreaker); check that the upstream is up`,
  }),
  upstreamRepoNotFound: entry('NAME_UNKNOWN', 404, (upstream: string, repo: string, _hasCredentials: boolean) => `repository ${repo} not found at upstream ${upstream} (or access denied)`, {
    detail: (_u, repo) => ({ name: repo }),
    hint: (upstream, repo, hasCredentials) => (hasCredentials ? `the configured credentials for ${upstream} have no pull access to ${repo}` : `if ${repo} is private, configure upstreams.${upstream}.username/password`),
  }),
  // --- Passthrough upstreams (upstreams.NAME.access: passthrough; docs/access.md): the upstream decides ---
  /** No credential, or one the upstream (or its token service) refused: challenged (the upstream's own challenge on the proxy door). */
  passthroughChallenge: entry<[upstream: string, repo: string, challenge?: string]>('UNAUTHORIZED', 401, (upstream: string, repo: string, _challenge?: string) => `authentication required: ${upstream} decides who may pull ${repo}`, {
    detail: (_u, repo) => ({ name: repo }),
    headers: (_u: string, _r: string, challenge?: string) => ({ 'www-authenticate': challenge ?? 'Basic realm="relais"' }),
    hint: (upstream) => `log in with your own credentials for ${upstream} (docker login), to relais's host on its HTTP port or to ${upstream}'s host through the proxy door`,
  }),
  /** Credentials the token service accepted, that the upstream still refused for this repository. */
  passthroughDenied: entry('DENIED', 403, (upstream: string, repo: string) => `requested access to the resource is denied: ${upstream} did not confirm that these credentials may pull ${repo}`, {
    detail: (_u, repo) => ({ name: repo }),
    hint: (upstream, repo) => `ask ${upstream}'s administrators for pull access to ${repo}; relais serves its cached copy only to clients ${upstream} lets pull it`,
  }),
  /** The upstream could not be asked: private content is not served unconfirmed. */
  passthroughUnconfirmed: entry<[upstream: string, repo: string, cause: unknown]>('UPSTREAM_UNAVAILABLE', 503, (upstream: string, repo: string, _cause: unknown) => `cannot confirm with ${upstream} that this client may pull ${repo}`, {
    detail: (_u, repo) => ({ name: repo }),
    cause: (_u, _r, cause) => cause,
    hint: (upstream) => `${upstream} is a passthrough upstream: its cached content is served only after ${upstream} confirms the client's credentials (passthrough.confirmTtl); check that it is up and reachable from relais`,
  }),
  upstreamRedirectScheme: entry('UPSTREAM_ERROR', 502, (upstream: string) => `upstream ${upstream} redirected to a non-HTTP URL`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamRedirectPrivate: entry('UPSTREAM_ERROR', 502, (upstream: string, host: string) => `upstream ${upstream} sent relais to a private address (${host}); refused`, {
    hint: (u) => `set upstreams.${u}.allowPrivateRedirects: true if this is intended`,
  }),
  upstreamRedirectNoLocation: entry('UPSTREAM_ERROR', 502, (upstream: string) => `upstream ${upstream} sent a redirect without Location`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamTooManyRedirects: entry('UPSTREAM_ERROR', 502, (upstream: string) => `upstream ${upstream}: too many redirects`, { hint: UPSTREAM_BROKEN_HINT }),
  tokenRefused: entry('UNAUTHORIZED', 502, (upstream: string, withCredentials: boolean, scope: string) => `upstream ${upstream}: token service refused the ${withCredentials ? 'configured credentials' : 'anonymous request'} for ${scope}`, {
    hint: (u) => `check upstreams.${u}.username/password`,
  }),
  tokenServiceUnavailable: entry('UPSTREAM_UNAVAILABLE', 503, (upstream: string, why: string) => `upstream ${upstream}: ${why}`, {
    hint: "the upstream's token service (the realm of its WWW-Authenticate challenge) is down or unreachable from relais",
  }),
  tokenServiceFailed: entry('UPSTREAM_ERROR', 502, (upstream: string, why: string) => `upstream ${upstream}: ${why}`, {
    hint: "the upstream's token service (the realm of its WWW-Authenticate challenge) misbehaved: try again; if it persists, check it",
  }),
  tokenRealmInvalid: entry('UNAUTHORIZED', 401, (realm: string) => `token realm ${realm} is not http(s)`, { hint: "the registry's WWW-Authenticate challenge names a realm relais will not call" }),
  manifestInvalid: entry('MANIFEST_INVALID', 502, (why: string, _hint?: string) => `manifest invalid: ${why}`, { hint: (_w: string, hint?: string) => hint ?? UPSTREAM_BROKEN_HINT }),
  upstreamManifestDigestMismatch: entry('UPSTREAM_DIGEST_MISMATCH', 502, (upstream: string, what: string, digest: string, expected: string) => `upstream ${upstream} sent a manifest for ${what} whose digest is ${digest}, expected ${expected}`, {
    hint: 'relais serves only what matches its digest; the upstream (or a proxy in front of it) changed the manifest in transit',
  }),
  upstreamTagListInvalid: entry('UPSTREAM_ERROR', 502, (upstream: string) => `upstream ${upstream} sent an invalid tag list`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamNoReferrers: entry('NAME_UNKNOWN', 404, (upstream: string, repo: string) => `upstream ${upstream} has no referrers API for ${repo}`),
  upstreamReferrersInvalid: entry('UPSTREAM_ERROR', 502, (upstream: string, what: string) => `upstream ${upstream} ${what}`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamNoDigest: entry('UPSTREAM_ERROR', 502, (upstream: string, what: string) => `upstream ${upstream} sent no Docker-Content-Digest for ${what}`, { hint: UPSTREAM_BROKEN_HINT }),
  upstreamResponseTooLarge: entry('UPSTREAM_ERROR', 502, () => 'upstream response too large', { hint: UPSTREAM_BROKEN_HINT }),
  upstreamNoContentLength: entry('UPSTREAM_ERROR', 502, (upstream: string) => `upstream ${upstream} sent no Content-Length for blob`, { hint: UPSTREAM_BROKEN_HINT }),

  // --- Blob downloads (cache/download.ts, cache/blobs.ts) and the replicas of a cluster ---
  blobDigestMismatch: entry('UPSTREAM_DIGEST_MISMATCH', 502, (upstream: string, digest: string, actual: string) => `upstream ${upstream} sent bytes for ${digest} that hash to ${actual}; nothing was stored`, {
    hint: 'relais serves only verified bytes; the upstream (or a proxy in front of it) corrupted the blob: try again',
  }),
  blobSizeMismatch: entry('UPSTREAM_ERROR', 502, (upstream: string, written: number, announced: number) => `upstream ${upstream} sent ${written} bytes, announced ${announced}`, { hint: UPSTREAM_BROKEN_HINT }),
  blobTooLong: entry('UPSTREAM_ERROR', 502, (upstream: string, digest: string) => `upstream ${upstream} sent more bytes than announced for ${digest}`, { hint: UPSTREAM_BROKEN_HINT }),
  blobResumeWrongRange: entry('UPSTREAM_ERROR', 502, (upstream: string) => `upstream ${upstream} answered a resume with the wrong range`, { hint: UPSTREAM_BROKEN_HINT }),
  downloadCancelled: entry('UPSTREAM_UNAVAILABLE', 503, () => 'download cancelled (relais is shutting down)', { hint: 'relais is stopping; retry against another replica or once it is back' }),
  storageFull: entry('STORAGE_FULL', 503, (detail: string) => `the cache storage is full (${detail}); the blob was not stored`, { hint: 'free space or set storage.maxSize' }),
  storageFailed: entry('STORAGE_ERROR', 500, (code: string) => `the cache storage failed (${code})`, { hint: "check the data directory's disk (errors in the system log, read-only mount, permissions, open-file limit)" }),
  peerUnreachable: entry('UPSTREAM_UNAVAILABLE', 503, () => 'the replica fetching this blob is unreachable; retry', { hint: 'another replica holds the download lease; check that the replicas reach each other (cluster.advertise)' }),
  peerAnswered: entry('UPSTREAM_UNAVAILABLE', 503, (status: number) => `the replica fetching this blob answered ${status}; retry`, { hint: 'another replica holds the download lease; its log says why it failed' }),

  // --- Configuration and the dependencies it names (start-up) ---
  configInvalid: entry('CONFIG_INVALID', 500, (source: string, message: string, _hint?: string) => `${source}: ${message}`, { hint: (_s: string, _m: string, hint?: string) => hint ?? CONFIG_HINT }),
  s3SectionMissing: entry('CONFIG_INVALID', 500, () => 'storage.driver s3 needs a storage.s3 section', { hint: CONFIG_HINT }),
  s3Unusable: entry('STORAGE_ERROR', 500, (bucket: string, endpoint: string, detail: string) => `cannot use S3 bucket ${bucket} at ${endpoint} (${detail})`, {
    hint: 'check storage.s3 (bucket exists, endpoint, credentials) and that the S3 service is up',
  }),
  postgresUrlMissing: entry('CONFIG_INVALID', 500, () => 'index.driver postgres needs index.postgres.url', { hint: CONFIG_HINT }),
  postgresUnusable: entry('STORAGE_ERROR', 500, (where: string, why: string) => `cannot use the PostgreSQL index at ${where} (${why})`, {
    hint: 'check index.postgres.url (host, database, user, password) and that PostgreSQL is up',
  }),
  postgresSchemaNewer: entry('CONFIG_INVALID', 500, (version: number, known: number) => `the PostgreSQL index's schema is version ${version}, newer than this relais knows (${known})`, {
    hint: 'a newer relais migrated this database: run that version (or newer) on every replica; an older relais cannot use it',
  }),
  htpasswdNotBcrypt: entry('CONFIG_INVALID', 500, (file: string, line: number) => `${file}:${line}: only bcrypt entries are supported`, { hint: 'create users with `htpasswd -B FILE USER`' }),
  htpasswdUnreadable: entry('CONFIG_INVALID', 500, (file: string, code: string) => `auth.htpasswd: cannot read ${file} (${code})`, { hint: 'check auth.htpasswd and that relais may read the file' }),

  // --- dependency outages: PostgreSQL (index.driver: postgres) or S3 (storage.driver: s3) down ---
  // Recognised where relais talks to them (src/index/outage.ts, src/storage/outage.ts), never in handlers:
  // a 503 the client retries after Retry-After, and /readyz says 503 until the dependency is back.
  indexUnavailable: entry('UNAVAILABLE', 503, (why: string, _cause?: unknown) => `the cache index (PostgreSQL) is unavailable (${why}); try again shortly`, {
    hint: 'check that PostgreSQL is up and reachable from relais (index.postgres.url); relais answers again by itself once it is',
    headers: () => ({ 'retry-after': String(OUTAGE_RETRY_AFTER_S) }),
    cause: (_w: string, cause?: unknown) => cause,
  }),
  storageUnavailable: entry('UNAVAILABLE', 503, (why: string, _cause?: unknown) => `the cache storage (S3) is unavailable (${why}); try again shortly`, {
    hint: 'check that the S3 service is up and reachable from relais (storage.s3.endpoint, bucket); relais answers again by itself once it is',
    headers: () => ({ 'retry-after': String(OUTAGE_RETRY_AFTER_S) }),
    cause: (_w: string, cause?: unknown) => cause,
  }),

  // --- relais gc / ls / stats / prefetch ---
  noCache: entry('CONFIG_INVALID', 500, (dataDir: string) => `no relais cache in ${dataDir} (no index.db)`, { hint: 'point --data (or --config) at the directory relais serve uses' }),
  gcNeedsFilesystem: entry('CONFIG_INVALID', 500, (driver: string) => `relais gc works on the filesystem driver; storage.driver is ${driver}`, { hint: 'the online gc of a running relais covers other drivers (storage.gcInterval)' }),
  gcGraceInvalid: entry('CONFIG_INVALID', 500, (value: string) => `--grace: expected a duration like 15m, got "${value}"`, { hint: 'e.g. --grace 15m, --grace 1h, --grace 0' }),
  gcDryRunAndApply: entry('CONFIG_INVALID', 400, () => '--dry-run and --apply contradict each other', { hint: 'with a retention policy gc only plans unless --apply is given' }),
  gcNeedsPolicy: entry('CONFIG_INVALID', 400, () => 'these options need a retention policy', { hint: 'add --policy FILE, --keep-last N, --older-than DURATION or --live-branches SOURCE' }),
  gcNoGitlab: entry('CONFIG_INVALID', 400, () => 'relais gc cannot ask GitLab for live branches', { hint: 'give --live-branches FILE or git:REMOTE' }),
  gcNoCachedTags: entry('CONFIG_INVALID', 400, (repos: string) => `no cached tags in ${repos}`, { hint: 'relais ls lists the cached images (UPSTREAM/REPO:TAG)' }),
  prefetchReferenceInvalid: entry('NAME_INVALID', 400, (image: string) => `not an image reference: "${image}"`, { hint: 'e.g. alpine:3.20, docker.io/library/node:22, ghcr.io/org/app@sha256:…' }),
  prefetchNoPlatform: entry('MANIFEST_UNKNOWN', 404, (image: string, wanted: string, offered: string) => `${image} has no ${wanted} image (it has ${offered})`, { hint: 'choose with --platform, or --all-platforms' }),
  /** relais (the server prefetch pulls through) answered an error: its code and message. */
  prefetchServerError: entry('UPSTREAM_ERROR', 502, (message: string) => message, { hint: "the relais server's log says more" }),
  prefetchBlobSize: entry('UPSTREAM_ERROR', 502, (digest: string, got: number, size: number) => `blob ${digest}: got ${got} bytes, the manifest says ${size}`, { hint: UPSTREAM_BROKEN_HINT }),

  // --- relais ci ---
  ciFileUnreadable: entry('CONFIG_INVALID', 400, (what: string, file: string, why: string) => `cannot read ${what} ${file}: ${why}`, {
    hint: (what: string) => (what === 'runner config' ? 'pass --file PATH (gitlab-runner keeps it in /etc/gitlab-runner/config.toml)' : undefined),
  }),
  ciYamlInvalid: entry('CONFIG_INVALID', 400, (file: string, why: string) => `${file} is not valid YAML: ${why}`, { hint: 'fix the file (GitLab would refuse it too) and run the command again' }),
  ciYamlNotJobs: entry('CONFIG_INVALID', 400, (file: string) => `${file} is not a YAML mapping of jobs`),
  ciTomlInvalid: entry('CONFIG_INVALID', 400, (file: string, why: string) => `${file} is not valid TOML: ${why}`, { hint: 'fix the file (gitlab-runner would not start with it either) and run the command again' }),
  ciTomlNotTable: entry('CONFIG_INVALID', 400, (file: string) => `${file} is not a TOML table`),
  ciNoAlias: entry('NAME_INVALID', 400, (image: string) => `"${image}" is not a valid image reference, so GitLab Runner derives no alias for it`, {
    hint: 'image names are lower-case; set `alias:` on the service to name it yourself',
  }),
  ciDindNeedsMirror: entry('CONFIG_INVALID', 400, () => '--dind-dockerfile needs --mirror', { hint: 'add --mirror https://<relais>' }),
  ciNothingToCheck: entry('CONFIG_INVALID', 400, () => 'nothing to check: no .gitlab-ci.yml here', { hint: 'pass --gitlab-ci FILE and/or --runner-config FILE' }),
  ciMirrorUnparsable: entry('CONFIG_INVALID', 400, (url: string) => `invalid mirror URL "${url}"`, { hint: 'give the URL of relais as dind sees it, e.g. --mirror https://relais.example.com' }),
  ciMirrorScheme: entry('CONFIG_INVALID', 400, (url: string) => `mirror URL "${url}" must start with http:// or https://`, { hint: 'dockerd --registry-mirror needs the scheme, e.g. https://relais.example.com' }),
  ciMirrorPath: entry('CONFIG_INVALID', 400, (url: string, _origin: string) => `mirror URL "${url}" has a path: dockerd ignores registry mirrors with a path`, { hint: (_u: string, origin: string) => `use ${origin}` }),
  ciJobNameReserved: entry('CONFIG_INVALID', 400, (name: string) => `"${name}" cannot be a job name: it is a .gitlab-ci.yml keyword or a hidden job`, { hint: 'pick another --job-name, e.g. build-image' }),
  ciDockerMissing: entry('INTERNAL', 500, (docker: string, why: string, _cause?: unknown) => `cannot run ${docker}: ${why}`, {
    hint: 'install the docker CLI in the job image, or pass --docker PATH',
    cause: (_d: string, _w: string, cause?: unknown) => cause,
  }),
  ciDockerFailed: entry('INTERNAL', 500, (command: string, exit: number | null, _login: boolean) => `docker ${command} failed (exit ${exit})`, {
    hint: (_c: string, _e: number | null, login: boolean) => (login ? 'check CI_REGISTRY and CI_JOB_TOKEN' : "docker's output above says why"),
  }),

  /** relais ci: a flag or input that does not fit (the message says which, the hint what to write). */
  ciUsage: entry('CONFIG_INVALID', 400, (message: string, _hint?: string) => message, { hint: (_m: string, hint?: string) => hint }),
  ciWriteFailed: entry('CONFIG_INVALID', 500, (message: string, _hint?: string) => message, { hint: (_m: string, hint?: string) => hint }),
  ciCaUnavailable: entry('UPSTREAM_UNAVAILABLE', 503, (message: string, _hint?: string) => message, {
    hint: (_m: string, hint?: string) => hint ?? 'check that relais runs with proxy.listen set and is reachable from here, or pass --ca FILE',
  }),

  // --- relais cleanup: its command line and policy ---
  cleanupRegistryMissing: entry('CONFIG_INVALID', 400, () => '--registry is required', { hint: 'e.g. --registry https://registry.example.com' }),
  cleanupPasswordStdinTty: entry('CONFIG_INVALID', 400, () => '--password-stdin reads the terminal, so --apply cannot ask for confirmation there', {
    hint: 'add --yes, or pipe the password in (echo "$PASSWORD" | relais cleanup ...)',
  }),
  cleanupPasswordWithoutUser: entry('CONFIG_INVALID', 400, () => 'a password was given without a user name', { hint: 'pass --username or set RELAIS_REGISTRY_USERNAME' }),
  cleanupNoRepository: entry('CONFIG_INVALID', 400, () => 'no repository given', { hint: 'pass --repo NAME (repeatable)' }),
  cleanupLiveBranchesGitlab: entry('CONFIG_INVALID', 400, () => '--live-branches gitlab needs the GitLab backend (--gitlab-project)'),
  cleanupGitlabToken: entry('UNAUTHORIZED', 401, () => 'the GitLab backend needs a token', { hint: 'set RELAIS_GITLAB_TOKEN or pass the token with --password-stdin' }),
  cleanupPolicyInvalid: entry('CONFIG_INVALID', 400, (source: string, message: string, _hint?: string) => `${source}: ${message}`, { hint: (_s: string, _m: string, hint?: string) => hint }),
  cleanupNoRule: entry('CONFIG_INVALID', 400, () => 'no retention rule given', { hint: 'pass --policy FILE, or at least one of --keep-last N, --older-than DURATION, --live-branches FILE|git:REMOTE' }),
  cleanupGitFailed: entry('CONFIG_INVALID', 400, (remote: string, why: string) => `git ls-remote --heads ${remote} failed: ${why}`, {
    hint: 'check the remote name or URL given to --live-branches git:REMOTE (run it in the repository, or give a URL)',
  }),
  cleanupGitNoRemote: entry('CONFIG_INVALID', 400, () => '--live-branches git: needs a remote, e.g. git:origin'),
  cleanupGitNoBranch: entry('CONFIG_INVALID', 400, (remote: string) => `git ls-remote --heads ${remote} lists no branch`, { hint: NO_BRANCHES_HINT }),
  cleanupBranchesUnreadable: entry('CONFIG_INVALID', 400, (file: string, code: string) => `cannot read the live branches file ${file} (${code})`, { hint: 'give a file with one branch name per line, or git:REMOTE' }),
  cleanupBranchesEmpty: entry('CONFIG_INVALID', 400, (file: string) => `the live branches file ${file} lists no branch`, { hint: NO_BRANCHES_HINT }),
  cleanupAborted: entry('DENIED', 409, (repo: string, why: string) => `${repo}: not applied: ${why}`),
  cleanupDeletesRefused: entry('UNSUPPORTED', 405, (registry: string, repo: string) => `${registry} refuses manifest deletes: nothing was changed in ${repo}`, { hint: DELETES_HINT }),
  cleanupDeletesPlaceholder: entry('UNSUPPORTED', 405, (registry: string, tag: string, digest: string) => `${registry} refuses manifest deletes (tag ${tag} now points to an empty placeholder ${digest})`, { hint: DELETES_HINT }),
  cleanupNoTagDelete: entry('UNSUPPORTED', 405, (registry: string) => `${registry} does not delete tags`, { hint: 'use a registry (or its API) that deletes tags, or untag by pushing placeholders' }),

  // --- relais cleanup: the registry it cleans (OCI API) ---
  registryUnreachable: entry('UPSTREAM_UNAVAILABLE', 503, (registry: string, request: string, why: string) => `${registry}: ${request} failed (${why})`, { hint: 'check --registry and that the registry is up' }),
  registryTokenRefused: entry('UNAUTHORIZED', 401, (registry: string, withCredentials: boolean, repo: string) => `${registry}: the token service refused ${withCredentials ? 'the credentials' : 'anonymous access'} for ${repo}`, {
    hint: CREDENTIALS_HINT,
  }),
  /** `answer` names the request and what the registry said ("REGISTRY: GET tags of REPO answered 401 (...)"). */
  registryUnauthorized: entry('UNAUTHORIZED', 401, (answer: string, _withCredentials: boolean) => answer, {
    hint: (_a: string, withCredentials: boolean) => (withCredentials ? 'the registry refused the credentials' : CREDENTIALS_HINT),
  }),
  registryDenied: entry('DENIED', 403, (answer: string, _repo: string) => answer, { hint: (_a: string, repo: string) => `the credentials lack the permission needed on ${repo}` }),
  registryRepoUnknown: entry('NAME_UNKNOWN', 404, (answer: string, _repo: string) => answer, { hint: (_a: string, repo: string) => `check --repo ${repo}` }),
  registryUnavailable: entry('UPSTREAM_UNAVAILABLE', 503, (answer: string) => answer, { hint: 'the registry is overloaded or failing: try again later (relais cleanup retried already)' }),
  registryFailed: entry('UPSTREAM_ERROR', 502, (answer: string) => answer, { hint: 'the registry answered something relais cleanup does not expect; its log says more' }),
  registryPaginationEndless: entry('UPSTREAM_ERROR', 502, (registry: string) => `${registry}: tags/list pagination does not end`, { hint: 'the registry keeps sending a next page: check its tags/list Link headers' }),
  registryManifestDigestMismatch: entry('UPSTREAM_DIGEST_MISMATCH', 502, (registry: string, what: string, computed: string) => `${registry}: manifest ${what} has digest ${computed}`, { hint: IN_TRANSIT_HINT }),
  registryBlobDigestMismatch: entry('UPSTREAM_DIGEST_MISMATCH', 502, (registry: string, what: string) => `${registry}: blob ${what} does not match its digest`, { hint: IN_TRANSIT_HINT }),
  registryTooManyRedirects: entry('UPSTREAM_ERROR', 502, (registry: string, digest: string) => `${registry}: too many redirects for blob ${digest}`, { hint: 'the registry redirects in a loop: check its storage redirect settings' }),

  // --- relais cleanup: GitLab's API ---
  gitlabUnreachable: entry('UPSTREAM_UNAVAILABLE', 503, (gitlab: string, request: string, why: string) => `${gitlab}: ${request} failed (${why})`, { hint: 'check --registry (the GitLab URL)' }),
  gitlabUnauthorized: entry('UNAUTHORIZED', 401, (answer: string) => answer, { hint: 'set RELAIS_GITLAB_TOKEN (or --password-stdin) to a token with the api scope' }),
  gitlabDenied: entry('DENIED', 403, (answer: string) => answer, { hint: 'the token needs the api scope and the Maintainer role to delete tags' }),
  gitlabNotFound: entry('NAME_UNKNOWN', 404, (answer: string) => answer, { hint: 'check --gitlab-project and --repo' }),
  gitlabFailed: entry('UPSTREAM_ERROR', 502, (answer: string) => answer, { hint: "GitLab answered something relais cleanup does not expect; GitLab's log says more" }),
  gitlabNoRepository: entry('NAME_UNKNOWN', 404, (gitlab: string, repo: string, _known: string) => `${gitlab} has no container repository ${repo}`, { hint: (_g: string, _r: string, known: string) => `known: ${known}` }),
  gitlabPushUnsupported: entry('UNSUPPORTED', 405, (gitlab: string) => `${gitlab}: pushing manifests is not done through the GitLab API`),

  // --- The proxy door (src/doors/proxy) ---
  /** A host relais neither intercepts nor tunnels. */
  proxyRefused: entry('DENIED', 403, (target: string, why: string) => `relais proxy: ${cut(target, 300)} refused: ${why}`, {
    hint: 'relais is not an open proxy: name the host under upstreams.NAME.hosts (intercepted, cached) or proxy.tunnel (a plain TCP tunnel); see docs/proxy.md',
  }),
  proxyAuthRequired: entry('UNAUTHORIZED', 407, (_realm: string) => 'relais proxy: proxy authentication required', {
    headers: (realm) => ({ 'proxy-authenticate': `Basic realm="${realm}"` }),
    hint: 'put relais credentials in the proxy URL: HTTPS_PROXY=http://USER:PASSWORD@relais:3128',
  }),
  proxyBadTarget: entry('DENIED', 400, (target: string) => `relais proxy: CONNECT ${cut(target, 200)} refused: expected host:port`),
  proxyTunnelFailed: entry('UPSTREAM_UNAVAILABLE', 502, (target: string, why: string) => `relais proxy: cannot reach ${target}: ${why}`, {
    hint: 'the tunnelled host is down or unreachable from relais (DNS, firewall)',
  }),
  caUnusable: entry('CONFIG_INVALID', 500, (message: string, _hint: string) => message, { hint: (_m: string, hint: string) => hint }),
  /** A request forwarded verbatim through the proxy door could not reach the upstream. */
  forwardFailed: entry('UPSTREAM_UNAVAILABLE', 502, (upstream: string, cause: unknown) => `upstream ${upstream} did not answer a forwarded request: ${cause instanceof Error ? cause.message : String(cause)}`, {
    cause: (_u: string, cause: unknown) => cause,
    hint: (upstream: string) => `check that ${upstream} is reachable from relais (upstreams.${upstream}.url)`,
  }),

  // --- Operator-facing runtime errors (start-up, data directory): what happened, and what to do ---
  dataDirInUse: entry('DATA_DIR_IN_USE', 500, (dir: string, holder: { readonly pid: number; readonly command: string; readonly since: string }) => `the data directory ${dir} is in use by relais ${holder.command} (pid ${holder.pid}, since ${holder.since})`, {
    detail: (dir, holder) => ({ dir, pid: holder.pid, command: holder.command }),
    hint: (_dir, holder) => `stop that process first (kill ${holder.pid}), or give this one its own --data directory; two relais on one directory would corrupt each other's downloads`,
  }),
  prefetchBesideServer: entry('DATA_DIR_IN_USE', 500, (pid: number, dir: string) => `relais (pid ${pid}) serves ${dir}: prefetch cannot open the directory beside it`, {
    hint: 'prefetch through it: relais prefetch --server http://HOST:PORT IMAGE...',
  }),
  prefetchFileUnreadable: entry('NAME_INVALID', 400, (what: string, path: string, code: string) => `cannot read ${what} ${path}: ${code}`, { hint: 'check the path given to --gitlab-ci / --dockerfile' }),
  prefetchCiFileInvalid: entry('NAME_INVALID', 400, (file: string, why: string) => `${file}: ${why}`, { hint: 'is it a .gitlab-ci.yml? (YAML with jobs at the top level)' }),
  prefetchNothing: entry('NAME_INVALID', 400, () => 'nothing to prefetch', { hint: 'name images (relais prefetch alpine:3.20), or --gitlab-ci FILE / --dockerfile FILE' }),
  listenInUse: entry('STARTUP_FAILED', 500, (address: string, _cause: unknown) => `cannot listen on ${address}: the address is already in use (EADDRINUSE)`, {
    cause: (_a: string, cause: unknown) => cause,
    hint: 'another process listens there (another relais? `ss -ltnp` names it): stop it, or choose another port with --listen HOST:PORT',
  }),
  listenDenied: entry('STARTUP_FAILED', 500, (address: string, _cause: unknown) => `cannot listen on ${address}: permission denied (EACCES)`, {
    cause: (_a: string, cause: unknown) => cause,
    hint: 'ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port like 5000, or grant the capability',
  }),
  listenUnavailable: entry('STARTUP_FAILED', 500, (address: string, _cause: unknown) => `cannot listen on ${address}: no such local address (EADDRNOTAVAIL)`, {
    cause: (_a: string, cause: unknown) => cause,
    hint: 'listen on an address of this machine (`ip addr`), or 0.0.0.0 for all of them',
  }),
  dataDirUnusable: entry('STARTUP_FAILED', 500, (dir: string, code: string, _cause: unknown) => `cannot use the data directory ${dir} (${code})`, {
    cause: (_d: string, _c: string, cause: unknown) => cause,
    hint: (_dir: string, code: string) =>
      code === 'EACCES' || code === 'EPERM'
        ? `the user running relais (uid ${process.getuid?.() ?? '?'}) may not write there: choose another --data directory or change its owner (chown)`
        : code === 'ENOSPC'
          ? 'the disk is full: free space or choose another --data directory'
          : code === 'EROFS'
            ? 'the filesystem is read-only: choose a writable --data directory'
            : 'choose another --data directory',
  }),
  storageUnusable: entry('STARTUP_FAILED', 500, (what: string, cause: unknown) => {
    const why = describeCause(cause);
    return `cannot use ${what}${why === '' ? '' : ` (${why})`}`;
  }, {
    cause: (_w: string, cause: unknown) => cause,
    hint: 'check storage.s3 (endpoint, bucket, region, credentials), that the bucket exists and that the S3 service is reachable from here',
  }),
  upstreamCheckFailed: entry('UPSTREAM_CHECK_FAILED', 500, (problems: readonly string[], _hint: string) => `upstream check failed:\n${problems.map((p) => `  ${p}`).join('\n')}`, { hint: (_p, hint: string) => hint }),
} as const;

/** The upstream answered an error status relais does not handle itself: 503 and 504 pass through, the rest is a 502. */
export function upstreamAnswered(upstream: string, status: number, headers?: Readonly<Record<string, string>>): RelaisError {
  const e = status === 503 ? errors.upstreamAnsweredUnavailable : status === 504 ? errors.upstreamAnsweredTimeout : errors.upstreamAnswered;
  return e.with(headers ? { headers } : {}, upstream, status);
}


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
