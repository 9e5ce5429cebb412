// Blob bodies on connections sendfile cannot serve go out from reused buffers (src/doors/http/file-writer.ts): through
// the proxy door (TLS) and with server.sendfile off. The bytes are the blob's, cold (a miss and joiners that
// follow the download), warm and by range; a client that goes away mid-body lets go of the blob and its file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { join } from 'node:path';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { fetchThrough, tlsThrough } from '../../peers/proxy-client.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { openFilesUnder } from '../../faults/helpers.js';

let up: RegistryPeer;
let viaProxy: RelaisPeer;
let noSendfile: RelaisPeer;
let img: BuiltImage;
const SIZE = 12_000_000;

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

before(async () => {
  up = await startRegistry();
  img = await pushRandomImage(up.host, 'owner/big:1', { layers: [SIZE] });
  viaProxy = await startRelais({ upstreams: { 'ghcr.io': up.url }, config: { upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] } }, proxy: { listen: '127.0.0.1:0' } } });
  noSendfile = await startRelais({ upstreams: { 'docker.io': up.url }, config: { server: { sendfile: false } } });
});

after(async () => {
  await viaProxy.close();
  await noSendfile.close();
  await up.close();
});

/** Waits until relais holds no blob for a client and has no file of its storage open. */
async function released(r: RelaisPeer): Promise<void> {
  for (let i = 0; i < 100 && r.instance.blobs.servingCount() > 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(r.instance.blobs.servingCount(), 0, 'the blob is released when its client goes away');
  await r.instance.storage.releaseIdle?.();
  assert.deepEqual(await openFilesUnder(join(r.dataDir, 'storage')), [], 'no blob file left open');
}

test('through the proxy door: cold (4 clients at once), warm and range bodies are the blob\'s bytes; one upstream GET', async () => {
  const p = viaProxy.instance.proxy;
  assert.ok(p);
  const layer = img.layers[0]?.digest ?? '';
  const path = `/v2/owner/big/blobs/${layer}`;
  up.clearLog();
  const cold = await Promise.all(Array.from({ length: 4 }, () => fetchThrough(p.port, 'ghcr.test', p.ca.certPem, path)));
  const warm = await fetchThrough(p.port, 'ghcr.test', p.ca.certPem, path);
  for (const r of [...cold, warm]) {
    assert.equal(r.status, 200);
    assert.equal(r.body.length, SIZE);
    assert.equal(sha(r.body), layer);
  }
  const range = await fetchThrough(p.port, 'ghcr.test', p.ca.certPem, path, { headers: { range: 'bytes=1000000-1999999' } });
  assert.equal(range.status, 206);
  assert.deepEqual(range.body, warm.body.subarray(1_000_000, 2_000_000));
  await up.settle();
  assert.equal(up.blobGets(layer), 1);
});

test('through the proxy door: a client that goes away mid-body lets go of the blob, and relais serves on', async () => {
  const p = viaProxy.instance.proxy;
  assert.ok(p);
  const layer = img.layers[0]?.digest ?? '';
  const t = await tlsThrough(p.port, 'ghcr.test', p.ca.certPem);
  await new Promise<void>((resolve) => {
    t.once('data', () => {
      t.destroy();
      resolve();
    });
    t.write(`GET /v2/owner/big/blobs/${layer} HTTP/1.1\r\nHost: ghcr.test\r\n\r\n`);
  });
  await released(viaProxy);
  const again = await fetchThrough(p.port, 'ghcr.test', p.ca.certPem, `/v2/owner/big/blobs/${layer}`);
  assert.equal(sha(again.body), layer);
});

test('sendfile off: cold, warm and range bodies are the blob\'s bytes; a client that goes away lets go of the blob', async () => {
  const layer = img.layers[0]?.digest ?? '';
  const url = `${noSendfile.url}/v2/owner/big/blobs/${layer}`;
  up.clearLog();
  const get = async (headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> => {
    const res = await fetch(url, { headers });
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
  };
  const cold = await Promise.all(Array.from({ length: 3 }, () => get()));
  const warm = await get();
  for (const r of [...cold, warm]) {
    assert.equal(r.status, 200);
    assert.equal(sha(r.body), layer);
  }
  const tail = await get({ range: 'bytes=-100' });
  assert.equal(tail.status, 206);
  assert.deepEqual(tail.body, warm.body.subarray(SIZE - 100));
  await up.settle();
  assert.equal(up.blobGets(layer), 1);

  await new Promise<void>((resolve) => {
    const req = request(url, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.end();
  });
  await released(noSendfile);
  assert.equal(sha((await get()).body), layer);
});
