// Cleanup's client for any OCI distribution registry: Bearer token and Basic auth (answering the
// registry's challenge with the upstream TokenService), tags/list pagination with Link, retries with
// backoff on 429/5xx (honouring Retry-After), and a bound on requests in flight.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { errors, isRelaisError, type RelaisError } from '../errors.js';
import { parseRetryAfter } from '../policy/circuit-breaker.js';
import { TokenService, type Credentials } from '../upstream/auth.js';
import { parseChallenges } from '../upstream/challenge.js';
import { ACCEPT_ALL_MANIFESTS, ACCEPT_REFERRERS } from '../upstream/media-types.js';
import type { DeleteOutcome, Descriptor, FetchedManifest, ManifestRef, RegistryBackend } from './backend.js';
import { Limiter } from './limit.js';

export interface OciRegistryOptions {
  readonly url: string;
  readonly credentials?: Credentials | undefined;
  /** Requests in flight at most (default 8). */
  readonly concurrency?: number;
  /** Retries of 429/5xx/network errors (default 4), with exponential backoff from retryBaseMs (default 250). */
  readonly retries?: number;
  readonly retryBaseMs?: number;
  readonly timeoutMs?: number;
  readonly userAgent?: string;
  /** Tags asked for per tags/list page (the registry may send fewer and a Link to the next page). */
  readonly tagsPageSize?: number;
}

interface Response {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

type ScopeClass = 'pull' | 'push' | 'delete';

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
const MAX_REDIRECTS = 5;

function h(headers: Response['headers'], name: string): string | undefined {
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

function errorMessage(body: Buffer): string {
  try {
    const j = JSON.parse(body.toString('utf8')) as { errors?: { code?: string; message?: string }[] };
    const e = j.errors?.[0];
    if (e) return [e.code, e.message].filter((x) => x !== undefined && x !== '').join(': ');
  } catch {
    /* not JSON */
  }
  return body.toString('utf8').slice(0, 200).trim();
}

export class OciRegistry implements RegistryBackend {
  readonly description: string;
  readonly canReadManifests = true;
  private readonly base: URL;
  private readonly dispatcher: Agent;
  private readonly tokens: TokenService;
  private readonly limiter: Limiter;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly userAgent: string;
  private readonly tagsPageSize: number;
  private readonly credentials: Credentials | undefined;
  private readonly auth = new Map<string, string>();
  private basic: string | undefined;
  private referrersSupported: boolean | undefined;
  /** Counts of what was sent, for reports and tests. */
  readonly stats = { requests: 0, retries: 0, tokenFetches: 0 };

  constructor(opts: OciRegistryOptions) {
    this.base = new URL(opts.url.replace(/\/+$/, ''));
    this.description = `registry ${this.base.origin}${this.base.pathname === '/' ? '' : this.base.pathname}`;
    const timeout = opts.timeoutMs ?? 30_000;
    this.dispatcher = new Agent({ connect: { timeout }, headersTimeout: timeout, bodyTimeout: timeout, connections: 32 });
    this.credentials = opts.credentials;
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
    this.userAgent = opts.userAgent ?? 'relais-cleanup';
    this.tagsPageSize = opts.tagsPageSize ?? 1000;
  }

  private url(path: string): URL {
    return new URL(this.base.pathname.replace(/\/$/, '') + path, this.base);
  }

  private async send(method: string, repo: string, target: URL, headers: Record<string, string> = {}, body?: Buffer): Promise<Response> {
    return this.limiter.run(() => this.sendNow(method, repo, target, headers, body));
  }

  private async sendNow(method: string, repo: string, target: URL, headers: Record<string, string>, body?: Buffer): Promise<Response> {
    const cls: ScopeClass = method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'push';
    const key = `${repo}|${cls}`;
    let answeredChallenge = false;
    for (let attempt = 0; ; attempt++) {
      const hdrs: Record<string, string> = { 'user-agent': this.userAgent, ...headers };
      const authz = this.auth.get(key) ?? this.basic;
      if (authz !== undefined && target.origin === this.base.origin) hdrs.authorization = authz;
      let res: Response;
      try {
        this.stats.requests++;
        const r = await request(target, { method: method, headers: hdrs, body: body ?? null, dispatcher: this.dispatcher });
        const buf = method === 'HEAD' ? Buffer.alloc(0) : Buffer.from(await r.body.arrayBuffer());
        if (method === 'HEAD') await r.body.dump();
        res = { status: r.statusCode, headers: r.headers, body: buf };
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        if (TRANSIENT_CODES.has(code) && attempt < this.retries) {
          this.stats.retries++;
          await sleep(this.backoff(attempt, undefined));
          continue;
        }
        throw errors.registryUnreachable.with({ cause: e }, this.description, `${method} ${target.pathname}`, code || (e as Error).message);
      }
      if (res.status === 401 && !answeredChallenge) {
        answeredChallenge = true;
        const challenges = parseChallenges(res.headers['www-authenticate']);
        let answer: string | undefined;
        try {
          this.stats.tokenFetches++;
          answer = await this.tokens.answer(challenges, repo);
        } catch (e) {
          if (isRelaisError(e) && e.code === 'UNAUTHORIZED')
            throw errors.registryTokenRefused(this.description, this.credentials !== undefined, repo);
          throw e;
        }
        if (answer !== undefined) {
          if (answer.startsWith('Basic ')) this.basic = answer;
          else this.auth.set(key, answer);
          attempt--;
          continue;
        }
      }
      if (RETRY_STATUS.has(res.status) && attempt < this.retries) {
        this.stats.retries++;
        await sleep(this.backoff(attempt, h(res.headers, 'retry-after')));
        continue;
      }
      return res;
    }
  }

  private backoff(attempt: number, retryAfter: string | undefined): number {
    const ra = parseRetryAfter(retryAfter);
    if (ra !== undefined) return Math.min(ra, 60_000);
    const base = this.retryBaseMs * 2 ** attempt;
    return base + Math.floor(Math.random() * base * 0.3);
  }

  private fail(res: Response, what: string, repo: string): RelaisError {
    const detail = errorMessage(res.body);
    const msg = `${this.description}: ${what} answered ${res.status}${detail === '' ? '' : ` (${detail})`}`;
    if (res.status === 401)
      return errors.registryUnauthorized(msg, this.credentials !== undefined);
    if (res.status === 403) return errors.registryDenied(msg, repo);
    if (res.status === 404 && /NAME_UNKNOWN/.test(detail)) return errors.registryRepoUnknown(msg, repo);
    return (res.status === 429 || res.status >= 500 ? errors.registryUnavailable : errors.registryFailed)(msg);
  }

  async listTags(repo: string): Promise<string[]> {
    const tags: string[] = [];
    let next: URL | undefined = this.url(`/v2/${repo}/tags/list?n=${this.tagsPageSize}`);
    for (let page = 0; next !== undefined; page++) {
      if (page > 100_000) throw errors.registryPaginationEndless(this.description);
      const res = await this.send('GET', repo, next, { accept: 'application/json' });
      if (res.status !== 200) throw this.fail(res, `GET tags of ${repo}`, repo);
      const j = JSON.parse(res.body.toString('utf8')) as { tags?: string[] | null };
      for (const t of j.tags ?? []) tags.push(t);
      next = nextLink(h(res.headers, 'link'), next);
    }
    return [...new Set(tags)];
  }

  async headManifest(repo: string, ref: string): Promise<ManifestRef | null> {
    const res = await this.send('HEAD', repo, this.url(`/v2/${repo}/manifests/${ref}`), { accept: ACCEPT_ALL_MANIFESTS });
    if (res.status === 404) return null;
    if (res.status !== 200) throw this.fail(res, `HEAD ${repo}:${ref}`, repo);
    const digest = h(res.headers, 'docker-content-digest');
    const mediaType = (h(res.headers, 'content-type') ?? '').split(';')[0]?.trim() ?? '';
    if (digest === undefined || digest === '') {
      // Some registries leave the digest out of HEAD answers: compute it from the body.
      const m = await this.getManifest(repo, ref);
      return m === null ? null : { digest: m.digest, mediaType: m.mediaType, size: m.size };
    }
    return { digest, mediaType, size: Number(h(res.headers, 'content-length') ?? 0) };
  }

  async getManifest(repo: string, ref: string): Promise<FetchedManifest | null> {
    const res = await this.send('GET', repo, this.url(`/v2/${repo}/manifests/${ref}`), { accept: ACCEPT_ALL_MANIFESTS });
    if (res.status === 404) return null;
    if (res.status !== 200) throw this.fail(res, `GET manifest ${repo}:${ref}`, repo);
    const computed = sha256(res.body);
    if (ref.startsWith('sha256:') && computed !== ref)
      throw errors.registryManifestDigestMismatch(this.description, `${repo}@${ref}`, computed);
    const mediaType = (h(res.headers, 'content-type') ?? '').split(';')[0]?.trim() ?? '';
    const declared = h(res.headers, 'docker-content-digest');
    return { digest: ref.includes(':') ? ref : (declared ?? computed), mediaType, size: res.body.length, body: res.body };
  }

  async getBlob(repo: string, digest: string, maxBytes: number): Promise<Buffer | null> {
    let target = this.url(`/v2/${repo}/blobs/${digest}`);
    for (let i = 0; i <= MAX_REDIRECTS; i++) {
      const res = await this.send('GET', repo, target);
      if (res.status >= 300 && res.status < 400) {
        const loc = h(res.headers, 'location');
        if (loc === undefined) break;
        target = new URL(loc, target);
        continue;
      }
      if (res.status === 404) return null;
      if (res.status !== 200) throw this.fail(res, `GET blob ${repo}@${digest}`, repo);
      if (res.body.length > maxBytes) return null;
      if (sha256(res.body) !== digest && digest.startsWith('sha256:'))
        throw errors.registryBlobDigestMismatch(this.description, `${repo}@${digest}`);
      return res.body;
    }
    throw errors.registryTooManyRedirects(this.description, digest);
  }

  async referrers(repo: string, digest: string): Promise<Descriptor[] | null> {
    if (this.referrersSupported === false) return null;
    const res = await this.send('GET', repo, this.url(`/v2/${repo}/referrers/${digest}`), { accept: ACCEPT_REFERRERS });
    // A registry that supports the API never answers 404 (the spec says so): 404/405/400 mean "not supported".
    if (res.status !== 200) {
      if (res.status === 404 || res.status === 405 || res.status === 400 || res.status === 501) {
        this.referrersSupported = false;
        return null;
      }
      throw this.fail(res, `GET referrers of ${repo}@${digest}`, repo);
    }
    this.referrersSupported = true;
    const j = JSON.parse(res.body.toString('utf8')) as { manifests?: Descriptor[] };
    return j.manifests ?? [];
  }

  async deleteManifest(repo: string, ref: string): Promise<DeleteOutcome> {
    const res = await this.send('DELETE', repo, this.url(`/v2/${repo}/manifests/${ref}`));
    if (res.status === 202 || res.status === 200 || res.status === 204) return 'deleted';
    const detail = errorMessage(res.body);
    if (res.status === 404 && /MANIFEST_UNKNOWN|NAME_UNKNOWN|^$/.test(detail)) return 'not-found';
    // distribution 2.x answers a tag DELETE with 400 DIGEST_INVALID / 404, and 405 UNSUPPORTED when deletes are off.
    if (res.status === 405 || res.status === 501 || (res.status === 400 && !ref.includes(':')) || (res.status === 404 && !ref.includes(':'))) return 'unsupported';
    throw this.fail(res, `DELETE ${repo}:${ref}`, repo);
  }

  async putManifest(repo: string, ref: string, mediaType: string, body: Buffer): Promise<string> {
    const res = await this.send('PUT', repo, this.url(`/v2/${repo}/manifests/${ref}`), { 'content-type': mediaType }, body);
    if (res.status !== 201 && res.status !== 200) throw this.fail(res, `PUT manifest ${repo}:${ref}`, repo);
    return h(res.headers, 'docker-content-digest') ?? sha256(body);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

