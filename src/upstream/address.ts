// Addresses an upstream may not send relais to (redirects, token realms) unless allowed:
// loopback, link-local (cloud metadata at 169.254.169.254), private and unspecified ranges.
import { lookup, type LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

export function isPrivateHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  const kind = isIP(h);
  if (kind === 4) {
    const [a = 0, b = 0] = h.split('.').map(Number);
    return a === 127 || a === 10 || a === 0 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
  }
  if (kind === 6) {
    if (h === '::1' || h === '::') return true;
    if (h.startsWith('fe8') || h.startsWith('fe9') || h.startsWith('fea') || h.startsWith('feb')) return true;
    if (h.startsWith('fc') || h.startsWith('fd')) return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    if (mapped?.[1] !== undefined) return isPrivateHost(mapped[1]);
  }
  return false;
}

/**
 * A DNS lookup for undici's connector that refuses names resolving to private addresses (DNS rebinding,
 * CDN redirects gone wrong), except `exemptHost` (the upstream's own host). IP literals never reach a
 * lookup: the client's target check sees those.
 */
export function refusePrivateLookup(exemptHost: string): LookupFunction {
  return (hostname, options, callback) => {
    lookup(hostname, { ...options, all: true }, (err, list) => {
      if (err) return callback(err, '', 0);
      if (hostname !== exemptHost && list.some((a) => isPrivateHost(a.address))) {
        const e = Object.assign(new Error(`${hostname} resolves to a private address; refused`), { code: 'ERELAIS_PRIVATE_ADDRESS' });
        return callback(e, '', 0);
      }
      if ((options as { all?: boolean }).all === true) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }), '', 0);
      callback(null, first.address, first.family);
    });
  };
}
