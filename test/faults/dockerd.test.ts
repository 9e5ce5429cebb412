// Fault 4 of issue 4 with dockerd (20.10) as the client: the upstream corrupts one byte of a layer. relais
// must abort dockerd's transfer before the last byte, so dockerd never accepts the corrupted layer; dockerd
// retries on its own, relais fetches again, and the image pulls and runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDockerd } from '../peers/dockerd.js';
import { startFaultProxy } from '../peers/fault-proxy.js';
import { pushRunnableImage } from '../peers/images.js';
import { startRegistry } from '../peers/registry.js';
import { startRelais } from '../peers/relais.js';
import { recordFault } from './report.js';
import { FAST_UPSTREAM, blobPath, describeDisk, inspectDisk } from './helpers.js';

test('4 flipped byte with dockerd as the client: the corrupted transfer is aborted, dockerd retries, the image pulls and runs', async (t) => {
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });
  const up = await startRegistry();
  cleanups.push(() => up.close());
  const px = await startFaultProxy(up.url);
  cleanups.push(() => px.close());
  const img = await pushRunnableImage(up.host, 'library/box:1');
  const layer = img.layers[0];
  assert.ok(layer);
  const relais = await startRelais({ upstreams: { 'docker.io': px.url }, config: { upstreams: { 'docker.io': FAST_UPSTREAM } } });
  cleanups.push(() => relais.close());
  const dockerd = await startDockerd({ insecureRegistries: [relais.host] });
  cleanups.push(() => dockerd.stop());

  const re = blobPath(layer.digest);
  px.setRules([{ method: 'GET', path: re, times: 1, action: { flipAt: Math.floor(layer.size / 2) } }]);
  px.clear();
  up.clearLog();
  const ref = `${relais.host}/library/box:1`;
  const pull = await dockerd.dockerOk(['pull', ref], { timeoutMs: 120_000 });
  const ran = await dockerd.dockerOk(['run', '--rm', '--network', 'none', ref, 'sh', '-c', 'echo ok']);
  assert.equal(ran.stdout, 'ok\n', 'the layer dockerd kept is the right one');
  const rootfs = await dockerd.dockerOk(['image', 'inspect', '--format', '{{json .RootFS.Layers}}', ref]);
  assert.deepEqual(JSON.parse(rootfs.stdout) as string[], [layer.diffId]);
  const layerRequests = px.requests().filter((r) => re.test(r.path));
  assert.equal(layerRequests[0]?.outcome, 'flipped');
  assert.ok(layerRequests.length >= 2, 'relais fetched the layer again for dockerd\'s retry');
  assert.equal(relais.instance.blobs.stats.digestMismatches, 1);
  const aborted = relais.logs().filter((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes(layer.digest) && l.aborted === true);
  assert.ok(aborted.length >= 1, 'relais logged the aborted transfer to dockerd');
  await up.settle();
  assert.equal(up.blobGets(layer.digest), 2, 'distribution served the layer twice: the corrupted copy was not kept');
  await relais.stop();
  const disk = await inspectDisk(relais.dataDir);
  assert.deepEqual(disk.tmpFiles, []);
  assert.deepEqual(disk.rowsWithoutFile, []);
  assert.deepEqual(disk.corruptFiles, []);
  const retried = /Retrying|retry/i.test(pull.stdout + pull.stderr) ? 'dockerd printed a retry; ' : '';
  recordFault({
    group: '4 upstream sends wrong bytes',
    fault: 'one byte of a layer flipped, dockerd pulling (insecure registry = relais)',
    client: 'dockerd 20.10 (docker pull, docker run)',
    clientSaw: `${retried}the first layer transfer aborted before its last byte (logged by relais as aborted), dockerd retried, pull succeeded, layer diff ID verified, docker run printed ok`,
    upstreamSaw: `${layerRequests.length} layer GETs (the corrupted one, then fresh fetches); distribution served the layer twice`,
    onDisk: describeDisk(disk),
  });
});
