// The pure parsers behind `relais prefetch --gitlab-ci / --dockerfile`, on the samples in test/fixtures/prefetch
// (a realistic project: includes, templates, extends, !reference, matrix, variables, multi-stage, --platform)
// and on the corner cases of each syntax.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { dockerfileImages, expandVariables } from '../../../src/upkeep/dockerfile-images.js';
import { gitlabCiImages } from '../../../src/upkeep/gitlab-ci-images.js';
import { prefetchTargets, setApartNotMirrored } from '../../../src/upkeep/prefetch-files.js';
import type { ImageResult, PrefetchSummary } from '../../../src/upkeep/prefetch.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const project = join(root, 'test/fixtures/prefetch/project');
const read = (p: string): string => readFileSync(join(project, p), 'utf8');
const readLocal = (p: string): string | undefined => {
  try {
    return read(p);
  } catch {
    return undefined;
  }
};
const names = (s: { images: readonly { image: string }[] }): string[] => s.images.map((i) => i.image).sort();

void test('gitlab-ci sample: images and services of every job, through includes, extends, default, matrix and !reference', () => {
  const scan = gitlabCiImages(read('.gitlab-ci.yml'), { readLocal });
  assert.deepEqual(names(scan), [
    'docker:27', // $DOCKER_IMAGE -> docker:${DOCKER_VERSION}: a variable naming a variable
    'docker:27-dind', // a service with alias
    'ghcr.io/acme/release-tools:1.4', // image: {name:, entrypoint:}
    'node:20-alpine', // parallel: matrix:
    'node:22-alpine', // default: image (lint), matrix
    'postgres:16', // included file; also through !reference in migrations
    'python:3.12-slim', // extends: a template from another included file
    'redis:7-alpine',
  ]);
  assert.equal(scan.images.find((i) => i.image === 'python:3.12-slim')?.source, '.gitlab-ci.yml: job integration (image)');
  assert.deepEqual(
    scan.unresolved.map((u) => [u.raw, [...u.missing].sort()]),
    [
      ['$CI_REGISTRY_IMAGE/deployer:$CI_COMMIT_REF_SLUG', ['CI_COMMIT_REF_SLUG', 'CI_REGISTRY_IMAGE']],
      ['${CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX}/alpine:3.20', ['CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX']],
    ],
  );
  assert.deepEqual(scan.skippedIncludes, [
    'remote: https://gitlab.example.com/acme/ci-templates/-/raw/main/notify.yml',
    'template: Security/SAST.gitlab-ci.yml',
    'project: acme/ci-components, file: /deploy.yml',
  ]);
});

/** GitLab's CI JSON schema, as shipped and applied by gitlab-ci-local (its own ajv). */
interface Validator {
  jsonSchemaValidation(a: { pathToExpandedGitLabCi: string; gitLabCiConfig: unknown; argv: { ignoreSchemaPaths: string[] } }): void;
}

void test('the sample CI files are valid GitLab CI (GitLab\'s schema, gitlab-ci-local\'s copy)', async () => {
  const spec = 'gitlab-ci-local/src/validator.js';
  const mod = (await import(spec)) as { Validator: Validator };
  const referenceAsList = [{ tag: '!reference', collection: 'seq' as const, resolve: (seq: unknown) => (seq as { toJSON(): unknown }).toJSON() }];
  for (const f of ['.gitlab-ci.yml', 'ci/templates.yml', 'ci/integration.yml']) {
    const doc: unknown = parse(read(f), { customTags: referenceAsList });
    assert.doesNotThrow(() => {
      mod.Validator.jsonSchemaValidation({ pathToExpandedGitLabCi: f, gitLabCiConfig: doc, argv: { ignoreSchemaPaths: [] } });
    }, f);
  }
});

void test('gitlab-ci: values given for predefined variables resolve the rest; a missing local include is reported', () => {
  const scan = gitlabCiImages(read('.gitlab-ci.yml'), {
    readLocal,
    variables: { CI_REGISTRY_IMAGE: 'registry.example.com/acme/app', CI_COMMIT_REF_SLUG: 'main', CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX: 'gitlab.example.com:443/acme/dependency_proxy/containers' },
  });
  assert.deepEqual(scan.unresolved, []);
  assert.ok(names(scan).includes('registry.example.com/acme/app/deployer:main'));
  assert.ok(names(scan).includes('gitlab.example.com:443/acme/dependency_proxy/containers/alpine:3.20'));
  const alone = gitlabCiImages(read('.gitlab-ci.yml'));
  assert.ok(alone.skippedIncludes.includes('local: ci/templates.yml (not found)'));
  assert.ok(!names(alone).includes('python:3.12-slim'), 'the job lives in the include');
});

void test('gitlab-ci corner cases: hidden jobs and trigger jobs run nothing, job variables win, $$ is a literal, platform, old global image', () => {
  const scan = gitlabCiImages(`
image: ruby:3.3
services: [mysql:8]
variables: { TAG: "1", PRICE: "x" }
.hidden: { image: never:pulled }
bridge: { trigger: other/project, image: also:never }
a: { script: [x] }
b:
  variables: { TAG: "2" }
  image: { name: "tool:$TAG", docker: { platform: linux/arm64 } }
  script: [x]
c: { image: "odd:$$TAG", script: [x] }
d: { image: "busybox:\${UNSET:-1.36}", script: [x] }
`);
  assert.deepEqual(scan.images.map((i) => [i.image, i.platform, i.source]), [
    ['ruby:3.3', undefined, '.gitlab-ci.yml: job a (image)'],
    ['mysql:8', undefined, '.gitlab-ci.yml: job a (services)'],
    ['tool:2', 'linux/arm64', '.gitlab-ci.yml: job b (image)'],
    ['odd:$TAG', undefined, '.gitlab-ci.yml: job c (image)'],
    ['busybox:1.36', undefined, '.gitlab-ci.yml: job d (image)'],
  ]);
  assert.throws(() => gitlabCiImages('- just\n- a list\n'), /not a mapping/);
  const withInputs = gitlabCiImages('spec:\n  inputs:\n    node: { default: "22" }\n---\nt: { image: "node:$[[ inputs.node ]]", script: [x] }\nu: { image: "ok:1", script: [x] }\n');
  assert.deepEqual(withInputs.images.map((i) => i.image), ['ok:1'], 'the configuration document after a spec: header');
  assert.deepEqual(withInputs.unresolved.map((u) => u.missing), [['inputs.node']], 'CI/CD inputs are listed as unresolved');
  assert.throws(() => gitlabCiImages('a: [unclosed\n'), /\.gitlab-ci\.yml: /);
  const inner = gitlabCiImages('variables: { IMG: "x:$UNDEF" }\nj: { image: $IMG, script: [x] }\n');
  assert.deepEqual(inner.unresolved, [{ raw: '$IMG', source: '.gitlab-ci.yml: job j (image)', missing: ['UNDEF'] }], 'the variable nothing defines, not the one that names it');
});

void test('Dockerfile sample: FROM lines with ARG defaults, # syntax, --platform, COPY --from images; stages and scratch left out', () => {
  const scan = dockerfileImages(read('Dockerfile'));
  assert.deepEqual(scan.images.map((i) => [i.image, i.platform, i.source]), [
    ['docker/dockerfile:1', undefined, 'Dockerfile:1 (# syntax)'],
    ['node:22-alpine', undefined, 'Dockerfile:7'], // --platform=$BUILDPLATFORM: the run's platforms
    ['alpine:3.20', 'linux/arm64', 'Dockerfile:16'], // lower-case from, continued line
    ['ghcr.io/acme/release-tools:1.4', undefined, 'Dockerfile:20'],
    ['docker.io/library/busybox:1.36', undefined, 'Dockerfile:24'],
    ['docker.io/library/golang:1.23', undefined, 'Dockerfile:27'],
  ]);
  assert.deepEqual(scan.unresolved, [{ raw: 'gcr.io/distroless/static:${DISTROLESS_TAG}', source: 'Dockerfile:22', missing: ['DISTROLESS_TAG'] }]);
});

void test('Dockerfile: --build-arg overrides declared ARGs only; ARGs after the first FROM do not reach FROM', () => {
  const scan = dockerfileImages(read('Dockerfile'), { buildArgs: { NODE_VERSION: '20', DISTROLESS_TAG: 'nonroot' } });
  assert.ok(names(scan).includes('node:20-alpine'));
  assert.ok(names(scan).includes('gcr.io/distroless/static:nonroot'));
  assert.deepEqual(scan.unresolved, []);
  const late = dockerfileImages('FROM alpine AS a\nARG V=1\nFROM busybox:$V\n', { buildArgs: { V: '2', UNDECLARED: 'x' } });
  assert.deepEqual(late.images.map((i) => i.image), ['alpine']);
  assert.deepEqual(late.unresolved.map((u) => u.missing), [['V']]);
});

void test('Dockerfile syntax: escape directive, comments inside continuations, quoted ARGs, numbered stages, defaults in ${}', () => {
  const text = [
    '# escape=`',
    'ARG REG="registry.example.com" TAG=\'3.20\'',
    'FROM `',
    '  # a comment inside the instruction',
    '  $REG/alpine:${TAG} as Base',
    'FROM base',
    'FROM ${MISSING:-debian}:${TAG:+bookworm}',
    'COPY --from=0 /a /b',
    'COPY --from=BASE /a /b',
    'COPY --chown=1:1 --from=quay.io/org/tool:2 /t /t',
    'RUN echo FROM not-an-image',
  ].join('\n');
  const scan = dockerfileImages(text, { file: 'Containerfile' });
  assert.deepEqual(scan.images.map((i) => [i.image, i.source]), [
    ['registry.example.com/alpine:3.20', 'Containerfile:3'],
    ['debian:bookworm', 'Containerfile:7'],
    ['quay.io/org/tool:2', 'Containerfile:10'],
  ]);
});

void test('variable expansion: $V, ${V}, ${V:-d}, ${V-d}, ${V:+a}, and what is missing', () => {
  const vars: Record<string, string> = { A: 'a', EMPTY: '' };
  const look = (n: string): string | undefined => vars[n];
  assert.deepEqual(expandVariables('$A/${A}', look), { ok: true, value: 'a/a' });
  assert.deepEqual(expandVariables('${EMPTY:-d}|${EMPTY-d}|${NOPE-d}', look), { ok: true, value: 'd||d' });
  assert.deepEqual(expandVariables('${A:+x}${EMPTY:+y}${NOPE:+z}', look), { ok: true, value: 'x' });
  assert.deepEqual(expandVariables('$NOPE:${ALSO}', look), { ok: false, missing: ['NOPE', 'ALSO'] });
  assert.deepEqual(expandVariables('$$A', look, { dollarEscape: true }), { ok: true, value: '$A' });
});

void test('targets: named images first, each image (and platform) once; not-mirrored file images set apart, named ones stay failures', () => {
  const found = [
    { image: 'node:22', source: 'a' },
    { image: 'node:22', source: 'b' },
    { image: 'alpine:3.20', platform: 'linux/arm64', source: 'c' },
    { image: 'alpine:3.20', source: 'd' },
  ];
  assert.deepEqual(prefetchTargets(['node:22', 'x:1'], found), [{ image: 'node:22' }, { image: 'x:1' }, { image: 'alpine:3.20', platforms: ['linux/arm64'] }, { image: 'alpine:3.20' }]);
  const fail = (image: string, error: string): ImageResult => ({ image, ok: false, error, platforms: [], manifests: 0, blobs: 0, bytes: 0 });
  const notConfigured = 'NAME_UNKNOWN: repository name not known to registry: gcr.io/x (upstream "gcr.io" is not configured)';
  const summary: PrefetchSummary = {
    images: [fail('gcr.io/x:1', notConfigured), fail('gcr.io/named:1', notConfigured.replace('x', 'named')), fail('node:22', 'UPSTREAM_ERROR: HTTP 502')],
    bytes: 0,
    blobs: 0,
    failed: 3,
    seconds: 1,
    upstreamBytes: undefined,
  };
  const { summary: kept, notMirrored } = setApartNotMirrored(summary, ['gcr.io/named:1']);
  assert.deepEqual(notMirrored.map((r) => r.image), ['gcr.io/x:1']);
  assert.deepEqual(kept.images.map((r) => r.image), ['gcr.io/named:1', 'node:22']);
  assert.equal(kept.failed, 2);
});
