// `relais ls` and `relais stats` read the index the config names (index.driver), through the same factory
// relais serve uses: on SQLite (the data directory) and on a real PostgreSQL. Before this, both opened
// dataDir/index.db directly and, under index.driver postgres, answered "no relais cache" for a full cache.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage } from '../../peers/images.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { startRegistry } from '../../peers/registry.js';
import { startRelais } from '../../peers/relais.js';
import { skopeoPull } from '../core/helpers.js';
import { relaisCli } from './helpers.js';

let pg: PostgresPeer | undefined;
after(async () => {
  await pg?.close();
});

interface LsRow {
  name: string;
  bytes: number;
  digest: string;
  upstream: string;
}

async function lsAndStatsAgreeWithTheIndex(index: Record<string, unknown>): Promise<void> {
  const upstream = await startRegistry();
  try {
    const one = await pushRandomImage(upstream.host, 'library/lsone:v1', { layers: [300_000, 20_000] });
    const two = await pushRandomImage(upstream.host, 'team/lstwo:v2', { layers: [150_000] });
    const relais = await startRelais({ upstreams: { 'docker.io': upstream.url }, config: { index } });
    try {
      assert.equal((await skopeoPull(relais.host, 'library/lsone:v1')).files.size, 3);
      assert.equal((await skopeoPull(relais.host, 'team/lstwo:v2')).files.size, 2);
      await upstream.settle();
      assert.equal(upstream.blobGets(one.layers[0]?.digest), 1, 'the upstream saw each blob once');
      await relais.instance.index.flush();
      const cfg = join(relais.dataDir, 'relais.yaml');
      await writeFile(cfg, `dataDir: ${relais.dataDir}\nindex: ${JSON.stringify(index)}\n`);

      const ls = await relaisCli(['ls', '--json', '--config', cfg]);
      assert.equal(ls.code, 0, ls.stderr);
      const rows = JSON.parse(ls.stdout) as LsRow[];
      const tags = await relais.instance.index.listAllTags();
      assert.equal(rows.length, tags.length);
      assert.deepEqual(rows.map((r) => r.name).sort(), ['docker.io/library/lsone:v1', 'docker.io/team/lstwo:v2']);
      const row1 = rows.find((r) => r.name === 'docker.io/library/lsone:v1');
      assert.equal(row1?.digest, one.manifestDigest);
      assert.equal(row1.bytes, one.totalBytes + one.manifest.byteLength);
      assert.equal(rows.find((r) => r.name === 'docker.io/team/lstwo:v2')?.digest, two.manifestDigest);

      const text = await relaisCli(['ls', '--config', cfg]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^IMAGE\s+SIZE\s+LAST USED\s+DIGEST/);
      assert.match(text.stdout, /^docker\.io\/team\/lstwo:v2\s+/m);

      const stats = await relaisCli(['stats', '--json', '--config', cfg]);
      assert.equal(stats.code, 0, stats.stderr);
      const s = JSON.parse(stats.stdout) as { usage: { bytes: number; tags: number; blobs: number }; images: number; upstreams: { upstream: string; repositories: number }[] };
      const usage = await relais.instance.index.usage();
      assert.equal(s.usage.bytes, usage.bytes);
      assert.equal(s.usage.blobs, 5);
      assert.equal(s.usage.tags, 2);
      assert.equal(s.images, 2);
      assert.deepEqual(s.upstreams.map((u) => [u.upstream, u.repositories]), [['docker.io', 2]]);
      const statsText = await relaisCli(['stats', '--config', cfg]);
      assert.match(statsText.stdout, /^items\s+5 blobs .* 2 tags in 2 repositories$/m);
    } finally {
      await relais.close();
    }
  } finally {
    await upstream.close();
  }
}

test('relais ls and stats on the SQLite index (index.driver sqlite)', async () => {
  await lsAndStatsAgreeWithTheIndex({ driver: 'sqlite' });
});

test('relais ls and stats on the PostgreSQL index (index.driver postgres): no SQLite file opened or created', async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase('lsstats');
  await lsAndStatsAgreeWithTheIndex({ driver: 'postgres', postgres: { url } });
  // What ls/stats read came from PostgreSQL: the cache there is what they reported.
  const tags = await pg.query<{ n: string }>('lsstats', 'SELECT count(*) AS n FROM tags');
  assert.equal(Number(tags[0]?.n), 2);
});

test('relais ls under index.driver postgres does not fall back to (or create) dataDir/index.db', async () => {
  pg ??= await startPostgres();
  const url = await pg.createDatabase('lsempty');
  const upstream = await startRegistry();
  const relais = await startRelais({ upstreams: { 'docker.io': upstream.url }, config: { index: { driver: 'postgres', postgres: { url } } } });
  try {
    const cfg = join(relais.dataDir, 'relais.yaml');
    await writeFile(cfg, `dataDir: ${relais.dataDir}\nindex: {driver: postgres, postgres: {url: "${url}"}}\n`);
    const ls = await relaisCli(['ls', '--config', cfg]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal(ls.stdout, 'the cache holds no images\n');
    assert.ok(!existsSync(join(relais.dataDir, 'index.db')), 'no SQLite index appeared in the data directory');
    // An unreachable database is an error with a hint, not an empty cache.
    const down = join(relais.dataDir, 'down.yaml');
    await writeFile(down, `dataDir: ${relais.dataDir}\nindex: {driver: postgres, postgres: {url: "postgres://relais@127.0.0.1:9/none"}}\n`);
    const bad = await relaisCli(['stats', '--config', down]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /cannot use the PostgreSQL index at 127\.0\.0\.1:9\/none/);
    assert.match(bad.stderr, /hint: /);
  } finally {
    await relais.close();
    await upstream.close();
  }
});
