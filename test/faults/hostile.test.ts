// Item 9 of the fault issue: hostile input. Each request gets the right 4xx, the process keeps serving,
// and nothing is written outside the data directory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { pushRandomImage, type BuiltImage } from '../peers/images.js';
import { startRegistry, type RegistryPeer } from '../peers/registry.js';
import { startRelais, type RelaisPeer } from '../peers/relais.js';
import { errorCode, http } from '../integration/core/helpers.js';
import { rawRequest } from './raw.js';
import { recordFault } from './report.js';

let upstream: RegistryPeer;
let relais: RelaisPeer;
let image: BuiltImage;

before(async () => {
  upstream = await startRegistry();
  image = await pushRandomImage(upstream.host, 'library/target:v1', { layers: [100_000] });
  relais = await startRelais({ upstreams: { 'docker.io': upstream.url }, config: { server: { headersTimeout: '1s' } } });
});

after(async () => {
  await relais.close();
  await upstream.close();
});

async function stillServes(): Promise<void> {
  const r = await http(`${relais.url}/v2/library/target/manifests/v1`);
  assert.equal(r.status, 200, 'relais still serves after the hostile request');
}

async function filesOutsideStorage(): Promise<string[]> {
  const top = await readdir(relais.dataDir);
  return top.filter((f) => !['storage', 'spool', 'pushes', 'index.db', 'index.db-wal', 'index.db-shm', 'relais.pid', 'relais.lock'].includes(f));
}

test('path traversal, encoded slashes, NUL, bad digests and names: 400/404 with OCI codes, nothing reaches the upstream', async () => {
  const layer = image.layers[0]?.digest ?? '';
  const cases: [string, number, string][] = [
    ['/v2/library/../../etc/passwd/manifests/latest', 400, 'NAME_INVALID'],
    ['/v2/library/%2e%2e/%2e%2e/etc/manifests/latest', 400, 'NAME_INVALID'],
    ['/v2/library%2F..%2Fetc/manifests/latest', 400, 'NAME_INVALID'],
    ['/v2/library/target%00/manifests/v1', 400, 'NAME_INVALID'],
    ['/v2/library/target/manifests/v1%00', 400, 'NAME_INVALID'],
    [`/v2/library/target/blobs/sha256:${'../'.repeat(10)}etc`, 400, 'NAME_INVALID'],
    [`/v2/library/target/blobs/sha256%3A..%2F..%2Fetc`, 400, 'NAME_INVALID'],
    ['/v2/library/target/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', 400, 'DIGEST_INVALID'],
    [`/v2/library/target/blobs/sha256:${'Z'.repeat(64)}`, 400, 'DIGEST_INVALID'],
    [`/v2/library/target/blobs/${layer.toUpperCase()}`, 400, 'DIGEST_INVALID'],
    ['/v2/Library/Target/manifests/v1', 400, 'NAME_INVALID'],
    ['/v2/library/tar--get_/manifests/v1', 400, 'NAME_INVALID'],
    [`/v2/${'a/'.repeat(130)}b/manifests/v1`, 400, 'NAME_INVALID'],
    ['/v2/library/target/manifests/-bad', 404, 'MANIFEST_UNKNOWN'],
    [`/v2/library/target/manifests/${'t'.repeat(200)}`, 404, 'MANIFEST_UNKNOWN'],
  ];
  upstream.clearLog();
  for (const [path, status, code] of cases) {
    // A raw socket: client libraries would normalise the dot segments away before sending.
    const r = await rawRequest(relais.port, [`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
    assert.equal(r.status, status, path);
    const body = r.text.slice(r.text.indexOf('\r\n\r\n') + 4);
    assert.equal((JSON.parse(body) as { errors: { code: string }[] }).errors[0]?.code, code, path);
  }
  await upstream.settle();
  assert.equal(upstream.accessLog().length, 0, 'no hostile request reached the upstream');
  assert.deepEqual(await filesOutsideStorage(), []);
  await stillServes();
  recordFault({ group: '9 hostile input', fault: `path traversal, encoded slashes/dots, NUL, bad digests and names (${cases.length} requests)`, client: 'raw socket', clientSaw: '400 NAME_INVALID / DIGEST_INVALID, 404 MANIFEST_UNKNOWN for impossible tags', upstreamSaw: '0 requests', onDisk: 'nothing outside storage/ and index.db' });
});

test('huge headers and query strings: 431, connection closed, server unharmed', async () => {
  const big = await rawRequest(relais.port, [`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`]);
  assert.equal(big.status, 431);
  const longQuery = await rawRequest(relais.port, [`GET /v2/library/target/manifests/v1?${'q=1&'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`]);
  assert.equal(longQuery.status, 431);
  await stillServes();
  recordFault({ group: '9 hostile input', fault: '64 KiB header; 80 KB query string', client: 'raw socket', clientSaw: '431, connection closed', upstreamSaw: '-', onDisk: 'nothing' });
});

test('slowloris: a client trickling headers is cut off after server.headersTimeout while others are served', async () => {
  const slow = rawRequest(relais.port, ['GET /v2/ HTTP/1.1\r\n', { delayMs: 700 }, 'Host: x\r\n', { delayMs: 700 }, 'X-A: 1\r\n', { delayMs: 700 }, 'X-B: 1\r\n', { delayMs: 2000 }, '\r\n'], 6000);
  await stillServes();
  const r = await slow;
  assert.ok(r.closed, 'connection closed by relais');
  assert.ok(r.status === 408 || r.status === undefined, `answer ${r.text.slice(0, 40)}`);
  assert.ok(r.ms < 4000, `cut off after ${r.ms} ms (headersTimeout 1s)`);
  recordFault({ group: '9 hostile input', fault: 'slowloris (headers trickled over 4 s, headersTimeout 1 s)', client: 'raw socket', clientSaw: `connection closed after ${Math.round(r.ms / 100) / 10} s (${r.status ?? 'no status'})`, upstreamSaw: '-', onDisk: 'nothing' });
});

test('Range abuse: many ranges, inverted ranges, garbage: 416 with Content-Range', async () => {
  const layer = image.layers[0];
  assert.ok(layer);
  const url = `${relais.url}/v2/library/target/blobs/${layer.digest}`;
  for (const range of ['bytes=0-1,3-4,6-7,9-10', `bytes=${Array.from({ length: 500 }, (_, i) => `${i}-${i}`).join(',')}`, 'bytes=500-100', 'bytes=-', 'bytes=x-y', `bytes=${layer.size}-`]) {
    const r = await http(url, { headers: { range } });
    assert.equal(r.status, 416, range.slice(0, 40));
    assert.equal(r.headers['content-range'], `bytes */${layer.size}`);
  }
  const ok = await http(url, { headers: { range: 'bytes=0-0' } });
  assert.equal(ok.status, 206);
  recordFault({ group: '9 hostile input', fault: 'Range: 4 and 500 ranges, inverted, malformed, past the end', client: 'undici', clientSaw: '416 RANGE_INVALID with Content-Range: bytes */SIZE', upstreamSaw: '-', onDisk: 'nothing' });
});

test('request smuggling: Content-Length with Transfer-Encoding, duplicate Content-Length, obs-fold: 400', async () => {
  const attempts = [
    'GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v2/library/target/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello',
    'GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n',
    'GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
  ];
  for (const a of attempts) {
    const r = await rawRequest(relais.port, [a], 3000);
    assert.equal(r.status, 400, a.slice(0, 60));
    assert.equal((r.text.match(/HTTP\/1\.1/g) ?? []).length, 1, 'exactly one response: nothing smuggled');
  }
  await stillServes();
  recordFault({ group: '9 hostile input', fault: 'smuggling: CL+TE, duplicate CL, obs-fold, bad TE', client: 'raw socket', clientSaw: '400, one response, connection closed', upstreamSaw: '-', onDisk: 'nothing' });
});

test('a manifest over 4 MiB from the upstream is refused (502 MANIFEST_INVALID), not cached', async () => {
  const huge = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', annotations: { pad: 'x'.repeat(5 * 1024 * 1024) } }));
  const digest = `sha256:${createHash('sha256').update(huge).digest('hex')}`;
  let served = 0;
  const hostile: Server = createServer((req, res) => {
    served++;
    if (req.url === '/v2/') return res.end('{}');
    res.setHeader('content-type', 'application/vnd.oci.image.manifest.v1+json');
    res.setHeader('docker-content-digest', digest);
    // no Content-Length: relais must cap while reading, not trust a header
    res.end(huge);
  });
  await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
  const r2 = await startRelais({ upstreams: { 'docker.io': `http://127.0.0.1:${(hostile.address() as AddressInfo).port}` } });
  try {
    const res = await http(`${r2.url}/v2/library/big/manifests/v1`);
    assert.equal(res.status, 502);
    assert.equal(errorCode(res), 'MANIFEST_INVALID');
    const again = await http(`${r2.url}/v2/library/big/manifests/v1`);
    assert.equal(again.status, 502, 'not cached');
    assert.equal(served, 2);
    recordFault({ group: '9 hostile input', fault: 'upstream sends a 5 MiB manifest (no Content-Length)', client: 'undici', clientSaw: '502 MANIFEST_INVALID', upstreamSaw: '1 GET per request (nothing cached)', onDisk: 'no manifest stored' });
  } finally {
    await r2.close();
    hostile.close();
  }
});
