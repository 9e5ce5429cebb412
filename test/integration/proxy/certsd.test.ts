// The proxy door with relais's CA trusted per host, as `certs.d/<host>/ca.crt` files only (no SSL_CERT_FILE,
// no system bundle): what docs/proxy.md tells a dind setup that cannot change the system roots. dockerd 20.10
// reads /etc/docker/certs.d only; test/peers/dockerd.ts runs it in a private mount namespace with a temp dir
// bind-mounted onto /etc/docker, so nothing global is touched. Measured: dockerd's own pulls use certs.d for
// every registry but Docker Hub; the BuildKit inside it (/usr/bin/docker 20.10, DOCKER_BUILDKIT=1) uses it for
// Docker Hub too (certs.d/docker.io/ca.crt). A host without its ca.crt is refused (the trust does come from
// the per-host files). The third test: the CA in a directory named by SSL_CERT_DIR (what runner-config --via proxy
// generates) adds it to the system roots, so dockerd's own Docker Hub pulls work too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseRunnerConfig, planRunnerConfig } from '../../../src/products/ci/runner-config.js';
import { pushRunnableImage, pushRandomImage } from '../../peers/images.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { removeDir, run, tempDir } from '../../peers/proc.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

let hub: RegistryPeer; // registry-1.docker.io: ca.crt given
let ghcr: RegistryPeer; // ghcr.test: ca.crt given
let quay: RegistryPeer; // quay.test: intercepted, but no ca.crt
let relais: RelaisPeer;
let dockerd: Dockerd;
let dir: string;

before(async () => {
  [hub, ghcr, quay] = await Promise.all([startRegistry(), startRegistry(), startRegistry()]);
  await pushRunnableImage(hub.host, 'library/alpine:3.20');
  await pushRandomImage(ghcr.host, 'owner/assets:1', { layers: [{ size: 1_000_000, kind: 'tar' }] });
  await pushRunnableImage(quay.host, 'owner/other:1', { labels: { from: 'quay' } });
  relais = await startRelais({
    upstreams: { 'docker.io': hub.url, 'ghcr.io': ghcr.url, 'quay.io': quay.url },
    config: { upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] }, 'quay.io': { hosts: ['quay.test'] } }, proxy: { listen: '127.0.0.1:0' } },
  });
  const proxy = relais.instance.proxy;
  assert.ok(proxy, 'the proxy door is on');
  dir = await tempDir('proxy-certsd');
  // HTTPS_PROXY only; the CA only in certs.d: for Docker Hub under each of its names, for ghcr.test, not for quay.test.
  dockerd = await startDockerd({ env: { HTTPS_PROXY: proxy.url }, certsD: { 'docker.io': proxy.ca.certPem, 'registry-1.docker.io': proxy.ca.certPem, 'index.docker.io': proxy.ca.certPem, 'ghcr.test': proxy.ca.certPem } });
});

after(async () => {
  await dockerd.stop();
  await relais.close();
  await Promise.all([hub.close(), ghcr.close(), quay.close()]);
  await removeDir(dir);
});

test('dockerd 20.10 trusts relais per host from certs.d/<host>/ca.crt, except for Docker Hub; a host without the file is refused', async () => {
  const before = relais.logs().length;
  await dockerd.dockerOk(['pull', 'ghcr.test/owner/assets:1']);
  const reqs = relais.logs().slice(before).filter((l) => l.msg === 'request');
  assert.ok(reqs.some((l) => l.upstream === 'ghcr.io' && String(l.path) === '/v2/owner/assets/manifests/1'), 'ghcr.test read served by relais');
  // No ca.crt for quay.test: the TLS handshake with relais's certificate fails, nothing is served.
  const r = await dockerd.docker(['pull', 'quay.test/owner/other:1']);
  assert.notEqual(r.code, 0, 'pull without a ca.crt for the host must fail');
  assert.match(r.stderr, /x509: certificate signed by unknown authority/, r.stderr);
  assert.ok(!relais.logs().slice(before).some((l) => l.msg === 'request' && l.upstream === 'quay.io'), 'quay.test was not read');
  // Docker Hub: dockerd 20.10's own pulls give the official index the system roots only (moby's
  // lookupV2Endpoints: tlsconfig.ServerDefault() for docker.io), whatever certs.d holds. docs/proxy.md says so:
  // for Docker Hub, dockerd needs the CA in its bundle (SSL_CERT_FILE or the system store).
  const hubPull = await dockerd.docker(['pull', 'alpine:3.20']);
  assert.notEqual(hubPull.code, 0, 'dockerd 20.10 ignores certs.d for Docker Hub: if this passes, update docs/proxy.md');
  assert.match(hubPull.stderr, /registry-1\.docker\.io.*x509: certificate signed by unknown authority/, hubPull.stderr);
});

test('the BuildKit inside dockerd 20.10 uses certs.d for FROM pulls, Docker Hub included (DOCKER_BUILDKIT=1, /usr/bin/docker 20.10)', async () => {
  const build = async (dockerfile: string): Promise<{ code: number | null; out: string }> => {
    const ctx = await tempDir('certsd-build');
    try {
      await writeFile(join(ctx, 'Dockerfile'), dockerfile);
      const r = await run('/usr/bin/docker', ['build', '--progress=plain', '--network', 'none', ctx], { timeoutMs: 180_000, extraEnv: { ...dockerd.env, DOCKER_BUILDKIT: '1' } });
      return { code: r.code, out: `${r.stdout}\n${r.stderr}` };
    } finally {
      await removeDir(ctx);
    }
  };
  // Not in the daemon's image store: BuildKit resolves and fetches them itself.
  await dockerd.docker(['rmi', 'ghcr.test/owner/assets:1']);
  const before = relais.logs().length;
  const ok = await build('FROM ghcr.test/owner/assets:1 AS assets\nFROM alpine:3.20\nCOPY --from=assets /data/random.bin /assets.bin\nRUN cat /assets.bin > /dev/null\n');
  assert.equal(ok.code, 0, ok.out);
  const reqs = relais.logs().slice(before).filter((l) => l.msg === 'request');
  assert.ok(reqs.some((l) => l.upstream === 'ghcr.io' && String(l.path).startsWith('/v2/owner/assets/manifests/')), 'BuildKit resolved ghcr.test through relais');
  assert.ok(reqs.some((l) => l.upstream === 'docker.io' && String(l.path).startsWith('/v2/library/alpine/manifests/')), 'BuildKit resolved docker.io through relais');
  assert.ok(reqs.some((l) => l.upstream === 'ghcr.io' && /\/blobs\/sha256:/.test(String(l.path))), 'BuildKit fetched ghcr.test blobs through relais');
  assert.ok(reqs.some((l) => l.upstream === 'docker.io' && /\/blobs\/sha256:/.test(String(l.path))), 'BuildKit fetched Docker Hub blobs through relais');
  // And BuildKit refuses the host without a ca.crt, as dockerd does.
  const bad = await build('FROM quay.test/owner/other:1\nRUN true\n');
  assert.notEqual(bad.code, 0, 'a FROM of a host without a ca.crt must fail');
  assert.match(bad.out, /x509|certificate/i, bad.out);
});

test('dockerd 20.10 trusts relais for Docker Hub with the CA in a directory named by SSL_CERT_DIR (system bundle kept, certs.d empty): what runner-config --via proxy mounts', async () => {
  // Go's crypto/x509 on Linux loads the bundle file (SSL_CERT_FILE unset: the system one) AND every file of
  // the SSL_CERT_DIR directories, so a directory holding only relais's CA adds it to the system roots, for
  // every host, Docker Hub included (where dockerd 20.10 ignores certs.d, see the first test).
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  // What `relais ci runner-config --via proxy` generates: the CA dir's files, its mount and dind's SSL_CERT_DIR.
  const caDir = join(dir, 'relais-ca');
  const plan = planRunnerConfig('[[runners]]\n  executor = "docker"\n  [runners.docker]\n    privileged = true\n', {
    via: 'proxy',
    daemonJsonPath: '/unused',
    proxy: { url: 'http://relais.example.com:3128', hosts: ['registry-1.docker.io', 'ghcr.test'], certsDirPath: join(dir, 'certs.d'), caDirPath: caDir, caPem: proxy.ca.certPem },
  });
  await mkdir(caDir, { recursive: true });
  for (const f of plan.caDirFiles ?? []) await writeFile(join(caDir, f.path), f.content);
  const docker = (parseRunnerConfig(plan.output)['runners'] as { docker: { volumes: string[]; services: { environment: string[] }[] } }[])[0]?.docker;
  const certDir = docker?.services[0]?.environment.find((e) => e.startsWith('SSL_CERT_DIR='))?.slice('SSL_CERT_DIR='.length);
  assert.ok(certDir !== undefined, plan.output);
  // The runner's bind mount, done here by naming the host directory itself: SSL_CERT_DIR's mounted paths -> host paths.
  const mounts = new Map((docker?.volumes ?? []).map((v) => v.split(':')).map(([src = '', dst = '']) => [dst, src] as const));
  const hostCertDir = certDir.split(':').map((d) => mounts.get(d) ?? d).join(':');
  assert.equal(hostCertDir, caDir);
  // SSL_CERT_FILE '' is unset for Go (os.Getenv ""): the default bundle is read, as in docker:dind. certs.d: empty.
  const d = await startDockerd({ env: { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: '', SSL_CERT_DIR: hostCertDir }, certsD: {} });
  try {
    const before = relais.logs().length;
    await d.dockerOk(['pull', 'registry-1.docker.io/library/alpine:3.20']);
    await d.dockerOk(['pull', 'ghcr.test/owner/assets:1']);
    const reqs = relais.logs().slice(before).filter((l) => l.msg === 'request');
    assert.ok(reqs.some((l) => l.upstream === 'docker.io' && String(l.path) === '/v2/library/alpine/manifests/3.20'), 'the Docker Hub read was served by relais');
    assert.ok(reqs.some((l) => l.upstream === 'ghcr.io' && String(l.path) === '/v2/owner/assets/manifests/1'), 'the ghcr.test read was served by relais');
  } finally {
    await d.stop();
  }
});
