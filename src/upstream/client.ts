// The upstream client: one per configured upstream. It owns the connection pool, authentication,
// redirects, timeouts, retries and the circuit breaker (each a separate, named setting), and reports
// failures as RelaisErrors (502/503/504). It knows the registry HTTP API paths, nothing about caching.
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { lookup, type LookupAddress } from 'node:dns';
import { Agent, request, type Dispatcher } from 'undici';
import { errors, RelaisError, upstreamAnswered } from '../errors.js';
import { CircuitBreaker, parseRetryAfter } from '../policy/circuit-breaker.js';
import type { UpstreamConfig } from '../config/schema.js';
import { isPrivateHost } from './address.js';
import { basicAuthorization, TokenService } from './auth.js';
import { parseChallenges } from './challenge.js';
import { credentialMaterial, type ClientCredential } from './credential.js';
import { createHash } from 'node:crypto';
import { classifyFailure, isAbort, isTransient, toUpstreamError, type UpstreamFailureKind } from './upstream-errors.js';

export type UpstreamBody = Dispatcher.ResponseData['body'];

export interface UpstreamResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: UpstreamBody;
}

export interface UpstreamRequest {
  readonly method: 'GET' | 'HEAD';
  /** Repository at the upstream, for the auth scope. */
  readonly repo: string;
  /** Path and query below the upstream's base URL, e.g. /v2/library/alpine/manifests/3.20 */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal | undefined;
  /**
   * A passthrough upstream's request (access: passthrough): the client's own credential, or undefined for an
   * anonymous client. Ignored for shared upstreams, which use the configured username/password.
   */
  readonly credential?: ClientCredential | undefined;
}

/** Client credentials whose tokens a passthrough upstream's client keeps at most (in memory; the oldest go). */
const MAX_CLIENT_TOKEN_SERVICES = 1000;

/** What the client reports about each upstream exchange (for metrics and logs). */
export interface UpstreamObserver {
  onExchange?(upstream: string, method: string, outcome: number | UpstreamFailureKind, seconds: number): void;
  onHeaders?(upstream: string, headers: Readonly<Record<string, string | string[] | undefined>>): void;
}

const MAX_REDIRECTS = 5;

/** Drops a response body relais does not need, keeping the connection reusable when the body is small. */
export function discard(body: UpstreamBody): void {
  body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}

export function header(h: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export class UpstreamClient {
  readonly name: string;
  readonly baseUrl: URL;
  readonly breaker: CircuitBreaker;
  private readonly dispatcher: Agent;
  private readonly tokens: TokenService;
  private readonly cfg: UpstreamConfig;
  private readonly observer: UpstreamObserver;
  /** Passthrough upstreams: a token cache per client credential (keyed by its hash), oldest first. */
  private readonly clientTokens = new Map<string, TokenService>();
  private readonly clock: { readonly now?: () => number };

  /** `now`: the clock of the circuit breaker and the token cache (tests advance one instead of sleeping). */
  constructor(name: string, cfg: UpstreamConfig, observer: UpstreamObserver = {}, clock: { readonly now?: () => number } = {}) {
    this.name = name;
    this.cfg = cfg;
    this.observer = observer;
    this.clock = clock;
    this.baseUrl = new URL(cfg.url.replace(/\/+$/, ''));
    const upstreamHost = this.baseUrl.hostname;
    this.dispatcher = new Agent({
      connect: {
        timeout: cfg.timeouts.connect,
        // Names that resolve to private addresses (DNS rebinding, CDN redirects gone wrong) are refused
        // unless they are the upstream's own host or allowPrivateRedirects is set. IP literals: checkTarget().
        lookup: (hostname, options, callback) => {
          lookup(hostname, { ...options, all: true }, (err, addresses) => {
            if (err) return callback(err, '', 0);
            const list = addresses;
            if (hostname !== upstreamHost && !cfg.allowPrivateRedirects && list.some((a) => isPrivateHost(a.address))) {
              const e = Object.assign(new Error(`${hostname} resolves to a private address; refused`), { code: 'ERELAIS_PRIVATE_ADDRESS' });
              return callback(e, '', 0);
            }
            if ((options as { all?: boolean }).all === true) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
            const first = list[0];
            if (!first) return callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }), '', 0);
            callback(null, first.address, first.family);
          });
        },
      },
      headersTimeout: cfg.timeouts.headers,
      bodyTimeout: cfg.timeouts.idle,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
    this.breaker = new CircuitBreaker({ failures: cfg.circuitBreaker.failures, cooldownMs: cfg.circuitBreaker.cooldown, ...(clock.now ? { now: clock.now } : {}) });
    const credentials = cfg.username !== undefined && cfg.password !== undefined ? { username: cfg.username, password: cfg.password } : undefined;
    this.tokens = new TokenService({
      upstream: name,
      credentials,
      dispatcher: this.dispatcher,
      headersTimeout: cfg.timeouts.headers,
      bodyTimeout: cfg.timeouts.idle,
      checkUrl: (u) => this.checkTarget(u),
      ...(clock.now ? { now: clock.now } : {}),
    });
  }

  /** The upstream URL for a path (never carries credentials). */
  url(path: string): URL {
    return new URL(this.baseUrl.pathname.replace(/\/$/, '') + path, this.baseUrl);
  }

  /** Refuses hosts an upstream may not send relais to (private ranges), unless it is the upstream itself. */
  checkTarget(u: URL): void {
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw errors.upstreamRedirectScheme(this.name);
    }
    if (u.hostname === this.baseUrl.hostname || this.cfg.allowPrivateRedirects) return;
    if (isPrivateHost(u.hostname)) {
      throw errors.upstreamRedirectPrivate(this.name, u.hostname);
    }
  }

  /**
   * Sends a request with auth, redirects and retries. Returns any response the caller must interpret
   * (2xx, 3xx not followed, 404...). Throws RelaisError for failures: unreachable, timeouts, 5xx and 429
   * after retries, refused credentials, an open circuit. The caller must consume or destroy the body.
   */
  async send(req: UpstreamRequest): Promise<UpstreamResponse> {
    const attempts = this.cfg.retries.attempts;
    let lastError: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (!this.breaker.tryAcquire()) {
        throw errors.upstreamCircuitOpen(this.name, this.breaker.retryAfterMs());
      }
      try {
        const res = await this.sendOnce(req);
        if (res.status === 429 || res.status >= 500) {
          const retryAfter = parseRetryAfter(header(res.headers, 'retry-after'));
          discard(res.body);
          lastError = statusError(this.name, res.status, retryAfter);
          const canRetry = attempt < attempts && res.status !== 501 && (retryAfter === undefined || retryAfter <= this.cfg.retries.maxRetryAfter);
          if (retryAfter === undefined && res.status !== 429) this.breaker.onFailure();
          if (canRetry) {
            await sleep(retryAfter ?? this.backoff(attempt), undefined, { signal: req.signal });
            continue;
          }
          // The upstream asked for a pause longer than relais will hold a client: stop calling it until then.
          if (retryAfter !== undefined || res.status === 429) this.breaker.backOff(retryAfter ?? this.cfg.circuitBreaker.cooldown);
          throw lastError;
        }
        this.breaker.onSuccess();
        return res;
      } catch (e) {
        // Every outcome settles the breaker: a half-open probe left unsettled would keep the circuit shut for good.
        if (isAbort(e) && req.signal?.aborted === true) {
          this.breaker.release();
          throw e;
        }
        // Auth, protocol and status errors are final here (status retries happen above). The upstream
        // answered (401, a bad redirect...), unless its token service is unreachable or failing (503).
        if (e instanceof RelaisError) {
          // A 429/5xx thrown just above: the breaker already counted it.
          if (e === lastError) throw e;
          if (e.status === 503 || e.status === 504) this.breaker.onFailure();
          else this.breaker.onSuccess();
          throw e;
        }
        this.breaker.onFailure();
        lastError = e;
        if (attempt < attempts && isTransient(e)) {
          await sleep(this.backoff(attempt), undefined, { signal: req.signal });
          continue;
        }
        throw toUpstreamError(this.name, e);
      }
    }
    throw toUpstreamError(this.name, lastError);
  }

  private backoff(attempt: number): number {
    return this.cfg.retries.backoff * 2 ** (attempt - 1);
  }

  /** One HTTP request of an exchange, observed (status or failure kind, duration; the upstream's headers). */
  private async exchange(url: URL, req: UpstreamRequest, headers: Record<string, string>, sameHost: boolean): Promise<Dispatcher.ResponseData> {
    const started = performance.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: req.method, headers, dispatcher: this.dispatcher, signal: req.signal });
    } catch (e) {
      this.observer.onExchange?.(this.name, req.method, classifyFailure(e), (performance.now() - started) / 1000);
      throw e;
    }
    this.observer.onExchange?.(this.name, req.method, res.statusCode, (performance.now() - started) / 1000);
    if (sameHost) this.observer.onHeaders?.(this.name, res.headers);
    return res;
  }

  /** One exchange: auth (answering one challenge), then up to MAX_REDIRECTS redirects. */
  private async sendOnce(req: UpstreamRequest): Promise<UpstreamResponse> {
    if (this.passthrough) return this.sendAsClient(req);
    let url = this.url(req.path);
    let authorization = await this.tokens.authorizationFor(req.repo, req.signal);
    let answeredChallenge = false;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const sameHost = url.host === this.baseUrl.host;
      const headers: Record<string, string> = { 'user-agent': 'relais', ...req.headers };
      // The upstream's Authorization never goes to another host (CDN redirects carry signed URLs).
      if (sameHost && authorization !== undefined) headers.authorization = authorization;
      const res = await this.exchange(url, req, headers, sameHost);
      if (res.statusCode === 401 && sameHost && !answeredChallenge) {
        discard(res.body);
        answeredChallenge = true;
        authorization = await this.tokens.answer(parseChallenges(res.headers['www-authenticate']), req.repo, req.signal);
        if (authorization === undefined) throw deniedError(this.name, req.repo, this.cfg.username !== undefined);
        hop--;
        continue;
      }
      if (res.statusCode === 401 || res.statusCode === 403) {
        discard(res.body);
        throw deniedError(this.name, req.repo, this.cfg.username !== undefined);
      }
      if ([301, 302, 303, 307, 308].includes(res.statusCode)) {
        const location = header(res.headers, 'location');
        discard(res.body);
        if (location === undefined) throw errors.upstreamRedirectNoLocation(this.name);
        const next = new URL(location, url);
        this.checkTarget(next);
        url = next;
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    }
    throw errors.upstreamTooManyRedirects(this.name);
  }

  /** Whether this upstream uses each client's own credentials (access: passthrough). */
  get passthrough(): boolean {
    return this.cfg.access === 'passthrough';
  }

  /**
   * The token cache of one client credential (Basic user and password, or anonymous): the registry token flow
   * run with the client's credentials, never relais's. Bounded; only the credential's hash is its key.
   */
  private clientTokenService(credential: ClientCredential | undefined): TokenService {
    const key = createHash('sha256').update(credentialMaterial(credential)).digest('hex');
    const known = this.clientTokens.get(key);
    if (known) {
      this.clientTokens.delete(key);
      this.clientTokens.set(key, known);
      return known;
    }
    const service = new TokenService({
      upstream: this.name,
      credentials: credential?.kind === 'basic' ? { username: credential.username, password: credential.password } : undefined,
      dispatcher: this.dispatcher,
      headersTimeout: this.cfg.timeouts.headers,
      bodyTimeout: this.cfg.timeouts.idle,
      checkUrl: (u) => this.checkTarget(u),
      // The client's credentials refused by the token service: the client is challenged again (401).
      refused: (scope) => errors.passthroughChallenge(this.name, scope.replace(/^repository:|:pull$/g, '')),
      ...(this.clock.now ? { now: this.clock.now } : {}),
    });
    this.clientTokens.set(key, service);
    if (this.clientTokens.size > MAX_CLIENT_TOKEN_SERVICES) {
      const oldest = this.clientTokens.keys().next();
      if (oldest.done !== true) this.clientTokens.delete(oldest.value);
    }
    return service;
  }

  /**
   * One exchange of a passthrough upstream with the client's credential: a Bearer token the client sent is
   * used as it is; Basic credentials go through the upstream's token flow (or as Basic, if that is its
   * challenge); no credential is an anonymous request. The upstream's refusal is the client's: 401 with the
   * upstream's own challenge (no credential, a token it refused, credentials its token service refused) or
   * 403 (credentials accepted by the token service, still refused for this repository).
   */
  private async sendAsClient(req: UpstreamRequest): Promise<UpstreamResponse> {
    const cred = req.credential;
    const tokens = cred?.kind === 'bearer' ? undefined : this.clientTokenService(cred);
    let authorization = cred?.kind === 'bearer' ? `Bearer ${cred.token}` : await tokens?.authorizationFor(req.repo, req.signal);
    let answeredChallenge = false;
    let url = this.url(req.path);
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const sameHost = url.host === this.baseUrl.host;
      const headers: Record<string, string> = { 'user-agent': 'relais', ...req.headers };
      if (sameHost && authorization !== undefined) headers.authorization = authorization;
      const res = await this.exchange(url, req, headers, sameHost);
      if (res.statusCode === 401 || res.statusCode === 403) {
        discard(res.body);
        const challenge = header(res.headers, 'www-authenticate');
        if (res.statusCode === 401 && sameHost && !answeredChallenge && tokens !== undefined) {
          answeredChallenge = true;
          const challenges = parseChallenges(res.headers['www-authenticate']);
          const basicOnly = !challenges.some((c) => c.scheme === 'bearer') && challenges.some((c) => c.scheme === 'basic');
          authorization = basicOnly ? (cred?.kind === 'basic' ? basicAuthorization(cred) : undefined) : await tokens.answer(challenges, req.repo, req.signal);
          if (authorization !== undefined) {
            hop--;
            continue;
          }
        }
        // Credentials the token service took (a token was issued) that the registry still refuses: denied.
        if (res.statusCode === 403 || (cred?.kind === 'basic' && answeredChallenge)) throw errors.passthroughDenied(this.name, req.repo);
        throw errors.passthroughChallenge(this.name, req.repo, challenge);
      }
      if ([301, 302, 303, 307, 308].includes(res.statusCode)) {
        const location = header(res.headers, 'location');
        discard(res.body);
        if (location === undefined) throw errors.upstreamRedirectNoLocation(this.name);
        const next = new URL(location, url);
        this.checkTarget(next);
        url = next;
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    }
    throw errors.upstreamTooManyRedirects(this.name);
  }

  /**
   * One exchange passed through verbatim for the proxy door (pushes, token endpoints, other paths): the
   * client's method, path, headers and streamed body; no relais credential, no retry, no redirect followed,
   * nothing cached. The caller relays the answer as it is and must consume or destroy its body.
   */
  async forward(req: ForwardRequest): Promise<UpstreamResponse> {
    const started = performance.now();
    try {
      const res = await request(this.url(req.path), {
        method: req.method,
        headers: { ...req.headers, host: this.baseUrl.host },
        body: req.body ?? null,
        dispatcher: this.dispatcher,
        signal: req.signal,
      });
      this.observer.onExchange?.(this.name, req.method, res.statusCode, (performance.now() - started) / 1000);
      return { status: res.statusCode, headers: res.headers, body: res.body };
    } catch (e) {
      this.observer.onExchange?.(this.name, req.method, classifyFailure(e), (performance.now() - started) / 1000);
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

export interface ForwardRequest {
  readonly method: string;
  /** Path and query, as the client sent it (origin form). */
  readonly path: string;
  /** The client's headers, hop-by-hop ones removed. */
  readonly headers: Readonly<Record<string, string | string[]>>;
  readonly body?: Readable | undefined;
  readonly signal?: AbortSignal | undefined;
}

function statusError(upstream: string, status: number, retryAfterMs: number | undefined): RelaisError {
  const headers = retryAfterMs === undefined ? undefined : { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) };
  if (status === 429) return errors.upstreamRateLimited.with(headers ? { headers } : {}, upstream);
  return upstreamAnswered(upstream, status, headers);
}

function deniedError(upstream: string, repo: string, hasCredentials: boolean): RelaisError {
  // Registries answer 401 both for private and for missing repositories (Docker Hub does): to the client
  // this is "not found", with a hint for the operator.
  return errors.upstreamRepoNotFound(upstream, repo, hasCredentials);
}

export { classifyFailure };
