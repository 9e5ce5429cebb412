// Pushes through the proxy door (docs/proxy.md, "Pushes"): intercept.ts forwards every push request verbatim
// and streamed; this module watches those exchanges to keep what was pushed. It reads the registry API's upload
// forms (POST /blobs/uploads/ with or without ?digest= or ?mount=&from=, PATCH chunks, the final PUT ?digest=,
// DELETE of an upload, manifest PUT and DELETE), tees request bodies into the upload sessions (src/cache/pushes.ts) as
// they pass, and tells them what the upstream answered. It never changes a request or an answer, never holds a
// whole layer in memory (a manifest body only, up to server.maxManifestSize), and keeps no request header.
import type { IncomingHttpHeaders } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import type { ChunkTap } from '../../cache/pushes.js';
import type { UpstreamRoute } from '../../cache/routing.js';

/** What the door needs to keep pushes (given by app.ts). */
export interface PushKeeping {
  /** The route of a repository name on a connection bound to `upstream` (throws for an invalid name). */
  route(upstream: string, name: string): UpstreamRoute;
  /** The blob upload sessions; undefined: blobs are not kept (proxy.keepPushes.enabled: false). */
  readonly sessions?: {
    start(route: UpstreamRoute, uuid: string | undefined): boolean;
    monolithic(route: UpstreamRoute): ChunkTap | undefined;
    chunk(route: UpstreamRoute, uuid: string, start: number | undefined): ChunkTap | undefined;
    cancel(route: UpstreamRoute, uuid: string): void;
    mounted(route: UpstreamRoute, digest: string): Promise<boolean>;
  };
  /**
   * A manifest the upstream accepted (201): verified and recorded for its tag by the cache (or, when pushes are
   * not kept, only a 404 remembered for the reference forgotten).
   */
  keepManifest(route: UpstreamRoute, reference: string, body: Buffer, contentType: string | undefined, upstreamDigest: string | undefined): Promise<void>;
  /** The upstream accepted (202) a DELETE of a manifest: the cache forgets the tags naming it. */
  manifestDeleted(route: UpstreamRoute, reference: string): Promise<void>;
  readonly maxManifestSize: number;
  /** Failures of the keeping itself (never the push's). */
  readonly onError?: (e: unknown) => void;
}

/** The upstream's answer, as the door relays it. */
export interface ForwardedAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** What the door does for one push request: the body to forward (teed), and the answer it got. */
export interface PushObservation {
  /** The request body as forwarded (undefined: none); the returned stream is sent instead. */
  tee(body: Readable | undefined): Readable | undefined;
  /** The upstream's answer, or undefined when the exchange failed. */
  answered(answer: ForwardedAnswer | undefined): void;
}

/** The push request forms relais watches (pure; tests). */
export type PushRequest =
  | { readonly kind: 'start'; readonly name: string }
  | { readonly kind: 'monolithic'; readonly name: string; readonly digest: string }
  | { readonly kind: 'mount'; readonly name: string; readonly digest: string; readonly from: string }
  | { readonly kind: 'chunk'; readonly name: string; readonly uuid: string; readonly start: number | undefined }
  | { readonly kind: 'final'; readonly name: string; readonly uuid: string; readonly digest: string; readonly start: number | undefined }
  | { readonly kind: 'cancel'; readonly name: string; readonly uuid: string }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly kind: 'deleteManifest'; readonly name: string; readonly reference: string };

const UPLOADS = /^\/v2\/(.+)\/blobs\/uploads\/?$/;
const UPLOAD = /^\/v2\/(.+)\/blobs\/uploads\/([A-Za-z0-9_.=-]+)$/;
const MANIFEST = /^\/v2\/(.+)\/manifests\/([A-Za-z0-9_.:+=-]+)$/;

function first(h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? h[0] : h;
}

/** Which push form a request is, or undefined (not a push relais watches). */
export function classifyPush(method: string, url: string, headers: IncomingHttpHeaders): PushRequest | undefined {
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
  const digest = query.get('digest') ?? undefined;
  const start = (): number | undefined => {
    const m = /^(\d+)-\d+$/.exec(first(headers['content-range'])?.trim() ?? '');
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  if (method === 'POST') {
    const m = UPLOADS.exec(path);
    if (!m?.[1]) return undefined;
    const mount = query.get('mount');
    const from = query.get('from');
    if (mount !== null && from !== null) return { kind: 'mount', name: m[1], digest: mount, from };
    return digest === undefined ? { kind: 'start', name: m[1] } : { kind: 'monolithic', name: m[1], digest };
  }
  if (method === 'PATCH' || method === 'PUT' || method === 'DELETE') {
    const u = UPLOAD.exec(path);
    if (u?.[1] && u[2]) {
      if (method === 'DELETE') return { kind: 'cancel', name: u[1], uuid: u[2] };
      if (method === 'PATCH') return { kind: 'chunk', name: u[1], uuid: u[2], start: start() };
      return digest === undefined ? undefined : { kind: 'final', name: u[1], uuid: u[2], digest, start: start() };
    }
  }
  if (method === 'PUT' || method === 'DELETE') {
    const m = MANIFEST.exec(path);
    if (m?.[1] && m[2]) return { kind: method === 'PUT' ? 'manifest' : 'deleteManifest', name: m[1], reference: m[2] };
  }
  return undefined;
}

/** The upload UUID of an upstream's answer: the last segment of its Location, else Docker-Upload-UUID. */
export function uploadUuid(headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined {
  const location = first(headers.location);
  if (location !== undefined) {
    try {
      const m = /\/blobs\/uploads\/([A-Za-z0-9_.=-]+)$/.exec(new URL(location, 'http://upstream.invalid').pathname);
      if (m?.[1]) return m[1];
    } catch {
      // fall through to the header
    }
  }
  const id = first(headers['docker-upload-uuid']);
  return id !== undefined && /^[A-Za-z0-9_.=-]+$/.test(id) ? id : undefined;
}

/**
 * A stream that passes the body through unchanged, giving each chunk to `onChunk` first (awaited: the spool's
 * pace is the upload's, memory stays bounded); `ended` resolves true once the whole body passed, false if the
 * body was cut.
 */
function teeStream(body: Readable, onChunk: (b: Buffer) => Promise<void> | void): { stream: Readable; ended: Promise<boolean> } {
  let resolveEnded!: (v: boolean) => void;
  const ended = new Promise<boolean>((r) => (resolveEnded = r));
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      Promise.resolve(onChunk(chunk)).then(
        () => cb(null, chunk),
        () => cb(null, chunk),
      );
    },
    flush(cb) {
      resolveEnded(true);
      cb();
    },
  });
  t.once('close', () => resolveEnded(false));
  body.once('close', () => {
    // A body cut short: the transform never flushes.
    if (!body.readableEnded) resolveEnded(false);
  });
  body.once('error', (e) => t.destroy(e));
  body.pipe(t);
  return { stream: t, ended };
}

/** Watches one forwarded request; undefined when it is not a push form relais keeps anything of. */
export function observePush(k: PushKeeping, upstream: string, method: string, url: string, headers: IncomingHttpHeaders): PushObservation | undefined {
  const req = classifyPush(method, url, headers);
  if (req === undefined) return undefined;
  let route: UpstreamRoute;
  try {
    route = k.route(upstream, req.name);
  } catch {
    return undefined;
  }
  const fail = (e: unknown): void => k.onError?.(e);
  const sessions = k.sessions;
  if (sessions === undefined && req.kind !== 'manifest' && req.kind !== 'deleteManifest') return undefined;
  const status = (a: ForwardedAnswer | undefined): number | undefined => a?.status;

  switch (req.kind) {
    case 'start':
    case 'mount':
      return {
        tee: (body) => body,
        answered: (a) => {
          if (a === undefined) return;
          if (req.kind === 'mount' && a.status === 201) {
            sessions?.mounted(route, req.digest).catch(fail);
            return;
          }
          if (a.status !== 202) return;
          const uuid = uploadUuid(a.headers);
          if (uuid !== undefined) sessions?.start(route, uuid);
        },
      };
    case 'monolithic':
    case 'chunk':
    case 'final': {
      const tap = req.kind === 'monolithic' ? sessions?.monolithic(route) : sessions?.chunk(route, req.uuid, req.start);
      if (tap === undefined) return undefined;
      let ended: Promise<boolean> = Promise.resolve(true);
      return {
        tee: (body) => {
          if (body === undefined) {
            tap.end();
            return undefined;
          }
          const t = teeStream(body, (b) => tap.write(b));
          ended = t.ended.then((ok) => {
            if (ok) tap.end();
            return ok;
          });
          return t.stream;
        },
        answered: (a) => {
          void ended.then(() => {
            if (a === undefined) tap.rejected(undefined);
            else if (req.kind === 'chunk') {
              if (a.status === 202) tap.accepted(first(a.headers.range));
              else tap.rejected(a.status);
            } else if (req.kind === 'monolithic' && a.status === 202) {
              // An upstream without monolithic POST (distribution 2.8) ignores the body and opens a session.
              tap.rejected(a.status);
              const uuid = uploadUuid(a.headers);
              if (uuid !== undefined) sessions?.start(route, uuid);
            } else tap.completed(a.status, req.digest);
          });
        },
      };
    }
    case 'cancel':
      return {
        tee: (body) => body,
        answered: () => sessions?.cancel(route, req.uuid),
      };
    case 'deleteManifest':
      return {
        tee: (body) => body,
        answered: (a) => {
          if (a?.status === 202) k.manifestDeleted(route, req.reference).catch(fail);
        },
      };
    case 'manifest': {
      const declared = Number(first(headers['content-length']));
      if (Number.isFinite(declared) && declared > k.maxManifestSize) return undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      let tooBig = false;
      let ended: Promise<boolean> = Promise.resolve(false);
      return {
        tee: (body) => {
          if (body === undefined) return undefined;
          const t = teeStream(body, (b) => {
            if (tooBig) return;
            size += b.byteLength;
            if (size > k.maxManifestSize) {
              tooBig = true;
              chunks.length = 0;
            } else chunks.push(b);
          });
          ended = t.ended;
          return t.stream;
        },
        answered: (a) => {
          if (status(a) !== 201 || a === undefined) return;
          void ended.then((ok) => {
            if (!ok || tooBig) return;
            k.keepManifest(route, req.reference, Buffer.concat(chunks, size), first(headers['content-type']), first(a.headers['docker-content-digest'])).catch(fail);
          });
        },
      };
    }
  }
}
