// A client's own credential for an upstream (upstreams.NAME.access: passthrough; docs/access.md): the Basic
// user and password the client sent relais, or a Bearer token the client got from the upstream's token
// service itself (the proxy door). Held in memory for the request (and the bounded token cache of the
// upstream client); never logged, never written anywhere.

export type ClientCredential =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string }
  | { readonly kind: 'bearer'; readonly token: string };

/** The credential in an Authorization header value, or undefined (none, empty Basic credentials, another scheme). */
export function parseClientCredential(header: string | undefined): ClientCredential | undefined {
  if (header === undefined) return undefined;
  const h = header.trim();
  const space = h.indexOf(' ');
  if (space <= 0) return undefined;
  const scheme = h.slice(0, space).toLowerCase();
  const value = h.slice(space + 1).trim();
  if (value === '') return undefined;
  if (scheme === 'bearer') return { kind: 'bearer', token: value };
  if (scheme !== 'basic') return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  // Clients without credentials answer a Basic challenge with empty ones: that is anonymous.
  if (colon < 0 || decoded === ':') return undefined;
  return { kind: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * What identifies the credential for hashing (the confirmation cache's key, the token cache's key): never
 * shown, never stored as is. Anonymous clients share one identity.
 */
export function credentialMaterial(c: ClientCredential | undefined): string {
  if (c === undefined) return 'anonymous';
  return c.kind === 'basic' ? `basic\0${c.username}\0${c.password}` : `bearer\0${c.token}`;
}
