// The referrers API through relais, over real distribution 2.8 upstreams:
// - distribution 2.8 has no referrers API: relais answers from the fallback tag schema (`sha256-<hex>` tag
//   holding an index of the referrers, as oras/cosign/notation write it), or an empty index;
// - "an upstream with the API": test/peers/referrers-upstream.ts (a test upstream that implements the referrers
//   endpoint over a real distribution, since Debian has no registry with it), filtering or not, paginating;
// - references that cannot exist answer 404 MANIFEST_UNKNOWN for GET and HEAD (the OCI conformance suite).
// What the upstream saw is counted from distribution's access log and the test upstream's own log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { testClock } from '../../peers/clock.js';
import { pushRandomImage, type BuiltImage } from '../../peers/images.js';
import { pushBlob, putManifest, sha256Digest } from '../../peers/registry-client.js';
import { startReferrersUpstream } from '../../peers/referrers-upstream.js';
import { startRegistry, type RegistryPeer } from '../../peers/registry.js';
import { startRelais, type RelaisPeer } from '../../peers/relais.js';
import { errorCode, http } from './helpers.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const SBOM = 'application/vnd.example.sbom.v1+json';
const SIG = 'application/vnd.example.signature.v1';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** Pushes an OCI 1.1 artifact manifest (empty config, one payload layer) whose subject is `subject`, by digest only. */
async function pushArtifact(reg: RegistryPeer, repo: string, subject: BuiltImage, artifactType: string, payload: string): Promise<Descriptor> {
  const empty = Buffer.from('{}');
  await pushBlob(reg.url, repo, empty);
  const layer = Buffer.from(payload);
  await pushBlob(reg.url, repo, layer);
  const annotations = { 'org.example.payload': payload };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256Digest(empty), size: empty.byteLength },
      layers: [{ mediaType: 'application/vnd.example.payload', digest: sha256Digest(layer), size: layer.byteLength }],
      subject: { mediaType: subject.manifestMediaType, digest: subject.manifestDigest, size: subject.manifest.byteLength },
      annotations,
    }),
  );
  const digest = await putManifest(reg.url, repo, sha256Digest(manifest), manifest, OCI_MANIFEST);
  return { mediaType: OCI_MANIFEST, digest, size: manifest.byteLength, artifactType, annotations };
}

/** What a client writes for a registry without the API: the index of referrers under the `<alg>-<hex>` tag. */
async function pushFallbackTag(reg: RegistryPeer, repo: string, subject: BuiltImage, referrers: Descriptor[]): Promise<void> {
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: referrers }));
  await putManifest(reg.url, repo, subject.manifestDigest.replace(':', '-'), index, OCI_INDEX);
}

interface Index {
  schemaVersion: number;
  mediaType: string;
  manifests: Descriptor[];
}

function parseIndex(body: Buffer): Index {
  return JSON.parse(body.toString('utf8')) as Index;
}

const digests = (i: Index): string[] => i.manifests.map((d) => d.digest).sort();
const REFERRERS_PATH = /\/referrers\//;
const FALLBACK_TAG_PATH = /\/manifests\/sha256-[a-f0-9]{64}$/;

let plain: RegistryPeer;
let relais: RelaisPeer;
/** relais's clock (tags, referrers answers): moved past a TTL instead of sleeping through it. */
const clock = testClock();
let signed: BuiltImage;
let unsigned: BuiltImage;
let sbom: Descriptor;
let sig: Descriptor;

before(async () => {
  plain = await startRegistry();
  signed = await pushRandomImage(plain.host, 'library/signed:v1', { layers: [2000] });
  unsigned = await pushRandomImage(plain.host, 'library/signed:v2', { layers: [3000] });
  sbom = await pushArtifact(plain, 'library/signed', signed, SBOM, 'sbom of v1');
  sig = await pushArtifact(plain, 'library/signed', signed, SIG, 'signature of v1');
  await pushFallbackTag(plain, 'library/signed', signed, [sbom, sig]);
  relais = await startRelais({ upstreams: { 'docker.io': plain.url }, clock: () => clock.now(), config: { upstreams: { 'docker.io': { tagTtl: '1s', notFoundTtl: '1s' } } } });
});

after(async () => {
  await relais.close();
  await plain.close();
});

test('no referrers API upstream (distribution 2.8): the fallback tag\'s index, served as the referrers answer, then from memory', async () => {
  plain.clearLog();
  const r = await http(`${relais.url}/v2/signed/referrers/${signed.manifestDigest}`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], OCI_INDEX);
  assert.equal(r.headers['oci-filters-applied'], undefined, 'no filter asked, none applied');
  const idx = parseIndex(r.body);
  assert.equal(idx.schemaVersion, 2);
  assert.equal(idx.mediaType, OCI_INDEX);
  assert.deepEqual(digests(idx), [sbom.digest, sig.digest].sort());
  assert.deepEqual(idx.manifests.find((d) => d.digest === sbom.digest), sbom, 'descriptors as the client wrote them (artifactType, annotations)');
  await plain.settle();
  assert.equal(plain.count('GET', REFERRERS_PATH), 1, 'relais asked for the referrers API once (distribution: 404)');
  assert.equal(plain.count('GET', FALLBACK_TAG_PATH), 1, 'then read the fallback tag once');

  plain.clearLog();
  const again = await http(`${relais.url}/v2/library/signed/referrers/${signed.manifestDigest}`);
  assert.equal(again.status, 200);
  assert.deepEqual(digests(parseIndex(again.body)), digests(idx));
  const head = await http(`${relais.url}/v2/signed/referrers/${signed.manifestDigest}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body.byteLength, 0);
  await plain.settle();
  assert.equal(plain.accessLog().length, 0, 'within the TTL: nothing asked upstream');
});

test('artifactType filtering over the fallback tag: relais filters and says so', async () => {
  const r = await http(`${relais.url}/v2/signed/referrers/${signed.manifestDigest}?artifactType=${encodeURIComponent(SIG)}`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(digests(parseIndex(r.body)), [sig.digest]);
  const none = await http(`${relais.url}/v2/signed/referrers/${signed.manifestDigest}?artifactType=application%2Fvnd.example.nothing`);
  assert.equal(none.status, 200);
  assert.equal(none.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(parseIndex(none.body).manifests, []);
});

test('no fallback tag: 200 with an empty index (also for a digest the upstream has never seen); a bad digest is 400', async () => {
  plain.clearLog();
  for (const d of [unsigned.manifestDigest, sha256Digest('nothing refers to this')]) {
    const r = await http(`${relais.url}/v2/signed/referrers/${d}`);
    assert.equal(r.status, 200, d);
    assert.equal(r.headers['content-type'], OCI_INDEX);
    assert.deepEqual(parseIndex(r.body), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
  }
  const unknownRepo = await http(`${relais.url}/v2/never/pushed/referrers/${unsigned.manifestDigest}`);
  assert.equal(unknownRepo.status, 200);
  assert.deepEqual(parseIndex(unknownRepo.body).manifests, []);
  await plain.settle();
  assert.equal(plain.count('GET', REFERRERS_PATH), 3);
  assert.equal(plain.count('GET', FALLBACK_TAG_PATH), 3);

  const bad = await http(`${relais.url}/v2/signed/referrers/sha256:${'Z'.repeat(64)}`);
  assert.equal(bad.status, 400);
  assert.equal(errorCode(bad), 'DIGEST_INVALID');
});

test('a referrer pushed later shows up once the answer\'s short TTL has passed (1 s here): referrers are not cached like blobs', async () => {
  const before = await http(`${relais.url}/v2/signed/referrers/${unsigned.manifestDigest}`);
  assert.deepEqual(parseIndex(before.body).manifests, []);
  const late = await pushArtifact(plain, 'library/signed', unsigned, SIG, 'signature of v2');
  await pushFallbackTag(plain, 'library/signed', unsigned, [late]);
  clock.advance(1100); // past the answers' TTL
  const after = await http(`${relais.url}/v2/signed/referrers/${unsigned.manifestDigest}`);
  assert.deepEqual(digests(parseIndex(after.body)), [late.digest]);
});

test('references that cannot exist: 404 MANIFEST_UNKNOWN for GET and HEAD (OCI conformance), nothing asked upstream', async () => {
  plain.clearLog();
  for (const ref of ['.INVALID_MANIFEST_NAME', '-bad', 't'.repeat(200), 'sha256:abc']) {
    for (const method of ['GET', 'HEAD'] as const) {
      const r = await http(`${relais.url}/v2/signed/manifests/${ref}`, { method });
      assert.equal(r.status, 404, `${method} ${ref}`);
      if (method === 'GET') assert.equal(errorCode(r), 'MANIFEST_UNKNOWN');
    }
  }
  await plain.settle();
  assert.equal(plain.accessLog().length, 0);
});

test('an upstream with the referrers API (test upstream over distribution): passed through, filtered upstream, no fallback tag read', async () => {
  const api = await startReferrersUpstream(plain);
  const r2 = await startRelais({ upstreams: { 'docker.io': api.url } });
  try {
    plain.clearLog();
    const all = await http(`${r2.url}/v2/signed/referrers/${signed.manifestDigest}`);
    assert.equal(all.status, 200);
    assert.equal(all.headers['content-type'], OCI_INDEX);
    assert.deepEqual(digests(parseIndex(all.body)), [sbom.digest, sig.digest].sort());
    const filtered = await http(`${r2.url}/v2/signed/referrers/${signed.manifestDigest}?artifactType=${encodeURIComponent(SBOM)}`);
    assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
    assert.deepEqual(digests(parseIndex(filtered.body)), [sbom.digest]);
    assert.deepEqual(
      api.referrersRequests().map((q) => q.query),
      ['', `artifactType=${encodeURIComponent(SBOM)}`],
      'the artifactType filter was passed to the upstream',
    );
    // The referrers of a digest nothing refers to: the API's empty index, no fallback tag lookup.
    const empty = await http(`${r2.url}/v2/signed/referrers/${unsigned.manifestDigest}`);
    assert.equal(empty.status, 200);
    await plain.settle();
    assert.equal(plain.count('GET', FALLBACK_TAG_PATH), 0, 'the API answered: the fallback tag is never read');
  } finally {
    await r2.close();
    await api.close();
  }
});

test('an upstream with the API that ignores artifactType and pages its answer: relais follows the pages and filters itself', async () => {
  const api = await startReferrersUpstream(plain, { filter: false, pageSize: 1 });
  const r2 = await startRelais({ upstreams: { 'docker.io': api.url } });
  try {
    const all = await http(`${r2.url}/v2/signed/referrers/${signed.manifestDigest}`);
    assert.deepEqual(digests(parseIndex(all.body)), [sbom.digest, sig.digest].sort(), 'both pages merged');
    assert.equal(api.referrersRequests().length, 2, 'two pages fetched');
    const filtered = await http(`${r2.url}/v2/signed/referrers/${signed.manifestDigest}?artifactType=${encodeURIComponent(SIG)}`);
    assert.equal(filtered.headers['oci-filters-applied'], 'artifactType', 'filtered by relais, and said so');
    assert.deepEqual(digests(parseIndex(filtered.body)), [sig.digest]);
  } finally {
    await r2.close();
    await api.close();
  }
});

test('upstream down: the last referrers answer is served past its TTL (stale-if-error); nothing known: 503, not an empty list', async () => {
  const fresh = await http(`${relais.url}/v2/signed/referrers/${signed.manifestDigest}`);
  assert.equal(fresh.status, 200);
  await plain.stop();
  try {
    clock.advance(1100); // past the answers' TTL
    const stale = await http(`${relais.url}/v2/signed/referrers/${signed.manifestDigest}`);
    assert.equal(stale.status, 200);
    assert.deepEqual(digests(parseIndex(stale.body)), [sbom.digest, sig.digest].sort());
    const logged = relais.logs().filter((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes('/referrers/') && l.cache === 'stale');
    assert.ok(logged.length >= 1, 'the request log says stale');
    const never = await http(`${relais.url}/v2/signed/referrers/${sha256Digest('never asked before')}`);
    assert.equal(never.status, 503, 'an unreachable upstream is not "nothing refers to it"');
  } finally {
    await plain.start();
  }
});
