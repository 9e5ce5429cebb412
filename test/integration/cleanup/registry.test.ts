// relais cleanup against a real CNCF distribution (Debian's docker-registry, delete enabled), filled
// with what CI leaves behind. The plan is checked tag by tag; the dry run must not change a byte of
// the registry's storage; --apply must keep every kept tag pullable by skopeo with the same digest,
// remove the others, never delete an image a kept tag shares; distribution's garbage collector then
// frees the space (measured).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { pushIndex, pushRandomImage, hostArchitecture } from '../../peers/images.js';
import { registryFetch, sha256Digest, MANIFEST_ACCEPT } from '../../peers/registry-client.js';
import { removeDir, run, runOk, tempDir } from '../../peers/proc.js';
import { hashTree, isoDaysAgo, pushBuildkitCache, pushBuildkitCacheIndex, pushImage, pushSignature, tagAgain, type Pushed } from './fixture.js';

const CLI = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));
const REPO = 'team/app';

interface JsonPlan {
  repositories: {
    repo: string;
    aborted: string | null;
    digestsToDelete: string[];
    summary: { tags: number; keep: number; delete: number };
    entries: { tag: string; digest: string; action: string; rule: string; family: string | null; kind: string; sharedWith?: string[]; createdFlag: string }[];
    applied: null | { untagged: string[]; digestsDeleted: string[]; method: string | null; failed: unknown[]; keptTagsChanged: unknown[] };
  }[];
}

function cli(args: string[], input?: string): ReturnType<typeof run> {
  return run(process.execPath, [CLI, 'cleanup', ...args], { timeoutMs: 60_000, ...(input !== undefined ? { input } : {}) });
}

async function gitRepo(dir: string): Promise<{ path: string; main: string; login: string }> {
  const path = join(dir, 'src');
  await mkdir(path);
  const g = (...a: string[]): ReturnType<typeof runOk> => runOk('git', ['-c', 'user.email=ci@example.com', '-c', 'user.name=ci', ...a], { cwd: path });
  await g('init', '-q', '-b', 'main');
  await g('commit', '-q', '--allow-empty', '-m', 'one');
  await g('checkout', '-q', '-b', 'feature/login');
  await g('commit', '-q', '--allow-empty', '-m', 'two');
  const main = (await g('rev-parse', 'main')).stdout.trim();
  const login = (await g('rev-parse', 'feature/login')).stdout.trim();
  return { path, main, login };
}

async function skopeoDigest(reg: RegistryPeer, tag: string): Promise<string | null> {
  const r = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/${REPO}:${tag}`], { timeoutMs: 30_000 });
  if (r.code !== 0) {
    assert.match(r.stderr, /manifest unknown|not found/i, `skopeo inspect ${tag}: ${r.stderr}`);
    return null;
  }
  return sha256Digest(Buffer.from(r.stdout, 'utf8'));
}

async function skopeoPull(reg: RegistryPeer, tag: string, dir: string, all: boolean): Promise<void> {
  const dest = join(dir, `pull-${tag}-${Date.now()}`);
  await runOk('skopeo', ['copy', '--quiet', '--src-tls-verify=false', ...(all ? ['--all'] : []), `docker://${reg.host}/${REPO}:${tag}`, `dir:${dest}`], { timeoutMs: 60_000 });
  await removeDir(dest);
}

async function existsByDigest(reg: RegistryPeer, digest: string): Promise<boolean> {
  const r = await registryFetch(`${reg.url}/v2/${REPO}/manifests/${digest}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
  return r.status === 200;
}

void test('relais cleanup on a real distribution: plan, dry run, apply, garbage-collect', async (t) => {
  const reg = await startRegistry({ deleteEnabled: true });
  t.after(() => reg.close());
  const work = await tempDir('cleanup-it');
  t.after(() => removeDir(work));
  const git = await gitRepo(work);
  const u = reg.url;
  const KB = 1024;

  // --- the registry as CI left it -------------------------------------------------------------
  const m1 = await pushImage(u, REPO, 'main-aaaa0001', isoDaysAgo(60), 300 * KB);
  const m2 = await pushImage(u, REPO, 'main-aaaa0002', isoDaysAgo(20), 300 * KB);
  const m3 = await pushImage(u, REPO, 'main-aaaa0003', isoDaysAgo(1), 300 * KB);
  const m4 = await pushImage(u, REPO, 'main-aaaa0004', isoDaysAgo(45), 300 * KB);
  await tagAgain(u, REPO, 'main', m3);
  await tagAgain(u, REPO, 'latest', m3);
  const fl1 = await pushImage(u, REPO, 'feature-login-bbbb0001', isoDaysAgo(40), 300 * KB);
  await pushImage(u, REPO, 'feature-login-bbbb0002', isoDaysAgo(10), 300 * KB);
  const fl3 = await pushImage(u, REPO, 'feature-login', isoDaysAgo(2), 300 * KB);
  await tagAgain(u, REPO, git.login, fl3); // CI_COMMIT_SHA of the branch head
  const g1 = await pushImage(u, REPO, 'feature-old-thing', isoDaysAgo(5), 300 * KB);
  await tagAgain(u, REPO, 'c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00', g1); // SHA tag of the same image
  const cacheGone = await pushBuildkitCache(u, REPO, 'cache-feature-old-thing', isoDaysAgo(5), 300 * KB);
  await pushBuildkitCache(u, REPO, 'cache-main', isoDaysAgo(2), 300 * KB);
  const cacheStale = await pushBuildkitCache(u, REPO, 'cache-feature-login', isoDaysAgo(20), 300 * KB);
  // Releases: an image pushed with skopeo, and a multi-arch index with two platforms.
  const r1 = await pushRandomImage(reg.host, `${REPO}:v1.0.0`, { layers: [200 * KB], format: 'oci' });
  const r1p: Pushed = { digest: r1.manifestDigest, manifest: r1.manifest, mediaType: r1.manifestMediaType, blobs: [] };
  await tagAgain(u, REPO, 'rc-2024', r1p); // two tags, one digest: rc-2024 goes, v1.0.0 stays
  const idx = await pushIndex(reg.host, `${REPO}:v1.1.0`, [
    { os: 'linux', architecture: hostArchitecture(), layers: [100 * KB] },
    { os: 'linux', architecture: 'arm64', variant: 'v8', layers: [100 * KB] },
  ]);
  const child = idx.children[0];
  assert.ok(child);
  await tagAgain(u, REPO, 'amd64-build', { digest: child.manifestDigest, manifest: child.manifest, mediaType: child.manifestMediaType, blobs: [] });
  await pushImage(u, REPO, 'repro', '1970-01-01T00:00:00Z', 50 * KB); // reproducible build: epoch created

  const policyFile = join(work, 'cleanup.yaml');
  await writeFile(
    policyFile,
    `# What this project keeps
defaultBranch: main
liveBranches: git:${git.path}
rules:
  - name: branch gone
    action: delete
    branchGone: true
  - name: stale cache
    action: delete
    kinds: [buildkit-cache]
    olderThan: 14d
  - name: fresh cache
    action: keep
    kinds: [buildkit-cache]
  - name: newest 2 per branch
    action: keep
    newest: 2
  - name: older than 30d
    action: delete
    olderThan: 30d
`,
  );
  const expected: Record<string, string> = {
    main: 'KEEP protected: default branch',
    latest: 'KEEP protected: latest',
    'main-aaaa0001': 'DELETE older than 30d',
    'main-aaaa0002': 'KEEP newest 2 per branch',
    'main-aaaa0003': 'KEEP newest 2 per branch',
    'main-aaaa0004': 'DELETE older than 30d',
    'feature-login': 'KEEP newest 2 per branch',
    [git.login]: 'KEEP newest 2 per branch',
    'feature-login-bbbb0001': 'DELETE older than 30d',
    'feature-login-bbbb0002': 'KEEP newest 2 per branch',
    'feature-old-thing': 'DELETE branch gone',
    c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00: 'DELETE branch gone',
    'cache-feature-old-thing': 'DELETE branch gone',
    'cache-main': 'KEEP fresh cache',
    'cache-feature-login': 'DELETE stale cache',
    'v1.0.0': 'KEEP protected: semver',
    'rc-2024': 'DELETE branch gone',
    'v1.1.0': 'KEEP protected: semver',
    'amd64-build': 'DELETE branch gone',
    repro: 'KEEP undated (epoch): policy undated=keep',
  };
  const keptTags = Object.keys(expected).filter((k) => expected[k]?.startsWith('KEEP'));
  const deletedTags = Object.keys(expected).filter((k) => expected[k]?.startsWith('DELETE'));
  const digestsBefore = new Map<string, string>();
  for (const tag of Object.keys(expected)) {
    const d = await skopeoDigest(reg, tag);
    assert.ok(d, `fixture tag ${tag} missing`);
    digestsBefore.set(tag, d);
  }
  const orphanDigests = [m1.digest, m4.digest, fl1.digest, g1.digest, cacheGone.digest, cacheStale.digest].sort();

  // --- dry run: the plan, and not one byte changed ----------------------------------------------
  await t.test('dry run prints the plan and changes nothing', async () => {
    const before = await hashTree(reg.dataDir);
    reg.clearLog();
    const table = await cli(['--registry', u, '--repo', REPO, '--policy', policyFile]);
    assert.equal(table.code, 0, table.stderr);
    for (const [tag, decision] of Object.entries(expected)) {
      const [action, ...rule] = decision.split(' ');
      const line = table.stdout.split('\n').find((l) => l.startsWith(`${tag} `));
      assert.ok(line, `no plan line for ${tag}:\n${table.stdout}`);
      assert.match(line, new RegExp(`\\s${action ?? ''}\\s+${rule.join(' ').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), line);
    }
    assert.match(table.stdout, /^team\/app: 20 tags, keep 11, delete 9, then 6 untagged manifests by digest$/m);
    assert.match(table.stdout, /^rc-2024 .*DELETE\s+branch gone \(untag only: image kept by v1\.0\.0\)$/m);
    assert.match(table.stdout, /^amd64-build .*DELETE\s+branch gone \(untag only: image kept by v1\.1\.0\)$/m);
    assert.match(table.stderr, /dry run: nothing was deleted/);

    const json = await cli(['--registry', u, '--repo', REPO, '--policy', policyFile, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const plan = JSON.parse(json.stdout) as JsonPlan;
    const repo = plan.repositories[0];
    assert.ok(repo);
    assert.deepEqual(Object.fromEntries(repo.entries.map((e) => [e.tag, `${e.action} ${e.rule}`])), expected);
    for (const e of repo.entries) assert.equal(e.digest, digestsBefore.get(e.tag), `digest of ${e.tag}`);
    assert.deepEqual([...repo.digestsToDelete].sort(), orphanDigests);
    const kinds = Object.fromEntries(repo.entries.map((e) => [e.tag, e.kind]));
    assert.equal(kinds['v1.1.0'], 'index');
    assert.equal(kinds['cache-main'], 'buildkit-cache');
    assert.equal(kinds.repro, 'image');
    assert.equal(repo.entries.find((e) => e.tag === 'repro')?.createdFlag, 'epoch');
    assert.equal(repo.entries.find((e) => e.tag === git.login)?.family, 'feature-login');

    // A safety limit below the plan's share stops it, with exit code 2.
    const limited = await cli(['--registry', u, '--repo', REPO, '--policy', policyFile, '--max-delete-share', '30%', '--apply']);
    assert.equal(limited.code, 2, limited.stderr);
    assert.match(limited.stdout, /ABORTED: would delete 9 of 20 tags \(45%\), more than the limit of 30%/);

    const after = await hashTree(reg.dataDir);
    assert.deepEqual(after, before, 'the registry storage changed during the dry runs');
    const writes = reg.accessLog().filter((e) => e.method !== 'GET' && e.method !== 'HEAD');
    assert.deepEqual(writes.map((e) => `${e.method} ${e.path}`), [], 'the dry run sent writes');
    t.diagnostic(`dry runs: ${reg.accessLog().length} requests, storage ${before.files} files / ${before.bytes} bytes unchanged`);
  });

  // --- apply ---------------------------------------------------------------------------------
  await t.test('--apply deletes the DELETE tags and never an image a kept tag needs', async (tt) => {
    reg.clearLog();
    const r = await cli(['--registry', u, '--repo', REPO, '--policy', policyFile, '--apply', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const applied = (JSON.parse(r.stdout) as JsonPlan).repositories[0]?.applied;
    assert.ok(applied);
    // distribution 2.8 refuses DELETE /manifests/<tag>: the throw-away manifest method was used.
    assert.equal(applied.method, 'throwaway');
    assert.deepEqual([...applied.untagged].sort(), [...deletedTags].sort());
    assert.deepEqual([...applied.digestsDeleted].sort(), orphanDigests);
    assert.deepEqual(applied.failed, []);
    assert.deepEqual(applied.keptTagsChanged, []);

    // What the registry saw: no DELETE of a shared image, of the index or of its children.
    const deletes = reg.accessLog().filter((e) => e.method === 'DELETE');
    const deletedRefs = deletes.map((e) => e.path.split('/manifests/')[1] ?? '');
    const protectedDigests = [r1.manifestDigest, idx.indexDigest, ...idx.children.map((c) => c.manifestDigest), m2.digest, m3.digest, fl3.digest];
    for (const d of protectedDigests) assert.ok(!deletedRefs.includes(d), `DELETE sent for kept digest ${d}`);
    const known = new Set(digestsBefore.values());
    for (const ref of deletedRefs) {
      assert.ok(ref.startsWith('sha256:') || deletedTags.includes(ref), `unexpected DELETE ${ref}`);
      if (ref.startsWith('sha256:') && known.has(ref)) assert.ok(orphanDigests.includes(ref), `DELETE by digest of ${ref} is not an orphan`);
    }
    // A throw-away manifest PUT per deleted tag (then deleted by its digest).
    assert.ok(reg.accessLog().filter((e) => e.method === 'PUT' && /\/manifests\//.test(e.path)).length >= deletedTags.length);

    // What a user sees: kept tags pull with skopeo, unchanged; deleted ones are gone.
    const tags = JSON.parse((await registryFetch(`${u}/v2/${REPO}/tags/list`)).body.toString()) as { tags: string[] };
    assert.deepEqual([...tags.tags].sort(), [...keptTags].sort());
    for (const tag of keptTags) assert.equal(await skopeoDigest(reg, tag), digestsBefore.get(tag), `kept tag ${tag} changed`);
    for (const tag of deletedTags) assert.equal(await skopeoDigest(reg, tag), null, `deleted tag ${tag} still there`);
    for (const tag of keptTags) await skopeoPull(reg, tag, work, tag === 'v1.1.0');
    // Shared images survive by digest; orphans are gone by digest.
    for (const d of protectedDigests) assert.equal(await existsByDigest(reg, d), true, `kept image ${d} lost`);
    for (const d of orphanDigests) assert.equal(await existsByDigest(reg, d), false, `orphan ${d} still there`);
    tt.diagnostic(`apply: ${reg.accessLog().length} requests, ${deletes.length} DELETEs`);
  });

  // --- garbage collection frees the space ------------------------------------------------------
  await t.test('distribution garbage-collect then frees the deleted images\' blobs', async (tt) => {
    await reg.stop();
    const before = await hashTree(reg.dataDir);
    const gc = await runOk('docker-registry', ['garbage-collect', reg.configFile], { timeoutMs: 60_000 });
    const after = await hashTree(reg.dataDir);
    const freedBlobs = [m1, m4, fl1, g1, cacheGone, cacheStale].flatMap((p) => p.blobs).reduce((n, b) => n + b.size, 0);
    tt.diagnostic(`garbage-collect: storage ${before.bytes} -> ${after.bytes} bytes (freed ${before.bytes - after.bytes}; deleted images' blobs ${freedBlobs})`);
    assert.ok(before.bytes - after.bytes >= freedBlobs, `GC freed ${before.bytes - after.bytes} bytes, expected at least ${freedBlobs}\n${gc.stdout.slice(-2000)}`);
    await reg.start();
    for (const tag of keptTags) await skopeoPull(reg, tag, work, tag === 'v1.1.0');
  });
});

void test('signatures follow their image, BuildKit index caches and kaniko cache repos on a real distribution', async (t) => {
  const reg = await startRegistry({ deleteEnabled: true });
  t.after(() => reg.close());
  const work = await tempDir('cleanup-it2');
  t.after(() => removeDir(work));
  const u = reg.url;
  const TOOL = 'team/tool';
  const KANIKO = 'team/tool/cache';
  const a = await pushImage(u, TOOL, 'feature-a', isoDaysAgo(2), 64 * 1024);
  const sigA = await pushSignature(u, TOOL, a, 8 * 1024);
  const g = await pushImage(u, TOOL, 'feature-gone', isoDaysAgo(3), 64 * 1024);
  const sigG = await pushSignature(u, TOOL, g, 8 * 1024);
  await pushBuildkitCacheIndex(u, TOOL, 'cache-feature-a', isoDaysAgo(1), 64 * 1024);
  const cacheG = await pushBuildkitCacheIndex(u, TOOL, 'cache-feature-gone', isoDaysAgo(3), 64 * 1024);
  const keys = ['k1', 'k2', 'k3'].map((k) => sha256Digest(k).slice(7));
  await pushImage(u, KANIKO, keys[0] ?? '', isoDaysAgo(2), 32 * 1024);
  await pushImage(u, KANIKO, keys[1] ?? '', isoDaysAgo(20), 32 * 1024);
  const oldKey = await pushImage(u, KANIKO, keys[2] ?? '', isoDaysAgo(40), 32 * 1024);
  const branches = join(work, 'branches.txt');
  await writeFile(branches, '# live branches\nmain\nfeature/a\n');

  const r = await cli(['--registry', u, '--repo', TOOL, '--repo', KANIKO, '--live-branches', branches, '--older-than', '30d', '--apply', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const plan = JSON.parse(r.stdout) as JsonPlan;
  const tool = plan.repositories[0];
  const kaniko = plan.repositories[1];
  assert.ok(tool && kaniko);
  assert.deepEqual(Object.fromEntries(tool.entries.map((e) => [e.tag, `${e.kind} ${e.action} ${e.rule}`])), {
    'feature-a': 'image KEEP default (keep)',
    [sigA.tag]: 'attachment KEEP attached to a kept image',
    'feature-gone': 'image DELETE branch gone',
    [sigG.tag]: 'attachment DELETE attached to a deleted image',
    'cache-feature-a': 'buildkit-cache KEEP default (keep)',
    'cache-feature-gone': 'buildkit-cache DELETE branch gone',
  });
  assert.deepEqual([...tool.digestsToDelete].sort(), [g.digest, sigG.digest, cacheG.digest].sort());
  assert.deepEqual(Object.fromEntries(kaniko.entries.map((e) => [e.tag.slice(0, 8), `${e.kind} ${e.family ?? '-'} ${e.action}`])), {
    [keys[0]?.slice(0, 8) ?? '']: 'kaniko-cache kaniko-cache KEEP',
    [keys[1]?.slice(0, 8) ?? '']: 'kaniko-cache kaniko-cache KEEP',
    [keys[2]?.slice(0, 8) ?? '']: 'kaniko-cache kaniko-cache DELETE',
  });

  const list = async (repo: string): Promise<string[]> => (JSON.parse((await registryFetch(`${u}/v2/${repo}/tags/list`)).body.toString()) as { tags: string[] }).tags.sort();
  assert.deepEqual(await list(TOOL), ['cache-feature-a', 'feature-a', sigA.tag].sort());
  assert.deepEqual(await list(KANIKO), [keys[0], keys[1]].sort());
  const head = async (repo: string, ref: string): Promise<number> => (await registryFetch(`${u}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } })).status;
  assert.equal(await head(TOOL, a.digest), 200);
  assert.equal(await head(TOOL, sigA.digest), 200);
  for (const d of [g.digest, sigG.digest, cacheG.digest]) assert.equal(await head(TOOL, d), 404, d);
  assert.equal(await head(KANIKO, oldKey.digest), 404);

  await reg.stop();
  const before = await hashTree(reg.dataDir);
  await runOk('docker-registry', ['garbage-collect', reg.configFile], { timeoutMs: 60_000 });
  const after = await hashTree(reg.dataDir);
  const expectFreed = [g, sigG, cacheG, oldKey].flatMap((p) => p.blobs).reduce((n, b) => n + b.size, 0);
  t.diagnostic(`garbage-collect: ${before.bytes} -> ${after.bytes} bytes (freed ${before.bytes - after.bytes}, deleted blobs ${expectFreed})`);
  assert.ok(before.bytes - after.bytes >= expectFreed);
  await reg.start();
  const kept = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/${TOOL}:cache-feature-a`]);
  assert.equal(kept.code, 0, kept.stderr);
});

void test('a registry with deletes disabled: --apply stops before changing anything', async () => {
  const reg = await startRegistry({ deleteEnabled: false });
  try {
    await pushImage(reg.url, REPO, 'a-aaaa0001', isoDaysAgo(40), 2048);
    await pushImage(reg.url, REPO, 'a-aaaa0002', isoDaysAgo(1), 2048);
    const before = await hashTree(reg.dataDir);
    reg.clearLog();
    const r = await cli(['--registry', reg.url, '--repo', REPO, '--older-than', '30d', '--apply']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /^relais: registry .* refuses manifest deletes: nothing was changed in team\/app$/m);
    assert.match(r.stderr, /^hint: enable deletes in the registry \(distribution: storage\.delete\.enabled: true\)$/m);
    assert.deepEqual(await hashTree(reg.dataDir), before);
    assert.deepEqual(reg.accessLog().filter((e) => e.method === 'PUT' || e.method === 'POST' || e.method === 'PATCH'), []);
  } finally {
    await reg.close();
  }
});
