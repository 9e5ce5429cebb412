// When a lone cold client gets its last byte, and when the cache has stored the blob:
// `node dist/bench/cold-tail.js [MB] [ROUNDS]`. One client GETs an uncached blob of MB (default 64) through
// relais, with filesystem storage and with S3 storage (Ceph RGW, started like the tests start it), ROUNDS
// times each (default 3). A client's last byte waits for the digest to verify, not for the cache's own
// storage (fdatasync and rename, or the S3 upload): docs/performance.md, optimisation 18.
import { createHash } from 'node:crypto';
import { pushRandomImage } from '../test/peers/images.js';
import { removeDir, tempDir } from '../test/peers/proc.js';
import { startRegistry } from '../test/peers/registry.js';
import { startRelais } from '../test/peers/relais.js';
import { startS3 } from '../test/peers/s3.js';

const mb = Number(process.argv[2] ?? 64);
const rounds = Number(process.argv[3] ?? 3);
const up = await startRegistry();
const s3 = await startS3();
try {
  await s3.createBucket('cold-tail');
  for (const driver of ['filesystem', 's3'] as const) {
    for (let i = 0; i < rounds; i++) {
      const repo = `library/tail-${driver}-${i}`;
      const img = await pushRandomImage(up.host, `${repo}:v1`, { layers: [mb * 1_000_000] });
      const layer = img.layers[0];
      if (layer === undefined) throw new Error('no layer pushed');
      const dataDir = await tempDir('cold-tail');
      const relais = await startRelais({
        upstreams: { 'docker.io': up.url },
        dataDir,
        config: driver === 's3' ? { storage: { driver: 's3', s3: s3.storageConfig('cold-tail', `r${i}/`) } } : {},
      });
      try {
        const t0 = performance.now();
        const res = await fetch(`${relais.url}/v2/${repo}/blobs/${layer.digest}`);
        const hash = createHash('sha256');
        for await (const chunk of res.body ?? []) hash.update(chunk as Uint8Array);
        const lastByte = performance.now() - t0;
        await relais.instance.blobs.settle();
        const stored = performance.now() - t0;
        const ok = `sha256:${hash.digest('hex')}` === layer.digest;
        process.stdout.write(`${driver.padEnd(10)} ${mb} MB: last byte at ${lastByte.toFixed(0).padStart(4)} ms, stored at ${stored.toFixed(0).padStart(4)} ms${ok ? '' : ' (WRONG BYTES)'}\n`);
      } finally {
        await relais.close();
        await removeDir(dataDir);
      }
    }
  }
} finally {
  await s3.close();
  await up.close();
}
