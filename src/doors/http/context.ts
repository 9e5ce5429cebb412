// The types the HTTP server and its handlers share (a leaf of src/doors/http: server.ts and handlers.ts both
// import it, neither imports the other).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CacheResult, RequestKind, RequestLabels } from '../../types.js';
import type { Principal } from './access.js';

/** What a handler tells the request log and the metrics, and what the access guard learned. */
export interface RequestContext extends RequestLabels {
  /** Who is asking (set by the access guard before any handler runs). */
  principal?: Principal;
  /** Body bytes the handler sent past Node's socket accounting (sendfile). */
  zeroCopyBytes?: number;
}

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => Promise<boolean>;

/** What the fast path answered, for the request log and metrics. */
export interface FastAnswer {
  readonly upstream: string;
  readonly result: CacheResult;
  readonly kind: RequestKind;
  /** The image pulled (a manifest by tag), for the status page's top images. */
  readonly image?: string | undefined;
  /** Body bytes sent. */
  readonly bytes: number;
}
