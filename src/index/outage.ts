// PostgreSQL down: which failures of the index mean "the database is not there (now)". Classified here, at
// the index boundary, so that a blob or manifest request answers 503 INDEX unavailable with Retry-After
// (errors.indexUnavailable) instead of 500 INTERNAL. A query error (bad SQL, a constraint) is not an outage.
import { describeCause, errors, type RelaisError } from '../errors.js';
import { errorCodes, guardOutages, NETWORK_DOWN_CODES } from '../outage.js';
import type { CacheIndex } from './cache-index.js';

/**
 * SQLSTATE classes and codes of a database that is going away or refusing connections: 08 connection
 * exception, 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now (starting up), 53300 too
 * many connections.
 */
const SQLSTATE_DOWN = new Set(['57P01', '57P02', '57P03', '53300']);
/**
 * What node-postgres says without a code: the pool's connect timeout, and a connection that died under a
 * query. These texts are pg's own (lib/client.js, pg-pool), matched here and nowhere else.
 */
const PG_DOWN_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error and is not queryable|Connection ended unexpectedly)/;

export function isPostgresDown(e: unknown): boolean {
  for (const code of errorCodes(e)) {
    if (NETWORK_DOWN_CODES.has(code) || SQLSTATE_DOWN.has(code) || /^08[0-9A-Z]{3}$/.test(code)) return true;
  }
  let cur: unknown = e;
  for (let depth = 0; depth < 4 && cur instanceof Error; depth++) {
    if (PG_DOWN_MESSAGES.test(cur.message)) return true;
    cur = cur.cause;
  }
  return false;
}

export function indexOutageError(e: unknown): RelaisError {
  return errors.indexUnavailable(describeCause(e) || 'no answer', e);
}

/** The PostgreSQL index, its outages answered as 503 with Retry-After. */
export function guardPostgresOutages<T extends CacheIndex>(index: T): T {
  return guardOutages(index, isPostgresDown, indexOutageError);
}
