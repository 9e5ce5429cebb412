// The sendfile addon (native/sendfile) against real sockets and files: every byte arrives, and every way a
// transfer can end (client gone, client stalled, cancelled, file too short) ends it with the right errno,
// with its fds closed. Then relais's blob responses with and without it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { request, Agent } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSendfile, SendfileError } from '../../../src/doors/http/sendfile.js';
import { openFilesUnder } from '../../faults/helpers.js';

const loaded = loadSendfile();

function nativeOrFail(): NonNullable<typeof loaded.native> {
  // CI builds the addon (RELAIS_REQUIRE_NATIVE=1): a missing addon is a failure here, not a skip.
  assert.ok(loaded.native, `the sendfile addon must be built for these tests: ${'reason' in loaded ? loaded.reason : ''}`);
  return loaded.native;
}

/** A connected pair: `server` is the accepted socket (what relais writes to), `client` the peer. */
async function socketPair(): Promise<{ server: Socket; client: Socket; close(): void }> {
  const srv: Server = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const client = connect(port, '127.0.0.1');
  const server = await accepted;
  srv.close();
  // Resets are what some of these tests provoke: they are asserted through the transfer, not as socket events.
  server.on('error', () => undefined);
  client.on('error', () => undefined);
  return {
    server,
    client,
    close: () => {
      server.destroy();
      client.destroy();
    },
  };
}

function fdOf(s: Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  assert.equal(typeof fd, 'number');
  return fd as number;
}

function send(fdSock: number, fdFile: number, offset: number, length: number, idleMs = 60_000): { done: Promise<number>; job: object } {
  const native = nativeOrFail();
  let job!: object;
  const done = new Promise<number>((resolve, reject) => {
    job = native.send(fdSock, fdFile, offset, length, idleMs, (errno, sent) => (errno === 0 ? resolve(sent) : reject(new SendfileError(errno, sent))));
  });
  return { done, job };
}

async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

async function withFile(bytes: Buffer): Promise<{ fd: number; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'relais-sendfile-'));
  const path = join(dir, 'blob');
  await writeFile(path, bytes);
  const fh = await open(path, 'r');
  return {
    fd: fh.fd,
    close: async () => {
      await fh.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

test('sendfile addon: a range of a 48 MiB file arrives byte for byte, also while the client reads slowly', async () => {
  const data = randomBytes(48 * 1024 * 1024);
  const file = await withFile(data);
  const pair = await socketPair();
  try {
    const before = await openFds();
    const start = 12345;
    const length = data.length - start - 999;
    const received: Buffer[] = [];
    let got = 0;
    const all = new Promise<void>((resolve) => {
      pair.client.on('data', (c: Buffer) => {
        received.push(c);
        got += c.length;
        // Pause now and then: the kernel buffer fills, sendfile gets EAGAIN and must wait for EPOLLOUT.
        if (received.length % 50 === 0) {
          pair.client.pause();
          setTimeout(() => pair.client.resume(), 5);
        }
        if (got === length) resolve();
      });
    });
    const { done } = send(fdOf(pair.server), file.fd, start, length);
    assert.equal(await done, length);
    await all;
    assert.ok(Buffer.concat(received).equals(data.subarray(start, start + length)), 'the bytes are the file range');
    assert.equal(await openFds(), before, 'the dup()ed fds are closed');
  } finally {
    pair.close();
    await file.close();
  }
});

test('sendfile addon: a client that stops reading times out (ETIMEDOUT); a cancelled job ends with ECANCELED', async () => {
  const data = randomBytes(32 * 1024 * 1024);
  const file = await withFile(data);
  const stalled = await socketPair();
  const cancelled = await socketPair();
  try {
    stalled.client.pause();
    const t0 = Date.now();
    const slow = send(fdOf(stalled.server), file.fd, 0, data.length, 300);
    await assert.rejects(slow.done, (e: SendfileError) => e.code === 'ETIMEDOUT' && e.sent > 0 && e.sent < data.length);
    const waited = Date.now() - t0;
    assert.ok(waited >= 300 && waited < 5000, `timed out after ${waited} ms`);

    cancelled.client.pause();
    const c = send(fdOf(cancelled.server), file.fd, 0, data.length);
    setTimeout(() => nativeOrFail().cancel(c.job), 50);
    await assert.rejects(c.done, (e: SendfileError) => e.code === 'ECANCELED');
  } finally {
    stalled.close();
    cancelled.close();
    await file.close();
  }
});

test('sendfile addon: a client that disconnects fails the transfer (EPIPE/ECONNRESET); a short file fails with ENODATA', async () => {
  const data = randomBytes(32 * 1024 * 1024);
  const file = await withFile(data);
  const gone = await socketPair();
  const short = await socketPair();
  try {
    gone.client.pause();
    const g = send(fdOf(gone.server), file.fd, 0, data.length);
    setTimeout(() => gone.client.resetAndDestroy(), 50);
    await assert.rejects(g.done, (e: SendfileError) => ['EPIPE', 'ECONNRESET'].includes(e.code));

    short.client.resume();
    const s = send(fdOf(short.server), file.fd, data.length - 10, 100);
    await assert.rejects(s.done, (e: SendfileError) => e.code === 'ENODATA' && e.sent === 10);
  } finally {
    gone.close();
    short.close();
    await file.close();
  }
});

test('sendfile addon: 64 transfers at once on one thread all complete intact', async () => {
  const data = randomBytes(4 * 1024 * 1024);
  const file = await withFile(data);
  const want = createHash('sha256').update(data).digest('hex');
  const pairs = await Promise.all(Array.from({ length: 64 }, () => socketPair()));
  try {
    const results = await Promise.all(
      pairs.map(async (p, i) => {
        const h = createHash('sha256');
        let got = 0;
        const received = new Promise<void>((resolve) => {
          p.client.on('data', (c: Buffer) => {
            h.update(c);
            got += c.length;
            if (got === data.length) resolve();
          });
        });
        const { done } = send(fdOf(p.server), file.fd, 0, data.length);
        await done;
        await received;
        return { i, digest: h.digest('hex') };
      }),
    );
    for (const r of results) assert.equal(r.digest, want, `transfer ${r.i}`);
  } finally {
    for (const p of pairs) p.close();
    await file.close();
  }
});

// An HTTP/1.1 keep-alive connection carries a sendfile body and then another response: the framing is intact.
test('sendfile addon: used by an HTTP server, keep-alive responses stay framed', async () => {
  const { createServer: createHttpServer } = await import('node:http');
  const { Sendfile } = await import('../../../src/doors/http/sendfile.js');
  const native = nativeOrFail();
  const data = randomBytes(8 * 1024 * 1024 + 17);
  const dir = await mkdtemp(join(tmpdir(), 'relais-sendfile-http-'));
  const path = join(dir, 'blob');
  await writeFile(path, data);
  const sender = new Sendfile(native, 10_000);
  const server = createHttpServer((req, res) => {
    void (async () => {
      const fh = await open(path, 'r');
      res.setHeader('content-length', data.length);
      await sender.send(res, { fd: fh.fd, start: 0, end: data.length, ready: () => Promise.resolve(data.length), close: () => fh.close() }).catch(() => undefined);
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const ports = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const body = await new Promise<Buffer>((resolve, reject) => {
        request({ port, host: '127.0.0.1', agent }, (res) => {
          ports.add(res.socket.localPort ?? 0);
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('error', reject);
        })
          .on('error', reject)
          .end();
      });
      assert.ok(body.equals(data), `response ${i} intact`);
    }
    assert.equal(ports.size, 1, 'all four responses came over one connection');
    // The client can have every byte a moment before the transfer's completion reaches the server's JS.
    for (let i = 0; i < 100 && sender.stats.responses < 4; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(sender.stats.responses, 4);
    assert.equal(sender.stats.bytes, 4 * data.length);
  } finally {
    agent.destroy();
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

// relais itself: with the addon, blobs (cold, joined, warm, ranges) go out with sendfile; with
// server.sendfile: false they are streamed; the client gets the same bytes either way, and the upstream
// still sees one GET per blob.
test('relais: cold (miss + joins), warm and Range blob responses are identical with sendfile on and off', async () => {
  const { startRegistry } = await import('../../peers/registry.js');
  const { pushRandomImage } = await import('../../peers/images.js');
  const { startRelais } = await import('../../peers/relais.js');
  const upstream = await startRegistry();
  const relaisOn = await startRelais({ upstreams: { 'docker.io': upstream.url } });
  const relaisOff = await startRelais({ upstreams: { 'docker.io': upstream.url }, config: { server: { sendfile: false } } });
  try {
    const image = await pushRandomImage(upstream.host, 'library/big:v1', { layers: [24_000_000] });
    const layer = image.layers[0];
    assert.ok(layer);
    const get = async (base: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> => {
      const res = await fetch(`${base}/v2/library/big/blobs/${layer.digest}`, { headers });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    };
    assert.deepEqual(relaisOn.instance.sendfile, { enabled: true });
    assert.deepEqual(relaisOff.instance.sendfile, { enabled: false, reason: 'server.sendfile: false' });
    const bodies = new Map<string, Buffer[]>();
    for (const r of [relaisOn, relaisOff]) {
      upstream.clearLog();
      const cold = await Promise.all(Array.from({ length: 4 }, () => get(r.url)));
      const warm = await get(r.url);
      const range = await get(r.url, { range: 'bytes=1000000-2000000' });
      const tail = await get(r.url, { range: 'bytes=-100' });
      for (const c of [...cold, warm]) {
        assert.equal(c.status, 200);
        assert.equal(`sha256:${createHash('sha256').update(c.body).digest('hex')}`, layer.digest);
      }
      assert.equal(range.status, 206);
      assert.equal(tail.status, 206);
      bodies.set(r.url, [range.body, tail.body]);
      await upstream.settle();
      assert.equal(upstream.blobGets(layer.digest), 1, 'one upstream GET for four concurrent clients');
    }
    assert.deepEqual(bodies.get(relaisOn.url), bodies.get(relaisOff.url), 'ranges are the same bytes with and without sendfile');
    const fullRange = bodies.get(relaisOn.url)?.[0];
    assert.equal(fullRange?.length, 1_000_001);

    // A transfer's completion can reach relais's JS a moment after the client had every byte.
    const want = 5 * 24_000_000 + 1_000_001 + 100;
    let sent = 0;
    for (let i = 0; i < 50 && sent !== want; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 20));
      const metrics = await (await fetch(`${relaisOn.url}/metrics`)).text();
      sent = Number(/^relais_sendfile_bytes_total (\d+)/m.exec(metrics)?.[1]);
    }
    assert.equal(sent, want, 'every blob byte of relaisOn went out with sendfile');
    const offMetrics = await (await fetch(`${relaisOff.url}/metrics`)).text();
    assert.equal(Number(/^relais_sendfile_bytes_total (\d+)/m.exec(offMetrics)?.[1]), 0, 'nothing sent with sendfile when it is off');

    // A client that goes away mid-body: its transfer ends, the blob is no longer held, relais serves on.
    await relaisOn.instance.storage.releaseIdle?.();
    const fdsBefore = await openFds();
    await new Promise<void>((resolve) => {
      const req = request(`${relaisOn.url}/v2/library/big/blobs/${layer.digest}`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.end();
    });
    for (let i = 0; i < 50 && relaisOn.instance.blobs.servingCount() > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(relaisOn.instance.blobs.servingCount(), 0, 'the blob is released when its client goes away');
    // The storage keeps the blob's fd for the next reader unless nobody holds it: released, none may remain.
    await relaisOn.instance.storage.releaseIdle?.();
    assert.deepEqual(await openFilesUnder(join(relaisOn.dataDir, 'storage')), [], 'the aborted transfer let go of the blob file');
    assert.ok((await openFds()) <= fdsBefore + 1, 'no file descriptor left open by the aborted transfer');
    const after = await get(relaisOn.url);
    assert.equal(`sha256:${createHash('sha256').update(after.body).digest('hex')}`, layer.digest);
  } finally {
    await relaisOn.close();
    await relaisOff.close();
    await upstream.close();
  }
});

// A client that stops reading mid-blob: its sendfile transfer is dropped after server.sendIdleTimeout,
// the connection closed, the blob released for eviction, and the failure counted; other clients go on.
test('relais: a client that stops reading is dropped after server.sendIdleTimeout, and counted', async () => {
  const { startRegistry } = await import('../../peers/registry.js');
  const { pushRandomImage } = await import('../../peers/images.js');
  const { startRelais } = await import('../../peers/relais.js');
  const upstream = await startRegistry();
  const relais = await startRelais({ upstreams: { 'docker.io': upstream.url }, config: { server: { sendIdleTimeout: '400ms' } } });
  try {
    const image = await pushRandomImage(upstream.host, 'library/stall:v1', { layers: [40_000_000] });
    const layer = image.layers[0];
    assert.ok(layer);
    const path = `/v2/library/stall/blobs/${layer.digest}`;
    const warm = await fetch(`${relais.url}${path}`);
    assert.equal(`sha256:${createHash('sha256').update(Buffer.from(await warm.arrayBuffer())).digest('hex')}`, layer.digest);

    // A raw client: sends the request, reads nothing. 40 MB do not fit in the kernel's socket buffers.
    const socket = connect(relais.port, '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((r) => socket.once('connect', r));
    socket.pause();
    const t0 = Date.now();
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - t0)));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    // Read nothing until relais gives up on the transfer: then drain, and the connection ends short.
    for (let i = 0; i < 100 && relais.instance.blobs.servingCount() === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(relais.instance.blobs.servingCount(), 1, 'the transfer started');
    for (let i = 0; i < 100 && relais.instance.blobs.servingCount() > 0; i++) await new Promise((r) => setTimeout(r, 50));
    const heldMs = Date.now() - t0;
    assert.equal(relais.instance.blobs.servingCount(), 0, 'the stalled transfer was dropped and the blob released');
    assert.ok(heldMs >= 400, `dropped after ${heldMs} ms, not before the idle timeout`);
    let received = 0;
    socket.on('data', (c: Buffer) => (received += c.length));
    socket.resume();
    await closed;
    assert.ok(received < 40_000_000, `the stalled client got ${received} bytes, not the whole blob`);

    let metrics = '';
    for (let i = 0; i < 50 && !/^relais_sendfile_responses_total\{outcome="failed"\} 1$/m.test(metrics); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 20));
      metrics = await (await fetch(`${relais.url}/metrics`)).text();
    }
    assert.match(metrics, /^relais_sendfile_responses_total\{outcome="failed"\} 1$/m);
    // Everyone else is still served.
    const after = await fetch(`${relais.url}${path}`);
    assert.equal(`sha256:${createHash('sha256').update(Buffer.from(await after.arrayBuffer())).digest('hex')}`, layer.digest);
  } finally {
    await relais.close();
    await upstream.close();
  }
});
