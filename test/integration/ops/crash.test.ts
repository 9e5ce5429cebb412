// kill -9 of a `relais serve` process during a large download: the client never gets a complete-looking
// blob, nothing partial is ever served or indexed, `relais gc` finds and removes the spool file, and after
// a restart the next pull completes (the blob fetched from the upstream again).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { SqliteIndex } from '../../../src/index/sqlite.js';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { freePort } from '../../peers/ports.js';
import { removeDir, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { skopeoPull } from '../core/helpers.js';
import { CLI, filesIn, relaisCli, startUpstreamProxy, type UpstreamProxy } from './helpers.js';

let upstream: RegistryPeer;
let proxy: UpstreamProxy;
let image: BuiltImage;
let dir: string;
const SIZE = 40_000_000;

before(async () => {
  dir = await tempDir('ops-crash');
  upstream = await startRegistry();
  image = await pushRandomImage(upstream.host, 'library/huge:v1', { layers: [SIZE, 100_000] });
  // 8 MB/s: the 40 MB layer takes about 5 s, long enough to kill relais in the middle.
  proxy = await startUpstreamProxy(upstream.url, { bytesPerSecond: 8_000_000 });
});

after(async () => {
  await proxy.close();
  await upstream.close();
  await removeDir(dir);
});

async function serve(port: number, data: string): Promise<ManagedProcess> {
  const p = await startProcess(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--data', data, '--upstream', `docker.io=${proxy.url}`], { name: 'relais' });
  await waitForHttp(`http://127.0.0.1:${port}/readyz`, 20_000, { process: p, accept: (s) => s === 200 });
  return p;
}

test('kill -9 during a large download: no partial blob served or kept; gc removes the spool file; the next pull completes', async () => {
  const port = await freePort();
  const data = join(dir, 'data');
  const spool = join(data, 'storage', '_tmp');
  const layer = image.layers[0];
  assert.ok(layer);
  let relais = await serve(port, data);
  try {
    const m = await request(`http://127.0.0.1:${port}/v2/library/huge/manifests/v1`);
    assert.equal(m.statusCode, 200);
    await m.body.dump();
    upstream.clearLog();
    const res = await request(`http://127.0.0.1:${port}/v2/library/huge/blobs/${layer.digest}`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(SIZE));
    const hash = createHash('sha256');
    let received = 0;
    const reading = (async () => {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        received += chunk.byteLength;
      }
    })().then(
      () => 'ended',
      () => 'error',
    );
    // Wait until a good part of the blob is in the spool file, then kill relais without a chance to clean up.
    for (let i = 0; ; i++) {
      const files = await filesIn(spool);
      if (files.some((f) => f.size > 8_000_000)) break;
      assert.ok(i < 400, 'the download never got going');
      await sleep(25);
    }
    relais.child.kill('SIGKILL');
    const exit = await relais.exited;
    assert.equal(exit.signal, 'SIGKILL');
    const outcome = await reading;
    // The client must be able to tell: either the transfer errored, or it is short (the last byte is held back until the digest is verified).
    assert.ok(outcome === 'error' || received < SIZE, `client saw ${outcome} after ${received} bytes`);
    assert.ok(received < SIZE, 'never the whole blob');
    assert.notEqual(`sha256:${hash.digest('hex')}`, layer.digest);

    // What the crash left: a spool file, no index row, no blob in storage.
    const left = await filesIn(spool);
    assert.equal(left.length, 1, `one spool file: ${JSON.stringify(left)}`);
    const leftBytes = left[0]?.size ?? 0;
    assert.ok(leftBytes > 8_000_000 && leftBytes < SIZE);
    const index = new SqliteIndex(join(data, 'index.db'));
    try {
      assert.equal(await index.getContent(layer.digest), undefined, 'the partial blob is not in the index');
    } finally {
      await index.close();
    }

    // gc sees no live relais (the pid file is stale), so no grace period: it reports and removes the spool file.
    const dry = await relaisCli(['gc', '--dry-run', '--data', data]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^temp file\s+.*_tmp\/[0-9a-f]{64}\.[0-9a-f]{8}\.part \(\d+\.\d MiB\)$/m);
    assert.match(dry.stdout, /1 temp files; would remove \d+\.\d MiB/);
    assert.equal((await filesIn(spool)).length, 1, 'a dry run removes nothing');
    const gc = await relaisCli(['gc', '--data', data]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, /1 temp files; removed \d+\.\d MiB/);
    assert.deepEqual(await filesIn(spool), []);
    const again = await relaisCli(['gc', '--dry-run', '--data', data]);
    assert.match(again.stdout, /nothing to do/);

    // Restart: the next pull completes, and the layer comes from the upstream again (nothing partial was kept).
    relais = await serve(port, data);
    upstream.clearLog();
    const pulled = await skopeoPull(`127.0.0.1:${port}`, 'library/huge:v1');
    assert.equal(pulled.files.get(layer.digest), SIZE, 'skopeo verified the whole layer');
    await upstream.settle();
    assert.equal(upstream.blobGets(layer.digest), 1, 'fetched again from the upstream');
  } finally {
    await relais.stop();
  }
});
