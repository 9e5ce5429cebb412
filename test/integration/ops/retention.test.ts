// Tag retention on relais's own cache (`relais gc --policy FILE [--apply]`), through the real CLI, with a
// real relais in front of a real distribution: images pulled through relais by skopeo (three builds of a
// branch sharing a base layer, two tags of one digest, two multi-arch indexes, a tag on a child of an
// index), then the plan (dry run: the index rows and the files stay identical; the upstream sees nothing),
// then --apply with relais stopped: the deleted tags are gone from the index, exactly the content only
// they held is gone from disk (the freed bytes reported are the bytes gone), shared blobs and manifests
// stay, and with the upstream STOPPED the kept tags still pull through the restarted relais, same digests.
// Then: --apply while relais serves (grace period), the CLI's mistakes, and --age created.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { testClock } from '../../peers/clock.js';
import { hostArchitecture, pushIndex, pushBuiltImage, pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { removeDir, runOk, tempDir } from '../../peers/proc.js';
import { startRegistry } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { SqliteIndex } from '../../../src/index/sqlite.js';
import { hashTree, isoDaysAgo, pushImage } from '../cleanup/fixture.js';
import { ACCEPT_ALL, http, sha256 } from '../core/helpers.js';
import { diskBytes, relaisCli } from './helpers.js';

const REPO = 'team/app';
const NAME = `docker.io/${REPO}`;

const blobFile = (dataDir: string, digest: string): string => {
  const hex = digest.slice(digest.indexOf(':') + 1);
  return join(dataDir, 'storage', 'blobs', 'sha256', hex.slice(0, 2), hex);
};

/** Every digest an image holds: its manifest, config and layers. */
const imageDigests = (i: BuiltImage): string[] => [i.manifestDigest, i.configDigest, ...i.layers.map((l) => l.digest)];

/**
 * `skopeo copy [--all] docker://HOST/REF dir:` (every platform of an index with --all): the digests of what it
 * wrote (blobs, and the child manifests of an index), each checked against its file name.
 */
async function skopeoPull(host: string, ref: string, all = false): Promise<{ files: Map<string, number> }> {
  const dir = await tempDir('gc-retention-pull');
  try {
    await runOk('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', ...(all ? ['--all'] : []), `docker://${host}/${ref}`, `dir:${dir}`], { timeoutMs: 120_000 });
    const files = new Map<string, number>();
    for (const f of await readdir(dir)) {
      if (f === 'version' || f === 'manifest.json') continue;
      const data = await readFile(join(dir, f));
      const digest = sha256(data);
      assert.equal(`sha256:${f.replace(/\.manifest\.json$/, '')}`, digest, `skopeo wrote ${f} with other content`);
      files.set(digest, data.byteLength);
    }
    return { files };
  } finally {
    await removeDir(dir);
  }
}

async function indexState(relais: RelaisPeer): Promise<string> {
  const idx = relais.instance.index;
  await idx.flush();
  const tags = await idx.listAllTags();
  const content = (await idx.listContent()).map((c) => ({ digest: c.digest, size: c.size, mediaType: c.mediaType ?? null }));
  const refs = await idx.listReferences();
  return JSON.stringify({ tags, content: content.sort((a, b) => (a.digest < b.digest ? -1 : 1)), refs: refs.map((r) => `${r.manifest}>${r.child}`).sort() });
}

interface JsonRun {
  retention: {
    mode: string;
    repositories: { repo: string; aborted: string | null; entries: { tag: string; action: string; rule: string; sharedWith?: string[] }[] }[];
    deleteTags: { upstream: string; repo: string; tag: string; digest: string }[];
    wouldFree: { digests: string[]; manifests: number; blobs: number; bytes: number };
    applied: null | { deletedTags: unknown[]; freedManifests: number; freedBlobs: number; freedBytes: number; keptShared: number };
  };
  gc: null | { freedBytes: number; orphanFiles: unknown[] };
}

void test('relais gc --policy: plan with the cleanup planner, dry run changes nothing, --apply frees only what deleted tags held', async (t) => {
  const upstream = await startRegistry();
  t.after(() => upstream.close());
  const work = await tempDir('gc-retention');
  t.after(() => removeDir(work));
  let relais = await startRelais({ upstreams: { 'docker.io': upstream.url } });
  t.after(() => relais.close());
  const KB = 1024;

  // --- the upstream: three builds of one branch (one base layer), a release tagged twice, two multi-arch
  // indexes (the newer one reuses a layer of build 2), a tag on the host platform child of the older index.
  const f1 = await pushRandomImage(upstream.host, `${REPO}:feature-x-aaaa0001`, { layers: [200 * KB, 300 * KB] });
  const base = f1.layers[0];
  assert.ok(base);
  const f2 = await pushRandomImage(upstream.host, `${REPO}:feature-x-aaaa0002`, { layers: [{ reuse: base }, 310 * KB] });
  const f3 = await pushRandomImage(upstream.host, `${REPO}:feature-x-aaaa0003`, { layers: [{ reuse: base }, 320 * KB] });
  const f2own = f2.layers[1];
  assert.ok(f2own);
  const rel = await pushRandomImage(upstream.host, `${REPO}:v1.0.0`, { layers: [150 * KB] });
  await pushBuiltImage(rel, upstream.host, `${REPO}:rc-1`);
  const arch = hostArchitecture();
  const other = arch === 'arm64' ? 'amd64' : 'arm64';
  const i1 = await pushIndex(upstream.host, `${REPO}:multi-bbbb0001`, [
    { os: 'linux', architecture: arch, layers: [120 * KB] },
    { os: 'linux', architecture: other, layers: [130 * KB] },
  ]);
  const i2 = await pushIndex(upstream.host, `${REPO}:multi-bbbb0002`, [
    { os: 'linux', architecture: arch, layers: [140 * KB] },
    { os: 'linux', architecture: other, layers: [{ reuse: f2own }] },
  ]);
  const [i1host, i1other] = i1.children;
  assert.ok(i1host && i1other);
  await pushBuiltImage(i1host, upstream.host, `${REPO}:host-only`);

  // --- pulled through relais, one after the other (the order is the age the planner sees).
  for (const tag of ['feature-x-aaaa0001', 'feature-x-aaaa0002', 'rc-1', 'v1.0.0', 'multi-bbbb0001', 'host-only', 'feature-x-aaaa0003', 'multi-bbbb0002']) {
    await skopeoPull(relais.host, `${REPO}:${tag}`, tag.startsWith('multi-'));
    await new Promise((r) => setTimeout(r, 5)); // distinct fetch times
  }
  await relais.instance.blobs.settle(); // stored, not only delivered

  const policy = join(work, 'retention.yaml');
  await writeFile(
    policy,
    `# relais cache retention (the relais cleanup policy format)
rules:
  - name: release candidates
    action: delete
    tags: ['^rc-']
  - name: newest per branch
    action: keep
    newest: 1
  - name: the rest
    action: delete
`,
  );
  const expected: Record<string, string> = {
    'feature-x-aaaa0001': 'DELETE the rest',
    'feature-x-aaaa0002': 'DELETE the rest',
    'feature-x-aaaa0003': 'KEEP newest per branch',
    'rc-1': 'DELETE release candidates',
    'v1.0.0': 'KEEP protected: semver',
    'multi-bbbb0001': 'DELETE the rest',
    'multi-bbbb0002': 'KEEP newest per branch',
    'host-only': 'KEEP newest per branch',
  };
  // Content only the deleted tags hold: builds 1 and 2 but the base layer (build 3 keeps it) and build 2's
  // own layer (the kept index reuses it); the older index and its non-host child, not the host child
  // (host-only keeps it). The release (rc-1 shares v1.0.0's digest) loses nothing.
  const mustGo = [
    f1.manifestDigest,
    f1.configDigest,
    f1.layers[1]?.digest ?? '',
    f2.manifestDigest,
    f2.configDigest,
    i1.indexDigest,
    ...imageDigests(i1other),
  ].sort();
  const mustStay = [...new Set([...imageDigests(f3), ...imageDigests(rel), ...imageDigests(i1host), i2.indexDigest, ...i2.children.flatMap(imageDigests)])];
  assert.ok(mustStay.includes(base.digest) && mustStay.includes(f2own.digest));
  for (const d of [...mustGo, ...mustStay]) assert.ok(existsSync(blobFile(relais.dataDir, d)), `cached before gc: ${d}`);

  // --- dry run, while relais serves: the plan, and not a byte changed.
  const blobsDir = join(relais.dataDir, 'storage', 'blobs');
  const filesBefore = await hashTree(blobsDir);
  const rowsBefore = await indexState(relais);
  upstream.clearLog();
  const dry = await relaisCli(['gc', '--data', relais.dataDir, '--policy', policy, '--age', 'cached']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^relais \(pid \d+\) serves this directory/m);
  assert.match(dry.stdout, new RegExp(`^${NAME}: 8 tags, keep 4, delete 4, then 4 untagged manifests by digest$`, 'm'));
  for (const [tag, want] of Object.entries(expected)) {
    const line = dry.stdout.split('\n').find((l) => l.startsWith(`${tag} `));
    assert.ok(line, `plan line for ${tag}:\n${dry.stdout}`);
    const [action, ...rule] = want.split(' ');
    assert.match(line, new RegExp(`\\s${action ?? ''}\\s+${rule.join(' ').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), line);
  }
  assert.match(dry.stdout, /^rc-1 .*DELETE\s+release candidates \(untag only: image kept by v1\.0\.0\)$/m);
  const mustGoBytes = await Promise.all(mustGo.map(async (d) => (await relais.instance.index.getContent(d))?.size ?? NaN));
  const goBytes = mustGoBytes.reduce((a, b) => a + b, 0);
  assert.ok(Number.isFinite(goBytes));
  assert.match(dry.stdout, /^cache: would delete 4 cached tags in 1 repository, freeing 4 manifests and 5 blobs \(/m);
  assert.match(dry.stderr, /dry run: nothing was deleted/);
  const dryJson = await relaisCli(['gc', '--data', relais.dataDir, '--policy', policy, '--json', '--age', 'cached']);
  assert.equal(dryJson.code, 0, dryJson.stderr);
  const planned = JSON.parse(dryJson.stdout) as JsonRun;
  assert.equal(planned.retention.mode, 'plan');
  assert.equal(planned.retention.applied, null);
  assert.equal(planned.gc, null);
  assert.deepEqual(planned.retention.wouldFree.digests, mustGo);
  assert.equal(planned.retention.wouldFree.bytes, goBytes);
  assert.deepEqual(planned.retention.deleteTags.map((d) => d.tag).sort(), ['feature-x-aaaa0001', 'feature-x-aaaa0002', 'multi-bbbb0001', 'rc-1']);
  assert.equal((await hashTree(blobsDir)).hash, filesBefore.hash, 'the dry run changed no file');
  assert.equal(await indexState(relais), rowsBefore, 'the dry run changed no index row');
  await upstream.settle();
  assert.equal(upstream.accessLog().length, 0, 'gc never talks to the upstream');

  // --- apply, relais stopped (nothing can be in use: no grace period).
  await relais.stop();
  const diskBefore = await diskBytes(blobsDir);
  const applied = await relaisCli(['gc', '--data', relais.dataDir, '--policy', policy, '--apply', '--json', '--age', 'cached']);
  assert.equal(applied.code, 0, applied.stderr);
  const done = JSON.parse(applied.stdout) as JsonRun;
  assert.equal(done.retention.mode, 'apply');
  const a = done.retention.applied;
  assert.ok(a);
  assert.equal(a.deletedTags.length, 4);
  assert.equal(a.freedManifests, 4);
  assert.equal(a.freedBlobs, 5);
  assert.equal(a.freedBytes, goBytes, 'freed bytes reported = the sizes of what only deleted tags held');
  const diskAfter = await diskBytes(blobsDir);
  assert.equal(diskBefore - diskAfter, a.freedBytes, 'and that many bytes left the disk');
  assert.ok(done.gc, 'the usual gc ran after the retention');
  assert.equal(done.gc.orphanFiles.length, 0);
  for (const d of mustGo) assert.ok(!existsSync(blobFile(relais.dataDir, d)), `freed: ${d}`);
  for (const d of mustStay) assert.ok(existsSync(blobFile(relais.dataDir, d)), `kept (shared with a kept tag or index): ${d}`);

  // --- the upstream stopped, relais restarted: kept tags come from the cache, digests unchanged.
  await upstream.stop();
  relais = await relais.restart();
  const tags = (await relais.instance.index.listAllTags()).map((x) => x.tag).sort();
  assert.deepEqual(tags, ['feature-x-aaaa0003', 'host-only', 'multi-bbbb0002', 'v1.0.0']);
  for (const d of mustGo) assert.equal(await relais.instance.index.getContent(d), undefined, `index forgot ${d}`);
  const keptDigest: Record<string, string> = { 'feature-x-aaaa0003': f3.manifestDigest, 'v1.0.0': rel.manifestDigest, 'multi-bbbb0002': i2.indexDigest, 'host-only': i1host.manifestDigest };
  for (const [tag, digest] of Object.entries(keptDigest)) {
    const r = await http(`${relais.url}/v2/${REPO}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL } });
    assert.equal(r.status, 200, `${tag}: ${r.body.toString('utf8')}`);
    assert.equal(sha256(r.body), digest, `${tag} still points to the same image`);
    const pulled = await skopeoPull(relais.host, `${REPO}:${tag}`, tag.startsWith('multi-'));
    assert.ok(pulled.files.size > 0);
  }
  const f3pull = await skopeoPull(relais.host, `${REPO}:feature-x-aaaa0003`);
  assert.equal(f3pull.files.get(base.digest), base.size, 'the base layer shared with deleted builds is still served');
  for (const tag of ['feature-x-aaaa0001', 'multi-bbbb0001']) {
    const r = await http(`${relais.url}/v2/${REPO}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL } });
    assert.notEqual(r.status, 200, `${tag} was deleted from the cache and the upstream is down`);
  }
});

void test('relais gc --apply while relais serves: recently used content stays (grace), --grace 0 frees it, a safety limit stops a plan', async (t) => {
  const upstream = await startRegistry();
  t.after(() => upstream.close());
  // relais's clock runs 1.1 s behind the CLI's: the tags it records are older than 1s for the CLI at once.
  const clock = testClock();
  clock.advance(-1100);
  const relais = await startRelais({ upstreams: { 'docker.io': upstream.url }, clock: () => clock.now() });
  t.after(() => relais.close());
  const KB = 1024;
  const y1 = await pushRandomImage(upstream.host, `${REPO}:y-cccc0001`, { layers: [100 * KB] });
  const y2 = await pushRandomImage(upstream.host, `${REPO}:y-cccc0002`, { layers: [110 * KB] });
  const y3 = await pushRandomImage(upstream.host, `${REPO}:y-cccc0003`, { layers: [120 * KB] });
  for (const tag of ['y-cccc0001', 'y-cccc0002', 'y-cccc0003']) {
    await skopeoPull(relais.host, `${REPO}:${tag}`);
    clock.advance(5); // distinct fetch times
  }
  await relais.instance.blobs.settle(); // stored, not only delivered
  const blobsDir = join(relais.dataDir, 'storage', 'blobs');
  const tagsNow = async (): Promise<string[]> => (await relais.instance.index.listAllTags()).map((x) => x.tag).sort();

  // Every tag of the family older than 1s would go: 2 of 3 (one stays: minKeep) is over the 50% limit.
  const before = await hashTree(blobsDir);
  const limited = await relaisCli(['gc', '--data', relais.dataDir, '--older-than', '1s', '--apply', '--age', 'cached']);
  assert.equal(limited.code, 2, limited.stdout + limited.stderr);
  assert.match(limited.stdout, new RegExp(`^ABORTED: would delete 2 of 3 tags \\(66\\.7%\\), more than the limit of 50%; nothing will be deleted in ${NAME}`, 'm'));
  assert.deepEqual(await tagsNow(), ['y-cccc0001', 'y-cccc0002', 'y-cccc0003']);
  assert.equal((await hashTree(blobsDir)).hash, before.hash);

  // Live relais, default grace (15m): the tag goes, its content (just pulled) stays.
  const graced = await relaisCli(['gc', '--data', relais.dataDir, '--keep-last', '2', '--apply', '--age', 'cached']);
  assert.equal(graced.code, 0, graced.stderr);
  assert.match(graced.stdout, /^relais \(pid \d+\) serves this directory: content used within 15m is left alone$/m);
  assert.match(graced.stdout, /^cache: deleted 1 cached tag; freed 0 manifests and 0 blobs, 0 B on disk; 3 items they reached stay /m);
  assert.deepEqual(await tagsNow(), ['y-cccc0002', 'y-cccc0003']);
  for (const d of imageDigests(y1)) assert.ok(existsSync(blobFile(relais.dataDir, d)), `used within the grace period, kept: ${d}`);

  // --grace 0: freed at once, even while relais serves.
  const now = await relaisCli(['gc', '--data', relais.dataDir, '--keep-last', '1', '--apply', '--grace', '0', '--json', '--age', 'cached']);
  assert.equal(now.code, 0, now.stderr);
  const r = (JSON.parse(now.stdout) as JsonRun).retention.applied;
  assert.ok(r);
  assert.equal(r.deletedTags.length, 1);
  const y2Bytes = y2.manifest.length + y2.config.length + y2.layers.reduce((n, l) => n + l.size, 0);
  assert.equal(r.freedBytes, y2Bytes);
  for (const d of imageDigests(y2)) assert.ok(!existsSync(blobFile(relais.dataDir, d)), `freed: ${d}`);
  for (const d of imageDigests(y3)) assert.ok(existsSync(blobFile(relais.dataDir, d)), `kept: ${d}`);
  assert.deepEqual(await tagsNow(), ['y-cccc0003']);

  // The serving relais: the freed layer comes from the upstream again, the kept image from the cache.
  upstream.clearLog();
  const again = await skopeoPull(relais.host, `${REPO}:y-cccc0002`);
  const y3pull = await skopeoPull(relais.host, `${REPO}:y-cccc0003`);
  const y2layer = y2.layers[0];
  const y3layer = y3.layers[0];
  assert.ok(y2layer && y3layer);
  assert.equal(again.files.get(y2layer.digest), y2layer.size);
  assert.equal(y3pull.files.get(y3layer.digest), y3layer.size);
  await upstream.settle();
  assert.equal(upstream.blobGets(y2layer.digest), 1, 'the freed layer was fetched again');
  assert.equal(upstream.blobGets(y3layer.digest), 0, 'the kept layer came from the cache');
});

void test('relais gc retention mistakes: a message naming the problem, a hint, no stack trace, exit 1; --help lists the flags', async (t) => {
  const dir = await tempDir('gc-retention-cli');
  t.after(() => removeDir(dir));
  await new SqliteIndex(join(dir, 'index.db')).close();
  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, 'rules:\n  - action: delete\n    olderThan: 30 dayz\n');
  const cases: [string[], RegExp][] = [
    [['--apply'], /these options need a retention policy[\s\S]*hint: add --policy FILE/],
    [['--protect', '^v'], /these options need a retention policy/],
    [['--age', 'created'], /these options need a retention policy/],
    [['--keep-last', '1', '--age', 'built'], /argument 'built' is invalid/],
    [['--keep-last', '2', '--dry-run', '--apply'], /--dry-run and --apply contradict each other/],
    [['--policy', join(dir, 'missing.yaml')], /missing\.yaml: cannot read the policy file \(ENOENT\)/],
    [['--policy', bad], /bad\.yaml: invalid policy: rules\[0\]\.olderThan: invalid duration "30 dayz"/],
    [['--keep-last', '0'], /at least 1/],
    [['--keep-last', '1', '--max-delete-share', '2'], /between 0 and 1/],
    [['--live-branches', 'gitlab'], /cannot ask GitLab for live branches/],
    [['--keep-last', '1', '--repo', 'nope/none'], /no cached tags in nope\/none[\s\S]*hint: relais ls/],
  ];
  for (const [args, re] of cases) {
    const r = await relaisCli(['gc', '--data', dir, ...args]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at .*\.js:\d+/, `${args.join(' ')}: no stack trace`);
  }
  const empty = await relaisCli(['gc', '--data', dir, '--keep-last', '1', '--max-delete-share', '100%']);
  assert.equal(empty.code, 0, empty.stderr);
  assert.match(empty.stdout, /^cache: would delete 0 cached tags in 0 repositories/m);
  const help = await relaisCli(['gc', '--help']);
  for (const f of ['--policy', '--keep-last', '--older-than', '--protect', '--live-branches', '--default-branch', '--max-delete-share', '--repo', '--apply', '--age'])
    assert.ok(help.stdout.includes(f), `gc --help: ${f}`);
});

// Issue 18 item 9, as the user met it: `relais gc --keep-last 1` with the default age deleted a branch's
// newest build (built a day ago, pulled first) and kept a 30-day-old build pulled later. The default is
// now the image's own date; --age cached keeps the fetch order for those who want it.
void test('relais gc --keep-last 1 by default keeps the newest build of a branch, not the one pulled last (--age created is the default)', async (t) => {
  const upstream = await startRegistry();
  t.after(() => upstream.close());
  const relais = await startRelais({ upstreams: { 'docker.io': upstream.url } });
  t.after(() => relais.close());
  const built: Record<string, number> = { 'z-dddd0001': 1, 'z-dddd0002': 30, 'z-dddd0003': 10 };
  for (const [tag, days] of Object.entries(built)) await pushImage(upstream.url, REPO, tag, isoDaysAgo(days), 50 * 1024);
  // Fetched newest build first, oldest build last.
  for (const tag of ['z-dddd0001', 'z-dddd0003', 'z-dddd0002']) {
    await skopeoPull(relais.host, `${REPO}:${tag}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  await relais.instance.blobs.settle(); // stored, not only delivered
  await upstream.settle();
  upstream.clearLog();
  const line = (out: string, tag: string): string => out.split('\n').find((l) => l.startsWith(`${tag} `)) ?? `(no line for ${tag} in)\n${out}`;

  const byDefault = await relaisCli(['gc', '--data', relais.dataDir, '--keep-last', '1', '--max-delete-share', '100%']);
  assert.equal(byDefault.code, 0, byDefault.stderr);
  assert.match(line(byDefault.stdout, 'z-dddd0001'), /\s24h\s+image\s+z\s+KEEP\s+keep last 1$/, 'the newest build stays');
  assert.match(line(byDefault.stdout, 'z-dddd0002'), /\s30d\s+image\s+z\s+DELETE\s+beyond last 1$/);

  const cached = await relaisCli(['gc', '--data', relais.dataDir, '--keep-last', '1', '--max-delete-share', '100%', '--age', 'cached']);
  assert.equal(cached.code, 0, cached.stderr);
  assert.match(line(cached.stdout, 'z-dddd0002'), /\s0m\s+image\s+z\s+KEEP\s+keep last 1$/, 'by fetch time the oldest build is the newest tag');
  assert.match(line(cached.stdout, 'z-dddd0001'), /\sDELETE\s+beyond last 1$/);

  const created = await relaisCli(['gc', '--data', relais.dataDir, '--keep-last', '1', '--max-delete-share', '100%', '--age', 'created']);
  assert.equal(created.code, 0, created.stderr);
  assert.match(line(created.stdout, 'z-dddd0001'), /\s24h\s+image\s+z\s+KEEP\s+keep last 1$/);
  assert.match(line(created.stdout, 'z-dddd0002'), /\s30d\s+image\s+z\s+DELETE\s+beyond last 1$/);
  assert.match(line(created.stdout, 'z-dddd0003'), /\s10d\s+image\s+z\s+DELETE\s+beyond last 1$/);
  const json = JSON.parse((await relaisCli(['gc', '--data', relais.dataDir, '--keep-last', '1', '--max-delete-share', '100%', '--age', 'created', '--json'])).stdout) as {
    retention: { repositories: { entries: { tag: string; createdSource: string }[] }[] };
  };
  assert.deepEqual(json.retention.repositories[0]?.entries.map((e) => e.createdSource), ['config', 'config', 'config']);
  await upstream.settle();
  assert.deepEqual(upstream.accessLog(), [], 'the ages come from the cache: the upstream saw nothing');
});
