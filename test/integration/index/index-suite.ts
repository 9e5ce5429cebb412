// One test suite for every CacheIndex: registerIndexSuite(name, factory) adds the same tests for an index
// made by the factory (SQLite, PostgreSQL, ...). open() may be called more than once: every call opens
// another instance on the same database (a restart, or a second replica).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CacheIndex } from '../../../src/index/cache-index.js';

export interface IndexUnderTest {
  /** Opens (another) instance on the same database; the suite closes it. */
  open(): Promise<CacheIndex>;
  cleanup(): Promise<void>;
}

const dg = (n: number | string): string => `sha256:${String(n).padStart(64, '0')}`;

export function registerIndexSuite(name: string, factory: () => Promise<IndexUnderTest>): void {
  describe(`cache index: ${name}`, () => {
    let iut: IndexUnderTest;
    let ix: CacheIndex;
    const opened: CacheIndex[] = [];
    const open = async (): Promise<CacheIndex> => {
      const i = await iut.open();
      opened.push(i);
      return i;
    };

    before(async () => {
      iut = await factory();
      ix = await open();
    });
    after(async () => {
      for (const i of opened) await i.close();
      await iut.cleanup();
    });

    test('tags: a manifest fetched by tag records the tag; markTagChecked moves only checkedAt; delete', async () => {
      assert.equal(await ix.getTag('docker.io', 'library/a', 'v1'), undefined);
      const t0 = 1_790_000_000_000; // ms timestamps outgrow 32 bits
      await ix.putManifest({ upstream: 'docker.io', repo: 'library/a', digest: dg('a1'), size: 500, mediaType: 'application/vnd.oci.image.manifest.v1+json', references: [dg('c1'), dg('l1')], tag: 'v1', now: t0 });
      assert.deepEqual(await ix.getTag('docker.io', 'library/a', 'v1'), { digest: dg('a1'), fetchedAt: t0, checkedAt: t0 });
      await ix.markTagChecked('docker.io', 'library/a', 'v1', t0 + 5000);
      assert.deepEqual(await ix.getTag('docker.io', 'library/a', 'v1'), { digest: dg('a1'), fetchedAt: t0, checkedAt: t0 + 5000 });
      // Re-pointing the tag replaces digest and both times.
      await ix.putManifest({ upstream: 'docker.io', repo: 'library/a', digest: dg('a2'), size: 600, mediaType: 'application/vnd.oci.image.manifest.v1+json', references: [], tag: 'v1', now: t0 + 9000 });
      assert.deepEqual(await ix.getTag('docker.io', 'library/a', 'v1'), { digest: dg('a2'), fetchedAt: t0 + 9000, checkedAt: t0 + 9000 });
      for (const tag of ['v10', 'B', 'a', 'v2']) {
        await ix.putManifest({ upstream: 'docker.io', repo: 'library/a', digest: dg('a2'), size: 600, mediaType: 'application/vnd.oci.image.manifest.v1+json', references: [], tag, now: t0 });
      }
      assert.deepEqual(await ix.listTags('docker.io', 'library/a'), ['B', 'a', 'v1', 'v10', 'v2'], 'byte order');
      assert.deepEqual(await ix.listTags('ghcr.io', 'library/a'), [], 'tags are per upstream');
      await ix.deleteTag('docker.io', 'library/a', 'v1');
      assert.equal(await ix.getTag('docker.io', 'library/a', 'v1'), undefined);
      assert.deepEqual(await ix.listTags('docker.io', 'library/a'), ['B', 'a', 'v10', 'v2']);
    });

    test('manifests link themselves and their references to the repository; refs are recorded', async () => {
      const now = 1_790_000_100_000;
      await ix.putManifest({ upstream: 'ghcr.io', repo: 'org/app', digest: dg('m1'), size: 900, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', references: [dg('cfg'), dg('L1'), dg('L1')], now });
      const m = await ix.getContent(dg('m1'));
      assert.deepEqual(m, { digest: dg('m1'), size: 900, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', createdAt: now, lastAccess: now });
      for (const d of [dg('m1'), dg('cfg'), dg('L1')]) assert.equal(await ix.isLinked('ghcr.io', 'org/app', d), true, d);
      assert.equal(await ix.isLinked('ghcr.io', 'org/other', dg('m1')), false, 'another repository');
      assert.equal(await ix.isLinked('docker.io', 'org/app', dg('m1')), false, 'another upstream');
      assert.equal(await ix.getTag('ghcr.io', 'org/app', 'latest'), undefined, 'by digest: no tag');
      const refs = (await ix.listReferences()).filter((r) => r.manifest === dg('m1')).map((r) => r.child).sort();
      assert.deepEqual(refs, [dg('L1'), dg('cfg')].sort());
      await ix.linkContent('ghcr.io', 'org/other', [dg('m1'), dg('m1')]);
      await ix.linkContent('ghcr.io', 'org/other', [dg('m1')]);
      await ix.linkContent('ghcr.io', 'org/other', []);
      assert.equal(await ix.isLinked('ghcr.io', 'org/other', dg('m1')), true);
      assert.equal((await ix.listLinks()).filter((l) => l.repo === 'org/other').length, 1);
    });

    test('blobs: sizes past 4 GiB, createdAt kept on re-put, a manifest keeps its media type', async () => {
      const big = 5 * 1024 * 1024 * 1024 + 7;
      await ix.putBlob(dg('b1'), big, 1_790_000_200_000);
      assert.deepEqual(await ix.getContent(dg('b1')), { digest: dg('b1'), size: big, mediaType: undefined, createdAt: 1_790_000_200_000, lastAccess: 1_790_000_200_000 });
      await ix.putBlob(dg('b1'), big, 1_790_000_300_000);
      const again = await ix.getContent(dg('b1'));
      assert.equal(again?.createdAt, 1_790_000_200_000);
      assert.equal(again?.lastAccess, 1_790_000_300_000);
      await ix.putManifest({ upstream: 'docker.io', repo: 'x/y', digest: dg('mm'), size: 10, mediaType: 'application/vnd.oci.image.index.v1+json', references: [], now: 1 });
      await ix.putBlob(dg('mm'), 10, 2);
      assert.equal((await ix.getContent(dg('mm')))?.mediaType, 'application/vnd.oci.image.index.v1+json');
      assert.equal(await ix.getContent(dg('nope')), undefined);
    });

    test('touch is batched until flush and never moves last access backwards', async () => {
      await ix.putBlob(dg('t1'), 1, 1_000);
      ix.touch(dg('t1'), 5_000);
      ix.touch(dg('not-there'), 9_000);
      await ix.flush();
      assert.equal((await ix.getContent(dg('t1')))?.lastAccess, 5_000);
      ix.touch(dg('t1'), 2_000);
      await ix.flush();
      assert.equal((await ix.getContent(dg('t1')))?.lastAccess, 5_000, 'an older touch does not win');
      assert.equal(await ix.getContent(dg('not-there')), undefined, 'touch creates nothing');
    });

    test('usage totals and whole-table reads', async () => {
      const u = await ix.usage();
      const all = await ix.listContent();
      const blobs = all.filter((c) => c.mediaType === undefined);
      const manifests = all.filter((c) => c.mediaType !== undefined);
      assert.ok(blobs.length >= 2 && manifests.length >= 3);
      assert.equal(u.blobs, blobs.length);
      assert.equal(u.manifests, manifests.length);
      assert.equal(u.blobBytes, blobs.reduce((s, c) => s + c.size, 0));
      assert.equal(u.manifestBytes, manifests.reduce((s, c) => s + c.size, 0));
      assert.equal(u.bytes, u.blobBytes + u.manifestBytes);
      const tags = await ix.listAllTags();
      assert.equal(u.tags, tags.length);
      assert.equal(u.repositories, new Set(tags.map((t) => `${t.upstream}/${t.repo}`)).size);
      const keys = tags.map((t) => `${t.upstream}\0${t.repo}\0${t.tag}`);
      assert.deepEqual(keys, [...keys].sort(), 'sorted by upstream, repo, tag');
    });

    test('deleteContent forgets rows, references both ways, links, tags pointing to it, and pending touches', async () => {
      const now = 1_790_000_400_000;
      await ix.putManifest({ upstream: 'docker.io', repo: 'del/me', digest: dg('dm'), size: 50, mediaType: 'application/vnd.oci.image.manifest.v1+json', references: [dg('dl')], tag: 'x', now });
      await ix.putManifest({ upstream: 'docker.io', repo: 'del/me', digest: dg('parent'), size: 50, mediaType: 'application/vnd.oci.image.index.v1+json', references: [dg('dm')], now });
      await ix.putBlob(dg('dl'), 100, now);
      ix.touch(dg('dm'), now + 1);
      await ix.deleteContent([dg('dm'), dg('dl')]);
      await ix.flush();
      assert.equal(await ix.getContent(dg('dm')), undefined);
      assert.equal(await ix.getContent(dg('dl')), undefined);
      assert.equal(await ix.getTag('docker.io', 'del/me', 'x'), undefined);
      assert.equal(await ix.isLinked('docker.io', 'del/me', dg('dm')), false);
      const refs = await ix.listReferences();
      assert.ok(!refs.some((r) => [dg('dm'), dg('dl')].includes(r.manifest) || [dg('dm'), dg('dl')].includes(r.child)));
      assert.ok(await ix.getContent(dg('parent')), 'the parent stays');
      await ix.deleteContent([]);
    });

    test('a second instance on the same database sees the same data, and concurrent writers do not conflict', async () => {
      const other = await open();
      assert.equal((await other.getContent(dg('b1')))?.size, 5 * 1024 * 1024 * 1024 + 7);
      // Two "replicas" store manifests sharing layers, at once, in opposite orders.
      const layers = Array.from({ length: 30 }, (_, i) => dg(`shared${i}`));
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 === 0 ? ix : other).putManifest({
            upstream: 'docker.io',
            repo: 'con/current',
            digest: dg(`cm${i}`),
            size: 100 + i,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            references: i % 2 === 0 ? layers : [...layers].reverse(),
            tag: `t${i % 3}`,
            now: 1_790_000_500_000 + i,
          }),
        ),
      );
      assert.equal((await ix.listLinks()).filter((l) => l.repo === 'con/current').length, 50);
      assert.deepEqual(await other.listTags('docker.io', 'con/current'), ['t0', 't1', 't2']);
    });

    test('a reopened index keeps everything (migrations run once)', async () => {
      await ix.flush();
      const reopened = await open();
      assert.deepEqual(await reopened.getTag('docker.io', 'library/a', 'v2'), await ix.getTag('docker.io', 'library/a', 'v2'));
      assert.deepEqual(await reopened.usage(), await ix.usage());
    });
  });
}
