import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isPrivateHost } from '../../../src/upstream/address.js';
import { parseChallenges } from '../../../src/upstream/challenge.js';
import { classifyFailure, toUpstreamError } from '../../../src/upstream/upstream-errors.js';
import { CircuitBreaker, parseRetryAfter } from '../../../src/policy/circuit-breaker.js';
import { mayServeStale, tagFreshness } from '../../../src/policy/freshness.js';
import { manifestReferences } from '../../../src/cache/manifests.js';
import { paginate } from '../../../src/cache/listing.js';

test('WWW-Authenticate challenges as registries send them', () => {
  assert.deepEqual(parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' } },
  ]);
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  assert.deepEqual(parseChallenges(['Basic realm=x', 'Bearer realm="r", error="invalid_token"']).map((c) => c.scheme), ['basic', 'bearer']);
  assert.deepEqual(parseChallenges('Bearer realm="a\\"b"')[0]?.params, { realm: 'a"b' });
  assert.deepEqual(parseChallenges(undefined), []);
});

test('private addresses are recognised (redirect and realm targets)', () => {
  for (const h of ['127.0.0.1', 'localhost', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '[::1]', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '0.0.0.0']) assert.equal(isPrivateHost(h), true, h);
  for (const h of ['8.8.8.8', 'production.cloudflare.docker.com', '172.32.0.1', '2606:4700::1']) assert.equal(isPrivateHost(h), false, h);
});

test('upstream failures map to 502/503/504, never 500', () => {
  const err = (code: string) => Object.assign(new Error(code), { code });
  assert.equal(toUpstreamError('u', err('ECONNREFUSED')).status, 503);
  assert.equal(toUpstreamError('u', err('UND_ERR_HEADERS_TIMEOUT')).status, 504);
  assert.equal(toUpstreamError('u', err('ECONNRESET')).status, 502);
  assert.equal(toUpstreamError('u', new Error('weird')).status, 502);
  assert.equal(classifyFailure({ cause: { code: 'ENOTFOUND' } }), 'dns');
});

test('circuit breaker opens after N failures, lets one probe through after the cooldown, closes on success', () => {
  let now = 1000;
  const b = new CircuitBreaker({ failures: 3, cooldownMs: 500, now: () => now });
  b.onFailure();
  b.onFailure();
  assert.equal(b.tryAcquire(), true);
  b.onFailure();
  assert.equal(b.state, 'open');
  assert.equal(b.tryAcquire(), false);
  assert.equal(b.retryAfterMs(), 500);
  now += 500;
  assert.equal(b.state, 'half-open');
  assert.equal(b.tryAcquire(), true);
  assert.equal(b.tryAcquire(), false, 'only one probe at a time');
  b.onFailure();
  assert.equal(b.state, 'open', 'a failed probe reopens');
  now += 500;
  assert.equal(b.tryAcquire(), true);
  b.onSuccess();
  assert.equal(b.state, 'closed');
  b.backOff(2000);
  assert.equal(b.tryAcquire(), false);
  assert.equal(new CircuitBreaker({ failures: 0, cooldownMs: 1 }).tryAcquire(), true);
});

test('Retry-After in seconds or as a date', () => {
  assert.equal(parseRetryAfter('7'), 7000);
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  assert.equal(parseRetryAfter('soon'), undefined);
  assert.equal(parseRetryAfter(undefined), undefined);
});

test('tag freshness and stale-if-error windows', () => {
  const s = { tagTtl: 100, maxStale: 1000 };
  assert.equal(tagFreshness({ checkedAt: 0 }, 99, s), 'fresh');
  assert.equal(tagFreshness({ checkedAt: 0 }, 100, s), 'expired');
  assert.equal(mayServeStale({ checkedAt: 0 }, 1100, s), true);
  assert.equal(mayServeStale({ checkedAt: 0 }, 1101, s), false);
});

test('manifest references cover config, layers, index children, subject and artifact blobs', () => {
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  assert.deepEqual(manifestReferences({ config: { digest: d('a') }, layers: [{ digest: d('b') }, { digest: d('c') }], subject: { digest: d('d') } }).sort(), [d('a'), d('b'), d('c'), d('d')]);
  assert.deepEqual(manifestReferences({ manifests: [{ digest: d('e') }, { digest: d('e') }] }), [d('e')]);
  assert.deepEqual(manifestReferences(null), []);
});

test('tag pagination follows the spec (sorted, after last, at most n)', () => {
  assert.deepEqual(paginate(['c', 'a', 'b'], {}), { page: ['a', 'b', 'c'], more: false });
  assert.deepEqual(paginate(['c', 'a', 'b'], { n: 2 }), { page: ['a', 'b'], more: true });
  assert.deepEqual(paginate(['c', 'a', 'b'], { n: 2, last: 'b' }), { page: ['c'], more: false });
  assert.deepEqual(paginate(['a'], { n: 0 }), { page: [], more: true });
});
