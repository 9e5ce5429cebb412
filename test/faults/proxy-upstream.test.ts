// Upstream faults of docs/reliability.md through the proxy door: a corrupted byte, a reset mid-body and a
// stall reach a client of the door exactly as they reach one of the HTTP door (same core): a verified
// blob, or a broken transfer, never wrong bytes presented as complete.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startFaultProxy, type FaultProxy } from '../peers/fault-proxy.js';
import { pushRandomImage, type BuiltImage } from '../peers/images.js';
import { startRegistry, type RegistryPeer } from '../peers/registry.js';
import { startRelais, type RelaisPeer } from '../peers/relais.js';
import { fetchThrough } from '../peers/proxy-client.js';
import { FAST_UPSTREAM } from './helpers.js';
import { recordFault } from './report.js';

let up: RegistryPeer;
let px: FaultProxy;
let img: BuiltImage;
const SIZE = 2_000_000;

before(async () => {
  up = await startRegistry();
  px = await startFaultProxy(up.url);
  img = await pushRandomImage(up.host, 'owner/f:1', { layers: [SIZE, SIZE, SIZE] });
});

after(async () => {
  await px.close();
  await up.close();
});

async function door(t: { after(fn: () => Promise<void>): void }): Promise<{ r: RelaisPeer; get: (digest: string) => Promise<{ status: number; body: Buffer }> }> {
  const r = await startRelais({ upstreams: { 'ghcr.io': px.url }, config: { upstreams: { 'ghcr.io': { ...FAST_UPSTREAM, hosts: ['ghcr.test'] } }, proxy: { listen: '127.0.0.1:0' } } });
  t.after(() => r.close());
  const p = r.instance.proxy;
  assert.ok(p);
  return { r, get: (d) => fetchThrough(p.port, 'ghcr.test', p.ca.certPem, `/v2/owner/f/blobs/${d}`, {}) };
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

test('proxy door: a corrupted byte from the upstream is never served; the client gets the verified blob', async (t) => {
  const d = img.layers[0]?.digest ?? '';
  px.setRules([{ method: 'GET', path: /\/blobs\//, times: 1, action: { flipAt: 1000 } }]);
  const { get } = await door(t);
  up.clearLog();
  const res = await get(d);
  if (res.status === 200 && res.body.length === SIZE) assert.equal(sha(res.body), d, 'a complete body is the verified one');
  else assert.notEqual(sha(res.body), d);
  const again = await get(d);
  assert.equal(again.status, 200);
  assert.equal(sha(again.body), d);
  // What the upstream saw: the corrupted GET, then one fresh fetch; nothing kept from the first.
  await up.settle();
  assert.equal(up.blobGets(d), 2, 'the corrupted GET, then one fresh GET');
  recordFault({ group: '12 proxy door', fault: 'corrupted byte in a blob, through the proxy door', client: 'TLS through CONNECT', clientSaw: 'never wrong bytes as a complete body; next GET verified', upstreamSaw: 'the corrupted GET, then a fresh one', onDisk: 'only the verified blob' });
});

test('proxy door: a reset mid-body is resumed; the client gets the verified blob', async (t) => {
  const d = img.layers[1]?.digest ?? '';
  px.setRules([{ method: 'GET', path: /\/blobs\//, times: 1, action: { resetAfter: 500_000 } }]);
  const { get } = await door(t);
  px.clear();
  const res = await get(d);
  assert.equal(res.status, 200);
  assert.equal(sha(res.body), d);
  // The reset GET, then one resuming with Range where the reset cut it (not the whole blob again).
  const gets = px.requests().filter((q) => q.method === 'GET' && q.path.endsWith(`/blobs/${d}`));
  assert.equal(gets.length, 2, JSON.stringify(gets.map((q) => q.headers.range)));
  assert.equal(gets[0]?.headers.range, undefined);
  assert.match(String(gets[1]?.headers.range), /^bytes=[1-9]\d*-$/);
  recordFault({ group: '12 proxy door', fault: 'upstream resets mid-body, through the proxy door', client: 'TLS through CONNECT', clientSaw: '200, digest verified', upstreamSaw: 'a Range GET resuming the blob', onDisk: 'the verified blob' });
});

test('proxy door: an upstream that stalls mid-body: the client sees a broken transfer, not a short blob as complete', async (t) => {
  const d = img.layers[2]?.digest ?? '';
  px.setRules([{ method: 'GET', path: /\/blobs\//, action: { freezeAfter: 300_000 } }]);
  const { get } = await door(t);
  const res = await get(d);
  assert.ok(res.status !== 200 || res.body.length < SIZE, `status ${res.status}, ${res.body.length} bytes`);
  assert.notEqual(sha(res.body), d);
  px.setRules([]);
  recordFault({ group: '12 proxy door', fault: 'upstream stalls mid-body, through the proxy door', client: 'TLS through CONNECT', clientSaw: 'error or broken transfer after the idle timeout and retries', upstreamSaw: 'retries with Range', onDisk: 'nothing' });
});
