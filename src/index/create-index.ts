// Builds the cache index a config asks for: SQLite in dataDir (one node) or PostgreSQL (shared by a cluster).
import { join } from 'node:path';
import type { IndexConfig } from '../config/schema.js';
import { errors } from '../errors.js';
import type { CacheIndex } from './cache-index.js';
import { guardPostgresOutages } from './outage.js';
// The PostgreSQL driver (pg) is loaded only when configured: a single node never pays for it.
import type { PostgresIndex } from './postgres.js';
import { SqliteIndex } from './sqlite.js';

export interface IndexSetup {
  readonly index: CacheIndex;
  /** Set for the PostgreSQL index (the cluster's leases share its pool). */
  readonly postgres: PostgresIndex | undefined;
  /** Readiness: the database answers. */
  ready(): Promise<boolean>;
}

export async function openIndex(cfg: IndexConfig, dataDir: string): Promise<IndexSetup> {
  if (cfg.driver === 'postgres') {
    const url = cfg.postgres?.url;
    if (url === undefined) throw errors.postgresUrlMissing();
    let index: PostgresIndex;
    try {
      const { PostgresIndex } = await import('./postgres.js');
      index = await PostgresIndex.open(url, { poolSize: cfg.postgres?.poolSize });
    } catch (e) {
      const where = (() => {
        try {
          const u = new URL(url);
          return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
        } catch {
          return 'the configured URL';
        }
      })();
      throw errors.postgresUnusable.with({ cause: e }, where, (e as Error).message);
    }
    // The index the core uses answers a database outage as 503 with Retry-After; readiness pings the pool itself.
    return { index: guardPostgresOutages(index), postgres: index, ready: () => index.ping() };
  }
  const index = new SqliteIndex(join(dataDir, 'index.db'));
  return { index, postgres: undefined, ready: () => Promise.resolve(index.db.open) };
}
