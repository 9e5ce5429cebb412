// Tallied counters and histograms must export exactly what prom-client's own Counter and Histogram export for
// the same observations: prom-client is the oracle, both rendered through a real Registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Histogram, Registry } from 'prom-client';
import { TallyCounter, TallyHistogram } from '../../../src/observability/tally.js';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Observations that hit every bucket, both edges of a bound, and +Inf. */
const OBSERVATIONS: readonly [string, string, number][] = [
  ['manifest', 'hit', 0.00002],
  ['manifest', 'hit', 0.005],
  ['manifest', 'hit', 0.0050001],
  ['blob', 'miss', 0.3],
  ['blob', 'miss', 61],
  ['manifest', 'hit', 0],
  ['blob', 'error', 60],
  ['tags', 'none', 2.5],
  ...BUCKETS.map((b, i): [string, string, number] => ['base', 'none', b * (i % 2 === 0 ? 1 : 0.999)]),
];

function withoutEmpty<T extends object>(values: T[]): T[] {
  // prom-client leaves `exemplar: undefined/null` in its values; nothing reads it without exemplars enabled.
  return values.map((v) => Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined && x !== null)) as T);
}

test('a tallied histogram exports what prom-client’s Histogram exports for the same observations', async () => {
  const oracle = new Registry();
  const mine = new Registry();
  const h = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['kind', 'result'], buckets: BUCKETS, registers: [oracle] });
  const t = new TallyHistogram('x_seconds', 'h', ['kind', 'result'], BUCKETS, mine);
  for (const [kind, result, v] of OBSERVATIONS) {
    h.observe({ kind, result }, v);
    t.tally({ kind, result }).observe(v);
  }
  assert.equal(await mine.metrics(), await oracle.metrics());
  assert.deepEqual(withoutEmpty((await t.get()).values), withoutEmpty((await h.get()).values));
  assert.deepEqual(await mine.getMetricsAsJSON().then((m) => m.map((x) => ({ ...x, values: withoutEmpty(x.values) }))), await oracle.getMetricsAsJSON().then((m) => m.map((x) => ({ ...x, values: withoutEmpty(x.values) }))));
  // Bucket counts are cumulative and end at the count: spot-check one series by hand too.
  const text = await mine.metrics();
  assert.match(text, /^x_seconds_bucket\{le="0.005",kind="manifest",result="hit"\} 3$/m);
  assert.match(text, /^x_seconds_bucket\{le="0.01",kind="manifest",result="hit"\} 4$/m);
  assert.match(text, /^x_seconds_bucket\{le="60",kind="blob",result="miss"\} 1$/m);
  assert.match(text, /^x_seconds_bucket\{le="\+Inf",kind="blob",result="miss"\} 2$/m);
});

test('a tallied counter exports what prom-client’s Counter exports, in the same order, zeros included', async () => {
  const oracle = new Registry();
  const mine = new Registry();
  const c = new Counter({ name: 'y_total', help: 'c', labelNames: ['upstream', 'result'], registers: [oracle] });
  const t = new TallyCounter('y_total', 'c', ['upstream', 'result'], mine);
  c.inc({ upstream: 'docker.io', result: 'hit' }, 0);
  t.tally({ upstream: 'docker.io', result: 'hit' });
  for (const [upstream, result, n] of [
    ['ghcr.io', 'miss', 10],
    ['docker.io', 'hit', 5],
    ['ghcr.io', 'miss', 2.5],
    ['quay.io', 'error', 1],
  ] as const) {
    c.inc({ upstream, result }, n);
    t.tally({ upstream, result }).value += n;
  }
  assert.equal(await mine.metrics(), await oracle.metrics());
  assert.deepEqual((await t.get()).values, (await c.get()).values);
  assert.match(await mine.metrics(), /^y_total\{upstream="ghcr.io",result="miss"\} 12.5$/m);
});

test('a tally is resolved once per label set and reset() forgets every series', async () => {
  const r = new Registry();
  const t = new TallyCounter('z_total', 'c', ['a', 'b'], r);
  assert.equal(t.tally({ a: 'x', b: 'y' }), t.tally({ a: 'x', b: 'y' }));
  assert.notEqual(t.tally({ a: 'x', b: 'y' }), t.tally({ a: 'xy', b: '' }), 'label values are not confused by joining');
  t.tally({ a: 'x', b: 'y' }).value += 3;
  assert.match(await r.metrics(), /^z_total\{a="x",b="y"\} 3$/m);
  r.resetMetrics();
  assert.doesNotMatch(await r.metrics(), /z_total\{/);
});
