// The prepared responses of hot tags: served strictly before their freshness ends, bounded, forgotten with their manifest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HotManifests, prepare, type HotManifest } from '../../../src/doors/http/hot-manifests.js';

const entry = (digest: string, freshUntil: number): HotManifest => prepare({ digest, upstream: 'docker.io', freshUntil, headers: ['content-type', 'x'], body: Buffer.from(digest) });

test('an entry is served strictly before its freshness ends, then dropped', () => {
  const h = new HotManifests();
  h.set('/v2/a/manifests/1', entry('sha256:a', 1000));
  assert.equal(h.get('/v2/a/manifests/1', 999)?.digest, 'sha256:a');
  assert.equal(h.get('/v2/a/manifests/1', 1000), undefined);
  assert.equal(h.size, 0);
  assert.equal(h.get('/v2/b/manifests/1', 0), undefined);
});

test('bounded: the oldest entry goes first', () => {
  const h = new HotManifests(2);
  h.set('/1', entry('sha256:1', 10));
  h.set('/2', entry('sha256:2', 10));
  h.set('/1', entry('sha256:1', 10)); // re-set: now the newest
  h.set('/3', entry('sha256:3', 10));
  assert.equal(h.size, 2);
  assert.equal(h.get('/2', 0), undefined);
  assert.ok(h.get('/1', 0));
  assert.ok(h.get('/3', 0));
});

test('forgetting a manifest drops every URL it answers', () => {
  const h = new HotManifests();
  h.set('/v2/a/manifests/latest', entry('sha256:a', 10));
  h.set('/v2/a/manifests/v1', entry('sha256:a', 10));
  h.set('/v2/b/manifests/latest', entry('sha256:b', 10));
  h.forget(new Set(['sha256:a']));
  assert.equal(h.size, 1);
  assert.ok(h.get('/v2/b/manifests/latest', 0));
});

test('forgetting everything (a cluster replica that may have missed changes) drops every entry', () => {
  const h = new HotManifests();
  h.set('/v2/a/manifests/latest', entry('sha256:a', 10));
  h.set('/v2/b/manifests/latest', entry('sha256:b', 10));
  h.forget('all');
  assert.equal(h.size, 0);
  assert.equal(h.get('/v2/a/manifests/latest', 0), undefined);
});

test('a prepared entry says what a GET and a HEAD of it send, and which image it is (the metrics labels)', () => {
  const e = prepare({ digest: 'sha256:abc', upstream: 'docker.io', image: 'docker.io/library/a:latest', freshUntil: 10, headers: ['content-type', 'x'], body: Buffer.from('sha256:abc') });
  assert.deepEqual(e.answers.get, { upstream: 'docker.io', result: 'hit', kind: 'manifest', image: 'docker.io/library/a:latest', bytes: 'sha256:abc'.length });
  assert.deepEqual(e.answers.head, { upstream: 'docker.io', result: 'hit', kind: 'manifest', image: 'docker.io/library/a:latest', bytes: 0 });
});
