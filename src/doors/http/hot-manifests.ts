// Ready-made responses for the hottest requests a cache gets: a manifest by tag that is fresh in memory.
// CI fleets and pollers ask for the same few tags thousands of times a minute; answering those from a
// prepared header block and body, before routing, lookup and access checks run, is what lets one Node
// process answer them at the rate of a bare HTTP server. An entry is only ever served until its tag's
// freshness ends (then the full path revalidates it), is dropped when eviction or gc forgets its manifest
// or a push or DELETE moves its tag (through any replica of a cluster),
// and is only made when every client may pull anonymously (no per-request access decision to skip).
import type { FastAnswer } from './context.js';

export interface HotManifest {
  /** The manifest's digest (to drop the entry when the manifest is forgotten, and for last-access times). */
  readonly digest: string;
  readonly upstream: string;
  /** `upstream/repo:tag` (the status page's top images). */
  readonly image?: string | undefined;
  /** ms since the epoch: served from here strictly before this time only. */
  readonly freshUntil: number;
  /** The response headers as a flat [name, value, name, value, ...] list (res.writeHead's raw form). */
  readonly headers: readonly string[];
  readonly body: Buffer;
  /** What the server reports for a GET and a HEAD answered from here (made once, not per request). */
  readonly answers: { readonly get: FastAnswer; readonly head: FastAnswer };
}

/** A prepared response from what the full path just answered. */
export function prepare(e: Omit<HotManifest, 'answers'>): HotManifest {
  return {
    ...e,
    answers: {
      get: { upstream: e.upstream, result: 'hit', kind: 'manifest', image: e.image, bytes: e.body.byteLength },
      head: { upstream: e.upstream, result: 'hit', kind: 'manifest', image: e.image, bytes: 0 },
    },
  };
}

/** Bounded map from request URL to a prepared response; the least recently added entries go first. */
export class HotManifests {
  private readonly map = new Map<string, HotManifest>();

  constructor(private readonly maxEntries = 1024) {}

  get size(): number {
    return this.map.size;
  }

  /** The prepared response for this URL, if there is one and it is still fresh at `now`. */
  get(url: string, now: number): HotManifest | undefined {
    const e = this.map.get(url);
    if (e === undefined) return undefined;
    if (now >= e.freshUntil) {
      this.map.delete(url);
      return undefined;
    }
    return e;
  }

  set(url: string, e: HotManifest): void {
    this.map.delete(url);
    this.map.set(url, e);
    if (this.map.size > this.maxEntries) {
      const oldest = this.map.keys().next();
      if (oldest.done !== true) this.map.delete(oldest.value);
    }
  }

  /** Drops every entry serving one of these manifests (eviction, gc, retention, pushes), or every entry ('all'). */
  forget(digests: ReadonlySet<string> | 'all'): void {
    if (digests === 'all') {
      this.map.clear();
      return;
    }
    for (const [url, e] of this.map) if (digests.has(e.digest)) this.map.delete(url);
  }
}
