// The registry API handlers: parse, call a service, stream. No caching logic lives here.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { errors, RelaisError } from '../../errors.js';
import type { BlobService } from '../../cache/blobs.js';
import type { ListingService } from '../../cache/listing.js';
import type { ManifestService } from '../../cache/manifests.js';
import type { PassthroughGate, ReadTarget } from '../../cache/passthrough.js';
import type { ReferrersService } from '../../cache/referrers.js';
import { validateDigest, validateReference } from '../../cache/reference.js';
import { resolveBoundRoute, resolveRoute, type RoutingTable, type UpstreamRoute } from '../../cache/routing.js';
import { contentRange, MAX_RANGE_HEADER, parseByteRange } from '../../storage/byte-range.js';
import type { ByteRange } from '../../storage/driver.js';
import { parseClientCredential } from '../../upstream/credential.js';
import { MT } from '../../upstream/media-types.js';
import { ANONYMOUS, type AccessControl } from './access.js';
import { HotManifests, prepare } from './hot-manifests.js';
import type { FastAnswer, RequestContext } from './context.js';
import { writeFileBody } from './file-writer.js';
import type { Sendfile } from './sendfile.js';
import { parseApiPath, type ApiRoute } from './route.js';

export type { RequestContext };

/** A request's URL as label() parsed it, for handle(): the API route (undefined: not /v2/) or why it is not one. */
interface Parsed {
  readonly api: ApiRoute | undefined;
  readonly error?: Error;
  readonly query: URLSearchParams | undefined;
}

export interface RegistryHandlerDeps {
  readonly routing: RoutingTable;
  readonly manifests: ManifestService;
  readonly blobs: BlobService;
  readonly listing: ListingService;
  readonly referrers: ReferrersService;
  readonly access: AccessControl;
  /** Zero-copy blob bodies (sendfile(2)); streamed when absent. */
  readonly sendfile?: Sendfile | undefined;
  /**
   * The upstream a request's connection is bound to (the proxy door: a connection to ghcr.io's host is
   * ghcr.io's, whatever the path says), or undefined for the HTTP door's routing by name and ?ns=.
   */
  readonly boundUpstream?: ((req: IncomingMessage) => string | undefined) | undefined;
  /**
   * The read gate of passthrough upstreams (docs/access.md): their cached content goes to a client only after
   * the upstream confirmed the client's own credential. Without it every upstream is shared.
   */
  readonly passthrough?: PassthroughGate | undefined;
  /** ms since the epoch for the prepared responses' freshness (default Date.now; the manifests' clock). */
  readonly now?: (() => number) | undefined;
}

const API_VERSION = 'registry/2.0';
/** The largest page of tags/list relais asks for. */
const MAX_TAGS_PAGE = 10_000;

function splitUrl(url: string): { path: string; query: URLSearchParams | undefined } {
  const q = url.indexOf('?');
  return q === -1 ? { path: url, query: undefined } : { path: url.slice(0, q), query: new URLSearchParams(url.slice(q + 1)) };
}

export interface RegistryHandler {
  /**
   * Parses the URL once, before the access guard runs, and labels the request (kind) for the metrics and the
   * request log, even one that fails before handle(); always returns false.
   */
  readonly label: (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => Promise<boolean>;
  /** Handles /v2/ requests; returns false for other paths. */
  readonly handle: (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => Promise<boolean>;
  /**
   * Answers a GET or HEAD of a manifest by tag that is fresh in memory from a prepared response, before any
   * routing or lookup (src/doors/http/hot-manifests.ts), and says what it sent; returns undefined (having done nothing)
   * for anything else.
   */
  readonly fast: (req: IncomingMessage, res: ServerResponse) => FastAnswer | undefined;
  /** The prepared responses (tests, status). */
  readonly hot: HotManifests;
  /**
   * Whether the request is for a passthrough upstream on the HTTP door (its Authorization header is then the
   * client's credential for that upstream, not one for relais's own auth:); false for anything else.
   */
  readonly passthroughRequest: (req: IncomingMessage, ctx: RequestContext) => boolean;
  /** Whether any upstream is passthrough (the /v2/ ping then challenges clients that sent no credentials). */
  readonly anyPassthrough: boolean;
}

export function createRegistryHandler(deps: RegistryHandlerDeps): RegistryHandler {
  const hot = new HotManifests();
  const now = deps.now ?? Date.now;
  deps.manifests.onForget((digests) => hot.forget(digests));
  const gate = deps.passthrough;
  const anyPassthrough = gate !== undefined && [...deps.routing.upstreams.keys()].some((u) => gate.applies(u));
  /** Whether an anonymous client may pull from this upstream (the only case the prepared responses serve). */
  const anonymousMayPull = (upstream: string): boolean => {
    // A passthrough upstream's manifest is never a prepared response: every request passes the gate.
    if (gate?.applies(upstream) === true) return false;
    if (!deps.access.enabled) return true;
    try {
      deps.access.checkPull(ANONYMOUS, upstream);
      return true;
    } catch {
      return false;
    }
  };
  /** Prepared responses are per URL, and per bound upstream on proxy connections (the same path on two hosts). */
  const hotKey = (req: IncomingMessage, url: string): string => {
    const bound = deps.boundUpstream?.(req);
    return bound === undefined ? url : `${bound} ${url}`;
  };
  /** Resolves the upstream and checks the client may pull from it. */
  const route = (req: IncomingMessage, ctx: RequestContext, name: string, query: URLSearchParams | undefined): UpstreamRoute => {
    const bound = deps.boundUpstream?.(req);
    const up = bound === undefined ? resolveRoute(deps.routing, name, query?.get('ns') ?? undefined) : resolveBoundRoute(deps.routing, bound, name);
    ctx.upstream = up.upstream;
    if (gate?.applies(up.upstream) === true) return withClientCredential(req, ctx, up, bound !== undefined);
    deps.access.checkPull(ctx.principal ?? ANONYMOUS, up.upstream);
    return up;
  };
  /**
   * A passthrough upstream's route carries the client's own credential. On the proxy door the Authorization
   * header is always the upstream's (relais's auth: is checked at CONNECT, with Proxy-Authorization); on the
   * HTTP door it is, unless relais's own auth: recognised it (a relais credential never goes upstream), and
   * relais's auth: permissions do not apply: the upstream decides (docs/access.md).
   */
  const withClientCredential = (req: IncomingMessage, ctx: RequestContext, up: UpstreamRoute, proxied: boolean): UpstreamRoute => {
    const principal = ctx.principal ?? ANONYMOUS;
    if (proxied) deps.access.checkPull(principal, up.upstream);
    const relaisOwn = !proxied && principal.kind !== 'anonymous';
    return { ...up, credential: relaisOwn ? undefined : parseClientCredential(req.headers.authorization) };
  };
  /** The gate: on the HTTP door a challenge is relais's own Basic one (the client logs in to relais's host). */
  const authorize = async (req: IncomingMessage, up: UpstreamRoute, target: ReadTarget): Promise<void> => {
    if (gate === undefined) return;
    try {
      await gate.authorize(up, target);
    } catch (e) {
      if (e instanceof RelaisError && e.status === 401 && deps.boundUpstream?.(req) === undefined) throw errors.passthroughChallenge(up.upstream, up.repo);
      throw e;
    }
  };

  async function manifest(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, r: Extract<ApiRoute, { kind: 'manifest' }>, query: URLSearchParams | undefined): Promise<void> {
    const up = route(req, ctx, r.name, query);
    try {
      validateReference(r.reference);
    } catch (e) {
      // A reference that cannot exist names no manifest: 404, as the OCI conformance suite expects for GET and HEAD.
      if (e instanceof RelaisError) throw errors.manifestUnknown(r.name, r.reference.slice(0, 140), e.message);
      throw e;
    }
    // A manifest by tag is a pull (the status page's top images); by digest, a layer of one.
    if (!r.reference.includes(':')) ctx.image = `${up.upstream}/${up.repo}:${r.reference}`;
    await authorize(req, up, { kind: 'manifest', reference: r.reference });
    const m = await deps.manifests.get(up, r.reference);
    ctx.result = m.result;
    const headers = [
      'content-type',
      m.mediaType,
      'content-length',
      String(m.body.byteLength),
      'docker-content-digest',
      m.digest,
      'etag',
      `"${m.digest}"`,
      'docker-distribution-api-version',
      API_VERSION,
    ];
    // A tag served from memory without asking the upstream: the next requests for this URL get the same
    // answer from the prepared response until the tag's freshness ends.
    if (m.freshUntil !== undefined && req.url !== undefined && anonymousMayPull(up.upstream)) {
      hot.set(hotKey(req, req.url), prepare({ digest: m.digest, upstream: up.upstream, image: ctx.image, freshUntil: m.freshUntil, headers, body: m.body }));
    }
    ctx.bytes = req.method === 'HEAD' ? 0 : m.body.byteLength;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : m.body);
  }

  function fast(req: IncomingMessage, res: ServerResponse): FastAnswer | undefined {
    const method = req.method;
    if ((method !== 'GET' && method !== 'HEAD') || req.url === undefined || req.headers.authorization !== undefined) return undefined;
    const e = hot.get(hotKey(req, req.url), now());
    if (e === undefined) return undefined;
    deps.manifests.touch(e.digest);
    res.writeHead(200, e.headers as string[]);
    if (method === 'HEAD') {
      res.end();
      return e.answers.head;
    }
    res.end(e.body);
    return e.answers.get;
  }

  async function blob(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, r: Extract<ApiRoute, { kind: 'blob' }>, query: URLSearchParams | undefined): Promise<void> {
    validateDigest(r.digest);
    const up = route(req, ctx, r.name, query);
    // A digest of a private repository is not even confirmed to exist (HEAD) before the gate.
    await authorize(req, up, { kind: 'blob', digest: r.digest });
    const common = (): void => {
      res.setHeader('content-type', 'application/octet-stream');
      res.setHeader('docker-content-digest', r.digest);
      res.setHeader('etag', `"${r.digest}"`);
      res.setHeader('accept-ranges', 'bytes');
      res.setHeader('cache-control', 'max-age=31536000, immutable');
      res.setHeader('docker-distribution-api-version', API_VERSION);
    };
    if (req.method === 'HEAD') {
      const h = await deps.blobs.head(up, r.digest);
      ctx.result = h.result;
      res.statusCode = 200;
      common();
      res.setHeader('content-length', h.size);
      ctx.bytes = 0;
      res.end();
      return;
    }
    const handle = await deps.blobs.get(up, r.digest);
    ctx.result = handle.result;
    let range: ByteRange | undefined;
    const rangeHeader = req.headers.range;
    if (rangeHeader !== undefined && handle.size !== undefined) range = byteRange(rangeHeader, handle.size);
    // A local file goes out with sendfile(2) when the connection allows it, else from reused buffers (TLS:
    // file-writer.ts); anything else (no local file) is streamed.
    const zeroCopy = deps.sendfile?.eligible(res) === true;
    const file = await handle.openFile(range);
    const stream = file ? undefined : await handle.open(range);
    common();
    if (range) {
      res.statusCode = 206;
      res.setHeader('content-range', contentRange(range, handle.size));
      res.setHeader('content-length', range.end - range.start + 1);
      ctx.bytes = range.end - range.start + 1;
    } else {
      res.statusCode = 200;
      if (handle.size !== undefined) res.setHeader('content-length', handle.size);
      ctx.bytes = handle.size;
    }
    if (file && zeroCopy && deps.sendfile) await deps.sendfile.send(res, file, (n) => (ctx.zeroCopyBytes = (ctx.zeroCopyBytes ?? 0) + n));
    else if (file) await writeFileBody(res, file);
    else if (stream) await pipeline(stream, res);
  }

  async function tags(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, r: Extract<ApiRoute, { kind: 'tags' }>, query: URLSearchParams | undefined): Promise<void> {
    const up = route(req, ctx, r.name, query);
    await authorize(req, up, { kind: 'repository' });
    const nRaw = query?.get('n');
    let n: number | undefined;
    if (nRaw !== null && nRaw !== undefined) {
      if (!/^\d{1,6}$/.test(nRaw)) throw errors.paginationInvalid(`n must be a number from 0 to ${MAX_TAGS_PAGE}`);
      n = Math.min(Number(nRaw), MAX_TAGS_PAGE);
    }
    const last = query?.get('last') ?? undefined;
    const page = await deps.listing.tags(up, r.name, { n, last });
    ctx.result = page.result;
    const body = JSON.stringify(page.body);
    res.statusCode = 200;
    res.setHeader('content-type', 'application/json');
    res.setHeader('content-length', Buffer.byteLength(body));
    res.setHeader('docker-distribution-api-version', API_VERSION);
    const ns = query?.get('ns');
    if (page.next !== undefined) res.setHeader('link', `<${page.next}${ns !== null && ns !== undefined ? `&ns=${encodeURIComponent(ns)}` : ''}>; rel="next"`);
    ctx.bytes = Buffer.byteLength(body);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  async function referrers(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, r: Extract<ApiRoute, { kind: 'referrers' }>, query: URLSearchParams | undefined): Promise<void> {
    validateDigest(r.digest);
    const up = route(req, ctx, r.name, query);
    await authorize(req, up, { kind: 'repository' });
    const artifactType = query?.get('artifactType') ?? undefined;
    const out = await deps.referrers.get(up, r.digest, artifactType === '' ? undefined : artifactType);
    ctx.result = out.result;
    res.statusCode = 200;
    res.setHeader('content-type', MT.ociIndex);
    res.setHeader('content-length', out.body.byteLength);
    if (out.filtered) res.setHeader('oci-filters-applied', 'artifactType');
    res.setHeader('docker-distribution-api-version', API_VERSION);
    ctx.bytes = req.method === 'HEAD' ? 0 : out.body.byteLength;
    res.end(req.method === 'HEAD' ? undefined : out.body);
  }

  /** Parses the URL (once per request: label() keeps the result in the context for handle()). */
  function parse(req: IncomingMessage, ctx: RequestContext & { parsed?: Parsed }): Parsed {
    if (ctx.parsed !== undefined) return ctx.parsed;
    const { path, query } = splitUrl(req.url ?? '/');
    let parsed: Parsed;
    try {
      const api = parseApiPath(path);
      parsed = { api, query };
      if (api !== undefined) ctx.kind = api.kind === 'manifest' || api.kind === 'blob' || api.kind === 'tags' || api.kind === 'referrers' ? api.kind : 'base';
    } catch (error) {
      parsed = { api: undefined, error: error as Error, query };
      ctx.kind = 'invalid';
    }
    ctx.parsed = parsed;
    return parsed;
  }

  function label(req: IncomingMessage, _res: ServerResponse, ctx: RequestContext): Promise<boolean> {
    parse(req, ctx);
    return Promise.resolve(false);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): Promise<boolean> {
    const { api: r, error, query } = parse(req, ctx);
    if (error !== undefined) throw error;
    if (r === undefined) return false;
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      throw errors.unsupported(r.kind === 'upload' ? 'pushing blobs' : `${method} ${r.kind === 'manifest' ? 'on manifests' : 'on this endpoint'}`);
    }
    switch (r.kind) {
      case 'base': {
        // Clients (docker, containers/image) send credentials only if this ping is challenged, and go on
        // without any when they have none: so with auth configured, an anonymous ping is always challenged.
        // With a passthrough upstream, the same holds for the upstream's credentials: a client that sent some
        // (relais's or an upstream's) is let through, one that sent none is challenged.
        if ((ctx.principal ?? ANONYMOUS).kind === 'anonymous') {
          if (anyPassthrough) {
            if (parseClientCredential(req.headers.authorization) === undefined) throw errors.unauthorized('relais');
          } else if (deps.access.enabled) deps.access.checkPull(ANONYMOUS, '');
        }
        const body = '{}';
        res.statusCode = 200;
        res.setHeader('content-type', 'application/json');
        res.setHeader('content-length', 2);
        res.setHeader('docker-distribution-api-version', API_VERSION);
        res.end(method === 'HEAD' ? undefined : body);
        return true;
      }
      case 'catalog':
        throw errors.unsupported('the catalog API');
      case 'upload':
        throw errors.unsupported('pushing blobs');
      case 'manifest':
        await manifest(req, res, ctx, r, query);
        return true;
      case 'blob':
        await blob(req, res, ctx, r, query);
        return true;
      case 'tags':
        await tags(req, res, ctx, r, query);
        return true;
      case 'referrers':
        await referrers(req, res, ctx, r, query);
        return true;
    }
  }

  function passthroughRequest(req: IncomingMessage, ctx: RequestContext): boolean {
    if (gate === undefined || deps.boundUpstream?.(req) !== undefined) return false;
    const { api, query } = parse(req, ctx);
    if (api === undefined) return false;
    if (api.kind === 'base') return anyPassthrough;
    if (!('name' in api)) return false;
    try {
      return gate.applies(resolveRoute(deps.routing, api.name, query?.get('ns') ?? undefined).upstream);
    } catch {
      return false;
    }
  }

  return { label, handle, fast, hot, passthroughRequest, anyPassthrough };
}

/** One satisfiable range of the blob, or a 416. Several ranges are refused: relais does not send multipart/byteranges. */
export function byteRange(header: string, size: number): ByteRange {
  const range = parseByteRange(header, size);
  if (range === 'invalid') throw errors.rangeInvalid(header.length > MAX_RANGE_HEADER ? header.slice(0, 64) + '…' : header, size);
  return range;
}
