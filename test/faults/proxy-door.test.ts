// The proxy door is not an open proxy (issue 15, docs/proxy.md): every refusal it promises, each proven with a
// sentinel listener that must see no connection. And what it does allow: the proxy.tunnel allowlist, and a
// token service an upstream's own challenge named (learned, not listed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../peers/registry.js';
import { startRelais, type RelaisPeer } from '../peers/relais.js';
import { connectThrough, fetchThrough, rawHttp, tlsThrough } from '../peers/proxy-client.js';
import { rawRequest } from './raw.js';
import { recordFault } from './report.js';

interface Sentinel {
  readonly server: Server;
  readonly port: number;
  connections: number;
}

/** A listener that counts connections (and echoes, for the tunnel that is allowed). */
function sentinel(host = '127.0.0.1'): Promise<Sentinel> {
  return new Promise((resolve) => {
    const s: { server?: Server; port: number; connections: number } = { port: 0, connections: 0 };
    const server = createServer((c: Socket) => {
      s.connections++;
      c.on('error', () => undefined);
      c.pipe(c);
    });
    server.listen(0, host, () => {
      s.port = (server.address() as AddressInfo).port;
      resolve({ server, port: s.port, get connections() { return s.connections; }, set connections(v) { s.connections = v; } });
    });
  });
}

let ghcr: RegistryPeer;
let gitlab: RegistryPeer & { token?: TokenIssuer };
let relais: RelaisPeer;
let proxyPort: number;
let ca: string;
let guard: Sentinel; // must never see a connection
let v6guard: Sentinel | undefined;
let echo: Sentinel; // listed in proxy.tunnel

before(async () => {
  [ghcr, gitlab] = await Promise.all([startRegistry(), startRegistry({ auth: { kind: 'token' } })]);
  guard = await sentinel();
  v6guard = await sentinel('::1').catch(() => undefined);
  echo = await sentinel();
  relais = await startRelais({
    upstreams: { 'ghcr.io': ghcr.url, 'registry.gitlab.test': gitlab.url },
    config: { upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] } }, proxy: { listen: '127.0.0.1:0', tunnel: [`localhost:${echo.port}`] } },
  });
  const p = relais.instance.proxy;
  assert.ok(p);
  proxyPort = p.port;
  ca = p.ca.certPem;
});

after(async () => {
  await relais.close();
  await Promise.all([ghcr.close(), gitlab.close()]);
  for (const s of [guard, v6guard, echo]) s?.server.close();
});

test('CONNECT to a host that is no upstream\'s, to IP literals and to localhost ports: 403 saying what to configure, no connection made', async () => {
  const targets = [
    `127.0.0.1:${guard.port}`,
    `localhost:${guard.port}`,
    `LOCALHOST.:${guard.port}`,
    `[::1]:${v6guard?.port ?? guard.port}`,
    `[::ffff:127.0.0.1]:${guard.port}`,
    `127.1:${guard.port}`,
    `ghcr.test:${guard.port}`, // an intercepted name, another port
    `unknown.test:443`,
    `127.0.0.1:${relais.port}`, // relais's own HTTP door
  ];
  for (const t of targets) {
    const r = await connectThrough(proxyPort, t);
    assert.equal(r.status, 403, `${t}: ${r.text}`);
    assert.match(r.text, /upstreams\.NAME\.hosts|IP address/, t);
    assert.match(r.text, /proxy\.tunnel/, t);
  }
  assert.equal(guard.connections, 0, 'the sentinel saw no connection');
  assert.equal(v6guard?.connections ?? 0, 0, 'the ::1 sentinel saw no connection');
  recordFault({ group: '10 not an open proxy', fault: 'proxy door: CONNECT to a non-upstream host, IP literals (v4, v6, mapped, short), localhost ports, an upstream name on another port', client: 'raw CONNECT', clientSaw: '403 with what to configure (upstreams.NAME.hosts, proxy.tunnel)', upstreamSaw: 'sentinels: 0 connections', onDisk: 'nothing' });
});

test('plain-HTTP proxy requests (absolute URI) and other methods on the proxy port are refused', async () => {
  const requests = [
    `GET http://127.0.0.1:${guard.port}/ HTTP/1.1\r\nHost: 127.0.0.1:${guard.port}\r\nConnection: close\r\n\r\n`,
    `POST http://ghcr.test/v2/x/blobs/uploads/ HTTP/1.1\r\nHost: ghcr.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:${guard.port}\r\nConnection: close\r\n\r\n`,
  ];
  ghcr.clearLog();
  for (const q of requests) {
    const r = await rawRequest(proxyPort, [q], 3000);
    assert.equal(r.status, 403, r.text);
    assert.match(r.text, /refused/);
  }
  assert.equal(guard.connections, 0);
  await ghcr.settle();
  assert.equal(ghcr.accessLog().length, 0, 'the upstream saw nothing either');
  recordFault({ group: '10 not an open proxy', fault: 'proxy door: absolute-URI plain-HTTP proxy requests', client: 'raw socket', clientSaw: '403 refused', upstreamSaw: 'sentinel and upstream: 0 requests', onDisk: 'nothing' });
});

test('inside an intercepted connection, neither an absolute-form target nor the Host header reaches another host', async () => {
  const t1 = await tlsThrough(proxyPort, 'ghcr.test', ca);
  const abs = await rawHttp(t1, `GET http://127.0.0.1:${guard.port}/v2/ HTTP/1.1\r\nHost: 127.0.0.1:${guard.port}\r\nConnection: close\r\n\r\n`);
  assert.equal(abs.status, 403);
  ghcr.clearLog();
  const t2 = await tlsThrough(proxyPort, 'ghcr.test', ca);
  const hosted = await rawHttp(t2, `POST /v2/owner/x/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1:${guard.port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  assert.equal(hosted.status, 202, 'forwarded to the upstream of ghcr.test, whatever Host says');
  await ghcr.settle();
  assert.equal(ghcr.count('POST', /\/blobs\/uploads\/$/), 1);
  assert.equal(guard.connections, 0);
  assert.ok(hosted.headers.location?.startsWith('https://ghcr.test/v2/owner/x/blobs/uploads/'), `Location keeps the client on the host it asked for: ${hosted.headers.location}`);
});

test('proxy.tunnel: a listed host:port is a plain TCP tunnel; the same host on another port is not', async () => {
  const ok = await connectThrough(proxyPort, `localhost:${echo.port}`);
  assert.equal(ok.status, 200);
  assert.ok(ok.socket);
  const got = await new Promise<string>((resolve) => {
    ok.socket?.once('data', (d: Buffer) => resolve(d.toString()));
    ok.socket?.write('ping');
  });
  assert.equal(got, 'ping', 'bytes pass through untouched');
  ok.socket.destroy();
  const no = await connectThrough(proxyPort, `localhost:${guard.port}`);
  assert.equal(no.status, 403);
  assert.equal(guard.connections, 0);
});

test("a token service named by an intercepted upstream's challenge becomes reachable, and only after the challenge", async () => {
  const issuer = gitlab.token;
  assert.ok(issuer);
  const realm = new URL(issuer.realm);
  const target = `${realm.hostname}:${realm.port}`;
  const before = await connectThrough(proxyPort, target);
  assert.equal(before.status, 403, 'not reachable before any challenge named it');
  const ping = await fetchThrough(proxyPort, 'registry.gitlab.test', ca, '/v2/');
  assert.equal(ping.status, 401, "the upstream's challenge is relayed as it is");
  assert.match(ping.headers['www-authenticate'] ?? '', /Bearer realm=/);
  const after = await connectThrough(proxyPort, target);
  assert.equal(after.status, 200, 'the realm host is tunnelled now');
  after.socket?.destroy();
  recordFault({ group: '10 not an open proxy', fault: "proxy door: token service named by an upstream's challenge", client: 'raw CONNECT', clientSaw: '403 before the challenge, tunnel after', upstreamSaw: 'token service: reached only after the upstream named it', onDisk: 'nothing' });
});

test('with auth: configured, CONNECT needs relais credentials (407), and they are checked against the upstream', async () => {
  const r = await startRelais({
    upstreams: { 'ghcr.io': ghcr.url },
    config: {
      upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] } },
      proxy: { listen: '127.0.0.1:0' },
      auth: { tokens: { ci: 'a-long-enough-secret-1' }, permissions: { ci: ['ghcr.io'] } },
    },
  });
  try {
    const port = r.instance.proxy?.port ?? 0;
    const none = await connectThrough(port, 'ghcr.test:443');
    assert.equal(none.status, 407);
    assert.match(none.text, /proxy-authenticate: Basic/i);
    const wrong = await connectThrough(port, 'ghcr.test:443', { 'Proxy-Authorization': `Basic ${Buffer.from('ci:nope-nope-nope-nope').toString('base64')}` });
    assert.equal(wrong.status, 407);
    const good = await connectThrough(port, 'ghcr.test:443', { 'Proxy-Authorization': `Basic ${Buffer.from('ci:a-long-enough-secret-1').toString('base64')}` });
    assert.equal(good.status, 200);
    good.socket?.destroy();
  } finally {
    await r.close();
  }
});
