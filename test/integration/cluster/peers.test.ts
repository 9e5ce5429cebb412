// The peer download source on its own, against a real PostgreSQL (leases, index) and the filesystem
// storage, with a stand-in "owner" replica: what claim() answers when the lease is held elsewhere.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LeaseManager } from '../../../src/cluster/leases.js';
import { ClusterPeers } from '../../../src/cluster/peers.js';
import { PostgresIndex } from '../../../src/index/postgres.js';
import { blobKey } from '../../../src/storage/driver.js';
import { FilesystemDriver } from '../../../src/storage/fs.js';
import { freePort } from '../../peers/ports.js';
import { startPostgres, type PostgresPeer } from '../../peers/postgres.js';
import { removeDir, tempDir } from '../../peers/proc.js';

let pg: PostgresPeer;
let index: PostgresIndex;
let leases: LeaseManager;
let peers: ClusterPeers;
let storage: FilesystemDriver;
let dir: string;
const SECRET = 'peers-test-secret-0123456789';

before(async () => {
  [pg, dir] = await Promise.all([startPostgres(), tempDir('peers')]);
  index = await PostgresIndex.open(await pg.createDatabase('peers'));
  storage = new FilesystemDriver(dir);
  leases = new LeaseManager(index.pool, { owner: 'me', ownerUrl: 'http://127.0.0.1:1', ttlMs: 1000 });
  peers = new ClusterPeers({ leases, index, storage, secret: SECRET });
});
after(async () => {
  await peers.close();
  await leases.close();
  await index.close();
  await Promise.all([pg.close(), removeDir(dir)]);
});

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const holdElsewhere = (digest: string, url: string, forMs: number): Promise<unknown> =>
  pg.query('peers', `INSERT INTO download_leases (digest, owner, owner_url, acquired_at, expires_at)
    VALUES ($1, 'other', $2, 0, (extract(epoch from clock_timestamp()) * 1000)::bigint + $3)`, [digest, url, forMs]);

test('an owner that committed between the probe and the GET: the bytes come from the shared storage', async () => {
  const data = randomBytes(50_000);
  const digest = digestOf(data);
  const seen: string[] = [];
  // The owner: its download is running at the probe (HEAD 200), gone by the GET (404).
  const owner: Server = createServer((req, res) => {
    seen.push(`${req.method ?? ''} ${req.headers.authorization === `Bearer ${SECRET}` ? 'auth' : 'noauth'}`);
    res.statusCode = req.method === 'HEAD' ? 200 : 404;
    if (req.method === 'HEAD') res.setHeader('content-length', data.byteLength);
    res.end();
  });
  await new Promise<void>((r) => owner.listen(0, '127.0.0.1', r));
  try {
    await holdElsewhere(digest, `http://127.0.0.1:${(owner.address() as AddressInfo).port}`, 60_000);
    const claim = await peers.claim(digest);
    assert.equal(claim.kind, 'remote');
    assert.ok(claim.kind === 'remote');
    assert.equal(claim.handle.size, data.byteLength);
    // Meanwhile the owner stored it.
    await storage.putContent(blobKey(digest), data);
    await index.putBlob(digest, data.byteLength, Date.now());
    const chunks: Buffer[] = [];
    for await (const c of await claim.handle.open({ start: 10, end: 19 })) chunks.push(c as Buffer);
    assert.deepEqual(Buffer.concat(chunks), data.subarray(10, 20));
    assert.deepEqual(seen, ['HEAD auth', 'GET auth']);
  } finally {
    owner.closeAllConnections();
    await new Promise<void>((r) => owner.close(() => r()));
  }
});

test('an unreachable owner: the work is taken over once its lease expires, not before', async () => {
  const digest = digestOf(randomBytes(10));
  await holdElsewhere(digest, `http://127.0.0.1:${await freePort()}`, 1500);
  const t0 = Date.now();
  const claim = await peers.claim(digest);
  const waited = Date.now() - t0;
  assert.equal(claim.kind, 'local');
  assert.ok(waited >= 1200, `waited ${waited} ms for the lease to expire`);
  assert.ok(waited < 6000, `took over within a few seconds (${waited} ms)`);
  const rows = await pg.query<{ owner: string }>('peers', 'SELECT owner FROM download_leases WHERE digest = $1', [digest]);
  assert.deepEqual(rows, [{ owner: 'me' }]);
  // Bound to a download that ends: the lease is released.
  if (claim.kind === 'local') claim.bind(Promise.resolve());
  for (let i = 0; i < 50 && (await pg.query('peers', 'SELECT 1 FROM download_leases WHERE digest = $1', [digest])).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(await pg.query('peers', 'SELECT owner FROM download_leases WHERE digest = $1', [digest]), []);
});

test('a blob already stored when the lease is won: "stored", and the lease is not kept', async () => {
  const data = randomBytes(100);
  const digest = digestOf(data);
  await storage.putContent(blobKey(digest), data);
  await index.putBlob(digest, data.byteLength, Date.now());
  const claim = await peers.claim(digest);
  assert.equal(claim.kind, 'stored');
  assert.deepEqual(await pg.query('peers', 'SELECT 1 FROM download_leases WHERE digest = $1', [digest]), []);
});

test('a blob the index lists but the storage lost: "local" (fetch it again under the lease), not "stored"', async () => {
  const data = randomBytes(100);
  const digest = digestOf(data);
  await index.putBlob(digest, data.byteLength, Date.now());
  const claim = await peers.claim(digest);
  assert.equal(claim.kind, 'local');
  assert.equal((await pg.query('peers', 'SELECT 1 FROM download_leases WHERE digest = $1', [digest])).length, 1, 'the lease is held while the blob is fetched');
  if (claim.kind !== 'local') return;
  let ended!: () => void;
  const done = new Promise<void>((r) => (ended = r));
  claim.bind(done);
  ended();
  for (let i = 0; i < 100 && (await pg.query('peers', 'SELECT 1 FROM download_leases WHERE digest = $1', [digest])).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(await pg.query('peers', 'SELECT 1 FROM download_leases WHERE digest = $1', [digest]), [], 'released when the download ends');
});
