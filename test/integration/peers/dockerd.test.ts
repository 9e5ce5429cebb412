// Self-test of the private dockerd: direct pull from a plain-HTTP registry, run, and a pull of a
// docker.io image through `registry-mirrors` (the registry peer plays the mirror).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRegistry } from '../../peers/registry.js';
import { pushRunnableImage } from '../../peers/images.js';
import { startDockerd } from '../../peers/dockerd.js';

void test('dockerd pulls from the registry directly and through registry-mirrors, and runs the image', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.close());
  const direct = await pushRunnableImage(reg.host, 'team/box:1');
  // Same layer, another config: a distinct image.
  const hub = await pushRunnableImage(reg.host, 'library/busybox:relais-test', { labels: { via: 'mirror' } });
  assert.notEqual(hub.manifestDigest, direct.manifestDigest);
  assert.equal(hub.layers[0]?.digest, direct.layers[0]?.digest);
  const dockerd = await startDockerd({ mirrors: [reg.url], insecureRegistries: [reg.host] });
  t.after(() => dockerd.stop());
  reg.clearLog();

  // Direct, by HOST/REPO:TAG.
  await dockerd.dockerOk(['pull', direct.ref]);
  const digests = await dockerd.dockerOk(['image', 'inspect', '--format', '{{json .RepoDigests}}', direct.ref]);
  assert.deepEqual(JSON.parse(digests.stdout) as string[], [`${reg.host}/team/box@${direct.manifestDigest}`]);
  const ran = await dockerd.dockerOk(['run', '--rm', '--network', 'none', direct.ref, 'sh', '-c', 'echo ok']);
  assert.equal(ran.stdout, 'ok\n');
  await reg.settle();
  assert.equal(reg.blobGets(direct.layers[0]?.digest), 1);
  assert.equal(reg.blobGets(direct.configDigest), 1);

  // A docker.io name goes to the mirror as /v2/library/busybox/... (no internet: only the mirror can answer).
  reg.clearLog();
  await dockerd.dockerOk(['pull', 'busybox:relais-test']);
  await reg.settle();
  assert.ok(reg.count('*', /^\/v2\/library\/busybox\/manifests\/relais-test$/) >= 1, reg.accessLog().map((e) => e.line).join('\n'));
  // dockerd already has the layer (same bytes as the direct image): only the config is fetched.
  assert.equal(reg.blobGets(hub.configDigest), 1);
  assert.equal(reg.blobGets(hub.layers[0]?.digest), 0);
  const hubDigests = await dockerd.dockerOk(['image', 'inspect', '--format', '{{json .RepoDigests}}', 'busybox:relais-test']);
  assert.deepEqual(JSON.parse(hubDigests.stdout) as string[], [`busybox@${hub.manifestDigest}`]);
  const label = await dockerd.dockerOk(['image', 'inspect', '--format', '{{.Config.Labels.via}}', 'busybox:relais-test']);
  assert.equal(label.stdout.trim(), 'mirror');
  const ran2 = await dockerd.dockerOk(['run', '--rm', '--network', 'none', 'busybox:relais-test', 'sh', '-c', 'echo ok from hub']);
  assert.equal(ran2.stdout, 'ok from hub\n');
  assert.match(dockerd.containerdSocket, /containerd\.sock$/);
});
