// The cluster's invalidations (src/cluster/invalidations.ts) without PostgreSQL: the wire format (messages under
// PostgreSQL's payload limit, split item by item, malformed ones refused), and the listener's behaviour on an
// in-memory channel: a replica applies the others' changes and never its own, and a lost connection makes it
// drop its memory, listen again, drop it once more and say so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import type { ManifestChange } from '../../../src/cache/manifests.js';
import { ClusterInvalidations, decodeChange, encodeChange, MAX_PAYLOAD_BYTES, type ChangeChannel, type ChangeSource } from '../../../src/cluster/invalidations.js';
import type { NotificationChannel } from '../../../src/index/postgres.js';
import { createLogger } from '../../../src/observability/logger.js';

const digest = (i: number): string => `sha256:${i.toString(16).padStart(64, '0')}`;

test('a small change is one message that decodes to itself', () => {
  const change: ManifestChange = { kind: 'references', upstream: 'docker.io', repo: 'library/alpine', references: ['3.20'], digests: [digest(1)] };
  const out = encodeChange('replica-a', change);
  assert.equal(out.length, 1);
  assert.deepEqual(decodeChange(out[0] ?? ''), { origin: 'replica-a', change });
  const forgotten: ManifestChange = { kind: 'forgotten', digests: [digest(2), digest(3)] };
  assert.deepEqual(decodeChange(encodeChange('b', forgotten)[0] ?? ''), { origin: 'b', change: forgotten });
});

test('a large change is split into messages under the payload limit that together say all of it', () => {
  const digests = Array.from({ length: 1000 }, (_, i) => digest(i));
  const tags = Array.from({ length: 300 }, (_, i) => `tag-${i}`);
  const out = encodeChange('r', { kind: 'references', upstream: 'ghcr.io', repo: 'org/app', references: tags, digests });
  assert.ok(out.length > 1, `split into ${out.length}`);
  const seenTags: string[] = [];
  const seenDigests: string[] = [];
  for (const payload of out) {
    assert.ok(Buffer.byteLength(payload) <= MAX_PAYLOAD_BYTES, `${Buffer.byteLength(payload)} bytes`);
    const m = decodeChange(payload);
    assert.ok(m && m.change !== 'everything' && m.change.kind === 'references');
    assert.equal(m.change.upstream, 'ghcr.io');
    assert.equal(m.change.repo, 'org/app');
    seenTags.push(...m.change.references);
    seenDigests.push(...m.change.digests);
  }
  assert.deepEqual(seenTags, tags);
  assert.deepEqual(seenDigests, digests);
});

test('an item too large for any message turns into "forget everything"; malformed messages are refused', () => {
  const out = encodeChange('r', { kind: 'references', upstream: 'u', repo: 'x'.repeat(9000), references: ['t'], digests: [] });
  assert.deepEqual(out.map(decodeChange), [{ origin: 'r', change: 'everything' }]);
  for (const bad of ['', 'not json', '[]', 'null', '{"k":"f","d":[]}', '{"o":"r","k":"r","t":["a"]}', '{"o":"r","k":"f","d":[1]}', '{"o":"r","k":"?"}']) {
    assert.equal(decodeChange(bad), undefined, bad);
  }
});

/** An in-memory stand-in for PostgreSQL's LISTEN/NOTIFY: every listener gets every message. */
class Bus implements ChangeChannel {
  readonly listeners = new Set<{ onMessage: (p: string) => void; lose: () => void }>();
  failListen = false;
  listen(_channel: string, onMessage: (payload: string) => void): Promise<NotificationChannel> {
    if (this.failListen) return Promise.reject(new Error('connection refused'));
    let lose!: () => void;
    const lost = new Promise<void>((r) => (lose = r));
    const l = { onMessage, lose: () => lose() };
    this.listeners.add(l);
    void lost.then(() => this.listeners.delete(l));
    return Promise.resolve({ lost, ping: () => Promise.resolve(), close: () => Promise.resolve(l.lose()) });
  }
  notify(_channel: string, payload: string): Promise<void> {
    for (const l of this.listeners) l.onMessage(payload);
    return Promise.resolve();
  }
  /** What pg_terminate_backend does to every listening connection. */
  terminateAll(): void {
    for (const l of [...this.listeners]) l.lose();
  }
}

/** A manifest service's memory, as far as the invalidations see it. */
class FakeSource implements ChangeSource {
  readonly applied: ManifestChange[] = [];
  drops = 0;
  private readonly listeners: ((c: ManifestChange) => void)[] = [];
  onChange(l: (c: ManifestChange) => void): void {
    this.listeners.push(l);
  }
  change(c: ManifestChange): void {
    for (const l of this.listeners) l(c);
  }
  applyChange(c: ManifestChange): void {
    this.applied.push(c);
  }
  dropMemory(): { tags: number; notFound: number } {
    this.drops++;
    return { tags: 3, notFound: 1 };
  }
}

function logged(): { logger: ReturnType<typeof createLogger>; events: () => string[] } {
  const lines: string[] = [];
  const sink = new PassThrough();
  sink.on('data', (b: Buffer) => lines.push(...b.toString('utf8').split('\n').filter((x) => x !== '')));
  return { logger: createLogger('info', sink), events: () => lines.map((l) => String((JSON.parse(l) as { event?: unknown }).event)) };
}

async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    assert.ok(Date.now() < deadline, 'timed out');
    await new Promise((r) => setImmediate(r));
  }
}

test('a replica applies the changes of the others, never its own', async () => {
  const bus = new Bus();
  const [sa, sb] = [new FakeSource(), new FakeSource()];
  const a = new ClusterInvalidations({ id: 'a', channel: bus, logger: logged().logger });
  const b = new ClusterInvalidations({ id: 'b', channel: bus, logger: logged().logger });
  await a.start(sa);
  await b.start(sb);
  const change: ManifestChange = { kind: 'references', upstream: 'u', repo: 'team/app', references: ['1'], digests: [digest(7)] };
  sa.change(change);
  assert.deepEqual(sb.applied, [change]);
  assert.deepEqual(sa.applied, [], 'not its own');
  assert.equal(a.counts.sent, 1);
  assert.equal(b.counts.received, 1);
  await Promise.all([a.close(), b.close()]);
  assert.equal(bus.listeners.size, 0, 'closed: no listener left');
});

test('the listening connection lost: memory dropped at once, again once listening, a log line each time; messages flow again', async (t) => {
  const bus = new Bus();
  const sb = new FakeSource();
  const log = logged();
  const b = new ClusterInvalidations({ id: 'b', channel: bus, logger: log.logger, retryMinMs: 1, retryMaxMs: 5 });
  t.after(() => b.close());
  await b.start(sb);
  assert.equal(b.connected, true);
  assert.equal(sb.drops, 0, 'nothing dropped on the first listen');

  // The backend terminated, and the next attempts refused for a while.
  bus.failListen = true;
  bus.terminateAll();
  await until(() => sb.drops >= 3);
  assert.equal(b.connected, false);
  assert.ok(log.events().includes('cluster-listen-lost'));
  assert.equal(log.events().filter((e) => e === 'cluster-listen-failed').length, 1, 'the failed attempts said once');
  bus.failListen = false;
  await until(() => b.connected);
  const drops = sb.drops;
  assert.equal(b.counts.resyncs, 1);
  assert.ok(log.events().includes('cluster-resync'));
  assert.ok(drops >= 4, 'dropped again once listening');

  await bus.notify('relais_cache_changes', encodeChange('a', { kind: 'forgotten', digests: [digest(9)] })[0] ?? '');
  assert.deepEqual(sb.applied, [{ kind: 'forgotten', digests: [digest(9)] }]);
});
