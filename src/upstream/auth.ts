// Upstream authentication: the registry Bearer token flow (Docker Hub, ghcr.io, quay.io, distribution's
// auth.token) and Basic auth. Tokens are cached per scope until they expire. Credentials and tokens never
// appear in logs or errors.
import { request, type Dispatcher } from 'undici';
import { errors, type RelaisError } from '../errors.js';
import type { Challenge } from './challenge.js';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

interface CachedToken {
  readonly token: string;
  readonly expiresAt: number;
}

export interface TokenServiceOptions {
  readonly upstream: string;
  readonly credentials: Credentials | undefined;
  readonly dispatcher: Dispatcher;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
  /** Checks a URL before relais connects to it (the realm is chosen by the upstream). */
  readonly checkUrl: (url: URL) => void;
  readonly now?: () => number;
  /** The error when the token service refuses the credentials (default: tokenRefused, a 502 about relais's own). */
  readonly refused?: (scope: string) => RelaisError;
}

/** Tokens live at least this long when the issuer does not say (the spec's default is 60 s). */
const DEFAULT_TOKEN_LIFETIME_S = 60;
/** Renew a token this long before it expires. */
const EXPIRY_MARGIN_MS = 10_000;

export function basicAuthorization(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

export class TokenService {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  /** The last Bearer challenge seen: lets relais fetch a token before the first request of a new repository. */
  private bearer: { realm: string; service: string | undefined } | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: TokenServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** The scope relais asks for when pulling from a repository. */
  static pullScope(repo: string): string {
    return `repository:${repo}:pull`;
  }

  /** An Authorization header for the repository if one is known or can be obtained without a challenge. */
  async authorizationFor(repo: string, signal?: AbortSignal): Promise<string | undefined> {
    if (this.bearer === undefined) return undefined;
    const scope = TokenService.pullScope(repo);
    const cached = this.tokens.get(scope);
    if (cached && cached.expiresAt > this.now()) return `Bearer ${cached.token}`;
    const t = await this.fetchToken(this.bearer.realm, this.bearer.service, scope, signal);
    return `Bearer ${t.token}`;
  }

  /** Answers a 401 challenge: returns the Authorization header to retry with, or undefined when none can help. */
  async answer(challenges: readonly Challenge[], repo: string, signal?: AbortSignal): Promise<string | undefined> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer) {
      const realm = bearer.params.realm;
      if (realm === undefined || realm === '') return undefined;
      const service = bearer.params.service;
      this.bearer = { realm, service };
      const scope = bearer.params.scope ?? TokenService.pullScope(repo);
      // A token for this scope that the upstream just refused is no good: drop it.
      this.tokens.delete(scope);
      const t = await this.fetchToken(realm, service, scope, signal);
      return `Bearer ${t.token}`;
    }
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (basic && this.opts.credentials) return basicAuthorization(this.opts.credentials);
    return undefined;
  }

  private fetchToken(realm: string, service: string | undefined, scope: string, signal?: AbortSignal): Promise<CachedToken> {
    const key = scope;
    const inflight = this.pending.get(key);
    if (inflight) return inflight;
    const p = this.requestToken(realm, service, scope, signal).finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private async requestToken(realm: string, service: string | undefined, scope: string, signal?: AbortSignal): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw tokenError(this.opts.upstream, 'the upstream sent an invalid token realm');
    }
    this.opts.checkUrl(url);
    if (service !== undefined) url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.credentials) headers.authorization = basicAuthorization(this.opts.credentials);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'GET',
        headers,
        dispatcher: this.opts.dispatcher,
        headersTimeout: this.opts.headersTimeout,
        bodyTimeout: this.opts.bodyTimeout,
        signal,
      });
    } catch (e) {
      throw tokenError(this.opts.upstream, `token service ${url.host} unreachable (${(e as { code?: string }).code ?? 'error'})`, 'unavailable', e);
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw this.opts.refused?.(scope) ?? errors.tokenRefused(this.opts.upstream, this.opts.credentials !== undefined, scope);
    }
    if (res.statusCode !== 200) throw tokenError(this.opts.upstream, `token service answered ${res.statusCode}`, res.statusCode >= 500 ? 'unavailable' : 'failed');
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw tokenError(this.opts.upstream, 'token service sent invalid JSON');
    }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (token === undefined || token === '') throw tokenError(this.opts.upstream, 'token service sent no token');
    const lifetimeS = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    const cached: CachedToken = { token, expiresAt: this.now() + Math.max(lifetimeS * 1000 - EXPIRY_MARGIN_MS, 1000) };
    this.tokens.set(scope, cached);
    return cached;
  }
}

/** The token service is down or failing (503, the client may retry), or answered something unusable (502). */
function tokenError(upstream: string, message: string, kind: 'unavailable' | 'failed' = 'failed', cause?: unknown): RelaisError {
  return (kind === 'unavailable' ? errors.tokenServiceUnavailable : errors.tokenServiceFailed).with({ cause }, upstream, message);
}
