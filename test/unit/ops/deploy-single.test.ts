// deploy/ for the operator's first hour (issue 18 item 10): a single-node example (compose and
// Kubernetes: one replica, the data directory on a persistent volume) whose config loads through relais's
// own loader, a Node base image on the current LTS line that satisfies package.json's engines (which this
// machine's Node satisfies too), and the Kubernetes MinIO bucket created by a Job through MinIO's API, as
// docker-compose.yml does, not by `mkdir` in an init container.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { removeDir, tempDir } from '../../peers/proc.js';

const ROOT = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../../' : '../../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
type Obj = Record<string, unknown>;
const at = (o: unknown, ...path: (string | number)[]): unknown =>
  path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string | number, unknown>)[k] : undefined), o);

async function k8s(file: string): Promise<Obj[]> {
  return parseAllDocuments(await readFile(join(DEPLOY, file), 'utf8')).map((d) => d.toJS() as Obj);
}

async function configFromText(text: string): Promise<Awaited<ReturnType<typeof loadConfig>>> {
  const dir = await tempDir('deploy-single');
  try {
    await writeFile(join(dir, 'config.yaml'), text);
    return await loadConfig(join(dir, 'config.yaml'), {}, {});
  } finally {
    await removeDir(dir);
  }
}

test('single node with docker compose: one relais, its dataDir on a named volume, a config that loads', async () => {
  const compose = parse(await readFile(join(DEPLOY, 'docker-compose.single.yml'), 'utf8')) as Obj;
  const services = at(compose, 'services') as Obj;
  assert.deepEqual(Object.keys(services), ['relais'], 'one container: two relais on one data directory is the trap');
  assert.equal(at(services, 'relais', 'deploy', 'replicas'), undefined);
  const config = await loadConfig(join(DEPLOY, 'relais-single.yaml'), {}, {});
  assert.equal(config.storage.driver, 'filesystem');
  assert.equal(config.index.driver, 'sqlite');
  assert.equal(config.cluster, undefined);
  const volumes = at(services, 'relais', 'volumes') as string[];
  assert.ok(volumes.includes(`relais-data:${config.dataDir}`), `${config.dataDir} on the named volume: ${volumes.join(', ')}`);
  assert.ok(volumes.includes('./relais-single.yaml:/etc/relais/config.yaml:ro'));
  assert.ok(Object.keys(at(compose, 'volumes') as Obj).includes('relais-data'));
});

test('single node on Kubernetes: a StatefulSet of one replica, its dataDir on a PersistentVolumeClaim, probes, a Service', async () => {
  const docs = await k8s('kubernetes-single.yaml');
  assert.equal(docs.filter((d) => d['kind'] === 'Deployment').length, 0, 'a Deployment may start a second pod on the volume during an update');
  const sts = docs.find((d) => d['kind'] === 'StatefulSet');
  assert.equal(at(sts, 'spec', 'replicas'), 1);
  const config = await configFromText(String(at(docs.find((d) => d['kind'] === 'ConfigMap'), 'data', 'config.yaml')));
  assert.equal(config.storage.driver, 'filesystem');
  assert.equal(config.index.driver, 'sqlite');
  const mounts = at(sts, 'spec', 'template', 'spec', 'containers', 0, 'volumeMounts') as { name: string; mountPath: string }[];
  const data = mounts.find((m) => m.mountPath === config.dataDir);
  assert.ok(data, `something is mounted at dataDir ${config.dataDir}`);
  const claims = at(sts, 'spec', 'volumeClaimTemplates') as { metadata: { name: string }; spec: { accessModes: string[] } }[];
  assert.deepEqual(claims.map((c) => c.metadata.name), [data.name], 'dataDir is the persistent claim, not an emptyDir');
  assert.deepEqual(claims[0]?.spec.accessModes, ['ReadWriteOnce']);
  assert.match(JSON.stringify(sts), /"readinessProbe":\{"httpGet":\{"path":"\/readyz"/);
  assert.ok(docs.some((d) => d['kind'] === 'Service'));
});

test('the cluster example creates the MinIO bucket with a Job through the S3 API (as compose does), never mkdir', async () => {
  const docs = await k8s('kubernetes.yaml');
  const text = JSON.stringify(docs);
  assert.doesNotMatch(text, /mkdir/);
  assert.equal(at(docs.find((d) => d['kind'] === 'StatefulSet' && at(d, 'metadata', 'name') === 'relais-minio'), 'spec', 'template', 'spec', 'initContainers'), undefined);
  const bucket = String(at(parse(String(at(docs.find((d) => d['kind'] === 'ConfigMap'), 'data', 'config.yaml'))), 'storage', 's3', 'bucket'));
  const job = docs.find((d) => d['kind'] === 'Job');
  assert.ok(job, 'a Job');
  const container = at(job, 'spec', 'template', 'spec', 'containers', 0) as { image: string; args: string[]; env: Obj[] };
  assert.match(container.image, /^minio\/mc/);
  assert.match(container.args.join(' '), new RegExp(`mc mb --ignore-existing s3/${bucket}$`));
  assert.match(container.args.join(' '), /until mc alias set s3 http:\/\/relais-minio:9000 /, 'waits for MinIO');
  // The same credentials MinIO gets.
  const keys = (env: Obj[]): string[] => env.map((e) => String(at(e, 'valueFrom', 'secretKeyRef', 'key'))).sort();
  const minio = at(docs.find((d) => at(d, 'metadata', 'name') === 'relais-minio' && d['kind'] === 'StatefulSet'), 'spec', 'template', 'spec', 'containers', 0, 'env') as Obj[];
  assert.deepEqual(keys(container.env), keys(minio));
  // docker compose does it the same way.
  const compose = await readFile(join(DEPLOY, 'docker-compose.yml'), 'utf8');
  assert.match(compose, new RegExp(`mc mb --ignore-existing s3/${bucket}`));
});

test('the image runs the current LTS Node line; package.json engines admits it and the Node this is tested on', async () => {
  const dockerfile = await readFile(join(DEPLOY, 'Dockerfile'), 'utf8');
  const froms = [...dockerfile.matchAll(/^FROM node:(\d+)[-\w.]*/gm)].map((m) => Number(m[1]));
  assert.deepEqual(froms, [24, 24], 'both stages on node:24 (Node 20 is end of life)');
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
  const min = /^>=(\d+)\.(\d+)\.(\d+)$/.exec(pkg.engines.node);
  assert.ok(min, `engines.node is a minimum: ${pkg.engines.node}`);
  const v = (s: string): number[] => s.replace(/^v/, '').split('.').map(Number);
  const ge = (a: number[], b: number[]): boolean => (a[0] ?? 0) !== (b[0] ?? 0) ? (a[0] ?? 0) > (b[0] ?? 0) : (a[1] ?? 0) !== (b[1] ?? 0) ? (a[1] ?? 0) > (b[1] ?? 0) : (a[2] ?? 0) >= (b[2] ?? 0);
  const floor = [Number(min[1]), Number(min[2]), Number(min[3])];
  assert.ok(ge(v(process.version), floor), `this Node (${process.version}) satisfies ${pkg.engines.node}`);
  assert.ok(floor[0] === 20 && (floor[1] ?? 0) >= 20, 'the minimum is the Node 20 release this machine tests on (20.20)');
  assert.ok(ge([24, 0, 0], floor), 'the image\'s Node satisfies engines');
});
