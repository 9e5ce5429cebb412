// deploy/Dockerfile's build context (issue 18 item 10, as the user met it): `docker build -f
// deploy/Dockerfile .` sent a 135 MB context with node_modules, .git and a local relais-data. With the
// repository's .dockerignore a real dockerd 20.10 receives only the sources: the test builds `FROM
// scratch` + `COPY . /ctx` from the repository root (no network needed) and lists what the image got.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDockerd } from '../../peers/dockerd.js';
import { run } from '../../peers/proc.js';

const ROOT = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../../' : '../../../', import.meta.url));

void test('the build context dockerd receives holds the sources, not node_modules, .git, dist or relais-data', async (t) => {
  // A local cache next to the sources, as `relais serve` in a clone leaves one (only if absent: never ours to delete otherwise).
  const cache = join(ROOT, 'relais-data');
  const made = !existsSync(cache);
  if (made) {
    await mkdir(join(cache, 'storage'), { recursive: true });
    await writeFile(join(cache, 'storage', 'blob'), Buffer.alloc(1024 * 1024));
  }
  t.after(async () => {
    if (made) await rm(cache, { recursive: true, force: true });
  });
  for (const d of ['node_modules', 'dist']) assert.ok(existsSync(join(ROOT, d)), `${d} exists in the checkout, so excluding it is tested`);
  const dockerd = await startDockerd();
  t.after(() => dockerd.stop());
  const tag = `relais-context-${process.pid}`;
  const build = await dockerd.docker(['build', '-f', '-', '-t', tag, '.'], {
    cwd: ROOT,
    extraEnv: { DOCKER_BUILDKIT: '0' },
    input: 'FROM scratch\nCOPY . /ctx\n',
    timeoutMs: 300_000,
  });
  assert.equal(build.code, 0, `${build.stdout}\n${build.stderr}`);
  const sent = /Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)/.exec(build.stdout);
  assert.ok(sent, build.stdout);
  const mb = Number(sent[1]) * ({ B: 1e-6, kB: 1e-3, MB: 1, GB: 1000 }[sent[2] ?? 'MB'] ?? 1);
  assert.ok(mb < 30, `context ${sent[1]}${sent[2]} (it was ~135 MB)`);
  const created = await dockerd.dockerOk(['create', tag, 'none']);
  const id = created.stdout.trim();
  const exported = await run('sh', ['-c', `docker export ${id} | tar -t`], { extraEnv: dockerd.env, timeoutMs: 120_000 });
  assert.equal(exported.code, 0, exported.stderr);
  const files = exported.stdout.split('\n');
  for (const want of ['ctx/package.json', 'ctx/package-lock.json', 'ctx/tsconfig.json', 'ctx/src/cli/main.ts', 'ctx/scripts/build-native.mjs', 'ctx/deploy/Dockerfile']) {
    assert.ok(files.includes(want), `${want} is in the context`);
  }
  assert.ok(files.some((f) => f.startsWith('ctx/native/')), 'native/ is in the context');
  for (const gone of ['ctx/node_modules/', 'ctx/.git/', 'ctx/dist/', 'ctx/relais-data/']) {
    assert.ok(!files.some((f) => f.startsWith(gone)), `${gone} is not in the context`);
  }
});
