// A minimal raw-HTTP registry client for test oracles: one request, following the registry's
// auth challenge (Basic, or Bearer via the token realm) the way docker/containerd do.
import { createHash } from 'node:crypto';
import { fetch, type Dispatcher, type Headers, type RequestInit } from 'undici';

export interface Creds {
  username: string;
  password: string;
}

export interface RegistryResponse {
  status: number;
  headers: Headers;
  body: Buffer;
  /** Token requests made to the realm while following the challenge. */
  tokenRequests: number;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (one challenge). */
export function parseChallenge(header: string): Challenge | null {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (m === null) return null;
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g;
  for (const p of (m[2] ?? '').matchAll(re)) {
    const key = p[1];
    if (key !== undefined) params[key.toLowerCase()] = p[2] ?? p[3] ?? '';
  }
  return { scheme: (m[1] ?? '').toLowerCase(), params };
}

function basic(creds: Creds): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

export interface RegistryFetchOptions {
  /** An undici Dispatcher (e.g. an Agent trusting a test CA) for every request made. */
  dispatcher?: Dispatcher;
  method?: string;
  headers?: Record<string, string>;
  creds?: Creds;
  body?: Buffer | string;
}

/** The Accept header clients send for manifests (every schema2/OCI type). */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

async function once(url: string, opts: RegistryFetchOptions, authorization?: string): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (authorization !== undefined) headers.authorization = authorization;
  const init: RequestInit = { method: opts.method ?? 'GET', headers, redirect: 'follow' };
  if (opts.body !== undefined) init.body = opts.body;
  if (opts.dispatcher !== undefined) init.dispatcher = opts.dispatcher;
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** One registry request; on 401 answers the challenge (Basic or Bearer token) and retries once. */
export async function registryFetch(url: string, opts: RegistryFetchOptions = {}): Promise<RegistryResponse> {
  const first = await once(url, opts);
  if (first.status !== 401) return { ...first, tokenRequests: 0 };
  const challenge = parseChallenge(first.headers.get('www-authenticate') ?? '');
  if (challenge === null) return { ...first, tokenRequests: 0 };
  if (challenge.scheme === 'basic') {
    if (opts.creds === undefined) return { ...first, tokenRequests: 0 };
    return { ...(await once(url, opts, basic(opts.creds))), tokenRequests: 0 };
  }
  if (challenge.scheme !== 'bearer' || challenge.params.realm === undefined) return { ...first, tokenRequests: 0 };
  const realm = new URL(challenge.params.realm);
  if (challenge.params.service !== undefined) realm.searchParams.set('service', challenge.params.service);
  if (challenge.params.scope !== undefined) realm.searchParams.set('scope', challenge.params.scope);
  const tokenInit: RequestInit = opts.creds === undefined ? {} : { headers: { authorization: basic(opts.creds) } };
  if (opts.dispatcher !== undefined) tokenInit.dispatcher = opts.dispatcher;
  const tokenRes = await fetch(realm, tokenInit);
  if (tokenRes.status !== 200) {
    return { status: tokenRes.status, headers: tokenRes.headers, body: Buffer.from(await tokenRes.arrayBuffer()), tokenRequests: 1 };
  }
  const json = (await tokenRes.json()) as { token?: string; access_token?: string };
  const token = json.token ?? json.access_token;
  if (token === undefined) throw new Error(`token realm ${realm.href} answered without a token`);
  return { ...(await once(url, opts, `Bearer ${token}`)), tokenRequests: 1 };
}

/** sha256:<hex> of some bytes. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Uploads one blob (POST then PUT ?digest=) through the auth flow; returns its digest. */
export async function pushBlob(registryUrl: string, repo: string, data: Buffer, creds?: Creds): Promise<string> {
  const digest = sha256Digest(data);
  const withCreds = creds === undefined ? {} : { creds };
  const start = await registryFetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', ...withCreds });
  if (start.status !== 202) throw new Error(`POST blob upload for ${repo}: ${start.status} ${start.body.toString()}`);
  const location = start.headers.get('location');
  if (location === null) throw new Error(`POST blob upload for ${repo}: no Location`);
  const put = new URL(location, registryUrl);
  put.searchParams.set('digest', digest);
  const done = await registryFetch(put.href, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
    ...withCreds,
  });
  if (done.status !== 201) throw new Error(`PUT blob ${digest} to ${repo}: ${done.status} ${done.body.toString()}`);
  return digest;
}

/** PUTs a manifest under a tag or digest; returns the digest the registry reports. */
export async function putManifest(
  registryUrl: string,
  repo: string,
  reference: string,
  manifest: Buffer,
  mediaType: string,
  creds?: Creds,
): Promise<string> {
  const res = await registryFetch(`${registryUrl}/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'content-type': mediaType },
    body: manifest,
    ...(creds === undefined ? {} : { creds }),
  });
  if (res.status !== 201) throw new Error(`PUT manifest ${repo}:${reference}: ${res.status} ${res.body.toString()}`);
  return res.headers.get('docker-content-digest') ?? sha256Digest(manifest);
}
