// A manifest write that an intercepted connection forwarded (docs/proxy.md): when the upstream accepted it,
// what relais remembered of that tag (a 404, a tag -> digest mapping) is out of date.
export interface PushedManifest {
  readonly repo: string;
  /** The tag or digest written. */
  readonly reference: string;
}

/** The repository and reference of a PUT/DELETE of a manifest the upstream answered 2xx; undefined otherwise. */
export function pushedManifest(method: string, url: string, status: number): PushedManifest | undefined {
  if ((method !== 'PUT' && method !== 'DELETE') || status < 200 || status > 299) return undefined;
  const path = url.split('?')[0] ?? '';
  const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
  if (m === null || m[1] === undefined || m[2] === undefined) return undefined;
  let reference: string;
  try {
    reference = decodeURIComponent(m[2]);
  } catch {
    return undefined;
  }
  return { repo: m[1], reference };
}
