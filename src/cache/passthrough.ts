// The read gate of passthrough upstreams (upstreams.NAME.access: passthrough; docs/access.md). Before any
// cached byte of such an upstream goes to a client, the upstream must have confirmed, with that client's
// credential, that it may pull the repository: a HEAD of the very manifest or blob asked for, answered 200 by
// the registry itself (a token grant alone is no confirmation: token services hand out tokens with fewer
// rights than asked, and tokens may be opaque). The confirmation is remembered briefly in the
// ConfirmationCache (src/policy/confirmations.ts), keyed by a hash of (credential, upstream, repository).
// Shared upstreams pass without any of this.
import { errors, RelaisError } from '../errors.js';
import type { ConfirmationCache } from '../policy/confirmations.js';
import { discard, type UpstreamClient } from '../upstream/client.js';
import { credentialMaterial } from '../upstream/credential.js';
import { ACCEPT_CACHED_MANIFESTS } from '../upstream/media-types.js';
import type { UpstreamRoute } from './routing.js';

/** What the client asks for: the upstream is asked about the same thing. */
export type ReadTarget =
  | { readonly kind: 'manifest'; readonly reference: string }
  | { readonly kind: 'blob'; readonly digest: string }
  /** Tags and referrers: the repository itself (a one-entry tag list). */
  | { readonly kind: 'repository' };

export interface PassthroughGateOptions {
  readonly upstreams: ReadonlyMap<string, UpstreamClient>;
  readonly confirmations: ConfirmationCache;
  /** Told about each decision (metrics): a confirmation from the cache, from the upstream, or a refusal. */
  readonly observe?: (upstream: string, outcome: 'cached' | 'confirmed' | 'refused') => void;
}

export class PassthroughGate {
  /** Probes in flight by confirmation key: the parallel layer requests of one pull ask the upstream once. */
  private readonly pending = new Map<string, Promise<void>>();

  constructor(private readonly opts: PassthroughGateOptions) {}

  /** Whether the upstream's reads are gated (access: passthrough). */
  applies(upstream: string): boolean {
    return this.opts.upstreams.get(upstream)?.passthrough === true;
  }

  /**
   * Resolves when the route's client may read the target; throws 401 (challenge), 403 (denied), 404 (the
   * upstream does not have it for this client) or 503 (the upstream could not be asked). Nothing is read
   * from the cache before it resolves.
   */
  async authorize(route: UpstreamRoute, target: ReadTarget): Promise<void> {
    if (!this.applies(route.upstream)) return;
    const { confirmations } = this.opts;
    const key = confirmations.key(credentialMaterial(route.credential), route.upstream, route.repo);
    if (confirmations.has(key)) {
      this.opts.observe?.(route.upstream, 'cached');
      return;
    }
    let p = this.pending.get(key);
    if (p === undefined) {
      p = this.probe(route, target).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    try {
      await p;
    } catch (e) {
      confirmations.forget(key);
      this.opts.observe?.(route.upstream, 'refused');
      throw e;
    }
    confirmations.confirm(key);
    this.opts.observe?.(route.upstream, 'confirmed');
  }

  /** One upstream request with the client's credential; shared by the requests that wait on it, so it runs without any one client's signal. */
  private async probe(route: UpstreamRoute, target: ReadTarget): Promise<void> {
    const client = this.opts.upstreams.get(route.upstream);
    if (!client) throw errors.internal(`upstream ${route.upstream} is not configured`);
    const base = `/v2/${route.repo}`;
    const req =
      target.kind === 'manifest'
        ? ({ method: 'HEAD', path: `${base}/manifests/${target.reference}`, headers: { accept: ACCEPT_CACHED_MANIFESTS } } as const)
        : target.kind === 'blob'
          ? ({ method: 'HEAD', path: `${base}/blobs/${target.digest}` } as const)
          : ({ method: 'GET', path: `${base}/tags/list?n=1`, headers: { accept: 'application/json' } } as const);
    let status: number;
    try {
      const res = await client.send({ ...req, repo: route.repo, credential: route.credential });
      discard(res.body);
      status = res.status;
    } catch (e) {
      // 401/403 are the client's answer; an upstream that cannot be asked confirms nothing.
      if (e instanceof RelaisError && e.status >= 500) throw errors.passthroughUnconfirmed(route.upstream, route.repo, e);
      throw e;
    }
    if (status === 200) return;
    if (status === 404) {
      if (target.kind === 'manifest') throw errors.manifestUnknown(route.repo, target.reference);
      if (target.kind === 'blob') throw errors.blobUnknown(route.repo, target.digest);
      throw errors.nameUnknown(route.repo, `not found at ${route.upstream}`, undefined);
    }
    throw errors.upstreamUnexpected(route.upstream, status, `when asked whether this client may pull ${route.repo}`);
  }
}
