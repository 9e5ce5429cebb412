// The confirmation cache of passthrough upstreams (docs/access.md): "the upstream confirmed, with this
// credential, that it may pull this repository", remembered for a short TTL so that the layers of one pull
// do not each cost an upstream round trip. Bounded in entries and time, in memory only. Its keys are an
// HMAC-SHA256 of (credential, upstream, repository) under a secret drawn at start: the credential is never
// kept here, and a key is worth nothing outside this process (no offline guessing of a password from it).
import { createHmac, randomBytes } from 'node:crypto';

export interface ConfirmationSettings {
  /** How long a confirmation is trusted (ms); 0 turns the cache off (every request asks the upstream). */
  readonly ttlMs: number;
  /** Most confirmations kept; the oldest go first. */
  readonly maxEntries: number;
}

export class ConfirmationCache {
  /** key -> expiry (ms since epoch), in insertion order (oldest first). */
  private readonly entries = new Map<string, number>();
  private readonly now: () => number;
  private readonly secret: Buffer;

  constructor(
    private readonly settings: ConfirmationSettings,
    opts: { readonly now?: () => number; readonly secret?: Buffer } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.secret = opts.secret ?? randomBytes(32);
  }

  /** The key of (credential material, upstream, repository): a keyed hash, never the credential. */
  key(material: string, upstream: string, repo: string): string {
    return createHmac('sha256', this.secret).update(`${material}\0${upstream}\0${repo}`).digest('hex');
  }

  /** Whether the key was confirmed less than ttl ago (an expired entry is dropped on sight). */
  has(key: string): boolean {
    const until = this.entries.get(key);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.entries.delete(key);
    return false;
  }

  /** Records a confirmation from now on; over maxEntries, expired entries go, then the oldest. */
  confirm(key: string): void {
    if (this.settings.ttlMs <= 0 || this.settings.maxEntries <= 0) return;
    const now = this.now();
    this.entries.delete(key);
    this.entries.set(key, now + this.settings.ttlMs);
    if (this.entries.size <= this.settings.maxEntries) return;
    for (const [k, until] of this.entries) if (until <= now) this.entries.delete(k);
    while (this.entries.size > this.settings.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.entries.delete(oldest.value);
    }
  }

  /** Drops a confirmation (the upstream refused this credential since). */
  forget(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
