// The server's facade over THE registry client (registry-client.ts): one UpstreamClient per configured
// upstream. It only chooses the RegistryClient's policies from the upstream's config (circuit breaker,
// private-address checks, metrics observer, retries honouring Retry-After up to maxRetryAfter, no limiter),
// picks the credential (the upstream's TokenService, or a passthrough client's own), and maps answers the
// cache does not take to the error table: 401/403 -> upstreamRepoNotFound or passthroughChallenge/Denied,
// 429/5xx after retries -> 502/503 (with Retry-After), network failures -> 502/503/504. The exchange itself
// (auth challenge, redirects, retries) is RegistryClient's. It knows the registry API paths, nothing of caching.
import type { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { errors, type RelaisError, upstreamAnswered } from '../errors.js';
import { CircuitBreaker, parseRetryAfter } from '../policy/circuit-breaker.js';
import type { UpstreamConfig } from '../config/schema.js';
import { isPrivateHost, refusePrivateLookup } from './address.js';
import { basicAuthorization, TokenService } from './auth.js';
import { credentialMaterial, type ClientCredential } from './credential.js';
import { discard, header, isRedirect, RegistryClient, type CredentialSource, type ExchangeObserver, type ResponseBody } from './registry-client.js';
import { classifyFailure, isAbort, toUpstreamError } from './upstream-errors.js';

export { discard, header };
export type UpstreamBody = ResponseBody;
/** What the client reports about each upstream exchange (for metrics and logs). */
export type UpstreamObserver = ExchangeObserver;

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

export class UpstreamClient {
  readonly name: string;
  readonly baseUrl: URL;
  readonly breaker: CircuitBreaker;
  private readonly client: RegistryClient;
  private readonly tokens: TokenService;
  private readonly configured: CredentialSource;
  private readonly cfg: UpstreamConfig;
  /** Passthrough upstreams: a token cache per client credential (keyed by its hash), oldest first. */
  private readonly clientTokens = new Map<string, TokenService>();
  private readonly clock: { readonly now?: () => number };

  /**
   * `now`: the clock of the circuit breaker and the token cache (tests advance one instead of sleeping);
   * `sleep`: the wait between attempts (tests record it instead of waiting).
   */
  constructor(
    name: string,
    cfg: UpstreamConfig,
    observer: UpstreamObserver = {},
    clock: { readonly now?: () => number; readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void> } = {},
  ) {
    this.name = name;
    this.cfg = cfg;
    this.clock = clock;
    this.baseUrl = new URL(cfg.url.replace(/\/+$/, ''));
    this.breaker = new CircuitBreaker({ failures: cfg.circuitBreaker.failures, cooldownMs: cfg.circuitBreaker.cooldown, ...(clock.now ? { now: clock.now } : {}) });
    this.client = new RegistryClient({
      url: cfg.url,
      userAgent: 'relais',
      description: name,
      connection: { connectTimeoutMs: cfg.timeouts.connect, headersTimeoutMs: cfg.timeouts.headers, bodyTimeoutMs: cfg.timeouts.idle, keepAliveTimeoutMs: 30_000, connections: 64 },
      concurrency: 0,
      breaker: this.breaker,
      // Names that resolve to private addresses (DNS rebinding, CDN redirects gone wrong) are refused
      // unless they are the upstream's own host or allowPrivateRedirects is set. IP literals: checkTarget().
      targetCheck: { check: (u) => this.checkTarget(u), ...(cfg.allowPrivateRedirects ? {} : { lookup: refusePrivateLookup(this.baseUrl.hostname) }) },
      observer,
      retry: {
        attempts: cfg.retries.attempts,
        backoffMs: cfg.retries.backoff,
        jitter: 0,
        status: (s) => s === 429 || (s >= 500 && s !== 501),
        failures: new Set(['timeout', 'refused', 'reset', 'dns']),
        maxRetryAfterMs: cfg.retries.maxRetryAfter,
        // A longer pause than relais will hold a client: the breaker backs off for it instead.
        beyondMaxRetryAfter: 'give-up',
      },
      failure: (e, req) => (isAbort(e) && req.signal?.aborted === true ? e : toUpstreamError(name, e)),
      tooManyRedirects: () => errors.upstreamTooManyRedirects(name),
      ...(clock.sleep ? { sleep: clock.sleep } : {}),
      ...(clock.now ? { now: clock.now } : {}),
    });
    this.tokens = this.tokenService(cfg.username !== undefined && cfg.password !== undefined ? { username: cfg.username, password: cfg.password } : undefined);
    this.configured = {
      authorization: (scope, signal) => this.tokens.authorizationFor(scope.repo, signal),
      answer: (challenges, scope, signal) => this.tokens.answer(challenges, scope.repo, signal),
    };
  }

  /** The upstream URL for a path (never carries credentials). */
  url(path: string): URL {
    return this.client.url(path);
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

  /** Whether this upstream uses each client's own credentials (access: passthrough). */
  get passthrough(): boolean {
    return this.cfg.access === 'passthrough';
  }

  /**
   * Sends a request with auth, redirects and retries. Returns any response the caller must interpret
   * (2xx, 3xx not followed, 404...). Throws RelaisError for failures: unreachable, timeouts, 5xx and 429
   * after retries, refused credentials, an open circuit. The caller must consume or destroy the body.
   */
  async send(req: UpstreamRequest): Promise<UpstreamResponse> {
    const cred = req.credential;
    const credential = this.passthrough ? this.clientCredential(cred) : this.configured;
    const res = await this.client.request({ method: req.method, repo: req.repo, target: this.url(req.path), headers: req.headers ?? {}, signal: req.signal, credential, followRedirects: true });
    const { status } = res;
    if (status === 401 || status === 403) {
      discard(res.body);
      if (!this.passthrough) {
        // Registries answer 401 both for private and for missing repositories (Docker Hub does): to the
        // client this is "not found", with a hint for the operator.
        throw errors.upstreamRepoNotFound(this.name, req.repo, this.cfg.username !== undefined);
      }
      // The upstream's refusal is the client's: 403, or Basic credentials its token service took (a token
      // was issued) that the registry still refuses, is denied; else the client is challenged again (401)
      // with the upstream's own challenge (no credential, a token it refused, credentials refused).
      if (status === 403 || (cred?.kind === 'basic' && res.challenged)) throw errors.passthroughDenied(this.name, req.repo);
      throw errors.passthroughChallenge(this.name, req.repo, header(res.headers, 'www-authenticate'));
    }
    if (isRedirect(status)) {
      discard(res.body);
      throw errors.upstreamRedirectNoLocation(this.name);
    }
    if (status === 429 || status >= 500) {
      const retryAfter = parseRetryAfter(header(res.headers, 'retry-after'));
      discard(res.body);
      throw statusError(this.name, status, retryAfter);
    }
    return res;
  }

  /** A token service of this upstream, on its connection pool, its realms checked like its redirects. */
  private tokenService(credentials: { username: string; password: string } | undefined, refused?: (scope: string) => RelaisError): TokenService {
    return new TokenService({
      upstream: this.name,
      credentials,
      dispatcher: this.client.dispatcher,
      headersTimeout: this.cfg.timeouts.headers,
      bodyTimeout: this.cfg.timeouts.idle,
      checkUrl: (u) => this.checkTarget(u),
      ...(refused ? { refused } : {}),
      ...(this.clock.now ? { now: this.clock.now } : {}),
    });
  }

  /**
   * A passthrough client's credential source: a Bearer token the client sent is used as it is; Basic
   * credentials go through the upstream's token flow (or as Basic, if that is its challenge); no credential
   * is an anonymous request, which may still get an anonymous token.
   */
  private clientCredential(cred: ClientCredential | undefined): CredentialSource {
    if (cred?.kind === 'bearer') return { authorization: () => `Bearer ${cred.token}` };
    const tokens = this.clientTokenService(cred);
    return {
      authorization: (scope, signal) => tokens.authorizationFor(scope.repo, signal),
      answer: (challenges, scope, signal) => {
        const basicOnly = !challenges.some((c) => c.scheme === 'bearer') && challenges.some((c) => c.scheme === 'basic');
        if (basicOnly) return Promise.resolve(cred?.kind === 'basic' ? basicAuthorization(cred) : undefined);
        return tokens.answer(challenges, scope.repo, signal);
      },
    };
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
    const service = this.tokenService(
      credential?.kind === 'basic' ? { username: credential.username, password: credential.password } : undefined,
      // The client's credentials refused by the token service: the client is challenged again (401).
      (scope) => errors.passthroughChallenge(this.name, scope.replace(/^repository:|:pull$/g, '')),
    );
    this.clientTokens.set(key, service);
    if (this.clientTokens.size > MAX_CLIENT_TOKEN_SERVICES) {
      const oldest = this.clientTokens.keys().next();
      if (oldest.done !== true) this.clientTokens.delete(oldest.value);
    }
    return service;
  }

  /**
   * One exchange passed through verbatim for the proxy door (pushes, token endpoints, other paths): the
   * client's method, path, headers and streamed body; no relais credential, no retry, no redirect followed,
   * nothing cached. The caller relays the answer as it is and must consume or destroy its body.
   */
  forward(req: ForwardRequest): Promise<UpstreamResponse> {
    return this.client.forward(req.method, this.url(req.path), { ...req.headers, host: this.baseUrl.host }, req.body, req.signal);
  }

  async close(): Promise<void> {
    await this.client.close();
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

export { classifyFailure };
