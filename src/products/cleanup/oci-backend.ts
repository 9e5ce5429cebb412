// Cleanup's backend for any OCI distribution registry: the registry API's tags, manifests, blobs,
// referrers and deletes over the one registry client (src/upstream/registry-client.ts), which answers the
// registry's challenge (Bearer token or Basic), retries 429/5xx with backoff (honouring Retry-After),
// follows Link pages and bounds the requests in flight.
import { errors, type RelaisError } from '../../errors.js';
import { ACCEPT_ALL_MANIFESTS, ACCEPT_REFERRERS } from '../../upstream/media-types.js';
import {
  firstHeader as h,
  mediaTypeOf,
  nextLink,
  RegistryClient,
  registryErrorMessage as errorMessage,
  sha256,
  type Credentials,
  type RegistryReply,
} from '../../upstream/registry-client.js';
import type { DeleteOutcome, Descriptor, FetchedManifest, ManifestRef, RegistryBackend } from '../../retention/registry-backend.js';

export { nextLink, sha256 };

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

export class OciRegistry implements RegistryBackend {
  readonly description: string;
  readonly canReadManifests = true;
  private readonly client: RegistryClient;
  private readonly tagsPageSize: number;
  private referrersSupported: boolean | undefined;

  constructor(opts: OciRegistryOptions) {
    this.client = new RegistryClient({
      url: opts.url,
      credentials: opts.credentials,
      ...(opts.concurrency === undefined ? {} : { concurrency: opts.concurrency }),
      ...(opts.retries === undefined ? {} : { retries: opts.retries }),
      ...(opts.retryBaseMs === undefined ? {} : { retryBaseMs: opts.retryBaseMs }),
      ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      userAgent: opts.userAgent ?? 'relais-cleanup',
    });
    this.description = this.client.description;
    this.tagsPageSize = opts.tagsPageSize ?? 1000;
  }

  /** Counts of what was sent, for reports and tests. */
  get stats(): { readonly requests: number; readonly retries: number; readonly tokenFetches: number } {
    return this.client.stats;
  }

  private url(path: string): URL {
    return this.client.url(path);
  }

  private send(method: string, repo: string, target: URL, headers: Record<string, string> = {}, body?: Buffer): Promise<RegistryReply> {
    return this.client.send(method, repo, target, { headers, body });
  }

  private fail(res: RegistryReply, what: string, repo: string): RelaisError {
    return this.client.fail(res, what, repo);
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
    const mediaType = mediaTypeOf(res.headers);
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
    const mediaType = mediaTypeOf(res.headers);
    const declared = h(res.headers, 'docker-content-digest');
    return { digest: ref.includes(':') ? ref : (declared ?? computed), mediaType, size: res.body.length, body: res.body };
  }

  async getBlob(repo: string, digest: string, maxBytes: number): Promise<Buffer | null> {
    // Registries send blobs to their storage's URL: the client follows (Authorization stays with the registry).
    const res = await this.client.send('GET', repo, this.url(`/v2/${repo}/blobs/${digest}`), { followRedirects: true });
    if (res.status === 404) return null;
    if (res.status !== 200) throw this.fail(res, `GET blob ${repo}@${digest}`, repo);
    if (res.body.length > maxBytes) return null;
    if (sha256(res.body) !== digest && digest.startsWith('sha256:')) throw errors.registryBlobDigestMismatch(this.description, `${repo}@${digest}`);
    return res.body;
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
    await this.client.close();
  }
}

