// A cluster sees its own writes (docs/cluster.md, "What each replica remembers"). The replicas share the index
// (PostgreSQL) and the bytes (S3), but each keeps its own memory in front of them: tag -> digest mappings fresh
// for tagTtl, remembered 404s, prepared responses. A push or DELETE accepted through one replica, and manifests
// eviction or gc forgot on one replica, change the shared index; every other replica must forget what it
// remembered of them. The core says what it changed (ManifestService.onChange) and applies what another
// replica changed (applyChange); this module carries the changes: PostgreSQL NOTIFY on one channel, LISTEN on
// a dedicated connection per replica.
//
// A replica whose listening connection is lost may have missed changes: it drops its tag mappings, 404s and
// prepared responses (the next requests read the shared index) when it notices the loss, after each failed
// attempt to listen again, and once more when it listens again (anything remembered meanwhile), and says so
// in the log. A ping on the listening connection every `pingMs` notices a connection that died silently.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ManifestChange } from '../cache/manifests.js';
import type { NotificationChannel } from '../index/postgres.js';
import type { Logger } from '../observability/logger.js';

export const INVALIDATION_CHANNEL = 'relais_cache_changes';
/** PostgreSQL refuses payloads of 8000 bytes or more; changes are split into messages under this. */
export const MAX_PAYLOAD_BYTES = 7900;

/** What this module needs of the core's manifest service. */
export interface ChangeSource {
  onChange(listener: (change: ManifestChange) => void): void;
  applyChange(change: ManifestChange): void;
  dropMemory(): { readonly tags: number; readonly notFound: number };
}

/** The notification channel (src/index/postgres.ts PostgresIndex.listen/notify). */
export interface ChangeChannel {
  listen(channel: string, onMessage: (payload: string) => void, opts: { applicationName: string; timeoutMs: number }): Promise<NotificationChannel>;
  notify(channel: string, payload: string): Promise<void>;
}

/** One message on the wire: the sending replica and (part of) a change. */
interface Wire {
  /** Origin: the sending replica's id (a replica ignores its own messages). */
  readonly o: string;
  /** r: references of a repository; f: forgotten digests; a: everything (a change too large to say). */
  readonly k: 'r' | 'f' | 'a';
  readonly u?: string;
  readonly p?: string;
  readonly t?: readonly string[];
  readonly d?: readonly string[];
}

/**
 * A change as messages of at most `max` bytes each. Every reference and digest stands alone, so they are
 * packed greedily; an item too large for one message (it cannot happen with registry names) turns the whole
 * change into "forget everything".
 */
export function encodeChange(origin: string, change: ManifestChange, max = MAX_PAYLOAD_BYTES): string[] {
  const base: Wire = change.kind === 'forgotten' ? { o: origin, k: 'f' } : { o: origin, k: 'r', u: change.upstream, p: change.repo };
  const items: ['t' | 'd', string][] = [
    ...(change.kind === 'references' ? change.references.map((r): ['t', string] => ['t', r]) : []),
    ...change.digests.map((d): ['d', string] => ['d', d]),
  ];
  const out: string[] = [];
  let t: string[] = [];
  let d: string[] = [];
  const render = (): string => JSON.stringify({ ...base, ...(t.length > 0 ? { t } : {}), ...(d.length > 0 ? { d } : {}) });
  for (const [field, value] of items) {
    (field === 't' ? t : d).push(value);
    if (Buffer.byteLength(render()) <= max) continue;
    (field === 't' ? t : d).pop();
    if (t.length === 0 && d.length === 0) return [JSON.stringify({ o: origin, k: 'a' } satisfies Wire)];
    out.push(render());
    t = field === 't' ? [value] : [];
    d = field === 'd' ? [value] : [];
    if (Buffer.byteLength(render()) > max) return [JSON.stringify({ o: origin, k: 'a' } satisfies Wire)];
  }
  if (t.length > 0 || d.length > 0) out.push(render());
  return out;
}

const strings = (x: unknown): x is string[] => Array.isArray(x) && x.every((s) => typeof s === 'string');

/** A message back into its origin and change ('everything': drop all memory); undefined for anything malformed. */
export function decodeChange(payload: string): { readonly origin: string; readonly change: ManifestChange | 'everything' } | undefined {
  let w: unknown;
  try {
    w = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (w === null || typeof w !== 'object') return undefined;
  const { o, k, u, p, t = [], d = [] } = w as Record<string, unknown>;
  if (typeof o !== 'string' || !strings(t) || !strings(d)) return undefined;
  if (k === 'a') return { origin: o, change: 'everything' };
  if (k === 'f') return { origin: o, change: { kind: 'forgotten', digests: d } };
  if (k === 'r' && typeof u === 'string' && typeof p === 'string') return { origin: o, change: { kind: 'references', upstream: u, repo: p, references: t, digests: d } };
  return undefined;
}

export interface InvalidationOptions {
  /** This replica's id (the leases' owner). */
  readonly id: string;
  readonly channel: ChangeChannel;
  readonly logger: Logger;
  /** How often the listening connection is pinged (and the ping's timeout): default 5 s. */
  readonly pingMs?: number;
  /** Backoff between attempts to listen again: default 100 ms, doubling up to 5 s. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
}

export class ClusterInvalidations {
  private readonly stop = new AbortController();
  private running: Promise<void> | undefined;
  private listening = false;
  private source: ChangeSource | undefined;
  /** Messages sent and received (tests, logs). */
  readonly counts = { sent: 0, received: 0, applied: 0, failedSends: 0, resyncs: 0 };

  constructor(private readonly opts: InvalidationOptions) {}

  /** Whether the listening connection is up now. */
  get connected(): boolean {
    return this.listening;
  }

  /**
   * Publishes the source's changes and applies the other replicas' to it. Resolves once listening, or after
   * a first failed attempt (it then goes on trying in the background; the memory stays dropped meanwhile).
   */
  start(source: ChangeSource): Promise<void> {
    this.source = source;
    source.onChange((change) => this.publish(change));
    let firstAttempt!: () => void;
    const attempted = new Promise<void>((r) => (firstAttempt = r));
    this.running = this.run(source, firstAttempt);
    return attempted;
  }

  private publish(change: ManifestChange): void {
    if (this.stop.signal.aborted) return;
    for (const payload of encodeChange(this.opts.id, change)) {
      this.counts.sent++;
      this.opts.channel.notify(INVALIDATION_CHANNEL, payload).catch((e: unknown) => {
        this.counts.failedSends++;
        // The change is in the shared index; the others see it at their tags' next revalidation (tagTtl).
        this.opts.logger.warn({ event: 'cluster-invalidation-unsent', err: String(e) }, 'cluster: could not tell the other replicas of a change (they see it within tagTtl)');
      });
    }
  }

  private receive(payload: string): void {
    const m = decodeChange(payload);
    if (m === undefined) {
      this.opts.logger.warn({ event: 'cluster-invalidation-malformed' }, 'cluster: ignored a malformed invalidation message');
      return;
    }
    if (m.origin === this.opts.id) return;
    this.counts.received++;
    if (m.change === 'everything') this.source?.dropMemory();
    else this.source?.applyChange(m.change);
    this.counts.applied++;
  }

  private async run(source: ChangeSource, firstAttempt: () => void): Promise<void> {
    const pingMs = this.opts.pingMs ?? 5000;
    const minMs = this.opts.retryMinMs ?? 100;
    const maxMs = this.opts.retryMaxMs ?? 5000;
    const signal = this.stop.signal;
    let delay = minMs;
    let lostAt: number | undefined;
    /** A failed attempt is logged once per outage. */
    let failureLogged = false;
    while (!signal.aborted) {
      let ch: NotificationChannel;
      try {
        ch = await this.opts.channel.listen(INVALIDATION_CHANNEL, (p) => this.receive(p), { applicationName: `relais-listen ${this.opts.id}`, timeoutMs: pingMs });
      } catch (e) {
        if (signal.aborted) break;
        // Blind: nothing remembered now may be trusted for long.
        source.dropMemory();
        lostAt ??= Date.now();
        if (!failureLogged) {
          failureLogged = true;
          this.opts.logger.warn({ event: 'cluster-listen-failed', err: String(e) }, 'cluster: cannot listen for the other replicas\' changes; in-memory tags and 404s are dropped until it can (retrying)');
        }
        firstAttempt();
        await sleep(delay, undefined, { signal }).catch(() => undefined);
        delay = Math.min(delay * 2, maxMs);
        continue;
      }
      if (signal.aborted) {
        await ch.close();
        break;
      }
      this.listening = true;
      delay = minMs;
      failureLogged = false;
      if (lostAt !== undefined) {
        // Listening again: whatever was remembered while blind goes, once more.
        const dropped = source.dropMemory();
        this.counts.resyncs++;
        this.opts.logger.warn(
          { event: 'cluster-resync', downMs: Date.now() - lostAt, droppedTags: dropped.tags, droppedNotFound: dropped.notFound },
          'cluster: listening to the other replicas again; in-memory tags, remembered 404s and prepared responses dropped (changes may have been missed)',
        );
        lostAt = undefined;
      }
      firstAttempt();
      // Until the connection is lost, a ping fails, or close(): whichever comes first.
      const watch = new AbortController();
      const stopWatching = (): void => watch.abort();
      signal.addEventListener('abort', stopWatching, { once: true });
      const pinging = (async () => {
        while (!watch.signal.aborted) {
          await sleep(pingMs, undefined, { signal: watch.signal });
          await ch.ping();
        }
      })();
      const aborted = new Promise<void>((r) => watch.signal.addEventListener('abort', () => r(), { once: true }));
      await Promise.race([ch.lost, pinging, aborted]).catch(() => undefined);
      watch.abort();
      signal.removeEventListener('abort', stopWatching);
      await pinging.catch(() => undefined);
      this.listening = false;
      await ch.close();
      if (signal.aborted) break;
      lostAt = Date.now();
      source.dropMemory();
      this.opts.logger.warn({ event: 'cluster-listen-lost' }, 'cluster: lost the connection listening to the other replicas; in-memory tags, remembered 404s and prepared responses dropped; listening again');
    }
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.running;
  }
}
