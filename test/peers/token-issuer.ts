// A small Docker-Hub-style token server (the "realm" of `WWW-Authenticate: Bearer`) for CNCF
// distribution's `auth.token` mode: ES256 JWTs with the certificate in the x5c header.
//
// - GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]  (Basic auth optional)
//   -> {"token", "access_token", "expires_in", "issued_at"}
// - POST /token (OAuth2 form: grant_type=password|refresh_token, username, password,
//   refresh_token, service, scope) as containerd sends when it has credentials
//   -> {"access_token", "token", "expires_in", "issued_at", "refresh_token"?}
//
// Who gets what: anonymous requests get at most `pull`. With `users` given, Basic credentials
// must match one of them (else 401) and get every action asked for; without `users`, any Basic
// credentials are accepted and get every action asked for. With `repositories`, a repository listed there is
// private: only the users listed for it get any action on it; everyone else (anonymous included) gets a token
// whose access for it is empty, as Docker Hub's and GitLab's token services answer (the registry then refuses
// the token). Every request served is recorded.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createPrivateKey, createSign, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from './proc.js';

export interface TokenRequestRecord {
  method: 'GET' | 'POST';
  /** The requested scopes joined by a space ('' when none). */
  scope: string;
  scopes: string[];
  service: string;
  /** The user whose credentials were accepted; undefined for anonymous requests. */
  authorizedUser?: string;
  /** The access granted in the token. */
  granted: TokenAccess[];
  /** HTTP status the issuer answered. */
  status: number;
}

export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenIssuer {
  /** The realm URL to put in the registry config: http://127.0.0.1:PORT/token */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM of the signing certificate (the registry's rootcertbundle). */
  readonly certFile: string;
  /** Every token request served so far, in order. */
  requests(): TokenRequestRecord[];
  clearRequests(): void;
  /** Mints a token directly (for tests that want to skip the flow). */
  mint(subject: string, access: TokenAccess[], ttlSeconds?: number): string;
  close(): Promise<void>;
}

export interface TokenIssuerOptions {
  /** Directory where key.pem and cert.pem are written. */
  dir: string;
  users?: Record<string, string>;
  service?: string;
  issuer?: string;
  /** Token lifetime in seconds (default 300). */
  ttlSeconds?: number;
  /** Private repositories: name -> the users who may pull (and push) it. Others get no action on it. */
  repositories?: Record<string, string[]>;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** Parses `repository:NAME:a,b` (NAME may contain ':' for a port; the actions are after the last ':'). */
export function parseScope(scope: string): TokenAccess | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((a) => a !== ''),
  };
}

function parseBasic(header: string | undefined): { user: string; password: string } | null {
  if (header === undefined) return null;
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (m?.[1] === undefined) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

/** Starts the issuer on a free loopback port; generates a P-256 key and self-signed certificate with openssl. */
export async function startTokenIssuer(opts: TokenIssuerOptions): Promise<TokenIssuer> {
  const service = opts.service ?? 'test-registry';
  const issuer = opts.issuer ?? 'test-issuer';
  const ttl = opts.ttlSeconds ?? 300;
  const keyFile = join(opts.dir, 'token-key.pem');
  const certFile = join(opts.dir, 'token-cert.pem');
  await runOk('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '365', '-subj', `/CN=${issuer}`,
  ]);
  const key: KeyObject = createPrivateKey(await readFile(keyFile));
  const certDer = new X509Certificate(await readFile(certFile)).raw;
  const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', x5c: [certDer.toString('base64')] }));

  const mint = (subject: string, access: TokenAccess[], ttlSeconds = ttl): string => {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: subject,
      aud: service,
      exp: now + ttlSeconds,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    };
    const signingInput = `${header}.${b64url(JSON.stringify(claims))}`;
    // JWS wants r||s, not DER.
    const signature = createSign('SHA256').update(signingInput).sign({ key, dsaEncoding: 'ieee-p1363' });
    return `${signingInput}.${b64url(signature)}`;
  };

  const records: TokenRequestRecord[] = [];
  const refreshTokens = new Map<string, string>(); // refresh token -> user

  const grant = (scopes: string[], user: string | undefined): TokenAccess[] => {
    const out: TokenAccess[] = [];
    for (const s of scopes) {
      for (const one of s.split(' ')) {
        const parsed = parseScope(one);
        if (parsed === null) continue;
        const allowed = opts.repositories?.[parsed.name];
        const actions =
          allowed !== undefined && (user === undefined || !allowed.includes(user)) ? [] : user === undefined ? parsed.actions.filter((a) => a === 'pull') : parsed.actions;
        out.push({ ...parsed, actions });
      }
    }
    return out;
  };

  const checkUser = (user: string, password: string): boolean => {
    if (opts.users === undefined) return true;
    return Object.hasOwn(opts.users, user) && opts.users[user] === password;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://issuer');
    if (url.pathname !== '/token' || (req.method !== 'GET' && req.method !== 'POST')) {
      sendJson(res, 404, { error: 'not found' });
      return;
    }
    const method = req.method;
    let scopes: string[] = [];
    let svc = '';
    let user: string | undefined;
    let refreshFor: string | undefined;
    let offline = false;
    const deny = (status: number, message: string): void => {
      records.push({ method, scope: scopes.join(' '), scopes, service: svc, granted: [], status });
      sendJson(res, status, { errors: [{ code: 'UNAUTHORIZED', message }] }, status === 401 ? { 'www-authenticate': 'Basic realm="test-issuer"' } : {});
    };
    if (method === 'GET') {
      scopes = url.searchParams.getAll('scope');
      svc = url.searchParams.get('service') ?? '';
      offline = url.searchParams.get('offline_token') === 'true';
      const basic = parseBasic(req.headers.authorization);
      if (basic !== null) {
        if (!checkUser(basic.user, basic.password)) {
          deny(401, 'bad credentials');
          return;
        }
        user = basic.user;
      }
    } else {
      const form = new URLSearchParams(await readBody(req));
      scopes = form.getAll('scope');
      svc = form.get('service') ?? '';
      const grantType = form.get('grant_type');
      if (grantType === 'password') {
        const u = form.get('username') ?? '';
        if (!checkUser(u, form.get('password') ?? '')) {
          deny(401, 'bad credentials');
          return;
        }
        user = u;
        offline = true;
      } else if (grantType === 'refresh_token') {
        const known = refreshTokens.get(form.get('refresh_token') ?? '');
        if (known === undefined) {
          deny(401, 'unknown refresh token');
          return;
        }
        user = known;
        refreshFor = known;
      } else {
        deny(400, `unsupported grant_type ${grantType ?? '(none)'}`);
        return;
      }
    }
    if (svc !== service) {
      deny(400, `unknown service '${svc}'`);
      return;
    }
    const granted = grant(scopes, user);
    const token = mint(user ?? '', granted);
    const body: Record<string, string | number> = {
      token,
      access_token: token,
      expires_in: ttl,
      issued_at: new Date().toISOString(),
    };
    if (offline && user !== undefined && refreshFor === undefined) {
      const refresh = randomBytes(16).toString('hex');
      refreshTokens.set(refresh, user);
      body.refresh_token = refresh;
    }
    const record: TokenRequestRecord = { method, scope: scopes.join(' '), scopes, service: svc, granted, status: 200 };
    if (user !== undefined) record.authorizedUser = user;
    records.push(record);
    sendJson(res, 200, body);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: String(err) });
      else res.destroy();
    });
  });
  // Port 0: the kernel picks a free port, no race with other tests.
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      if (a === null || typeof a === 'string') reject(new Error('token issuer: no address'));
      else resolve(a.port);
    });
  });
  server.unref(); // never keep a test process alive on its own

  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests: () => records.map((r) => ({ ...r, scopes: [...r.scopes], granted: r.granted.map((g) => ({ ...g, actions: [...g.actions] })) })),
    clearRequests: () => {
      records.length = 0;
    },
    mint,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}
