// Pure parts of the proxy door: CONNECT targets, what the cache answers, the CA's name constraints.
import 'reflect-metadata';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { constraintPermits, loadCa, permittedNames } from '../../../src/doors/proxy/ca.js';
import { parseTarget } from '../../../src/doors/proxy/door.js';
import { isCachedRead } from '../../../src/doors/proxy/intercept.js';
import { pushedManifest } from '../../../src/doors/proxy/manifest-writes.js';

test('parseTarget: host:port lowercased, trailing dot dropped, junk refused', () => {
  assert.deepEqual(parseTarget('GHCR.io.:443'), { host: 'ghcr.io', port: 443, key: 'ghcr.io:443' });
  assert.deepEqual(parseTarget('[::1]:5000'), { host: '[::1]', port: 5000, key: '[::1]:5000' });
  for (const bad of [undefined, 'ghcr.io', 'ghcr.io:0', 'ghcr.io:70000', 'a b:443', 'user@host:443', 'http://x:443']) assert.equal(parseTarget(bad), undefined, String(bad));
});

test('isCachedRead: manifests, blob GETs, tags and referrers; never uploads, blob HEADs or writes', () => {
  assert.ok(isCachedRead('GET', '/v2/owner/app/manifests/1'));
  assert.ok(isCachedRead('HEAD', '/v2/owner/app/manifests/sha256:abc'));
  assert.ok(isCachedRead('GET', '/v2/owner/app/blobs/sha256:abc'));
  assert.ok(isCachedRead('GET', '/v2/owner/app/tags/list'));
  assert.equal(isCachedRead('HEAD', '/v2/owner/app/blobs/sha256:abc'), false);
  assert.equal(isCachedRead('GET', '/v2/owner/app/blobs/uploads/123'), false);
  assert.equal(isCachedRead('PUT', '/v2/owner/app/manifests/1'), false);
  assert.equal(isCachedRead('GET', '/v2/'), false);
  assert.equal(isCachedRead('GET', '/token'), false);
});

test('pushedManifest: only manifest PUT/DELETE the upstream accepted', () => {
  assert.deepEqual(pushedManifest('PUT', '/v2/team/app/manifests/feature-x', 201), { repo: 'team/app', reference: 'feature-x' });
  assert.deepEqual(pushedManifest('DELETE', '/v2/a/b/c/manifests/sha256:abc?x=1', 202), { repo: 'a/b/c', reference: 'sha256:abc' });
  assert.equal(pushedManifest('PUT', '/v2/team/app/manifests/feature-x', 401), undefined);
  assert.equal(pushedManifest('PUT', '/v2/team/app/manifests/feature-x', 500), undefined);
  assert.equal(pushedManifest('GET', '/v2/team/app/manifests/feature-x', 200), undefined);
  assert.equal(pushedManifest('PUT', '/v2/team/app/blobs/uploads/123', 201), undefined);
  assert.equal(pushedManifest('PUT', '/v2/team/app/manifests/%zz', 201), undefined);
});

test('constraintPermits follows RFC 5280 dNSName subtrees', () => {
  assert.ok(constraintPermits('docker.io', 'docker.io'));
  assert.ok(constraintPermits('docker.io', 'registry-1.docker.io'));
  assert.equal(constraintPermits('docker.io', 'evildocker.io'), false);
  assert.equal(constraintPermits('ghcr.io', 'example.com'), false);
});

test('a generated CA: name-constrained to the hosts, key 0600, reused, refused for a host it does not cover', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relais-ca-'));
  try {
    const ca = await loadCa({ dataDir: dir, hosts: ['ghcr.test', 'registry-1.docker.io'] });
    assert.deepEqual(ca.permitted, ['ghcr.test', 'registry-1.docker.io']);
    assert.equal((await stat(join(dir, 'ca', 'ca.key'))).mode & 0o777, 0o600);
    const cert = new X509Certificate(ca.certPem);
    assert.ok(cert.ca);
    assert.deepEqual(permittedNames(new x509.X509Certificate(ca.certPem)), ['ghcr.test', 'registry-1.docker.io']);
    const again = await loadCa({ dataDir: dir, hosts: ['ghcr.test'] });
    assert.equal(again.certPem, ca.certPem, 'the same CA at the next start');
    await assert.rejects(loadCa({ dataDir: dir, hosts: ['ghcr.test', 'quay.io'] }), /may only vouch for .*not for quay\.io/);
    assert.ok(await ca.contextFor('ghcr.test'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
