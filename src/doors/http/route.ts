// Parses the registry API's URL space. Names contain slashes, so the operation is found from the right.
import { errors } from '../../errors.js';

export type ApiRoute =
  | { readonly kind: 'base' }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: string }
  | { readonly kind: 'upload'; readonly name: string }
  | { readonly kind: 'tags'; readonly name: string }
  | { readonly kind: 'referrers'; readonly name: string; readonly digest: string }
  | { readonly kind: 'catalog' };

const OPS = /^(.+?)\/(manifests\/[^/]+|blobs\/uploads(?:\/[^/]*)?|blobs\/[^/]+|tags\/list|referrers\/[^/]+)$/;

/** Decodes each segment once and refuses anything that could change the path's meaning. */
function decodePath(rawPath: string): string {
  // Fast path (nearly every request): nothing encoded, no dot segment, no backslash.
  if (!rawPath.includes('%') && !rawPath.includes('/.') && !rawPath.startsWith('.') && !rawPath.includes('\\') && !rawPath.includes('//')) return rawPath;
  const segments = rawPath.split('/');
  const out: string[] = [];
  for (const seg of segments) {
    let s: string;
    try {
      s = decodeURIComponent(seg);
    } catch {
      throw errors.nameInvalid(rawPath.slice(0, 200), 'malformed percent-encoding');
    }
    if (s.includes('/') || s.includes('\\') || s.includes('\0') || s === '..' || s === '.') {
      throw errors.nameInvalid(rawPath.slice(0, 200), 'encoded slashes, dot segments and NUL are not allowed');
    }
    out.push(s);
  }
  return out.join('/');
}

/** Returns undefined for paths outside /v2/. */
export function parseApiPath(rawPath: string): ApiRoute | undefined {
  if (rawPath === '/v2' || rawPath === '/v2/') return { kind: 'base' };
  if (!rawPath.startsWith('/v2/')) return undefined;
  const path = decodePath(rawPath.slice(4));
  if (path === '_catalog') return { kind: 'catalog' };
  const m = OPS.exec(path);
  if (!m?.[1] || !m[2]) throw errors.endpointUnknown();
  const name = m[1];
  const op = m[2];
  if (op.startsWith('manifests/')) return { kind: 'manifest', name, reference: op.slice('manifests/'.length) };
  if (op.startsWith('blobs/uploads')) return { kind: 'upload', name };
  if (op.startsWith('blobs/')) return { kind: 'blob', name, digest: op.slice('blobs/'.length) };
  if (op === 'tags/list') return { kind: 'tags', name };
  return { kind: 'referrers', name, digest: op.slice('referrers/'.length) };
}
