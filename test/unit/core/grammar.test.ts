import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelaisError } from '../../../src/errors.js';
import { parseApiPath } from '../../../src/doors/http/route.js';
import { byteRange } from '../../../src/doors/http/handlers.js';
import { validateDigest, validateName, validateReference } from '../../../src/cache/reference.js';
import { resolveRoute, type RoutingTable } from '../../../src/cache/routing.js';

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (e) {
    return e instanceof RelaisError ? `${e.status} ${e.code}` : `non-relais ${String(e)}`;
  }
};

const D = `sha256:${'a'.repeat(64)}`;

test('repository names follow the spec grammar', () => {
  for (const ok of ['alpine', 'library/alpine', 'a/b/c', 'my-app_x.y', 'a__b', 'ghcr.io/owner/img']) assert.equal(code(() => validateName(ok)), undefined, ok);
  for (const bad of ['', 'Alpine', 'a//b', '/a', 'a/', '../etc', 'a/../b', 'a..b', '-a', 'a_', 'a b', 'a%2fb', 'x'.repeat(256)]) {
    assert.equal(code(() => validateName(bad)), '400 NAME_INVALID', bad);
  }
});

test('digests: sha256/sha512 hex only; other algorithms and shapes are DIGEST_INVALID', () => {
  assert.equal(validateDigest(D), 'sha256');
  assert.equal(validateDigest(`sha512:${'b'.repeat(128)}`), 'sha512');
  for (const bad of [`sha256:${'A'.repeat(64)}`, 'sha256:abc', `md5:${'a'.repeat(32)}`, `sha256:${'a'.repeat(64)}/../x`, 'sha256', `sha256:${'a'.repeat(63)}\0`]) {
    assert.equal(code(() => validateDigest(bad)), '400 DIGEST_INVALID', bad);
  }
  assert.equal(code(() => validateReference('v1.2.3')), undefined);
  assert.equal(code(() => validateReference('.hidden')), '400 MANIFEST_INVALID');
  assert.equal(code(() => validateReference('x'.repeat(129))), '400 MANIFEST_INVALID');
});

test('API paths are parsed from the right so names may contain slashes and operation words', () => {
  assert.deepEqual(parseApiPath('/v2/'), { kind: 'base' });
  assert.deepEqual(parseApiPath('/v2/library/alpine/manifests/3.20'), { kind: 'manifest', name: 'library/alpine', reference: '3.20' });
  assert.deepEqual(parseApiPath('/v2/a/manifests/b/manifests/latest'), { kind: 'manifest', name: 'a/manifests/b', reference: 'latest' });
  assert.deepEqual(parseApiPath(`/v2/ghcr.io/o/i/blobs/${D}`), { kind: 'blob', name: 'ghcr.io/o/i', digest: D });
  assert.deepEqual(parseApiPath('/v2/a/blobs/uploads/'), { kind: 'upload', name: 'a' });
  assert.deepEqual(parseApiPath('/v2/a/b/tags/list'), { kind: 'tags', name: 'a/b' });
  assert.deepEqual(parseApiPath(`/v2/a/referrers/${D}`), { kind: 'referrers', name: 'a', digest: D });
  assert.deepEqual(parseApiPath(`/v2/a/blobs/sha256%3A${'a'.repeat(64)}`), { kind: 'blob', name: 'a', digest: D });
  assert.equal(parseApiPath('/metrics'), undefined);
  for (const evil of ['/v2/a%2f..%2fb/manifests/x', '/v2/../etc/manifests/x', '/v2/a/%2e%2e/manifests/x', '/v2/a%00/manifests/x', '/v2/a/manifests/%E0%A4%A']) {
    assert.equal(code(() => parseApiPath(evil)), '400 NAME_INVALID', evil);
  }
  assert.equal(code(() => parseApiPath('/v2/a/other/x')), '404 NAME_UNKNOWN');
});

test('routing: default upstream with library/, ?ns=, path prefix, unknown hosts refused', () => {
  const table: RoutingTable = {
    defaultUpstream: 'docker.io',
    upstreams: new Map([
      ['docker.io', { libraryPrefix: true }],
      ['ghcr.io', { libraryPrefix: false }],
      ['docker.elastic.co', { libraryPrefix: false }],
    ]),
  };
  assert.deepEqual(resolveRoute(table, 'alpine', undefined), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRoute(table, 'library/alpine', undefined), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRoute(table, 'bitnami/redis', undefined), { upstream: 'docker.io', repo: 'bitnami/redis' });
  assert.deepEqual(resolveRoute(table, 'owner/img', 'ghcr.io'), { upstream: 'ghcr.io', repo: 'owner/img' });
  assert.deepEqual(resolveRoute(table, 'alpine', 'docker.io'), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRoute(table, 'ghcr.io/owner/img', undefined), { upstream: 'ghcr.io', repo: 'owner/img' });
  assert.deepEqual(resolveRoute(table, 'docker.io/library/alpine', undefined), { upstream: 'docker.io', repo: 'library/alpine' });
  assert.deepEqual(resolveRoute(table, 'docker.elastic.co/elasticsearch/elasticsearch', undefined), { upstream: 'docker.elastic.co', repo: 'elasticsearch/elasticsearch' });
  assert.equal(code(() => resolveRoute(table, 'evil.example.com/x/y', undefined)), '404 NAME_UNKNOWN');
  assert.equal(code(() => resolveRoute(table, 'x/y', 'evil.example.com')), '404 NAME_UNKNOWN');
  assert.equal(code(() => resolveRoute(table, 'localhost/x', undefined)), '404 NAME_UNKNOWN');
  assert.equal(code(() => resolveRoute(table, 'ghcr.io', undefined)), undefined); // a Docker Hub repo named like a host is only a name
});

test('Range: one satisfiable range, else 416', () => {
  assert.deepEqual(byteRange('bytes=0-9', 100), { start: 0, end: 9 });
  assert.deepEqual(byteRange('bytes=90-', 100), { start: 90, end: 99 });
  assert.deepEqual(byteRange('bytes=-10', 100), { start: 90, end: 99 });
  assert.deepEqual(byteRange('bytes=0-999', 100), { start: 0, end: 99 });
  for (const bad of ['bytes=100-', 'bytes=9-0', 'bytes=0-1,5-6', 'items=0-1', 'bytes=abc', `bytes=${'0-1,'.repeat(100)}0-1`]) {
    assert.equal(code(() => byteRange(bad, 100)), '416 RANGE_INVALID', bad);
  }
});
