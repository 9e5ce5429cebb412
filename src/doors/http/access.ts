// Client access control at the edge: who is asking (Basic with htpasswd bcrypt users, or a static Bearer
// token), and whether they may pull from an upstream or use admin endpoints. Without an `auth:` section
// everything is open. Secrets are compared in constant time and never logged.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import bcrypt from 'bcryptjs';
import { errors } from '../../errors.js';
import type { AuthConfig } from '../../config/schema.js';

export type Principal = { readonly kind: 'anonymous' } | { readonly kind: 'user' | 'token'; readonly name: string };

export const ANONYMOUS: Principal = { kind: 'anonymous' };

export interface AccessControl {
  /** Whether authentication is configured at all. */
  readonly enabled: boolean;
  /** Who sent the request; throws 401 for wrong credentials. */
  authenticate(req: IncomingMessage): Promise<Principal>;
  /** The same, from an Authorization-style header value (the proxy door's Proxy-Authorization). */
  authenticateHeader(value: string | undefined): Promise<Principal>;
  /**
   * Throws 401 (anonymous) or 403 (authenticated) unless the principal may pull from the upstream. An
   * authenticated principal may pull what anonymous clients may, plus its own permissions and those of "*".
   */
  checkPull(p: Principal, upstream: string): void;
  /** Throws unless the principal may use admin endpoints. */
  checkAdmin(p: Principal): void;
  /** Whether an anonymous client may pull from at least one upstream (decides the /v2/ answer). */
  readonly anonymousPullsAnything: boolean;
  readonly publicMetrics: boolean;
}

/** Reads bcrypt entries from an htpasswd file; other hash kinds are refused (they are weak). */
export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) return;
    const colon = l.indexOf(':');
    const user = l.slice(0, colon);
    const hash = l.slice(colon + 1);
    if (colon <= 0 || !/^\$2[aby]\$\d\d\$/.test(hash)) {
      throw errors.htpasswdNotBcrypt(file, i + 1);
    }
    users.set(user, hash);
  });
  return users;
}

function readHtpasswd(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw errors.htpasswdUnreadable(file, (e as NodeJS.ErrnoException).code ?? 'error');
  }
}

function sha(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Verified Basic credentials, so bcrypt (slow on purpose) runs once per client, not once per request. */
const VERIFIED_TTL_MS = 5 * 60_000;

export function createAccessControl(cfg: AuthConfig | undefined): AccessControl {
  if (!cfg) {
    return {
      enabled: false,
      authenticate: () => Promise.resolve(ANONYMOUS),
      authenticateHeader: () => Promise.resolve(ANONYMOUS),
      checkPull: () => undefined,
      checkAdmin: () => undefined,
      anonymousPullsAnything: true,
      publicMetrics: true,
    };
  }
  const users = cfg.htpasswd === undefined ? new Map<string, string>() : parseHtpasswd(readHtpasswd(cfg.htpasswd), cfg.htpasswd);
  const tokens = Object.entries(cfg.tokens).map(([name, secret]) => ({ name, digest: sha(secret) }));
  const verified = new Map<string, { name: string; until: number }>();
  const challenge = errors.unauthorized(cfg.realm.replace(/"/g, ''));
  const allows = (list: readonly string[] | undefined, upstream: string): boolean => list !== undefined && (list.includes('*') || list.includes(upstream));

  const control: AccessControl = {
    enabled: true,
    anonymousPullsAnything: cfg.anonymous.length > 0,
    publicMetrics: cfg.publicMetrics,
    authenticate: (req) => control.authenticateHeader(req.headers.authorization),
    async authenticateHeader(h) {
      if (h === undefined || h === '') return ANONYMOUS;
      const space = h.indexOf(' ');
      const scheme = h.slice(0, space).toLowerCase();
      const value = h.slice(space + 1).trim();
      if (scheme === 'bearer') {
        const d = sha(value);
        const t = tokens.find((x) => timingSafeEqual(x.digest, d));
        if (t) return { kind: 'token', name: t.name };
        throw challenge;
      }
      if (scheme === 'basic') {
        const key = sha(value).toString('hex');
        const hit = verified.get(key);
        if (hit && hit.until > Date.now()) return { kind: 'user', name: hit.name };
        const decoded = Buffer.from(value, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        const user = decoded.slice(0, colon);
        // Clients without credentials answer a Basic challenge with empty ones: that is anonymous.
        if (decoded === '' || decoded === ':') return ANONYMOUS;
        const hash = users.get(user);
        // A token may also be sent as the Basic password (docker login with a token).
        const asToken = tokens.find((x) => timingSafeEqual(x.digest, sha(decoded.slice(colon + 1))) && x.name === user);
        if (asToken) return { kind: 'token', name: asToken.name };
        if (colon > 0 && hash !== undefined && (await bcrypt.compare(decoded.slice(colon + 1), hash))) {
          if (verified.size > 10_000) verified.clear();
          verified.set(key, { name: user, until: Date.now() + VERIFIED_TTL_MS });
          return { kind: 'user', name: user };
        }
        throw challenge;
      }
      throw challenge;
    },
    checkPull(p, upstream) {
      if (p.kind === 'anonymous') {
        if (allows(cfg.anonymous, upstream)) return;
        throw challenge;
      }
      // Rights add up: logging in never takes away what an anonymous client may pull.
      if (allows(cfg.anonymous, upstream) || allows(cfg.permissions[p.name], upstream) || allows(cfg.permissions['*'], upstream)) return;
      throw errors.denied(`${p.name} may not pull from ${upstream}`);
    },
    checkAdmin(p) {
      if (p.kind === 'anonymous') throw challenge;
      if (!cfg.admins.includes(p.name)) throw errors.denied(`${p.name} is not an admin`);
    },
  };
  return control;
}
