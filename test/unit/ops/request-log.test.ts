// The request log: lines exactly as pino would write them, written in batches, none lost at exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { formatRequestLine, RequestLog, type RequestLine } from '../../../src/observability/request-log.js';

const LINES: readonly RequestLine[] = [
  { method: 'GET', path: '/v2/library/alpine/manifests/latest', status: 200, bytes: 1638, ms: 0.1, cache: 'hit', upstream: 'docker.io', aborted: false },
  { method: 'HEAD', path: '/v2/library/alpine/manifests/latest', status: 200, bytes: 0, ms: 12.5, cache: 'revalidated', upstream: 'docker.io', aborted: false },
  { method: 'GET', path: '/v2/', status: 401, bytes: undefined, ms: 0, cache: undefined, upstream: undefined, aborted: false },
  { method: 'GET', path: '/v2/a"b\\c/blobs/sha256:00?ns=ghcr.io&x=\u00e9\u0001', status: 200, bytes: 1e9, ms: 1234.5, cache: 'miss', upstream: 'ghcr.io', aborted: true },
];

test('a request line is byte for byte what pino writes for the same fields', () => {
  for (const l of LINES) {
    let written = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        written += chunk.toString('utf8');
        cb();
      },
    });
    const logger = pino({ level: 'info', base: { service: 'relais' }, timestamp: () => ',"time":1700000000123' }, sink);
    logger.info({ method: l.method, path: l.path, status: l.status, bytes: l.bytes, ms: l.ms, cache: l.cache, upstream: l.upstream, ...(l.aborted ? { aborted: true } : {}) }, 'request');
    assert.equal(formatRequestLine(l, 1700000000123), written);
    assert.equal((JSON.parse(formatRequestLine(l, 1)) as { path: string }).path, l.path);
  }
});

test('lines are written in batches: at the size threshold, after flushMs, and on close', async () => {
  const writes: string[] = [];
  const log = new RequestLog({ write: (c: string) => writes.push(c) }, { bufferBytes: 400, flushMs: 50 });
  const line = LINES[0] as RequestLine;
  const oneLine = formatRequestLine(line, Date.now()).length;
  const perBatch = Math.ceil(400 / oneLine);
  for (let i = 0; i < perBatch - 1; i++) log.write(line);
  assert.equal(writes.length, 0, 'below the threshold nothing is written');
  log.write(line);
  assert.equal(writes.length, 1, 'the line that crosses the threshold writes the batch');
  assert.equal(writes[0]?.split('\n').filter((x) => x !== '').length, perBatch);
  log.write(line);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(writes.length, 2, 'a lone line is written after flushMs');
  log.write(line);
  log.close();
  assert.equal(writes.length, 3, 'close writes what is left');
  const all = writes.join('').split('\n').filter((x) => x !== '');
  assert.equal(all.length, perBatch + 2);
  for (const l of all) assert.equal((JSON.parse(l) as { msg: string }).msg, 'request');
});

test('bufferBytes 0 writes every line at once', () => {
  const writes: string[] = [];
  const log = new RequestLog({ write: (c: string) => writes.push(c) }, { bufferBytes: 0, flushMs: 1000 });
  log.write(LINES[1] as RequestLine);
  log.write(LINES[2] as RequestLine);
  assert.equal(writes.length, 2);
});

test('lines still in the buffer reach stdout when the process exits, also on an uncaught exception', async () => {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const mod = new URL('../../../src/observability/request-log.js', import.meta.url).href;
  for (const ending of ['process.exit(0)', "throw new Error('crash')"]) {
    const script = `
      const { createRequestLog } = await import(${JSON.stringify(mod)});
      const log = createRequestLog();
      for (let i = 0; i < 3; i++) log.write({ method: 'GET', path: '/v2/x/' + i, status: 200, bytes: 1, ms: 0, cache: 'hit', upstream: 'u', aborted: false });
      setTimeout(() => { ${ending} }, 10);
    `;
    const out = await new Promise<string>((resolve) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: here }, (_err, stdout) => resolve(stdout));
    });
    const paths = out.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { path: string }).path);
    assert.deepEqual(paths, ['/v2/x/0', '/v2/x/1', '/v2/x/2'], `after ${ending}`);
  }
});
