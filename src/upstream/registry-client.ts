// The registry API client of the commands that talk to a registry as its user does: `relais cleanup`
// (any OCI registry: pull, push and delete scopes) and prefetch (a relais server, over its API like any
// client). One implementation of the exchange both need: answering the registry's auth challenge with the
// upstream TokenService (Bearer tokens per repository and scope class, or Basic), retries with backoff on
// 429/5xx and transient network failures (honouring Retry-After), redirects, a bound on requests in flight,
// the Accept lists of media-types.ts, and failures as rows of the error table (src/errors.ts).
//
// The server's pull path has its own UpstreamClient (client.ts): a circuit breaker, private-address
// checks and per-exchange metrics that a command does not want. Both share the token flow (auth.ts), the
// challenge parser, the media types and the failure classification (errors.ts).
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request, type Dispatcher } from 'undici';
import { errors, isRelaisError, type RelaisError } from '../errors.js';
import { parseRetryAfter } from '../policy/circuit-breaker.js';
import { TokenService, type Credentials } from './auth.js';
import { parseChallenges } from './challenge.js';
import { classifyFailure, isAbort } from './upstream-errors.js';

export type { Credentials };

export interface RegistryClientOptions {
  readonly url: string;
  /** Credentials to answer the registry's challenge with (Basic, or for a Bearer token). */
  readonly credentials?: Credentials | undefined;
  /** A fixed Authorization header (a relais with client authentication): sent as is, no challenge answered. */
  readonly authorization?: string | undefined;
  /** Requests in flight at most (default 8). */
  readonly concurrency?: number;
  /** Retries of 429/5xx/network errors (default 4), with exponential backoff from retryBaseMs (default 250). */
  readonly retries?: number;
  readonly retryBaseMs?: number;
  readonly timeoutMs?: number;
  readonly userAgent: string;
  /** How errors name the registry (default "registry ORIGIN[PATH]"). */
  readonly description?: string;
}

export type Headers = Readonly<Record<string, string | string[] | undefined>>;

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
  readonly body: Dispatcher.ResponseData['body'];
}

export interface SendOptions {
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Buffer | undefined;
  readonly signal?: AbortSignal | undefined;
}

type ScopeClass = 'pull' | 'push' | 'delete';

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
/** Redirects followed for a blob (registries send blobs to their storage's URL). */
export const MAX_REDIRECTS = 5;
/** The longest Retry-After a command waits for before its next attempt. */
const MAX_RETRY_AFTER_MS = 60_000;

export function firstHeader(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
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

export class RegistryClient {
  readonly description: string;
  readonly base: URL;
  /** Counts of what was sent, for reports and tests. */
  readonly stats = { requests: 0, retries: 0, tokenFetches: 0 };
  private readonly dispatcher: Agent;
  private readonly tokens: TokenService;
  private readonly limiter: Limiter;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly userAgent: string;
  private readonly credentials: Credentials | undefined;
  private readonly fixedAuthorization: string | undefined;
  /** Authorization per `repo|scope class`, from answered challenges. */
  private readonly auth = new Map<string, string>();
  private basic: string | undefined;

  constructor(opts: RegistryClientOptions) {
    this.base = new URL(opts.url.replace(/\/+$/, ''));
    this.description = opts.description ?? `registry ${this.base.origin}${this.base.pathname === '/' ? '' : this.base.pathname}`;
    const timeout = opts.timeoutMs ?? 30_000;
    this.dispatcher = new Agent({ connect: { timeout }, headersTimeout: timeout, bodyTimeout: timeout, connections: 32 });
    this.credentials = opts.credentials;
    this.fixedAuthorization = opts.authorization;
    this.tokens = new TokenService({
      upstream: this.base.host,
      credentials: opts.credentials,
      dispatcher: this.dispatcher,
      headersTimeout: timeout,
      bodyTimeout: timeout,
      // The user names the registry on the command line; its token realm may be anywhere it says.
      checkUrl: (u) => {
        if (u.protocol !== 'https:' && u.protocol !== 'http:') throw errors.tokenRealmInvalid(u.href);
      },
    });
    this.limiter = new Limiter(opts.concurrency ?? 8);
    this.retries = opts.retries ?? 4;
    this.retryBaseMs = opts.retryBaseMs ?? 250;
    this.userAgent = opts.userAgent;
  }

  /** The URL of an API path (`/v2/...`) below the registry's base URL. */
  url(path: string): URL {
    return new URL(this.base.pathname.replace(/\/$/, '') + path, this.base);
  }

  /** Sends a request and reads the whole answer (retried as a whole when the link breaks mid-body). */
  async send(method: string, repo: string, target: URL, opts: SendOptions = {}): Promise<RegistryReply> {
    return this.limiter.run(() =>
      this.exchange(method, repo, target, opts, async (r) => {
        if (method === 'HEAD') {
          await r.body.dump();
          return Buffer.alloc(0);
        }
        return Buffer.from(await r.body.arrayBuffer());
      }),
    );
  }

  /**
   * Sends a GET and hands back the answer with its body still streaming, following redirects (a blob's
   * storage URL; Authorization stays with the registry's origin). The caller must consume or destroy the
   * body; its slot among the requests in flight is held until the body ends.
   */
  async open(repo: string, target: URL, opts: SendOptions = {}): Promise<RegistryStream> {
    const release = await this.limiter.acquire();
    try {
      let url = target;
      for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
        const res = await this.exchange('GET', repo, url, opts, (r) => Promise.resolve(r.body));
        if (res.status >= 300 && res.status < 400) {
          const location = firstHeader(res.headers, 'location');
          if (location !== undefined) {
            res.body.dump().catch(() => undefined);
            url = new URL(location, url);
            continue;
          }
        }
        res.body.once('close', release);
        return res;
      }
      throw errors.registryTooManyRedirects(this.description, target.pathname);
    } catch (e) {
      release();
      throw e;
    }
  }

  /** The error for an answer the caller did not expect, from the table: what was asked and what the registry said. */
  fail(res: { status: number; body: Buffer | string }, what: string, repo: string): RelaisError {
    const detail = registryErrorMessage(res.body);
    const msg = `${this.description}: ${what} answered ${res.status}${detail === '' ? '' : ` (${detail})`}`;
    if (res.status === 401) return errors.registryUnauthorized(msg, this.credentials !== undefined || this.fixedAuthorization !== undefined);
    if (res.status === 403) return errors.registryDenied(msg, repo);
    if (res.status === 404 && /NAME_UNKNOWN/.test(detail)) return errors.registryRepoUnknown(msg, repo);
    return (res.status === 429 || res.status >= 500 ? errors.registryUnavailable : errors.registryFailed)(msg);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  /** One request with auth, retries and backoff; `read` takes the body of the answer that is returned. */
  private async exchange<B>(method: string, repo: string, target: URL, opts: SendOptions, read: (r: Dispatcher.ResponseData) => Promise<B>): Promise<{ status: number; headers: Headers; body: B }> {
    const cls: ScopeClass = method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'push';
    const key = `${repo}|${cls}`;
    let answeredChallenge = this.fixedAuthorization !== undefined;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...opts.headers };
      const authorization = this.fixedAuthorization ?? this.auth.get(key) ?? this.basic;
      if (authorization !== undefined && target.origin === this.base.origin) headers.authorization = authorization;
      let r: Dispatcher.ResponseData;
      try {
        this.stats.requests++;
        r = await request(target, { method, headers, body: opts.body ?? null, dispatcher: this.dispatcher, signal: opts.signal });
      } catch (e) {
        if (await this.retryAfterFailure(e, attempt, opts.signal)) continue;
        throw this.unreachable(method, target, e);
      }
      if (r.statusCode === 401 && !answeredChallenge) {
        answeredChallenge = true;
        let answer: string | undefined;
        try {
          this.stats.tokenFetches++;
          answer = await this.tokens.answer(parseChallenges(r.headers['www-authenticate']), repo, opts.signal);
        } catch (e) {
          r.body.dump().catch(() => undefined);
          if (isRelaisError(e) && e.code === 'UNAUTHORIZED') throw errors.registryTokenRefused(this.description, this.credentials !== undefined, repo);
          throw e;
        }
        // No answer helps: the caller reads the registry's 401.
        if (answer !== undefined) {
          r.body.dump().catch(() => undefined);
          if (answer.startsWith('Basic ')) this.basic = answer;
          else this.auth.set(key, answer);
          attempt--;
          continue;
        }
      }
      if (RETRY_STATUS.has(r.statusCode) && attempt < this.retries) {
        r.body.dump().catch(() => undefined);
        this.stats.retries++;
        await sleep(this.backoff(attempt, firstHeader(r.headers, 'retry-after')), undefined, { signal: opts.signal });
        continue;
      }
      try {
        return { status: r.statusCode, headers: r.headers, body: await read(r) };
      } catch (e) {
        if (await this.retryAfterFailure(e, attempt, opts.signal)) continue;
        throw this.unreachable(method, target, e);
      }
    }
  }

  /** Waits before the next attempt when the failure is a transient one and attempts are left. */
  private async retryAfterFailure(e: unknown, attempt: number, signal: AbortSignal | undefined): Promise<boolean> {
    const kind = classifyFailure(e);
    // Names that do not resolve stay so: only a refused, timed-out or broken link is worth another try.
    if (signal?.aborted === true || !(kind === 'refused' || kind === 'timeout' || kind === 'reset') || attempt >= this.retries) return false;
    this.stats.retries++;
    await sleep(this.backoff(attempt, undefined), undefined, { signal });
    return true;
  }

  private unreachable(method: string, target: URL, e: unknown): RelaisError {
    if (isRelaisError(e)) return e;
    // A cancelled request is the caller's doing, not the registry's: it goes up as it is.
    if (isAbort(e)) throw e;
    const code = (e as { code?: string }).code ?? '';
    return errors.registryUnreachable.with({ cause: e }, this.description, `${method} ${target.pathname}`, code || (e as Error).message);
  }

  private backoff(attempt: number, retryAfter: string | undefined): number {
    const ra = parseRetryAfter(retryAfter);
    if (ra !== undefined) return Math.min(ra, MAX_RETRY_AFTER_MS);
    const base = this.retryBaseMs * 2 ** attempt;
    return base + Math.floor(Math.random() * base * 0.3);
  }
}
