import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { interpolateEnv, loadConfig, resolveConfig } from '../../../src/config/load.js';
import { parseDuration, parseSize } from '../../../src/config/units.js';
import { RelaisError } from '../../../src/errors.js';

test('embedded defaults: 0.0.0.0:5000, ./relais-data, Docker Hub as default upstream', () => {
  const c = resolveConfig({});
  assert.equal(c.listen, '0.0.0.0:5000');
  assert.equal(c.dataDir, './relais-data');
  assert.equal(c.defaultUpstream, 'docker.io');
  assert.equal(c.upstreams['docker.io']?.url, 'https://registry-1.docker.io');
  assert.equal(c.upstreams['docker.io']?.tagTtl, 300_000);
  assert.equal(c.upstreams['docker.io']?.timeouts.headers, 30_000);
});

test('--upstream flags replace the default upstream; docker.io is the default when given, else the first', () => {
  const c = resolveConfig({}, { upstreams: ['ghcr.io=https://ghcr.io', 'docker.io=http://127.0.0.1:1'] });
  assert.deepEqual(Object.keys(c.upstreams).sort(), ['docker.io', 'ghcr.io']);
  assert.equal(c.defaultUpstream, 'docker.io');
  assert.equal(resolveConfig({}, { upstreams: ['ghcr.io=https://ghcr.io', 'quay.io=https://quay.io'] }).defaultUpstream, 'ghcr.io');
  assert.equal(c.upstreams['docker.io']?.url, 'http://127.0.0.1:1');
});

test('a flag keeps the file settings of the same upstream and overrides its url', () => {
  const c = resolveConfig({ upstreams: { 'quay.io': { url: 'https://quay.io', tagTtl: '1m' } } }, { upstreams: ['quay.io=http://127.0.0.1:9'] });
  assert.equal(c.upstreams['quay.io']?.url, 'http://127.0.0.1:9');
  assert.equal(c.upstreams['quay.io']?.tagTtl, 60_000);
});

test('mistakes name the field and what was expected', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ listen: 'nope' }, /listen: expected HOST:PORT/],
    [{ upstreams: { 'docker.io': { url: 'ftp://x' } } }, /upstreams\["docker\.io"\]\.url: expected an http/],
    [{ upstreams: { 'docker.io': { url: 'https://u:p@x' } } }, /without credentials/],
    [{ upstreams: { 'docker.io': { url: 'https://x', tagTtl: 'soon' } } }, /tagTtl: expected a duration/],
    [{ upstreams: { 'docker.io': { url: 'https://x', tagTTL: '5m' } } }, /Unrecognized key.*tagTTL/],
    [{ upstreams: { 'docker.io': { url: 'https://x', username: 'u' } } }, /username and password go together/],
    [{ defaultUpstream: 'quay.io' }, /defaultUpstream: "quay.io" is not one of the upstreams/],
    [{ server: { maxManifestSize: 'huge' } }, /maxManifestSize: expected a size/],
  ];
  for (const [raw, re] of cases) {
    assert.throws(() => resolveConfig(raw, {}, 'f.yaml'), (e: unknown) => e instanceof RelaisError && e.code === 'CONFIG_INVALID' && re.test(e.message), `${JSON.stringify(raw)} should match ${re}`);
  }
});

test('bad --upstream flag says the expected form', () => {
  assert.throws(() => resolveConfig({}, { upstreams: ['docker.io'] }), /expected NAME=URL/);
});

test('${ENV} interpolation, with defaults, and a missing variable names the field', () => {
  const out = interpolateEnv({ a: { b: 'x-${TOKEN}-y', c: ['${NOPE:-fallback}'] }, n: 3 }, { TOKEN: 's3cret' }, 'f');
  assert.deepEqual(out, { a: { b: 'x-s3cret-y', c: ['fallback'] }, n: 3 });
  assert.throws(() => interpolateEnv({ upstreams: { 'docker.io': { password: '${MISSING}' } } }, {}, 'f.yaml'), /upstreams\["docker\.io"\]\.password: environment variable MISSING is not set/);
});

test('loadConfig reads YAML, interpolates, and refuses invalid YAML or a missing file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relais-cfg-'));
  const good = join(dir, 'good.yaml');
  await writeFile(good, 'listen: 127.0.0.1:5050\nupstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    username: me\n    password: ${GH_TOKEN}\n');
  const c = await loadConfig(good, {}, { GH_TOKEN: 't' });
  assert.equal(c.listen, '127.0.0.1:5050');
  assert.equal(c.upstreams['ghcr.io']?.password, 't');
  assert.equal(c.defaultUpstream, 'ghcr.io');
  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, 'listen: [unclosed\n');
  await assert.rejects(loadConfig(bad), /bad\.yaml: not valid YAML/);
  await assert.rejects(loadConfig(join(dir, 'absent.yaml')), /cannot read the config file \(ENOENT\)/);
  const dup = join(dir, 'dup.yaml');
  await writeFile(dup, 'listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n');
  await assert.rejects(loadConfig(dup), /not valid YAML/);
});

test('durations and sizes', () => {
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('7d'), 7 * 86_400_000);
  assert.equal(parseDuration('250'), 250);
  assert.equal(parseDuration('soon'), undefined);
  assert.equal(parseDuration(-1), undefined);
  assert.equal(parseSize('50GiB'), 50 * 2 ** 30);
  assert.equal(parseSize('1.5 MB'), 1_500_000);
  assert.equal(parseSize('12'), 12);
  assert.equal(parseSize('12 parsecs'), undefined);
});
