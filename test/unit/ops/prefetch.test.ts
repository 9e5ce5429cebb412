// Prefetch's pure parts: image references and the schedule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clientAuthorization, nextRunDelay, parseImage } from '../../../src/upkeep/prefetch.js';

test('image references: host kept as a path prefix, default tag latest, digests', () => {
  assert.deepEqual(parseImage('alpine'), { name: 'alpine', reference: 'latest' });
  assert.deepEqual(parseImage('alpine:3.20'), { name: 'alpine', reference: '3.20' });
  assert.deepEqual(parseImage('docker.io/library/node:22'), { name: 'docker.io/library/node', reference: '22' });
  assert.deepEqual(parseImage('localhost:5000/team/app'), { name: 'localhost:5000/team/app', reference: 'latest' });
  assert.deepEqual(parseImage('localhost:5000/team/app:v1'), { name: 'localhost:5000/team/app', reference: 'v1' });
  const d = `sha256:${'a'.repeat(64)}`;
  assert.deepEqual(parseImage(`ghcr.io/org/app@${d}`), { name: 'ghcr.io/org/app', reference: d });
  assert.deepEqual(parseImage(`ghcr.io/org/app:main@${d}`), { name: 'ghcr.io/org/app', reference: d }, 'the digest wins over the tag');
  assert.throws(() => parseImage(':v1'), /not an image reference/);
  assert.throws(() => parseImage('alpine:'), /not an image reference/);
});

test('schedule: next time of day (UTC), or the interval since the last run, whichever comes first', () => {
  const now = Date.UTC(2026, 0, 10, 4, 0);
  assert.equal(nextRunDelay(now, ['05:30'], undefined, undefined), 90 * 60_000);
  assert.equal(nextRunDelay(now, ['03:00'], undefined, undefined), 23 * 3600_000, 'past today: tomorrow');
  assert.equal(nextRunDelay(now, ['03:00', '06:00'], undefined, undefined), 2 * 3600_000);
  assert.equal(nextRunDelay(now, ['04:00'], undefined, undefined), 24 * 3600_000, 'exactly now: the next day');
  assert.equal(nextRunDelay(now, [], 6 * 3600_000, undefined), 6 * 3600_000);
  assert.equal(nextRunDelay(now, [], 6 * 3600_000, now - 5 * 3600_000), 3600_000);
  assert.equal(nextRunDelay(now, [], 6 * 3600_000, now - 7 * 3600_000), 0, 'overdue: now');
  assert.equal(nextRunDelay(now, ['05:00'], 30 * 60_000, now), 30 * 60_000);
  assert.equal(nextRunDelay(now, [], undefined, undefined), undefined, 'no schedule');
});

test('credentials for a relais with authentication come from the environment', () => {
  assert.equal(clientAuthorization({}), undefined);
  assert.equal(clientAuthorization({ RELAIS_TOKEN: 'abc' }), 'Bearer abc');
  assert.equal(clientAuthorization({ RELAIS_USERNAME: 'ci', RELAIS_PASSWORD: 'pw' }), `Basic ${Buffer.from('ci:pw').toString('base64')}`);
});
