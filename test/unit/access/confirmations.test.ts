// The pure parts of passthrough upstreams (docs/access.md): the confirmation cache's bounds and TTL (with an
// injected clock), its keys (a keyed hash that never holds the credential), and reading a client's credential
// from its Authorization header.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfirmationCache } from '../../../src/policy/confirmations.js';
import { credentialMaterial, parseClientCredential } from '../../../src/upstream/credential.js';
import { resolveConfig } from '../../../src/config/load.js';

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

test('a confirmation holds for its TTL and not a millisecond longer', () => {
  const c = clock();
  const cache = new ConfirmationCache({ ttlMs: 60_000, maxEntries: 10 }, { now: c.now });
  const k = cache.key('basic\0alice\0pw', 'registry.gitlab.example', 'team/private');
  assert.equal(cache.has(k), false);
  cache.confirm(k);
  assert.equal(cache.has(k), true);
  c.advance(59_999);
  assert.equal(cache.has(k), true);
  c.advance(1);
  assert.equal(cache.has(k), false, 'expired at exactly ttl');
  assert.equal(cache.size, 0, 'an expired entry is dropped on sight');
});

test('bounded: over maxEntries the expired go first, then the oldest confirmation', () => {
  const c = clock();
  const cache = new ConfirmationCache({ ttlMs: 10_000, maxEntries: 3 }, { now: c.now });
  const keys = ['a', 'b', 'c', 'd', 'e'].map((x) => cache.key(x, 'u', 'r'));
  const [a, b, cc, d, e] = keys as [string, string, string, string, string];
  cache.confirm(a);
  c.advance(6_000);
  cache.confirm(b);
  cache.confirm(cc);
  c.advance(5_000); // a expired, b and c alive
  cache.confirm(d);
  assert.equal(cache.size, 3);
  assert.deepEqual([cache.has(a), cache.has(b), cache.has(cc), cache.has(d)], [false, true, true, true]);
  // A re-confirmation makes an entry the newest: b survives, c (now the oldest) goes.
  cache.confirm(b);
  cache.confirm(e);
  assert.equal(cache.size, 3);
  assert.deepEqual([cache.has(b), cache.has(cc), cache.has(d), cache.has(e)], [true, false, true, true]);
});

test('ttl 0 or maxEntries 0 turn the cache off: every read asks the upstream', () => {
  for (const s of [{ ttlMs: 0, maxEntries: 10 }, { ttlMs: 60_000, maxEntries: 0 }]) {
    const cache = new ConfirmationCache(s);
    const k = cache.key('x', 'u', 'r');
    cache.confirm(k);
    assert.equal(cache.has(k), false);
    assert.equal(cache.size, 0);
  }
});

test('forget() drops a confirmation', () => {
  const cache = new ConfirmationCache({ ttlMs: 60_000, maxEntries: 10 });
  const k = cache.key('x', 'u', 'r');
  cache.confirm(k);
  cache.forget(k);
  assert.equal(cache.has(k), false);
});

test('keys: distinct per credential, upstream and repository; keyed by a per-process secret; never the credential', () => {
  const secret = Buffer.alloc(32, 7);
  const cache = new ConfirmationCache({ ttlMs: 1, maxEntries: 1 }, { secret });
  const material = credentialMaterial({ kind: 'basic', username: 'alice', password: 'S3cret-pw' });
  const k = cache.key(material, 'up', 'team/private');
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.ok(!k.includes('alice') && !k.includes('S3cret'));
  assert.equal(k, new ConfirmationCache({ ttlMs: 1, maxEntries: 1 }, { secret }).key(material, 'up', 'team/private'), 'stable under one secret');
  assert.notEqual(k, new ConfirmationCache({ ttlMs: 1, maxEntries: 1 }).key(material, 'up', 'team/private'), 'another process, another key');
  const others = [
    cache.key(credentialMaterial({ kind: 'basic', username: 'alice', password: 'other' }), 'up', 'team/private'),
    cache.key(credentialMaterial({ kind: 'bearer', token: 'S3cret-pw' }), 'up', 'team/private'),
    cache.key(credentialMaterial(undefined), 'up', 'team/private'),
    cache.key(material, 'up2', 'team/private'),
    cache.key(material, 'up', 'team/other'),
    // The separator keeps the fields apart: ("up", "team/private") is not ("up\0team", "private").
    cache.key(material, 'up\0team', 'private'),
  ];
  assert.equal(new Set([k, ...others]).size, others.length + 1);
});

test('parseClientCredential: Basic and Bearer; empty Basic credentials and other schemes are anonymous', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  assert.deepEqual(parseClientCredential(`Basic ${b64('alice:pa:ss')}`), { kind: 'basic', username: 'alice', password: 'pa:ss' });
  assert.deepEqual(parseClientCredential('bearer abc.def'), { kind: 'bearer', token: 'abc.def' });
  assert.equal(parseClientCredential(undefined), undefined);
  assert.equal(parseClientCredential(`Basic ${b64(':')}`), undefined);
  assert.equal(parseClientCredential('Basic '), undefined);
  assert.equal(parseClientCredential('Digest x=y'), undefined);
  assert.equal(credentialMaterial(undefined), 'anonymous');
});

test('config: access defaults to shared; a passthrough upstream refuses a configured username/password', () => {
  const base = { upstreams: { 'r.example': { url: 'https://r.example' } } };
  const c = resolveConfig(base);
  assert.equal(c.upstreams['r.example']?.access, 'shared');
  assert.equal(c.passthrough.confirmTtl, 60_000);
  assert.equal(c.passthrough.maxConfirmations, 10_000);
  assert.throws(() => resolveConfig({ upstreams: { 'r.example': { url: 'https://r.example', access: 'passthrough', username: 'u', password: 'p' } } }), /passthrough.*own credentials/);
  assert.throws(() => resolveConfig({ ...base, passthrough: { confirmTtl: '2h' } }), /at most 1h/);
  assert.equal(resolveConfig({ upstreams: { 'r.example': { url: 'https://r.example', access: 'passthrough' } }, passthrough: { confirmTtl: '10s' } }).passthrough.confirmTtl, 10_000);
});
