// The server's synchronous fast path (prepared responses for hot tags): whatever it does, a request gets an answer
// and the process survives. A real server on port 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { createServer } from '../../../src/doors/http/server.js';
import { createLogger } from '../../../src/observability/logger.js';
import type { RequestInfo } from '../../../src/observability/metrics.js';
import { RequestLog } from '../../../src/observability/request-log.js';

async function serve(
  fast: Parameters<typeof createServer>[0]['fast'],
): Promise<{ url: string; lines: () => Record<string, unknown>[]; reports: RequestInfo[]; close: () => Promise<void> }> {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  const reports: RequestInfo[] = [];
  const s = createServer({
    headersTimeout: 5000,
    keepAliveTimeout: 1000,
    requestTimeout: 10_000,
    requestLog: new RequestLog({ write: (chunk: string) => sink.write(chunk) }, { bufferBytes: 0, flushMs: 0 }),
    logger: createLogger('info', sink),
    onRequestEnd: (info) => reports.push(info),
    fast,
    handlers: [
      (_req, res) => {
        res.end('full path');
        return Promise.resolve(true);
      },
    ],
  });
  await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', r));
  const { port } = s.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>), reports, close: () => s.drain(1000) };
}

test('a fast path that answers owns the request; one that declines leaves it to the handlers', async () => {
  const srv = await serve((req, res) => {
    if (req.url !== '/hot') return undefined;
    res.writeHead(200, ['content-type', 'text/plain']);
    res.end('prepared');
    return { upstream: 'docker.io', result: 'hit', kind: 'manifest', bytes: 8 };
  });
  try {
    assert.equal(await (await request(`${srv.url}/hot`)).body.text(), 'prepared');
    assert.equal(await (await request(`${srv.url}/cold`)).body.text(), 'full path');
    // Request lines are written when a response ends: poll (bounded) until both are there.
    for (let i = 0; i < 100 && srv.lines().filter((l) => l.msg === 'request').length < 2; i++) await new Promise((r) => setTimeout(r, 5));
    const lines = srv.lines().filter((l) => l.msg === 'request');
    assert.deepEqual(lines.map((l) => l.path).sort(), ['/cold', '/hot']);
    // What the fast path said it sent is what the log and the metrics hear, once per request.
    const hot = lines.find((l) => l.path === '/hot');
    assert.deepEqual({ ...hot, time: 0, ms: 0 }, { level: 30, time: 0, service: 'relais', method: 'GET', path: '/hot', status: 200, bytes: 8, ms: 0, cache: 'hit', upstream: 'docker.io', msg: 'request' });
    const reported = srv.reports.filter((r) => r.url === '/hot');
    assert.equal(reported.length, 1);
    assert.deepEqual({ ...reported[0], seconds: 0 }, { method: 'GET', url: '/hot', status: 200, kind: 'manifest', image: undefined, upstream: 'docker.io', result: 'hit', bytes: 8, seconds: 0, finished: true });
    assert.equal(srv.reports.filter((r) => r.url === '/cold').length, 1);
  } finally {
    await srv.close();
  }
});

test('a fast path that throws: before any byte the full path answers, after it the client sees a broken response', async () => {
  const srv = await serve((req, res) => {
    if (req.url === '/after') {
      res.writeHead(200, ['content-length', '100']);
      res.write('partial');
    }
    throw new Error('boom');
  });
  try {
    const before = await request(`${srv.url}/before`);
    assert.equal(before.statusCode, 200);
    assert.equal(await before.body.text(), 'full path');
    await assert.rejects(
      (async () => (await request(`${srv.url}/after`)).body.text())(),
      (e: Error & { code?: string }) => e.code === 'UND_ERR_SOCKET',
      'the broken response fails on the client (never a complete-looking one)',
    );
    assert.ok(srv.lines().some((l) => l.msg === 'fast path failed'), 'logged');
    assert.ok(srv.reports.some((r) => r.url === '/after' && !r.finished && r.error?.code === 'INTERNAL'), 'reported as a failed, unfinished request');
    // Still serving.
    assert.equal(await (await request(`${srv.url}/again`)).body.text(), 'full path');
  } finally {
    await srv.close();
  }
});
