// Proxy mode of the CI generators (issue 15, item 2): dind reaches every registry relais intercepts
// through relais's HTTPS proxy door (`proxy.listen`, e.g. :3128) instead of a Docker Hub-only
// --registry-mirror. dind gets HTTPS_PROXY/NO_PROXY and trusts relais's CA through dockerd's
// per-registry mechanism, /etc/docker/certs.d/<host>/ca.crt (added to the system roots, never
// replacing them), one file per intercepted host, and in its system roots for Docker Hub, where dockerd
// ignores certs.d (gitlab --proxy: appended to the bundle; runner-config --via proxy: SSL_CERT_DIR).
// Pure functions; the commands do the I/O.

import { parse as parseYaml } from 'yaml';
import { errors } from '../../errors.js';

/** Host names clients use for Docker Hub (relais's default for an upstream named docker.io). */
export const DOCKER_HUB_HOSTS: readonly string[] = ['registry-1.docker.io', 'docker.io', 'index.docker.io'];

/** Where dockerd looks for per-registry CA certificates. */
export const DOCKER_CERTS_D = '/etc/docker/certs.d';

/** The system roots of docker:dind (Alpine), which Go reads first. */
export const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/**
 * Where `relais ci runner-config --via proxy` mounts a directory holding only relais's CA (read-only), named by
 * SSL_CERT_DIR in dind's environment. Go's crypto/x509 on Linux loads the default bundle (SSL_CERT_FILE unset)
 * AND every file of the SSL_CERT_DIR directories (which replace only the default directories), so the CA joins
 * the system roots: dockerd trusts it for Docker Hub too, where it ignores certs.d (measured with dockerd
 * 20.10, test/integration/proxy/certsd.test.ts).
 */
export const RELAIS_CA_DIR = '/etc/relais-ca';

/** The CA's file name in RELAIS_CA_DIR (and in the host directory mounted there). */
export const RELAIS_CA_FILE = 'relais-ca.crt';

/**
 * dind's SSL_CERT_DIR with RELAIS_CA_DIR added last: other directories of an existing value are kept in
 * their order (the value is colon-separated, as OpenSSL's), so applying it twice changes nothing.
 */
export function sslCertDirWith(current: string | undefined): string {
  const dirs = (current ?? '').split(':').filter((d) => d !== '' && d !== RELAIS_CA_DIR);
  return [...dirs, RELAIS_CA_DIR].join(':');
}

/** The variable that lists the intercepted hosts in the generated wiring (read by `relais ci doctor`). */
export const INTERCEPT_HOSTS_VAR = 'RELAIS_INTERCEPT_HOSTS';

/** Checks and normalizes the proxy URL: http://host:port (the door speaks plain HTTP CONNECT). */
export function normalizeProxy(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw errors.ciUsage(`invalid proxy URL "${url}"`, "give relais's proxy door as dind sees it, e.g. --proxy http://relais.example.com:3128 (proxy.listen)");
  }
  if (u.protocol !== 'http:') {
    throw errors.ciUsage(`proxy URL "${url}" must start with http://`, "relais's proxy door takes CONNECT over plain HTTP; TLS is inside the tunnel: --proxy http://relais.example.com:3128");
  }
  if (u.pathname !== '/' || u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') {
    throw errors.ciUsage(`proxy URL "${url}" has a path or credentials`, `use http://${u.host}`);
  }
  if (isLoopback(u.hostname)) {
    throw errors.ciUsage(`proxy URL "${url}" names the loopback interface: inside dind that is dind itself, not relais`, 'use a name or address of the relais host that the dind container can reach, e.g. http://relais.example.com:3128');
  }
  return `http://${u.host}`;
}

/** True for names that mean "this container" wherever they are resolved. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || h === '::1' || h === '0.0.0.0';
}

/** A host name as certs.d wants it: lower case, with a port only when it is not 443. */
export function normalizeInterceptHost(host: string): string {
  const h = host.trim().toLowerCase();
  if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$/.test(h) || h.includes('..')) {
    throw errors.ciUsage(`"${host}" is not a registry host name`, 'give host names as clients use them, e.g. --intercept ghcr.io --intercept registry.gitlab.example.com');
  }
  return h.endsWith(':443') ? h.slice(0, -4) : h;
}

/**
 * The intercepted hosts of a relais config file (YAML), read defensively: `upstreams.NAME.hosts`
 * (strings); an upstream named docker.io without `hosts` gets Docker Hub's names. Unknown shapes are
 * ignored, never fatal: the file is relais's, not ours.
 */
export function interceptHostsFromConfig(text: string, file = 'config'): string[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw errors.ciUsage(`${file} is not valid YAML: ${e instanceof Error ? e.message : String(e)}`);
  }
  const upstreams = isRecord(doc) ? doc['upstreams'] : undefined;
  if (!isRecord(upstreams)) return [...DOCKER_HUB_HOSTS];
  const out: string[] = [];
  for (const [name, u] of Object.entries(upstreams)) {
    const hosts = isRecord(u) && Array.isArray(u['hosts']) ? u['hosts'].filter((h): h is string => typeof h === 'string') : undefined;
    if (hosts !== undefined) out.push(...hosts);
    else if (name === 'docker.io') out.push(...DOCKER_HUB_HOSTS);
  }
  return out;
}

/** Deduplicated, normalized intercepted hosts; Docker Hub's when none are given. */
export function interceptHosts(given: readonly string[]): string[] {
  const list = given.length === 0 ? DOCKER_HUB_HOSTS : given;
  return [...new Set(list.map(normalizeInterceptHost))];
}

/**
 * NO_PROXY for dind: the job's own service names (the job talks to dind as `docker`), loopback, the
 * relais host itself (its HTTP door, e.g. the CA download), and any extra names (GitLab's host) unless
 * relais intercepts them.
 */
export function noProxyFor(proxy: string, intercepted: readonly string[], extra: readonly string[] = []): string {
  const relaisHost = new URL(proxy).hostname.replace(/^\[|\]$/g, '');
  const interceptedNames = new Set(intercepted.map((h) => h.replace(/:\d+$/, '')));
  const names = ['docker', 'localhost', '127.0.0.1', relaisHost, ...extra].filter((n) => n !== '' && !interceptedNames.has(n));
  return [...new Set(names)].join(',');
}

/** The PEM text of a CA certificate, checked (one or more CERTIFICATE blocks, no private key). */
export function checkCaPem(text: string, source: string): string {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    throw errors.ciUsage(`${source} holds a private key: give the CA certificate only`, "`relais ca` prints the certificate (never the key); dind needs nothing else");
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (blocks === null) {
    throw errors.ciUsage(`${source} is not a PEM certificate`, '`relais ca > relais-ca.crt` on the relais host, or GET http://RELAIS:5000/_relais/ca.crt');
  }
  return `${blocks.join('\n')}\n`;
}

/** The certs.d files for the intercepted hosts: `<host>/ca.crt` (relative), each the CA. */
export function certsDFiles(hosts: readonly string[], caPem: string): { path: string; content: string }[] {
  return hosts.map((h) => ({ path: `${h}/ca.crt`, content: caPem }));
}

/** The default URL of the CA on relais's HTTP door, from the proxy URL's host. */
export function defaultCaUrl(proxy: string): string {
  return `http://${new URL(proxy).hostname}:5000/_relais/ca.crt`;
}

/**
 * The dind service entrypoint of `relais ci gitlab --proxy`: fetches relais's CA from its HTTP door
 * (RELAIS_CA_URL) or takes it from RELAIS_CA (PEM), writes it as certs.d/<host>/ca.crt for every host in
 * RELAIS_INTERCEPT_HOSTS, appends it to the system bundle (dockerd's own pulls of Docker Hub ignore certs.d:
 * measured with dockerd 20.10, test/integration/proxy/certsd.test.ts), then starts docker:dind's own entrypoint
 * with the service's command. A dind that cannot get the CA stops with a message rather than start and fail
 * every pull with x509 errors.
 */
export function dindProxyEntrypoint(certsDir = DOCKER_CERTS_D, bundle = SYSTEM_CA_BUNDLE): string[] {
  const script = [
    'set -e',
    'if [ -n "$RELAIS_CA" ]; then printf \'%s\\n\' "$RELAIS_CA" > /tmp/relais-ca.crt;',
    'elif ! wget -q -O /tmp/relais-ca.crt "$RELAIS_CA_URL"; then echo "relais: cannot fetch the CA from $RELAIS_CA_URL" >&2; exit 1; fi',
    `for h in $${INTERCEPT_HOSTS_VAR}; do mkdir -p "${certsDir}/$h"; cp /tmp/relais-ca.crt "${certsDir}/$h/ca.crt"; done`,
    `if [ -f "${bundle}" ]; then cat /tmp/relais-ca.crt >> "${bundle}"; fi`,
    'exec dockerd-entrypoint.sh "$@"',
  ].join('\n');
  return ['sh', '-c', script, 'dind'];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
