// The OCI client's HTTP behaviour that distribution 2.8 cannot show: Link pagination of tags/list
// (distribution 3, GHCR, Harbor), 429/503 with Retry-After, HEAD answers without a digest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { nextLink, OciRegistry, sha256 } from '../../../src/products/cleanup/oci-backend.js';
import { RelaisError } from '../../../src/errors.js';

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

void test('nextLink parses RFC 5988 Link headers relative to the request', () => {
  const base = new URL('http://r.example/v2/a/tags/list?n=2');
  assert.equal(nextLink('</v2/a/tags/list?last=b&n=2>; rel="next"', base)?.href, 'http://r.example/v2/a/tags/list?last=b&n=2');
  assert.equal(nextLink('<https://other/x>; rel="prev", <https://other/y>; rel=next', base)?.href, 'https://other/y');
  assert.equal(nextLink(undefined, base), undefined);
  assert.equal(nextLink('</x>; rel="prev"', base), undefined);
});

void test('listTags follows Link pages until there is none', async () => {
  const all = ['a', 'b', 'c', 'd', 'e'];
  const seen: string[] = [];
  const srv = await serve((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    seen.push(u.search);
    const n = Number(u.searchParams.get('n'));
    const last = u.searchParams.get('last');
    const start = last === null ? 0 : all.indexOf(last) + 1;
    const page = all.slice(start, start + n);
    if (start + n < all.length) res.setHeader('link', `</v2/team/app/tags/list?last=${page.at(-1) ?? ''}&n=${n}>; rel="next"`);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name: 'team/app', tags: page }));
  });
  const c = new OciRegistry({ url: srv.url, tagsPageSize: 2, retryBaseMs: 1 });
  try {
    assert.deepEqual(await c.listTags('team/app'), all);
    assert.deepEqual(seen, ['?n=2', '?last=b&n=2', '?last=d&n=2']);
  } finally {
    await c.close();
    await srv.close();
  }
});

void test('429 and 5xx are retried with backoff (Retry-After honoured); 4xx are not', async () => {
  let calls = 0;
  const times: number[] = [];
  const srv = await serve((req, res) => {
    calls++;
    times.push(Date.now());
    if (req.url?.includes('/flaky/') === true && calls === 1) {
      res.statusCode = 429;
      res.setHeader('retry-after', '1');
      res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
    } else if (req.url?.includes('/flaky/') === true && calls === 2) {
      res.statusCode = 503;
      res.end();
    } else if (req.url?.includes('/down/') === true) {
      res.statusCode = 502;
      res.end();
    } else if (req.url?.includes('/gone/') === true) {
      res.statusCode = 400;
      res.end('{"errors":[{"code":"NAME_INVALID","message":"bad"}]}');
    } else {
      res.setHeader('content-type', 'application/json');
      res.end('{"tags":["x"]}');
    }
  });
  const c = new OciRegistry({ url: srv.url, retries: 3, retryBaseMs: 10 });
  try {
    assert.deepEqual(await c.listTags('flaky/app'), ['x']);
    assert.equal(calls, 3);
    assert.ok((times[1] ?? 0) - (times[0] ?? 0) >= 950, 'Retry-After: 1 was not honoured');
    assert.equal(c.stats.retries, 2);
    calls = 0;
    await assert.rejects(c.listTags('down/app'), (e: unknown) => e instanceof RelaisError && e.code === 'UPSTREAM_UNAVAILABLE' && /answered 502/.test(e.message));
    assert.equal(calls, 4, 'one try and three retries');
    calls = 0;
    await assert.rejects(c.listTags('gone/app'), (e: unknown) => e instanceof RelaisError && /NAME_INVALID: bad/.test(e.message));
    assert.equal(calls, 1);
  } finally {
    await c.close();
    await srv.close();
  }
});

void test('a HEAD without Docker-Content-Digest falls back to GET and hashes the body; the Accept list is complete', async () => {
  const body = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":2},"layers":[]}');
  const accepts: string[] = [];
  const srv = await serve((req, res) => {
    accepts.push(req.headers.accept ?? '');
    res.setHeader('content-type', 'application/vnd.oci.image.manifest.v1+json');
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  const c = new OciRegistry({ url: srv.url });
  try {
    const h = await c.headManifest('team/app', 'v1');
    assert.deepEqual(h, { digest: sha256(body), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: body.length });
    for (const a of accepts)
      for (const t of ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'])
        assert.ok(a.includes(t), `Accept lacks ${t}: ${a}`);
  } finally {
    await c.close();
    await srv.close();
  }
});
