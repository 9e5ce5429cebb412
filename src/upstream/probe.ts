// The start-up check of an upstream: does its base URL answer `GET /v2/` like a registry? A registry
// answers 200 (open) or 401 with a WWW-Authenticate challenge (it wants a token or a password). A plain
// web server, a wrong path or port answers something else (404, an HTML page, a redirect elsewhere), and
// every pull through relais would then fail with "manifest unknown": better said once, at start.
import { describeCause } from '../errors.js';
import { fixedCredential, RegistryClient } from './registry-client.js';

export interface ProbeResult {
  readonly upstream: string;
  readonly url: string;
  readonly ok: boolean;
  /** HTTP status, when the upstream answered. */
  readonly status?: number | undefined;
  /** What was found: "registry (open)", "registry (Bearer token auth)", or the problem. */
  readonly summary: string;
  /** What to do about a problem. */
  readonly hint?: string | undefined;
}

export interface ProbeOptions {
  /** Connect and response time allowed, in ms (default 5000). */
  readonly timeoutMs?: number;
}

function header(h: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Probes `URL/v2/` of one upstream. Never throws: every outcome is a ProbeResult. */
export async function probeUpstream(upstream: string, baseUrl: string, opts: ProbeOptions = {}): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const url = `${baseUrl.replace(/\/+$/, '')}/v2/`;
  const base = { upstream, url: baseUrl };
  let client: RegistryClient | undefined;
  try {
    // The one registry client, asked once as it is: no credential, no retry, the network failure itself.
    client = new RegistryClient({ url: baseUrl, userAgent: 'relais (start-up check)', description: upstream, timeoutMs, retries: 0, concurrency: 0, credential: fixedCredential(undefined), failure: (e) => e });
    const res = await client.request({ method: 'GET', repo: '', target: client.url('/v2/'), signal: AbortSignal.timeout(timeoutMs) });
    const body = await res.body.text().catch(() => '');
    const h = res.headers;
    const api = header(h, 'docker-distribution-api-version');
    const type = header(h, 'content-type') ?? '';
    const challenge = header(h, 'www-authenticate');
    if (res.status === 200) {
      if (api === undefined && (/text\/html/i.test(type) || /^\s*</.test(body))) {
        return { ...base, ok: false, status: 200, summary: `${url} answers 200 with a web page, not the registry API: a plain web server?`, hint: hintFor(baseUrl) };
      }
      return { ...base, ok: true, status: 200, summary: 'registry (open)' };
    }
    if (res.status === 401) {
      if (challenge !== undefined && /^\s*(bearer|basic)\b/i.test(challenge)) {
        return { ...base, ok: true, status: 401, summary: `registry (${/^\s*bearer/i.test(challenge) ? 'Bearer token' : 'Basic'} auth)` };
      }
      return { ...base, ok: false, status: 401, summary: `${url} answers 401 without a WWW-Authenticate challenge: not a registry?`, hint: hintFor(baseUrl) };
    }
    if (res.status >= 300 && res.status < 400) {
      const to = header(h, 'location') ?? '?';
      return { ...base, ok: false, status: res.status, summary: `${url} redirects (${res.status}) to ${to}`, hint: 'give the URL the registry answers on directly (often the https:// one, or another host)' };
    }
    if (res.status === 404) {
      return { ...base, ok: false, status: 404, summary: `${url} answers 404: no registry API there (a plain web server, or a wrong path or port)`, hint: hintFor(baseUrl) };
    }
    if (res.status >= 500) {
      return { ...base, ok: false, status: res.status, summary: `${url} answers ${res.status}: the registry is failing or down`, hint: 'relais serves from its cache meanwhile; check the registry' };
    }
    return { ...base, ok: false, status: res.status, summary: `${url} answers ${res.status}${api === undefined ? ', and is not a registry' : ''}`, hint: hintFor(baseUrl) };
  } catch (e) {
    const why = describeCause(e);
    return {
      ...base,
      ok: false,
      summary: `cannot reach ${url}${why === '' ? '' : `: ${why}`}`,
      hint: /ENOTFOUND|EAI_AGAIN/.test(why)
        ? 'the host name does not resolve from here: check the URL, or DNS'
        : /ECONNREFUSED/.test(why)
          ? 'nothing listens there: check the host and port'
          : /certificate|CERT|SSL|TLS|EPROTO/i.test(why)
            ? 'a TLS problem: check the scheme (http:// or https://) and the registry certificate (NODE_EXTRA_CA_CERTS for a private CA)'
            : 'check the URL and that this machine can reach the registry (proxy, firewall)',
    };
  } finally {
    await client?.close().catch(() => undefined);
  }
}

function hintFor(baseUrl: string): string {
  return `the upstream URL is the registry's base (relais adds /v2/ itself): check ${baseUrl}, e.g. https://registry-1.docker.io, https://ghcr.io, http://HOST:5000`;
}

/** Probes every upstream at once. */
export function probeUpstreams(upstreams: Readonly<Record<string, { readonly url: string }>>, opts: ProbeOptions = {}): Promise<ProbeResult[]> {
  return Promise.all(Object.entries(upstreams).map(([name, u]) => probeUpstream(name, u.url, opts)));
}
