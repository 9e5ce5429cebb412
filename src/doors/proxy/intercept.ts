// Requests on an intercepted proxy connection (docs/proxy.md). The registry's read API (GET/HEAD of a
// manifest, GET of a blob, tags, referrers) is left to the registry handler: the same cache, single-flight
// and verification as the HTTP door. Everything else (pushes, blob HEADs, token endpoints on the same host,
// the /v2/ ping, other paths) is forwarded verbatim and streamed to the upstream's configured URL with the
// client's own headers, and the answer relayed as it is (401 challenges included); no client credential kept.
// Pushes the upstream accepted are kept in the cache by src/doors/proxy/push.ts, which only watches the exchange. Token services named in those challenges become reachable through the door (LearnedHosts).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { errors } from '../../errors.js';
import { isPrivateHost } from '../../upstream/address.js';
import { parseChallenges } from '../../upstream/challenge.js';
import type { ForwardRequest, UpstreamResponse } from '../../upstream/client.js';
import type { ProxyBinding } from './door.js';
import type { PushObservation } from './push.js';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

/** A path and method the cache answers: the registry's read API. Blob HEADs are forwarded (a push's existence check). */
export function isCachedRead(method: string, path: string): boolean {
  if (method !== 'GET' && method !== 'HEAD') return false;
  if (!path.startsWith('/v2/') || path.includes('/blobs/uploads')) return false;
  if (/\/(manifests\/[^/]+|tags\/list|referrers\/[^/]+)$/.test(path)) return true;
  return method === 'GET' && /\/blobs\/[^/]+$/.test(path);
}

/** Token-service hosts (host:port) that upstreams' own Bearer challenges named; bounded, in memory. */
export class LearnedHosts {
  private readonly hosts = new Map<string, string>();
  constructor(private readonly max = 256) {}

  has(target: string): boolean {
    return this.hosts.has(target);
  }

  /**
   * Learns the realm hosts of a WWW-Authenticate answer of `upstream`. A realm on a private address is
   * learned only when it is the upstream's own host or the upstream allows private redirects.
   */
  learn(header: string | string[] | undefined, upstream: { readonly name: string; readonly baseUrl: URL; readonly allowPrivate: boolean }): void {
    for (const c of parseChallenges(header)) {
      const realm = c.params.realm;
      if (c.scheme !== 'bearer' || realm === undefined) continue;
      let u: URL;
      try {
        u = new URL(realm);
      } catch {
        continue;
      }
      if (u.protocol !== 'https:' && u.protocol !== 'http:') continue;
      if (isPrivateHost(u.hostname) && u.hostname !== upstream.baseUrl.hostname && !upstream.allowPrivate) continue;
      const port = u.port === '' ? (u.protocol === 'https:' ? '443' : '80') : u.port;
      const key = `${u.hostname.toLowerCase()}:${port}`;
      if (this.hosts.has(key)) continue;
      if (this.hosts.size >= this.max) {
        const oldest = this.hosts.keys().next().value;
        if (oldest !== undefined) this.hosts.delete(oldest);
      }
      this.hosts.set(key, upstream.name);
    }
  }
}

export interface InterceptDeps {
  /** The binding of the request's connection, when it came through the proxy door. */
  readonly binding: (req: IncomingMessage) => ProxyBinding | undefined;
  /** The upstream's base URL and private-address rule. */
  readonly upstream: (name: string) => { readonly name: string; readonly baseUrl: URL; readonly allowPrivate: boolean };
  readonly forward: (upstream: string, req: ForwardRequest) => Promise<UpstreamResponse>;
  readonly learned: LearnedHosts;
  /** Watches push requests to keep what the upstream accepted (src/doors/proxy/push.ts); never changes them. */
  readonly push?: ((upstream: string, method: string, url: string, headers: IncomingMessage['headers']) => PushObservation | undefined) | undefined;
}

/** The handler for requests of intercepted connections that the cache does not answer; false for the others. */
export function createInterceptHandler(deps: InterceptDeps) {
  return async (req: IncomingMessage, res: ServerResponse, ctx: { upstream?: string | undefined }): Promise<boolean> => {
    const binding = deps.binding(req);
    if (binding === undefined) return false;
    ctx.upstream = binding.upstream;
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    // Only origin-form targets: an absolute URL (GET http://other/...) would name another host.
    if (!url.startsWith('/')) throw errors.proxyRefused(`${method} ${url}`, `only paths of ${binding.target} are served on this connection`);
    if (isCachedRead(method, path)) return false;
    const up = deps.upstream(binding.upstream);
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    const hasBody = method !== 'GET' && method !== 'HEAD' && (req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined);
    const abort = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const pushed = deps.push?.(binding.upstream, method, url, req.headers);
    const body = hasBody ? req : undefined;
    let answer: UpstreamResponse;
    try {
      answer = await deps.forward(binding.upstream, { method, path: url, headers, body: pushed ? pushed.tee(body) : body, signal: abort.signal });
    } catch (e) {
      pushed?.answered(undefined);
      // The ping decides nothing a cached pull needs: with the upstream down, cached images stay pullable.
      if ((path === '/v2/' || path === '/v2') && (method === 'GET' || method === 'HEAD')) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2, 'docker-distribution-api-version': 'registry/2.0' });
        res.end(method === 'HEAD' ? undefined : '{}');
        return true;
      }
      throw errors.forwardFailed(binding.upstream, e);
    }
    pushed?.answered(answer);
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(answer.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
    if (answer.status === 401) deps.learned.learn(answer.headers['www-authenticate'], up);
    // Keep the client on the host it asked for: the upstream names itself by its configured URL.
    const location = out.location;
    if (typeof location === 'string' && location.startsWith(up.baseUrl.origin + '/')) {
      const host = binding.target.endsWith(':443') ? binding.target.slice(0, -4) : binding.target;
      out.location = `https://${host}${location.slice(up.baseUrl.origin.length)}`;
    }
    res.writeHead(answer.status, out);
    if (method === 'HEAD' || answer.status === 204 || answer.status === 304) {
      answer.body.dump().catch(() => undefined);
      res.end();
      return true;
    }
    await pipeline(answer.body, res);
    return true;
  };
}
