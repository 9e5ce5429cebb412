// THE registry client: the one place relais speaks the registry HTTP API (the exchange engine). Everything
// that talks to a registry goes through RegistryClient:
//   - the server's pull path, through the facade UpstreamClient (client.ts), one per configured upstream;
//   - the commands: `relais cleanup` (products/cleanup/oci-backend.ts), `relais ci` (products/ci/build-run.ts)
//     and prefetch (upkeep/prefetch.ts, a relais server over its API like any client), directly.
//
// One exchange loop does, per request: take a slot of the Limiter (if any), ask the circuit breaker (if any),
// send the credential's Authorization (only to the registry's own origin), answer one auth challenge per
// attempt, follow redirects (if asked; each target checked), retry 429/5xx and transient network failures
// with exponential backoff honouring Retry-After, and report each HTTP request to an observer (metrics).
// What differs between the server and the commands is options, not code (like undici's interceptors):
//   breaker        on for the server (per upstream), off for the commands
//   limiter        a bound on requests in flight (the commands), none (the server)
//   targetCheck    private-address refusal for redirects, token realms and DNS answers (the server)
//   observer       per-exchange metrics and the upstream's headers (the server)
//   credential     per request or per client: the configured TokenService (server), a client's own
//                  credential (passthrough), a fixed Authorization (prefetch), challenge-answered tokens per
//                  repository and scope class pull/push/delete (cleanup, ci)
//   retry          attempts, backoff base and jitter, which statuses and failure kinds are retried, the
//                  longest Retry-After honoured and what a longer one means (give up, or wait the maximum)
//   failure        how a final network failure becomes an error of the table (upstream* or registry*)
// The client returns what the registry answered (any status, after retries); the caller (or facade) maps
// an answer it did not expect to the error table (`fail()` for the commands, client.ts for the server).
import { createHash } from 'node:crypto';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import { setTimeout as sleepFor } from 'node:timers/promises';
import { Agent, request, type Dispatcher } from 'undici';
import { errors, isRelaisError, RelaisError } from '../errors.js';
import { CircuitBreaker, parseRetryAfter } from '../policy/circuit-breaker.js';
import { TokenService, type Credentials } from './auth.js';
import { parseChallenges, type Challenge } from './challenge.js';
import { classifyFailure, isAbort, type UpstreamFailureKind } from './upstream-errors.js';

export type { Credentials };

export type Headers = Readonly<Record<string, string | string[] | undefined>>;
export type ResponseBody = Dispatcher.ResponseData['body'];

/** A whole answer, body read (HEAD: empty). */
export interface RegistryReply {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Buffer;
}

/** An answer whose body the caller streams (and must consume or destroy). */
export interface RegistryStream {
  readonly status: number;
  readonly headers: Headers;
  readonly body: ResponseBody;
}

/** The scope a request needs: its repository and the class of action (registries scope tokens so). */
export interface Scope {
  readonly repo: string;
  readonly action: 'pull' | 'push' | 'delete';
}

/**
 * Where a request's Authorization comes from. `authorization` is sent first (a cached token, a fixed
 * header); `answer`, when present, answers a 401 challenge of the registry's origin (once per attempt):
 * the Authorization to retry with, or undefined when none helps (the 401 is returned).
 */
export interface CredentialSource {
  authorization(scope: Scope, signal: AbortSignal | undefined): Promise<string | undefined> | string | undefined;
  answer?(challenges: readonly Challenge[], scope: Scope, signal: AbortSignal | undefined): Promise<string | undefined>;
}

/** What the client reports about each HTTP request (for metrics and logs). */
export interface ExchangeObserver {
  onExchange?(registry: string, method: string, outcome: number | UpstreamFailureKind, seconds: number): void;
  /** The registry's own answers' headers (not a redirect target's): rate-limit headers. */
  onHeaders?(registry: string, headers: Headers): void;
}

/** Which hosts the client may be sent to (redirect targets, token realms, DNS answers). */
export interface TargetCheck {
  /** Throws (an error of the table) for a URL the client must not call. */
  check(url: URL): void;
  /** A DNS lookup that refuses what `check` cannot see (names resolving to private addresses). */
  readonly lookup?: LookupFunction;
}

export interface RetryPolicy {
  /** Tries in all, the first included. */
  readonly attempts: number;
  /** The first backoff; it doubles with each attempt. */
  readonly backoffMs: number;
  /** Random extra of up to this fraction of the backoff (spreads retries of many clients). */
  readonly jitter: number;
  /** Which answers are retried (429 and 5xx are the candidates). */
  readonly status: (status: number) => boolean;
  /** Which network failures are retried. */
  readonly failures: ReadonlySet<UpstreamFailureKind>;
  /** The longest Retry-After honoured. */
  readonly maxRetryAfterMs: number;
  /** A longer Retry-After: stop retrying (the server: it holds a client), or wait the maximum (a command). */
  readonly beyondMaxRetryAfter: 'give-up' | 'wait-max';
}

export interface ConnectionOptions {
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly keepAliveTimeoutMs?: number;
  readonly connections: number;
}

export interface RegistryClientOptions {
  readonly url: string;
  readonly userAgent: string;
  /** How errors and the observer name the registry (default "registry ORIGIN[PATH]"). */
  readonly description?: string;
  /** The default credential source (a request may bring its own). Default: a challenge answered with `credentials`. */
  readonly credential?: CredentialSource;
  /** Credentials to answer the registry's challenge with (Basic, or for a Bearer token). */
  readonly credentials?: Credentials | undefined;
  /** A fixed Authorization header (a relais with client authentication): sent as is, no challenge answered. */
  readonly authorization?: string | undefined;
  /** Requests in flight at most (default 8); 0: no bound. */
  readonly concurrency?: number;
  /** The commands' shorthand: retries after the first try (default 4), backoff from retryBaseMs (default 250). */
  readonly retries?: number;
  readonly retryBaseMs?: number;
  /** The commands' shorthand for every timeout (default 30 s). */
  readonly timeoutMs?: number;
  /** Overrides of the retry policy (the server's comes from its config). */
  readonly retry?: Partial<RetryPolicy>;
  readonly connection?: ConnectionOptions;
  readonly breaker?: CircuitBreaker | undefined;
  readonly targetCheck?: TargetCheck | undefined;
  readonly observer?: ExchangeObserver | undefined;
  /** The error a final network failure becomes (default: registryUnreachable; a cancelled request goes up as it is). */
  readonly failure?: (e: unknown, req: ExchangeRequest) => unknown;
  /** The error for a redirect chain too long (default: registryTooManyRedirects). */
  readonly tooManyRedirects?: (req: ExchangeRequest) => RelaisError;
  /** The wait between attempts (tests inject one that records instead of sleeping). */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
  readonly now?: () => number;
}

export interface SendOptions {
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Buffer | undefined;
  readonly signal?: AbortSignal | undefined;
  /** This request's credential source instead of the client's. */
  readonly credential?: CredentialSource | undefined;
  /** Follow redirects (a blob's storage URL), Authorization kept to the registry's origin. */
  readonly followRedirects?: boolean;
}

export interface ExchangeRequest extends SendOptions {
  readonly method: string;
  /** Repository, for the credential's scope ('' for paths outside /v2/NAME). */
  readonly repo: string;
  readonly target: URL;
}

/** An answer and whether a challenge was tried on the way (a passthrough client's refusal depends on it). */
export interface ExchangeResult<B> {
  readonly status: number;
  readonly headers: Headers;
  readonly body: B;
  readonly challenged: boolean;
}

/** Redirects followed at most per attempt (registries send blobs to their storage's URL). */
export const MAX_REDIRECTS = 5;
export const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
/** What a command retries: rate limits and the gateway statuses (501 Not Implemented is an answer). */
const COMMAND_RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
/** Names that do not resolve stay so: a command retries only a refused, timed-out or broken link. */
const COMMAND_RETRY_FAILURES: ReadonlySet<UpstreamFailureKind> = new Set(['refused', 'timeout', 'reset']);
/** The longest Retry-After a command waits for before its next attempt. */
const COMMAND_MAX_RETRY_AFTER_MS = 60_000;

export function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}
export const firstHeader = header;

export function isRedirect(status: number): boolean {
  return REDIRECT_STATUSES.has(status);
}

/** Drops a response body relais does not need, keeping the connection reusable when the body is small. */
export function discard(body: ResponseBody): void {
  body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}

export function sha256(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

/** The next page from a `Link: </v2/x/tags/list?n=100&last=y>; rel="next"` header, resolved against base. */
export function nextLink(link: string | undefined, base: URL): URL | undefined {
  if (link === undefined) return undefined;
  for (const part of link.split(',')) {
    const m = /<([^>]+)>\s*;(.*)/.exec(part.trim());
    if (m?.[1] !== undefined && /rel="?next"?/i.test(m[2] ?? '')) return new URL(m[1], base);
  }
  return undefined;
}

/** The registry's own words from an error body (`{"errors":[{"code","message"}]}`), or its first characters. */
export function registryErrorMessage(body: Buffer | string): string {
  const text = typeof body === 'string' ? body : body.toString('utf8');
  try {
    const j = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const e = j.errors?.[0];
    if (e) return [e.code, e.message].filter((x) => x !== undefined && x !== '').join(': ');
  } catch {
    /* not JSON */
  }
  return text.slice(0, 200).trim();
}

/** The media type of an answer, parameters dropped. */
export function mediaTypeOf(headers: Headers): string {
  return (firstHeader(headers, 'content-type') ?? '').split(';')[0]?.trim() ?? '';
}

/** A semaphore: at most `max` calls in flight. */
export class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`concurrency must be a whole number >= 1 (got ${max})`);
  }

  async acquire(): Promise<() => void> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      this.waiting.shift()?.();
    };
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** The class of action a method needs: tokens are scoped so (pull for reads, delete, push for the rest). */
export function scopeOf(method: string, repo: string): Scope {
  return { repo, action: method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'push' };
}

/** A fixed Authorization (or none): nothing answers a challenge. */
export function fixedCredential(authorization: string | undefined): CredentialSource {
  return { authorization: () => authorization };
}

/**
 * The commands' credential: challenges answered with the TokenService (a Bearer token per repository and
 * scope class, or Basic for every request once the registry asked for it). A token service refusing the
 * credentials is registryTokenRefused.
 */
export function challengeCredential(tokens: TokenService, description: string, hasCredentials: boolean): CredentialSource {
  const byScope = new Map<string, string>();
  let basic: string | undefined;
  return {
    authorization: (scope) => byScope.get(`${scope.repo}|${scope.action}`) ?? basic,
    async answer(challenges, scope, signal) {
      let answer: string | undefined;
      try {
        answer = await tokens.answer(challenges, scope.repo, signal);
      } catch (e) {
        if (isRelaisError(e) && e.code === 'UNAUTHORIZED') throw errors.registryTokenRefused(description, hasCredentials, scope.repo);
        throw e;
      }
      if (answer?.startsWith('Basic ') === true) basic = answer;
      else if (answer !== undefined) byScope.set(`${scope.repo}|${scope.action}`, answer);
      return answer;
    },
  };
}

export class RegistryClient {
  readonly description: string;
  readonly base: URL;
  /** Counts of what was sent, for reports and tests. */
  readonly stats = { requests: 0, retries: 0, tokenFetches: 0 };
  /** The connection pool (token services of this registry share it). */
  readonly dispatcher: Agent;
  private readonly credential: CredentialSource;
  private readonly limiter: Limiter | undefined;
  private readonly retry: RetryPolicy;
  private readonly hasCredentials: boolean;
  private readonly sleep: (ms: number, signal: AbortSignal | undefined) => Promise<void>;

  constructor(private readonly opts: RegistryClientOptions) {
    this.base = new URL(opts.url.replace(/\/+$/, ''));
    this.description = opts.description ?? `registry ${this.base.origin}${this.base.pathname === '/' ? '' : this.base.pathname}`;
    const timeout = opts.timeoutMs ?? 30_000;
    const c = opts.connection ?? { connectTimeoutMs: timeout, headersTimeoutMs: timeout, bodyTimeoutMs: timeout, connections: 32 };
    this.dispatcher = new Agent({
      connect: { timeout: c.connectTimeoutMs, ...(opts.targetCheck?.lookup ? { lookup: opts.targetCheck.lookup } : {}) },
      headersTimeout: c.headersTimeoutMs,
      bodyTimeout: c.bodyTimeoutMs,
      ...(c.keepAliveTimeoutMs === undefined ? {} : { keepAliveTimeout: c.keepAliveTimeoutMs }),
      connections: c.connections,
    });
    this.hasCredentials = opts.credentials !== undefined || opts.authorization !== undefined;
    this.credential =
      opts.credential ??
      (opts.authorization !== undefined
        ? fixedCredential(opts.authorization)
        : challengeCredential(
            new TokenService({
              upstream: this.base.host,
              credentials: opts.credentials,
              dispatcher: this.dispatcher,
              headersTimeout: c.headersTimeoutMs,
              bodyTimeout: c.bodyTimeoutMs,
              // The user names the registry on the command line; its token realm may be anywhere it says.
              checkUrl: (u) => {
                if (u.protocol !== 'https:' && u.protocol !== 'http:') throw errors.tokenRealmInvalid(u.href);
              },
              ...(opts.now ? { now: opts.now } : {}),
            }),
            this.description,
            opts.credentials !== undefined,
          ));
    const concurrency = opts.concurrency ?? 8;
    this.limiter = concurrency === 0 ? undefined : new Limiter(concurrency);
    this.retry = {
      attempts: (opts.retries ?? 4) + 1,
      backoffMs: opts.retryBaseMs ?? 250,
      jitter: 0.3,
      status: (s) => COMMAND_RETRY_STATUS.has(s),
      failures: COMMAND_RETRY_FAILURES,
      maxRetryAfterMs: COMMAND_MAX_RETRY_AFTER_MS,
      beyondMaxRetryAfter: 'wait-max',
      ...opts.retry,
    };
    this.sleep = opts.sleep ?? ((ms, signal) => sleepFor(ms, undefined, { signal }));
  }

  /** The URL of an API path (`/v2/...`) below the registry's base URL (never carries credentials). */
  url(path: string): URL {
    return new URL(this.base.pathname.replace(/\/$/, '') + path, this.base);
  }

  /** Sends a request and reads the whole answer (retried as a whole when the link breaks mid-body). */
  async send(method: string, repo: string, target: URL, opts: SendOptions = {}): Promise<RegistryReply> {
    const release = await this.slot();
    try {
      const r = await this.exchange({ ...opts, method, repo, target }, async (body) => {
        if (method === 'HEAD') {
          await body.dump();
          return Buffer.alloc(0);
        }
        return Buffer.from(await body.arrayBuffer());
      });
      return { status: r.status, headers: r.headers, body: r.body };
    } finally {
      release();
    }
  }

  /**
   * Sends a GET and hands back the answer with its body still streaming, following redirects (a blob's
   * storage URL; Authorization stays with the registry's origin). The caller must consume or destroy the
   * body; its slot among the requests in flight is held until the body ends.
   */
  async open(repo: string, target: URL, opts: SendOptions = {}): Promise<RegistryStream> {
    const r = await this.request({ ...opts, method: 'GET', repo, target, followRedirects: true });
    return { status: r.status, headers: r.headers, body: r.body };
  }

  /** The general form: any method, the body streaming back (its slot held until it ends). */
  async request(req: ExchangeRequest): Promise<ExchangeResult<ResponseBody>> {
    const release = await this.slot();
    try {
      const r = await this.exchange(req, (body) => Promise.resolve(body));
      r.body.once('close', release);
      return r;
    } catch (e) {
      release();
      throw e;
    }
  }

  /**
   * One request as it is (the proxy door's passthrough): no credential, no retry, no redirect, no breaker,
   * no limiter; observed like every other. The caller relays the answer and must consume or destroy its body.
   */
  async forward(method: string, target: URL, headers: Readonly<Record<string, string | string[]>>, body: Readable | undefined, signal: AbortSignal | undefined): Promise<RegistryStream> {
    const r = await this.once(target, method, headers, body ?? null, signal);
    return { status: r.statusCode, headers: r.headers, body: r.body };
  }

  /** The error for an answer the caller did not expect, from the table: what was asked and what the registry said. */
  fail(res: { status: number; body: Buffer | string }, what: string, repo: string): RelaisError {
    const detail = registryErrorMessage(res.body);
    const msg = `${this.description}: ${what} answered ${res.status}${detail === '' ? '' : ` (${detail})`}`;
    if (res.status === 401) return errors.registryUnauthorized(msg, this.hasCredentials);
    if (res.status === 403) return errors.registryDenied(msg, repo);
    if (res.status === 404 && /NAME_UNKNOWN/.test(detail)) return errors.registryRepoUnknown(msg, repo);
    return (res.status === 429 || res.status >= 500 ? errors.registryUnavailable : errors.registryFailed)(msg);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async slot(): Promise<() => void> {
    return this.limiter ? this.limiter.acquire() : () => undefined;
  }

  /**
   * THE exchange loop: attempts (breaker, retries with backoff and Retry-After) around one chain (auth
   * challenge, redirects); `read` takes the body of the answer returned, inside the loop (a body that breaks
   * mid-read is retried like a failed request).
   */
  private async exchange<B>(req: ExchangeRequest, read: (body: ResponseBody) => Promise<B>): Promise<ExchangeResult<B>> {
    const { breaker } = this.opts;
    const p = this.retry;
    for (let attempt = 0; ; attempt++) {
      const last = attempt + 1 >= p.attempts;
      if (breaker && !breaker.tryAcquire()) throw errors.upstreamCircuitOpen(this.description, breaker.retryAfterMs());
      let res: ExchangeResult<ResponseBody>;
      try {
        res = await this.chain(req);
      } catch (e) {
        // Every outcome settles the breaker: a half-open probe left unsettled would keep the circuit shut for good.
        if (isAbort(e) && req.signal?.aborted === true) {
          breaker?.release();
          throw e;
        }
        // Auth, protocol and redirect errors are final. The registry answered (a bad redirect...), unless its
        // token service is unreachable or failing (503/504).
        if (e instanceof RelaisError) {
          if (e.status === 503 || e.status === 504) breaker?.onFailure();
          else breaker?.onSuccess();
          throw e;
        }
        breaker?.onFailure();
        if (!last && req.signal?.aborted !== true && p.failures.has(classifyFailure(e))) {
          await this.pause(this.backoff(attempt), req.signal);
          continue;
        }
        throw this.failure(e, req);
      }
      if (res.status === 429 || res.status >= 500) {
        const retryAfter = parseRetryAfter(header(res.headers, 'retry-after'));
        if (retryAfter === undefined && res.status !== 429) breaker?.onFailure();
        const wait = last || !p.status(res.status) ? undefined : this.waitFor(attempt, retryAfter);
        if (wait !== undefined) {
          discard(res.body);
          await this.pause(wait, req.signal);
          continue;
        }
        // The registry asked for a pause longer than this client will wait: stop calling it until then.
        if (breaker && (retryAfter !== undefined || res.status === 429)) breaker.backOff(retryAfter ?? breaker.cooldownMs);
      } else {
        breaker?.onSuccess();
      }
      try {
        return { ...res, body: await read(res.body) };
      } catch (e) {
        if (!last && req.signal?.aborted !== true && p.failures.has(classifyFailure(e))) {
          await this.pause(this.backoff(attempt), req.signal);
          continue;
        }
        throw this.failure(e, req);
      }
    }
  }

  /** One attempt: the credential's Authorization, one challenge answered, redirects followed (if asked). */
  private async chain(req: ExchangeRequest): Promise<ExchangeResult<ResponseBody>> {
    const credential = req.credential ?? this.credential;
    const scope = scopeOf(req.method, req.repo);
    let authorization = await credential.authorization(scope, req.signal);
    let challenged = false;
    let url = req.target;
    for (let redirects = 0; ; ) {
      const sameOrigin = url.origin === this.base.origin;
      const headers: Record<string, string> = { 'user-agent': this.opts.userAgent, ...req.headers };
      // The registry's Authorization never goes to another origin (CDN redirects carry signed URLs).
      if (sameOrigin && authorization !== undefined) headers.authorization = authorization;
      const res = await this.once(url, req.method, headers, req.body ?? null, req.signal, sameOrigin);
      if (res.statusCode === 401 && sameOrigin && !challenged && credential.answer) {
        challenged = true;
        this.stats.tokenFetches++;
        let answer: string | undefined;
        try {
          answer = await credential.answer(parseChallenges(res.headers['www-authenticate']), scope, req.signal);
        } catch (e) {
          discard(res.body);
          throw e;
        }
        // No answer helps: the caller reads the registry's 401.
        if (answer !== undefined) {
          discard(res.body);
          authorization = answer;
          continue;
        }
      }
      if (req.followRedirects === true && REDIRECT_STATUSES.has(res.statusCode)) {
        const location = header(res.headers, 'location');
        // A redirect without Location is the caller's to judge.
        if (location !== undefined) {
          discard(res.body);
          const next = new URL(location, url);
          this.opts.targetCheck?.check(next);
          if (redirects++ === MAX_REDIRECTS) throw (this.opts.tooManyRedirects ?? ((r) => errors.registryTooManyRedirects(this.description, r.target.pathname)))(req);
          url = next;
          continue;
        }
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, challenged };
    }
  }

  /** One HTTP request, observed (status or failure kind, duration; the registry's own headers). */
  private async once(url: URL, method: string, headers: Readonly<Record<string, string | string[]>>, body: Buffer | Readable | null, signal: AbortSignal | undefined, ownOrigin = false): Promise<Dispatcher.ResponseData> {
    const started = performance.now();
    const observer = this.opts.observer;
    let res: Dispatcher.ResponseData;
    this.stats.requests++;
    try {
      res = await request(url, { method, headers, body, dispatcher: this.dispatcher, signal });
    } catch (e) {
      observer?.onExchange?.(this.description, method, classifyFailure(e), (performance.now() - started) / 1000);
      throw e;
    }
    observer?.onExchange?.(this.description, method, res.statusCode, (performance.now() - started) / 1000);
    if (ownOrigin) observer?.onHeaders?.(this.description, res.headers);
    return res;
  }

  /** The wait before the next attempt after a retryable answer, or undefined to stop. */
  private waitFor(attempt: number, retryAfter: number | undefined): number | undefined {
    if (retryAfter === undefined) return this.backoff(attempt);
    if (retryAfter <= this.retry.maxRetryAfterMs) return retryAfter;
    return this.retry.beyondMaxRetryAfter === 'wait-max' ? this.retry.maxRetryAfterMs : undefined;
  }

  private backoff(attempt: number): number {
    const base = this.retry.backoffMs * 2 ** attempt;
    return base + Math.floor(Math.random() * base * this.retry.jitter);
  }

  private async pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
    this.stats.retries++;
    try {
      await this.sleep(ms, signal);
    } catch (e) {
      this.opts.breaker?.release();
      throw e;
    }
  }

  private failure(e: unknown, req: ExchangeRequest): unknown {
    if (this.opts.failure) return this.opts.failure(e, req);
    if (isRelaisError(e)) return e;
    // A cancelled request is the caller's doing, not the registry's: it goes up as it is.
    if (isAbort(e)) return e;
    const code = (e as { code?: string }).code ?? '';
    return errors.registryUnreachable.with({ cause: e }, this.description, `${req.method} ${req.target.pathname}`, code || (e as Error).message);
  }
}
