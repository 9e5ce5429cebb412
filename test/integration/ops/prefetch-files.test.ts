// `relais prefetch --gitlab-ci --dockerfile` (the built CLI, as a scheduled pipeline runs it) on the realistic
// project in test/fixtures/prefetch/project, through a relais in front of a real distribution upstream that
// holds every image those files name. Asserted: what the CLI reports (fetched, unresolved, includes not read)
// and what the upstream saw (each blob GET once, only the platform a FROM --platform asks for, nothing on a
// second run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pushIndex, pushRandomImage, type BuiltImage, type BuiltIndex } from '../../peers/images.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { relaisCli } from './helpers.js';

const project = join(process.cwd(), 'test/fixtures/prefetch/project');

/** Upstream repository:tag -> what the sample files call it. */
const SINGLE: [string, string][] = [
  ['library/node:22-alpine', 'node:22-alpine'],
  ['library/node:20-alpine', 'node:20-alpine'],
  ['library/docker:27', 'docker:27'],
  ['library/docker:27-dind', 'docker:27-dind'],
  ['library/python:3.12-slim', 'python:3.12-slim'],
  ['library/postgres:16', 'postgres:16'],
  ['library/redis:7-alpine', 'redis:7-alpine'],
  ['acme/release-tools:1.4', 'ghcr.io/acme/release-tools:1.4'],
  ['docker/dockerfile:1', 'docker/dockerfile:1'],
  ['library/busybox:1.36', 'docker.io/library/busybox:1.36'],
  ['library/golang:1.23', 'docker.io/library/golang:1.23'],
];

interface PrefetchJson {
  images: { image: string; ok: boolean; error?: string; platforms: string[]; blobs: number }[];
  failed: number;
  sources: {
    found: { image: string; platform?: string; source: string }[];
    unresolved: { raw: string; source: string; missing: string[] }[];
    skippedIncludes: string[];
    notMirrored: { image: string; error?: string }[];
  };
}

let up: RegistryPeer;
let relais: RelaisPeer;
const pushed = new Map<string, BuiltImage>();
let alpine: BuiltIndex;

before(async () => {
  up = await startRegistry();
  for (const [repoTag, name] of SINGLE) pushed.set(name, await pushRandomImage(up.host, repoTag, { layers: [20_000 + pushed.size * 1000] }));
  alpine = await pushIndex(up.host, 'library/alpine:3.20', [
    { os: 'linux', architecture: 'amd64', layers: [40_000] },
    { os: 'linux', architecture: 'arm64', layers: [41_000] },
  ]);
  // ghcr.io is a second upstream (the same distribution here): ghcr.io/acme/... names go to it.
  relais = await startRelais({ upstreams: { 'docker.io': up.url, 'ghcr.io': up.url } });
});

after(async () => {
  await relais.close();
  await up.close();
});

const blobs = (img: BuiltImage): string[] => [img.configDigest, ...img.layers.map((l) => l.digest)];

test('prefetch --gitlab-ci --dockerfile: every image the files run, each blob fetched once, --platform honoured, unresolved images reported', async () => {
  up.clearLog();
  const r = await relaisCli(['prefetch', '--server', relais.url, '--gitlab-ci', join(project, '.gitlab-ci.yml'), '--dockerfile', join(project, 'Dockerfile'), '--platform', 'linux/amd64', '--json'], 120_000);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as PrefetchJson;
  assert.equal(out.failed, 0, JSON.stringify(out.images.filter((i) => !i.ok)));
  assert.deepEqual(out.images.map((i) => i.image).sort(), [...SINGLE.map(([, n]) => n), 'alpine:3.20'].sort(), 'each image once, although both files name node:22-alpine and release-tools');
  assert.deepEqual(out.images.find((i) => i.image === 'alpine:3.20')?.platforms, ['linux/arm64'], 'FROM --platform=linux/arm64 wins over --platform');
  assert.deepEqual(
    out.sources.unresolved.map((u) => [u.raw, u.missing]),
    [
      ['$CI_REGISTRY_IMAGE/deployer:$CI_COMMIT_REF_SLUG', ['CI_REGISTRY_IMAGE', 'CI_COMMIT_REF_SLUG']],
      ['${CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX}/alpine:3.20', ['CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX']],
      ['gcr.io/distroless/static:${DISTROLESS_TAG}', ['DISTROLESS_TAG']],
    ],
  );
  assert.equal(out.sources.skippedIncludes.length, 3, 'remote, template and project includes are listed, not fetched');

  await up.settle();
  for (const [name, img] of pushed) for (const d of blobs(img)) assert.equal(up.blobGets(d), 1, `${name}: blob ${d} fetched once`);
  const [amd64, arm64] = alpine.children;
  assert.ok(amd64 && arm64);
  for (const d of blobs(arm64)) assert.equal(up.blobGets(d), 1, 'alpine arm64 blobs fetched');
  for (const d of blobs(amd64)) assert.equal(up.blobGets(d), 0, 'alpine amd64 not fetched: the Dockerfile asks for arm64');
  assert.equal(up.count('GET', /^\/v2\/library\/node\/manifests\/22-alpine$/), 1, 'node:22-alpine (in both files) resolved once');
  assert.equal(up.count('*', /\/v2\/(library\/)?(gcr\.io|distroless|deployer)/), 0, 'unresolved images are not guessed at');

  // Warm: the scheduled run the next morning fetches nothing that has not moved.
  up.clearLog();
  const again = await relaisCli(['prefetch', '--server', relais.url, '--gitlab-ci', join(project, '.gitlab-ci.yml'), '--dockerfile', join(project, 'Dockerfile')], 120_000);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /^unresolved {2}\$CI_REGISTRY_IMAGE\/deployer:\$CI_COMMIT_REF_SLUG \(.*\.gitlab-ci\.yml: job deploy \(image\)\): \$CI_REGISTRY_IMAGE, \$CI_COMMIT_REF_SLUG not defined$/m);
  assert.match(again.stdout, /^unresolved {2}gcr\.io\/distroless\/static:\$\{DISTROLESS_TAG\} \(.*Dockerfile:22\): \$DISTROLESS_TAG not defined$/m);
  assert.match(again.stdout, /^not read {4}include \.gitlab-ci\.yml: template: Security\/SAST\.gitlab-ci\.yml$/m);
  assert.match(again.stdout, /^prefetch: 12\/12 images/m);
  await up.settle();
  assert.equal(up.blobGets(), 0, 'second run: no blob GET upstream');
});

test('prefetch: --build-arg and --variable resolve what the files leave open; images on registries relais does not mirror are set apart; a missing file is a clear error', async () => {
  up.clearLog();
  const r = await relaisCli(['prefetch', '--server', relais.url, '--dockerfile', join(project, 'Dockerfile'), '--build-arg', 'NODE_VERSION=20', '--build-arg', 'DISTROLESS_TAG=nonroot', '--json'], 120_000);
  const out = JSON.parse(r.stdout) as PrefetchJson;
  assert.deepEqual(out.sources.unresolved, []);
  assert.ok(out.images.some((i) => i.image === 'node:20-alpine' && i.ok));
  assert.equal(r.code, 0, 'an image of the files on a registry relais does not mirror is set apart, not a failure');
  assert.ok(!out.images.some((i) => i.image.startsWith('gcr.io/')));
  assert.deepEqual(out.sources.notMirrored.map((i) => i.image), ['gcr.io/distroless/static:nonroot']);
  assert.match(out.sources.notMirrored[0]?.error ?? '', /upstream "gcr\.io" is not configured/);
  const named = await relaisCli(['prefetch', '--server', relais.url, 'gcr.io/distroless/static:nonroot']);
  assert.equal(named.code, 1, 'named on the command line: a failure');
  assert.match(named.stdout, /^FAILED {2}gcr\.io\/distroless\/static:nonroot: .*not configured/m);

  const withVar = await relaisCli(['prefetch', '--server', relais.url, '--gitlab-ci', join(project, '.gitlab-ci.yml'), '--variable', 'CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX=docker.io/library', '--json'], 120_000);
  assert.equal(withVar.code, 0, withVar.stderr);
  const v = JSON.parse(withVar.stdout) as PrefetchJson;
  assert.deepEqual(v.sources.unresolved.map((u) => u.raw), ['$CI_REGISTRY_IMAGE/deployer:$CI_COMMIT_REF_SLUG']);
  assert.ok(v.images.some((i) => i.image === 'docker.io/library/alpine:3.20' && i.ok), 'the dependency-proxy image, resolved with --variable');

  const missing = await relaisCli(['prefetch', '--server', relais.url, '--gitlab-ci', join(project, 'nope.yml')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read GitLab CI file .*nope\.yml: ENOENT/);
  const badArg = await relaisCli(['prefetch', '--build-arg', 'novalue', 'alpine']);
  assert.equal(badArg.code, 1);
  assert.match(badArg.stderr, /expected NAME=VALUE/);
});
