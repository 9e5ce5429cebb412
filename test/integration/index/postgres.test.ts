// The shared index suite against a real PostgreSQL, plus what only PostgreSQL has: replicas starting at
// once migrate the schema once, and a database newer than this relais is refused.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isRelaisError } from '../../../src/errors.js';
import { PG_MIGRATIONS, PostgresIndex } from '../../../src/index/postgres.js';
import { pushRandomImage } from '../../peers/images.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { startRegistry } from '../../peers/registry.js';
import { startRelais } from '../../peers/relais.js';
import { http, skopeoPull } from '../core/helpers.js';
import { registerIndexSuite } from './index-suite.js';

let peer: PostgresPeer | undefined;
let starting: Promise<PostgresPeer> | undefined;
const server = (): Promise<PostgresPeer> => {
  starting ??= startPostgres().then((p) => (peer = p));
  return starting;
};
after(async () => {
  await peer?.close();
});

registerIndexSuite('postgres', async () => {
  const pg = await server();
  const url = await pg.createDatabase('suite');
  return { open: () => PostgresIndex.open(url, { poolSize: 4 }), cleanup: () => Promise.resolve() };
});

describe('cache index: postgres migrations', () => {
  test('five replicas starting at once migrate once; schema_version records it', async () => {
    const pg = await server();
    const url = await pg.createDatabase('racing');
    const all = await Promise.all(Array.from({ length: 5 }, () => PostgresIndex.open(url, { poolSize: 2 })));
    try {
      const rows = await pg.query<{ version: number }>('racing', 'SELECT version FROM schema_version');
      assert.deepEqual(rows, [{ version: PG_MIGRATIONS.length }]);
      const tables = await pg.query<{ tablename: string }>('racing', "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
      assert.deepEqual(tables.map((t) => t.tablename), ['content', 'download_leases', 'manifest_refs', 'repo_content', 'schema_version', 'tags']);
    } finally {
      await Promise.all(all.map((i) => i.close()));
    }
  });

  test('a database migrated by a newer relais is refused with a clear message', async () => {
    const pg = await server();
    const url = await pg.createDatabase('future');
    await (await PostgresIndex.open(url)).close();
    await pg.query('future', 'UPDATE schema_version SET version = $1', [PG_MIGRATIONS.length + 1]);
    await assert.rejects(PostgresIndex.open(url), (e: unknown) => {
      assert.ok(isRelaisError(e), 'an error of the table');
      assert.equal(e.code, 'CONFIG_INVALID');
      assert.match(e.message, new RegExp(`version ${PG_MIGRATIONS.length + 1}, newer than this relais knows \\(${PG_MIGRATIONS.length}\\)`));
      assert.match(e.hint ?? '', /newer relais migrated this database/);
      return true;
    });
  });
});

test('relais serve with index.driver postgres: a pull is recorded in PostgreSQL; /readyz follows the database', async () => {
  const pg = await server();
  const url = await pg.createDatabase('serve');
  const upstream = await startRegistry();
  try {
    const image = await pushRandomImage(upstream.host, 'library/pgidx:v1', { layers: [200_000, 3000] });
    const relais = await startRelais({ upstreams: { 'docker.io': upstream.url }, config: { index: { driver: 'postgres', postgres: { url } } } });
    try {
      const pulled = await skopeoPull(relais.host, 'library/pgidx:v1');
      assert.equal(pulled.files.size, 3);
      const tags = await pg.query<{ digest: string }>('serve', "SELECT digest FROM tags WHERE upstream = 'docker.io' AND repo = 'library/pgidx' AND tag = 'v1'");
      assert.deepEqual(tags, [{ digest: image.manifestDigest }]);
      const blobs = await pg.query<{ digest: string; size: string }>('serve', 'SELECT digest, size FROM content WHERE media_type IS NULL ORDER BY digest');
      const want = [image.configDigest, ...image.layers.map((l) => l.digest)].sort();
      assert.deepEqual(blobs.map((b) => b.digest), want);
      assert.equal((await http(`${relais.url}/readyz`)).status, 200);
      // The database goes away: not ready (liveness unaffected).
      await pg.query('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'serve'");
      await pg.query('postgres', "ALTER DATABASE serve WITH ALLOW_CONNECTIONS false");
      assert.equal((await http(`${relais.url}/readyz`)).status, 503);
      assert.equal((await http(`${relais.url}/healthz`)).status, 200);
      await pg.query('postgres', "ALTER DATABASE serve WITH ALLOW_CONNECTIONS true");
      assert.equal((await http(`${relais.url}/readyz`)).status, 200);
    } finally {
      await relais.close();
    }
  } finally {
    await upstream.close();
  }
});
