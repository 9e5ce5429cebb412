// Keeps docs/config.example.yaml true: it must load, and name every top-level key of the schema.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { loadConfig } from '../../../src/config/load.js';
import { configSchema } from '../../../src/config/schema.js';

test('docs/config.example.yaml loads and documents every top-level key', async () => {
  const file = 'docs/config.example.yaml';
  const c = await loadConfig(file, {}, { RELAIS_CI_TOKEN: 'x'.repeat(20) });
  assert.equal(c.listen, '0.0.0.0:5000');
  assert.deepEqual(Object.keys(c.upstreams), ['docker.io', 'ghcr.io', 'quay.io', 'docker.elastic.co']);
  const text = await readFile(file, 'utf8');
  const shape = (configSchema as unknown as { def?: { in?: { shape?: object } }; shape?: object });
  const keys = Object.keys(shape.shape ?? shape.def?.in?.shape ?? {});
  assert.ok(keys.length > 5, 'schema keys found');
  for (const k of keys) assert.match(text, new RegExp(`^#? ?${k}:`, 'm'), `${k} is documented in ${file}`);
});
