// The recipe's job end to end through the HTTPS proxy door (issue 15), run twice with the daemon wiped between,
// as two CI jobs on fresh docker:dind services would. dockerd 20.10 with HTTPS_PROXY at relais's proxy door and
// relais's CA trusted (SSL_CERT_FILE bundle), registry-mirrors unset; three registry names only relais knows
// (registry-1.docker.io, ghcr.test, registry.gitlab.test with Docker-Hub-style tokens), each a local CNCF
// distribution. The job, run by /bin/sh with Debian's /usr/bin/docker 20.10 (its built-in BuildKit client):
//
//   docker login registry.gitlab.test
//   docker pull $IMAGE:$SLUG || true
//   DOCKER_BUILDKIT=1 docker build --build-arg BUILDKIT_INLINE_CACHE=1 --cache-from $IMAGE:$SLUG -t $IMAGE:$SLUG .
//   docker push $IMAGE:$SLUG
//
// Run 2 is a new commit on the same branch. The Dockerfile's FROM lines name all three registries; the final
// stage's RUN writes a random stamp (executed again, it would be another layer): run 2 must reuse it (CACHED,
// same layer digest). A `check` stage depends on the commit, so run 2 builds it again from the base images'
// blobs: relais must serve them, and no upstream may see a GET of any base-image blob on run 2. Run 2's
// `docker pull $IMAGE:$SLUG` must see run 1's push (relais forgets a tag, or a 404 of it, that a push replaced).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pushRandomImage, pushRunnableImage, type BuiltImage } from '../../peers/images.js';
import { startDockerd, type Dockerd } from '../../peers/dockerd.js';
import { removeDir, run, tempDir } from '../../peers/proc.js';
import { fetchThrough } from '../../peers/proxy-client.js';
import { startRegistry, type RegistryPeer, type TokenIssuer } from '../../peers/registry.js';
import { registryFetch, MANIFEST_ACCEPT } from '../../peers/registry-client.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';

const IMAGE = 'registry.gitlab.test/team/app';
const SLUG = 'feature-x';
const CREDS = { username: 'ci', password: 'secret' };

let hub: RegistryPeer; // registry-1.docker.io
let ghcr: RegistryPeer; // ghcr.test
let gitlab: RegistryPeer & { token?: TokenIssuer }; // registry.gitlab.test, tokens
let relais: RelaisPeer;
let dir: string;
let bundle: string;
let ctx: string;
/** Base images per upstream: every blob of these must come from relais on run 2. */
let bases: { up: () => RegistryPeer; upstream: string; repo: string; name: string; img: BuiltImage }[];

before(async () => {
  [hub, ghcr, gitlab] = await Promise.all([startRegistry(), startRegistry(), startRegistry({ auth: { kind: 'token', users: { [CREDS.username]: CREDS.password } } })]);
  // alpine (docker.io) runs the RUN step; the other two are data layers (data/random.bin) copied from.
  const alpine = await pushRunnableImage(hub.host, 'library/alpine:3.20');
  const assets = await pushRandomImage(ghcr.host, 'owner/assets:1', { layers: [{ size: 3_000_000, kind: 'tar' }] });
  const tool = await pushRandomImage(gitlab.host, 'team/tool:1', { layers: [{ size: 2_000_000, kind: 'tar' }], creds: CREDS });
  bases = [
    { up: () => hub, upstream: 'docker.io', repo: 'library/alpine', name: 'registry-1.docker.io/library/alpine:3.20', img: alpine },
    { up: () => ghcr, upstream: 'ghcr.io', repo: 'owner/assets', name: 'ghcr.test/owner/assets:1', img: assets },
    { up: () => gitlab, upstream: 'registry.gitlab.test', repo: 'team/tool', name: 'registry.gitlab.test/team/tool:1', img: tool },
  ];
  relais = await startRelais({
    upstreams: { 'docker.io': hub.url, 'ghcr.io': ghcr.url, 'registry.gitlab.test': gitlab.url },
    config: { upstreams: { 'ghcr.io': { hosts: ['ghcr.test'] } }, proxy: { listen: '127.0.0.1:0' } },
  });
  const proxy = relais.instance.proxy;
  assert.ok(proxy, 'the proxy door is on');
  dir = await tempDir('proxy-recipe');
  bundle = join(dir, 'ca-bundle.crt');
  await writeFile(bundle, proxy.ca.certPem);
  ctx = join(dir, 'ctx');
  await mkdir(ctx, { recursive: true });
  // The final stage's steps are in the inline cache of $IMAGE:$SLUG; the `check` stage is not (mode=min) and
  // depends on the commit, so each run executes it from the three base images' blobs.
  await writeFile(
    join(ctx, 'Dockerfile'),
    [
      'FROM ghcr.test/owner/assets:1 AS assets',
      'FROM registry.gitlab.test/team/tool:1 AS tool',
      // The commit first: BuildKit shares identical steps between stages, so this stage starts apart.
      'FROM alpine:3.20 AS check',
      'COPY commit.txt /commit.txt',
      'COPY --from=assets /data/random.bin /assets.bin',
      'COPY --from=tool /data/random.bin /tool.bin',
      'RUN cat /commit.txt > /checked',
      'FROM alpine:3.20',
      'COPY --from=assets /data/random.bin /assets.bin',
      'COPY --from=tool /data/random.bin /tool.bin',
      // A random stamp: executing this step again gives another layer (the 4th of the pushed image).
      'RUN cat /proc/sys/kernel/random/uuid > /stamp',
      'COPY --from=check /checked /checked',
      '',
    ].join('\n'),
  );
});

after(async () => {
  await relais.close();
  await Promise.all([hub.close(), ghcr.close(), gitlab.close()]);
  await removeDir(dir);
});

const JOB = [
  'set -eu',
  'echo "$REGISTRY_PASSWORD" | /usr/bin/docker login -u "$REGISTRY_USER" --password-stdin registry.gitlab.test',
  '/usr/bin/docker pull "$IMAGE:$SLUG" || true',
  '/usr/bin/docker build --progress=plain --network none --build-arg BUILDKIT_INLINE_CACHE=1 --cache-from "$IMAGE:$SLUG" -t "$IMAGE:$SLUG" "$CTX"',
  '/usr/bin/docker push "$IMAGE:$SLUG"',
].join('\n');

const RUN_STEP = '[stage-3 4/5] RUN cat /proc/sys/kernel/random/uuid > /stamp';
const CHECK_STEP = '[check 5/5] RUN cat /commit.txt > /checked';

/** Whether BuildKit's plain progress output (`#N title`, then `#N ...` lines) reports the step as CACHED. */
function stepCached(output: string, title: string): boolean {
  const lines = output.split('\n');
  const head = lines.find((l) => l.endsWith(` ${title}`));
  assert.ok(head, `BuildKit printed the step ${title}\n${output}`);
  const id = head.slice(0, head.indexOf(' '));
  return lines.some((l) => l === `${id} CACHED`);
}

interface JobRun {
  output: string;
  ms: number;
  pushedDigest: string;
  /** The pushed manifest's layer digests, as the upstream serves them. */
  layers: string[];
  /** Upstream blob GETs during the job, per upstream. */
  blobGets: Record<string, number>;
}

async function upstreamManifest(ref: string): Promise<{ digest: string; layers: string[] }> {
  const m = await registryFetch(`${gitlab.url}/v2/team/app/manifests/${ref}`, { creds: CREDS, headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(m.status, 200, `the upstream serves team/app:${ref}`);
  const doc = JSON.parse(m.body.toString('utf8')) as { layers: { digest: string }[] };
  return { digest: m.headers.get('docker-content-digest') ?? '', layers: doc.layers.map((l) => l.digest) };
}

/** A new commit, a fresh dockerd (new data root), the job; then the daemon stopped and its data root deleted. */
async function runJob(commit: string): Promise<JobRun> {
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  await writeFile(join(ctx, 'commit.txt'), `${commit}\n`);
  for (const r of [hub, ghcr, gitlab]) r.clearLog();
  const dockerd: Dockerd = await startDockerd({ env: { HTTPS_PROXY: proxy.url, SSL_CERT_FILE: bundle } });
  try {
    const started = performance.now();
    const result = await run('/bin/sh', ['-c', JOB], {
      timeoutMs: 300_000,
      extraEnv: { ...dockerd.env, DOCKER_BUILDKIT: '1', IMAGE, SLUG, CTX: ctx, REGISTRY_USER: CREDS.username, REGISTRY_PASSWORD: CREDS.password },
    });
    const ms = performance.now() - started;
    const output = `${result.stdout}\n${result.stderr}`;
    assert.equal(result.code, 0, `the job failed\n${output}\n--- dockerd ---\n${dockerd.log().slice(-3000)}`);
    const m = /: digest: (sha256:[0-9a-f]{64}) size:/.exec(result.stdout);
    assert.ok(m?.[1], `docker push printed a digest\n${output}`);
    for (const r of [hub, ghcr, gitlab]) await r.settle();
    const blobGets = { hub: hub.blobGets(), ghcr: ghcr.blobGets(), gitlab: gitlab.blobGets() };
    const pushed = await upstreamManifest(SLUG);
    assert.equal(pushed.digest, m[1], 'the upstream serves the tag at the pushed digest');
    return { output, ms, pushedDigest: m[1], layers: pushed.layers, blobGets };
  } finally {
    // Wiped: dockerd stopped, its data root (images, build cache, login) deleted.
    await dockerd.stop();
  }
}

function baseBlobs(b: { img: BuiltImage }): string[] {
  return [b.img.configDigest, ...b.img.layers.map((l) => l.digest)];
}

test('the recipe job twice, daemon wiped between: run 2 gets every base blob from relais, reuses the cached RUN step, pushes', async (t) => {
  const one = await runJob('commit-1');
  t.diagnostic(`run 1: ${one.ms.toFixed(0)} ms, upstream blob GETs ${JSON.stringify(one.blobGets)}`);
  // Run 1 is cold: each base image's blobs were fetched from its upstream, once.
  for (const b of bases) for (const d of baseBlobs(b)) assert.equal(b.up().blobGets(d), 1, `run 1: ${b.name} blob ${d}`);
  assert.equal(stepCached(one.output, RUN_STEP), false, `run 1 executes the RUN step\n${one.output}`);

  const requestsBefore = relais.logs().length;
  const two = await runJob('commit-2');
  t.diagnostic(`run 2: ${two.ms.toFixed(0)} ms, upstream blob GETs ${JSON.stringify(two.blobGets)}`);

  // Every base-image blob of every registry came from relais: the `check` stage was built from them again
  // (its RUN executed: another commit), no upstream saw a GET of one, and relais served each one the daemon
  // fetched. The one it did not fetch is alpine's layer: dockerd already held that layer (same diff ID, another
  // compression) from the `docker pull $IMAGE:$SLUG` of the job, and its BuildKit takes layers from there.
  assert.equal(stepCached(two.output, CHECK_STEP), false, `run 2 built the check stage again\n${two.output}`);
  const reqs = relais.logs().slice(requestsBefore).filter((l) => l.msg === 'request');
  const served = (upstream: string, path: string): boolean => reqs.some((l) => l.upstream === upstream && String(l.path) === path && l.status === 200);
  const alpineLayer = bases[0]?.img.layers[0]?.digest;
  for (const b of bases) {
    for (const d of baseBlobs(b)) {
      for (const r of [hub, ghcr, gitlab]) assert.equal(r.blobGets(d), 0, `run 2: upstream GET of ${b.name} blob ${d}`);
      if (d !== alpineLayer) assert.ok(served(b.upstream, `/v2/${b.repo}/blobs/${d}`), `run 2: relais served ${b.name} blob ${d}`);
    }
  }

  // The cached build step was reused: BuildKit says CACHED for the RUN, and its layer (the random stamp) is
  // the one run 1 pushed; executed again it would be another layer.
  assert.equal(stepCached(two.output, RUN_STEP), true, `run 2 reused the RUN step\n${two.output}`);
  assert.equal(two.layers.length, 5);
  assert.deepEqual(two.layers.slice(0, 4), one.layers.slice(0, 4), 'run 2: the final stage up to the RUN is run 1\'s');
  assert.notEqual(two.layers[4], one.layers[4], 'run 2: the layer of the new commit');

  // The push went through: the upstream took run 2's manifest PUT and serves the tag at its digest (runJob
  // checked), a new image; and relais, which had the tag cached from run 2's pull, answers the new digest too.
  assert.notEqual(two.pushedDigest, one.pushedDigest);
  assert.ok(
    gitlab.accessLog().some((e) => e.method === 'PUT' && e.path === `/v2/team/app/manifests/${SLUG}` && e.status === 201),
    'run 2: manifest PUT reached the upstream',
  );
  const proxy = relais.instance.proxy;
  assert.ok(proxy);
  const head = await fetchThrough(proxy.port, 'registry.gitlab.test', proxy.ca.certPem, `/v2/team/app/manifests/${SLUG}`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
  assert.equal(head.status, 200);
  assert.equal(head.headers['docker-content-digest'], two.pushedDigest, 'relais forgot the tag the push replaced');
});
