// Item 10 of the fault issue: relais is not an open proxy. No request makes it connect to a host that is
// not a configured upstream; an upstream's redirect to a private address is refused unless allowed; a
// redirect to another host never carries the upstream's credentials.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { startRelais, type RelaisPeer } from '../peers/relais.js';
import { errorCode, http, sha256 } from '../integration/core/helpers.js';
import { rawRequest } from './raw.js';
import { recordFault } from './report.js';

const blob = randomBytes(50_000);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;

interface Seen {
  path: string;
  headers: IncomingHttpHeaders;
}

function listen(handler: (req: IncomingMessage, res: ServerResponse) => void, host = '127.0.0.1'): Promise<{ server: Server; url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  return new Promise((r) => server.listen(0, host, () => r({ server, url: `http://${host}:${(server.address() as AddressInfo).port}`, seen })));
}

// A CDN stand-in on another port, and upstreams that redirect blob GETs to it (as Docker Hub does).
let cdn: Awaited<ReturnType<typeof listen>>;
let cdnLocalhostUrl: string;
let upstreamToCdn: Awaited<ReturnType<typeof listen>>;
let upstreamToPrivate: Awaited<ReturnType<typeof listen>>;

before(async () => {
  cdn = await listen((_req, res) => res.end(blob));
  cdnLocalhostUrl = cdn.url.replace('127.0.0.1', 'localhost');
  const upstreamHandler = (target: () => string) => (req: IncomingMessage, res: ServerResponse) => {
    if (req.headers.authorization === undefined) {
      res.statusCode = 401;
      res.setHeader('www-authenticate', 'Basic realm="up"');
      return res.end();
    }
    if (req.url?.includes('/blobs/') === true) {
      res.statusCode = 307;
      res.setHeader('location', `${target()}/signed/blob?sig=abc`);
      return res.end();
    }
    res.statusCode = 404;
    res.end();
  };
  upstreamToCdn = await listen(upstreamHandler(() => cdn.url));
  upstreamToPrivate = await listen(upstreamHandler(() => cdnLocalhostUrl));
});

after(() => {
  for (const s of [cdn, upstreamToCdn, upstreamToPrivate]) s.server.close();
});

async function withRelais(upstreamUrl: string, extra: Record<string, unknown>, fn: (r: RelaisPeer) => Promise<void>): Promise<void> {
  const r = await startRelais({ upstreams: { 'docker.io': upstreamUrl }, config: { upstreams: { 'docker.io': { username: 'robot', password: 'upstream-secret', retries: { attempts: 1 }, ...extra } } } });
  try {
    await fn(r);
  } finally {
    await r.close();
  }
}

test('a redirect to another host is followed without the upstream credentials', async () => {
  await withRelais(upstreamToCdn.url, {}, async (r) => {
    cdn.seen.length = 0;
    const res = await http(`${r.url}/v2/library/x/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), digest);
    assert.equal(cdn.seen.length, 1);
    assert.equal(cdn.seen[0]?.headers.authorization, undefined, 'no Authorization sent to the CDN host');
    assert.ok(upstreamToCdn.seen.some((s) => s.headers.authorization?.startsWith('Basic ') === true), 'the upstream itself got credentials');
    recordFault({ group: '10 not an open proxy', fault: 'upstream redirects a blob GET to another host (CDN)', client: 'undici', clientSaw: '200, digest verified', upstreamSaw: 'upstream: Basic auth; CDN host: no Authorization header', onDisk: 'blob committed' });
  });
});

test('a redirect to a private address (localhost) is refused unless allowPrivateRedirects', async () => {
  await withRelais(upstreamToPrivate.url, {}, async (r) => {
    cdn.seen.length = 0;
    const res = await http(`${r.url}/v2/library/x/blobs/${digest}`);
    assert.equal(res.status, 502);
    assert.equal(errorCode(res), 'UPSTREAM_ERROR');
    assert.equal(cdn.seen.length, 0, 'relais never connected to the private address');
    recordFault({ group: '10 not an open proxy', fault: 'upstream redirects to a private address (localhost)', client: 'undici', clientSaw: '502 UPSTREAM_ERROR', upstreamSaw: 'redirect target: 0 connections', onDisk: 'nothing' });
  });
  await withRelais(upstreamToPrivate.url, { allowPrivateRedirects: true }, async (r) => {
    cdn.seen.length = 0;
    const res = await http(`${r.url}/v2/library/x/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.equal(cdn.seen.length, 1);
  });
});

test('no prefix, ns, Host header, absolute-form target or CONNECT reaches an unconfigured host', async () => {
  const bystander = await listen((_req, res) => res.end('{}'));
  const port = new URL(bystander.url).port;
  try {
    await withRelais(upstreamToCdn.url, {}, async (r) => {
      const requests: [string, string][] = [
        ['prefix', `GET /v2/127.0.0.1:${port}/x/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
        ['prefix (host name)', `GET /v2/localhost/x/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
        ['ns', `GET /v2/x/y/manifests/v1?ns=127.0.0.1:${port} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
        ['Host header', `GET /v2/x/y/manifests/v1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`],
        ['absolute-form', `GET http://127.0.0.1:${port}/v2/x/manifests/v1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`],
        ['CONNECT', `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`],
      ];
      for (const [what, req] of requests) {
        const res = await rawRequest(r.port, [req], 3000);
        assert.notEqual(res.status, 200, what);
      }
      assert.equal(bystander.seen.length, 0, 'the unconfigured host saw no request');
      recordFault({ group: '10 not an open proxy', fault: 'unconfigured host via path prefix, ?ns=, Host header, absolute-form URL, CONNECT', client: 'raw socket', clientSaw: '404 NAME_UNKNOWN (prefix, ns), upstream answer (Host ignored), 404 (absolute-form), connection closed (CONNECT)', upstreamSaw: 'bystander host: 0 connections', onDisk: 'nothing' });
    });
  } finally {
    bystander.server.close();
  }
});
