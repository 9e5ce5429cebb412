// The configurations shipped in deploy/ (docker-compose's relais-cluster.yaml and the Kubernetes ConfigMap)
// load through relais's own config loader, with the environment the manifests give the container.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { removeDir, tempDir } from '../../peers/proc.js';

const DEPLOY = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../../deploy/' : '../../../deploy/', import.meta.url));

const env = {
  S3_ENDPOINT: 'http://minio:9000',
  S3_ACCESS_KEY_ID: 'relais',
  S3_SECRET_ACCESS_KEY: 'secret-key-123',
  DATABASE_URL: 'postgres://relais:pw@postgres:5432/relais',
  POSTGRES_PASSWORD: 'pw',
  RELAIS_CLUSTER_SECRET: 'a-cluster-secret-of-32-characters',
  RELAIS_ADVERTISE_URL: 'http://relais-1:5000',
  POD_IP: '10.1.2.3',
};

test('deploy/relais-cluster.yaml (docker compose) is a valid cluster configuration', async () => {
  const c = await loadConfig(join(DEPLOY, 'relais-cluster.yaml'), {}, env);
  assert.equal(c.storage.driver, 's3');
  assert.equal(c.storage.s3?.endpoint, 'http://minio:9000');
  assert.equal(c.storage.s3?.bucket, 'relais', 'default bucket from ${S3_BUCKET:-relais}');
  assert.equal(c.storage.maxSize, 200 * 1024 ** 3);
  assert.equal(c.index.driver, 'postgres');
  assert.equal(c.index.postgres?.url, env.DATABASE_URL);
  assert.equal(c.cluster?.advertiseUrl, 'http://relais-1:5000');
  await assert.rejects(loadConfig(join(DEPLOY, 'relais-cluster.yaml'), {}, { ...env, RELAIS_CLUSTER_SECRET: undefined }), /RELAIS_CLUSTER_SECRET/);
});

test('deploy/kubernetes.yaml: the ConfigMap is a valid cluster configuration; probes use /healthz and /readyz', async () => {
  const docs = parseAllDocuments(await readFile(join(DEPLOY, 'kubernetes.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
  const cm = docs.find((d) => d.kind === 'ConfigMap') as { data: Record<string, string> } | undefined;
  const text = cm?.data['config.yaml'];
  assert.ok(text !== undefined);
  const dir = await tempDir('deploy-config');
  try {
    await writeFile(join(dir, 'config.yaml'), text);
    const c = await loadConfig(join(dir, 'config.yaml'), {}, env);
    assert.equal(c.cluster?.advertiseUrl, 'http://10.1.2.3:5000');
    assert.equal(c.index.postgres?.url, 'postgres://relais:pw@relais-postgres:5432/relais');
  } finally {
    await removeDir(dir);
  }
  const deployment = JSON.stringify(docs.find((d) => d.kind === 'Deployment'));
  assert.match(deployment, /"livenessProbe":\{"httpGet":\{"path":"\/healthz"/);
  assert.match(deployment, /"readinessProbe":\{"httpGet":\{"path":"\/readyz"/);
});
