// The one registry client's exchange engine (src/upstream/registry-client.ts), in both of its
// configurations: the server's (UpstreamClient: breaker, private-address checks, Retry-After up to
// maxRetryAfter) and the commands' (RegistryClient: limiter, challenge per scope class). Against real
// node:http servers on port 0, counting what they saw; waits between attempts are recorded, not slept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RegistryClient } from '../../../src/upstream/registry-client.js';
import { UpstreamClient } from '../../../src/upstream/client.js';
import { upstreamSchema } from '../../../src/config/schema.js';
import { RelaisError } from '../../../src/errors.js';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly authorization: string | undefined;
}

async function serve(handler: (req: IncomingMessage, res: ServerResponse, base: string) => void): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  let base = '';
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res, base);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A registry with a Bearer token service at /token (one token, "t1"); every /v2/ path wants it. */
function tokenRegistry(req: IncomingMessage, res: ServerResponse, base: string): void {
  if (req.url?.startsWith('/token') === true) {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ token: 't1', expires_in: 300 }));
    return;
  }
  if (req.headers.authorization !== 'Bearer t1') {
    res.statusCode = 401;
    res.setHeader('www-authenticate', `Bearer realm="${base}/token",service="test"`);
    res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    return;
  }
  res.end('ok');
}

function upstreamConfig(url: string, extra: Record<string, unknown> = {}) {
  return upstreamSchema.parse({ url, ...extra });
}

/** Records the waits between attempts instead of sleeping them. */
function recordingSleep(): { waits: number[]; sleep: (ms: number) => Promise<void> } {
  const waits: number[] = [];
  return { waits, sleep: (ms) => (waits.push(ms), Promise.resolve()) };
}

const registryPaths = (seen: Seen[]) => seen.filter((s) => s.url.startsWith('/v2/'));
const tokenPaths = (seen: Seen[]) => seen.filter((s) => s.url.startsWith('/token'));

void test('the commands\' client answers the challenge once and reuses the token for the same repository and scope', async () => {
  const srv = await serve(tokenRegistry);
  const c = new RegistryClient({ url: srv.url, userAgent: 'test' });
  try {
    for (let i = 0; i < 3; i++) assert.equal((await c.send('GET', 'team/app', c.url('/v2/team/app/tags/list'))).status, 200);
    assert.equal(tokenPaths(srv.seen).length, 1, 'one token fetched');
    // 401, then 200 with the token; then 200 twice with the token straight away.
    assert.deepEqual(registryPaths(srv.seen).map((s) => s.authorization), [undefined, 'Bearer t1', 'Bearer t1', 'Bearer t1']);
    assert.equal(c.stats.tokenFetches, 1);
  } finally {
    await c.close();
    await srv.close();
  }
});

void test('the server\'s client answers the challenge once and reuses the token (sent before any challenge)', async () => {
  const srv = await serve(tokenRegistry);
  const u = new UpstreamClient('test', upstreamConfig(srv.url, { allowPrivateRedirects: true }));
  try {
    for (let i = 0; i < 3; i++) {
      const res = await u.send({ method: 'GET', repo: 'team/app', path: '/v2/team/app/manifests/v1' });
      assert.equal(res.status, 200);
      await res.body.text();
    }
    assert.equal(tokenPaths(srv.seen).length, 1, 'one token fetched');
    assert.deepEqual(registryPaths(srv.seen).map((s) => s.authorization), [undefined, 'Bearer t1', 'Bearer t1', 'Bearer t1']);
  } finally {
    await u.close();
    await srv.close();
  }
});

void test('Authorization is never sent to a redirect\'s other origin, in both configurations', async () => {
  const storage = await serve((_req, res) => res.end('blob bytes'));
  const registry = await serve((req, res, base) => {
    if (req.url?.includes('/blobs/') === true && req.headers.authorization === 'Bearer t1') {
      res.statusCode = 307;
      res.setHeader('location', `${storage.url}/signed/blob?sig=1`);
      res.end();
      return;
    }
    tokenRegistry(req, res, base);
  });
  const commands = new RegistryClient({ url: registry.url, userAgent: 'test' });
  const server = new UpstreamClient('test', upstreamConfig(registry.url));
  try {
    const opened = await commands.open('team/app', commands.url('/v2/team/app/blobs/sha256:aa'));
    assert.equal(opened.status, 200);
    assert.equal(await opened.body.text(), 'blob bytes');
    const sent = await server.send({ method: 'GET', repo: 'team/app', path: '/v2/team/app/blobs/sha256:aa' });
    assert.equal(sent.status, 200);
    assert.equal(await sent.body.text(), 'blob bytes');
    const read = await commands.send('GET', 'team/app', commands.url('/v2/team/app/blobs/sha256:aa'), { followRedirects: true });
    assert.equal(read.body.toString(), 'blob bytes');
    assert.equal(storage.seen.length, 3, 'the storage URL was fetched by each');
    for (const s of storage.seen) assert.equal(s.authorization, undefined, 'the registry token leaked to the storage origin');
    assert.ok(registry.seen.some((s) => s.url.includes('/blobs/') && s.authorization === 'Bearer t1'), 'the registry itself got the token');
  } finally {
    await commands.close();
    await server.close();
    await registry.close();
    await storage.close();
  }
});

void test('the server\'s client refuses a redirect to another private host (its target check), before connecting to it', async () => {
  const registry = await serve((_req, res) => {
    res.statusCode = 302;
    res.setHeader('location', 'http://10.0.0.1:9/x');
    res.end();
  });
  const server = new UpstreamClient('test', upstreamConfig(registry.url));
  try {
    await assert.rejects(server.send({ method: 'GET', repo: 'a', path: '/v2/a/blobs/sha256:aa' }), (e: unknown) => e instanceof RelaisError && /private address \(10\.0\.0\.1\)/.test(e.message));
    assert.equal(registry.seen.length, 1);
  } finally {
    await server.close();
    await registry.close();
  }
});

void test('Retry-After is honoured with the injected sleep: the server gives up beyond maxRetryAfter and backs off, a command waits the maximum', async () => {
  let n = 0;
  const srv = await serve((req, res) => {
    n++;
    const ra = /ra=(\d+)/.exec(req.url ?? '')?.[1];
    // Every other request fails with the asked Retry-After.
    if (n % 2 === 1 && ra !== undefined) {
      res.statusCode = 503;
      res.setHeader('retry-after', ra);
      res.end();
      return;
    }
    res.end('ok');
  });
  const serverSleep = recordingSleep();
  const server = new UpstreamClient('test', upstreamConfig(srv.url, { retries: { attempts: 3, backoff: 200, maxRetryAfter: 10_000 }, circuitBreaker: { failures: 5, cooldown: 30_000 } }), {}, { sleep: serverSleep.sleep });
  const commandSleep = recordingSleep();
  const command = new RegistryClient({ url: srv.url, userAgent: 'test', sleep: commandSleep.sleep });
  try {
    const ok = await server.send({ method: 'GET', repo: 'a', path: '/v2/a/manifests/x?ra=7' });
    assert.equal(ok.status, 200);
    await ok.body.text();
    assert.deepEqual(serverSleep.waits, [7000]);
    assert.equal(srv.seen.length, 2);

    // 30 s is beyond maxRetryAfter: no wait, a 503 that passes the Retry-After on, and the breaker backs off.
    await assert.rejects(server.send({ method: 'GET', repo: 'a', path: '/v2/a/manifests/x?ra=30' }), (e: unknown) => e instanceof RelaisError && e.status === 503 && e.headers?.['retry-after'] === '30');
    assert.deepEqual(serverSleep.waits, [7000]);
    assert.equal(srv.seen.length, 3);
    assert.equal(server.breaker.state, 'open');

    n = 0;
    const r = await command.send('GET', 'a', command.url('/v2/a/manifests/x?ra=120'));
    assert.equal(r.status, 200);
    assert.deepEqual(commandSleep.waits, [60_000], 'a command waits at most 60 s');
    assert.equal(command.stats.retries, 1);
  } finally {
    await server.close();
    await command.close();
    await srv.close();
  }
});

void test('the breaker is in the server\'s configuration only: it opens after N failures; the commands keep asking', async () => {
  const srv = await serve((_req, res) => {
    res.statusCode = 500;
    res.end();
  });
  const server = new UpstreamClient('test', upstreamConfig(srv.url, { retries: { attempts: 1 }, circuitBreaker: { failures: 2, cooldown: 60_000 } }));
  const command = new RegistryClient({ url: srv.url, userAgent: 'test', retries: 0 });
  try {
    for (let i = 0; i < 2; i++) await assert.rejects(server.send({ method: 'GET', repo: 'a', path: '/v2/a/manifests/x' }), (e: unknown) => e instanceof RelaisError && e.status === 502);
    assert.equal(srv.seen.length, 2);
    await assert.rejects(server.send({ method: 'GET', repo: 'a', path: '/v2/a/manifests/x' }), (e: unknown) => e instanceof RelaisError && /circuit open/.test(e.message));
    assert.equal(srv.seen.length, 2, 'an open circuit sends nothing');

    for (let i = 0; i < 4; i++) assert.equal((await command.send('GET', 'a', command.url('/v2/a/manifests/x'))).status, 500);
    assert.equal(srv.seen.length, 6, 'a command has no breaker: every request reached the registry');
  } finally {
    await server.close();
    await command.close();
    await srv.close();
  }
});

void test('the limiter bounds the commands\' requests in flight, streamed bodies included until they end', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const srv = await serve((_req, res) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.on('finish', () => inFlight--);
    // Hold each answer a little so that requests overlap unless the client bounds them.
    setTimeout(() => res.end('x'), 30);
  });
  const c = new RegistryClient({ url: srv.url, userAgent: 'test', concurrency: 2 });
  try {
    const sends = Array.from({ length: 6 }, (_, i) => c.send('GET', 'a', c.url(`/v2/a/blobs/${i}`)));
    const opens = Array.from({ length: 4 }, async (_, i) => {
      const r = await c.open('a', c.url(`/v2/a/blobs/o${i}`));
      return r.body.text();
    });
    assert.equal((await Promise.all(sends)).length, 6);
    assert.deepEqual(await Promise.all(opens), ['x', 'x', 'x', 'x']);
    assert.equal(srv.seen.length, 10);
    assert.equal(maxInFlight, 2, `requests in flight at most 2 (saw ${maxInFlight})`);
  } finally {
    await c.close();
    await srv.close();
  }
});
