// The OCI distribution spec's grammar for repository names, tags and digests.
// Everything a client sends is checked here before it reaches a service, storage or the upstream.
import { errors } from '../errors.js';

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Only the algorithms relais can verify. */
const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const DIGEST_SHAPE_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
/** The spec's recommended limit for a full name; distribution uses 255 too. */
export const MAX_NAME_LENGTH = 255;

export type DigestAlgorithm = 'sha256' | 'sha512';

export function validateName(name: string): void {
  if (name.length === 0) throw errors.nameInvalid(name, 'empty');
  if (name.length > MAX_NAME_LENGTH) throw errors.nameInvalid(name.slice(0, 64) + '…', `longer than ${MAX_NAME_LENGTH} characters`);
  if (!NAME_RE.test(name)) {
    throw errors.nameInvalid(name, 'must match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((.|_|__|-+)[a-z0-9]+)*)*');
  }
}

export function isDigest(reference: string): boolean {
  return reference.includes(':');
}

export function validateDigest(digest: string): DigestAlgorithm {
  if (DIGEST_RE.test(digest)) return digest.startsWith('sha256:') ? 'sha256' : 'sha512';
  if (DIGEST_SHAPE_RE.test(digest)) {
    const alg = digest.slice(0, digest.indexOf(':'));
    if (alg === 'sha256' || alg === 'sha512') throw errors.digestInvalid(digest, `the encoded part is not a lowercase hex ${alg} hash`);
    throw errors.digestInvalid(digest, `unsupported algorithm "${alg}" (sha256 and sha512 are supported)`);
  }
  throw errors.digestInvalid(digest, 'expected algorithm:hex, e.g. sha256:<64 hex digits>');
}

export function validateTag(tag: string): void {
  if (!TAG_RE.test(tag)) {
    throw errors.tagInvalid(tag);
  }
}

/** A manifest reference is a tag or a digest. */
export function validateReference(reference: string): { kind: 'tag' | 'digest' } {
  if (isDigest(reference)) {
    validateDigest(reference);
    return { kind: 'digest' };
  }
  validateTag(reference);
  return { kind: 'tag' };
}
