// `node dist/bench/cluster.js [--replicas 1,2,3] [--clients 16] [--wrk-seconds 10]`: relais as a cluster
// (N replicas as real processes on one S3 bucket (Ceph RGW) and one PostgreSQL, nginx in front as the load
// balancer), measured per replica count, so scaling is measured and not assumed:
//   - cold: M clients pull one image at once through the load balancer (manifest + every blob) on an empty
//     cache: wall time, aggregate MB/s, and upstream blob GETs (distribution's access log: must equal the
//     number of blobs whatever N);
//   - warm: wrk on a 4 MB blob and on the manifest by tag through the load balancer.
// Everything listens on 127.0.0.1; every process is stopped and every temp dir removed at the end.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { pushRandomImage, type BuiltImage } from '../test/peers/images.js';
import { freePort } from '../test/peers/ports.js';
import { startPostgres } from '../test/peers/postgres.js';
import { removeDir, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../test/peers/proc.js';
import { startRegistry } from '../test/peers/registry.js';
import { startS3 } from '../test/peers/s3.js';
import { runWrk } from './lib/wrk.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

const { values } = parseArgs({
  options: {
    replicas: { type: 'string', default: '1,2,3' },
    clients: { type: 'string', default: '16' },
    'wrk-seconds': { type: 'string', default: '10' },
  },
});
const counts = values.replicas.split(',').map(Number);
const clients = Number(values.clients);
const wrkSeconds = Number(values['wrk-seconds']);

interface Row {
  replicas: number;
  coldSeconds: number;
  coldMBps: number;
  upstreamBlobGets: number;
  blobs: number;
  warmBlobReqPerSec: number;
  warmBlobMBps: number;
  manifestReqPerSec: number;
}

/** One client's pull: the manifest by tag, then every blob (bodies read to the end). */
async function pull(lb: string, image: BuiltImage): Promise<number> {
  const m = await request(`${lb}/v2/library/bench/manifests/v1`, { headers: { accept: ACCEPT } });
  if (m.statusCode !== 200) throw new Error(`manifest: ${m.statusCode}`);
  await m.body.arrayBuffer();
  let bytes = 0;
  await Promise.all(
    [image.configDigest, ...image.layers.map((l) => l.digest)].map(async (d) => {
      const r = await request(`${lb}/v2/library/bench/blobs/${d}`);
      if (r.statusCode !== 200) throw new Error(`blob ${d}: ${r.statusCode} ${await r.body.text()}`);
      for await (const c of r.body) bytes += (c as Buffer).byteLength;
    }),
  );
  return bytes;
}

async function main(): Promise<void> {
  const dir = await tempDir('bench-cluster');
  const [upstream, s3, pg] = await Promise.all([startRegistry(), startS3(), startPostgres()]);
  const rows: Row[] = [];
  try {
    const image = await pushRandomImage(upstream.host, 'library/bench:v1', { layers: [32_000_000, 16_000_000, 8_000_000, 4_000_000] });
    const warmBlob = image.layers[3];
    if (!warmBlob) throw new Error('no 4 MB layer');
    for (const [run, n] of counts.entries()) {
      const bucket = `bench-${run}-${n}`;
      await s3.createBucket(bucket);
      const db = await pg.createDatabase(`bench_${run}_${n}`);
      const procs: ManagedProcess[] = [];
      try {
        const ports: number[] = [];
        for (let i = 0; i < n; i++) {
          const port = await freePort();
          ports.push(port);
          const file = join(dir, `relais-${n}-${i}.json`);
          await writeFile(
            file,
            JSON.stringify({
              listen: `127.0.0.1:${port}`,
              dataDir: join(dir, `data-${n}-${i}`),
              upstreams: { 'docker.io': { url: upstream.url } },
              storage: { driver: 's3', s3: s3.storageConfig(bucket) },
              index: { driver: 'postgres', postgres: { url: db } },
              cluster: { secret: 'bench-cluster-secret-0123' },
              log: { level: 'warn', requests: false },
            }),
          );
          const p = await startProcess(process.execPath, [MAIN, 'serve', '--config', file], {
            name: `relais-${n}-${i}`,
            extraEnv: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
          });
          procs.push(p);
          await waitForHttp(`http://127.0.0.1:${port}/readyz`, 30_000, { accept: (s) => s === 200, process: p });
        }
        const lbPort = await freePort();
        const ngDir = join(dir, `nginx-${n}`);
        await mkdir(join(ngDir, 'logs'), { recursive: true });
        await writeFile(
          join(ngDir, 'nginx.conf'),
          `worker_processes 1;
error_log ${ngDir}/logs/error.log warn;
pid ${ngDir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${ngDir}/body; proxy_temp_path ${ngDir}/proxy; fastcgi_temp_path ${ngDir}/fcgi;
  uwsgi_temp_path ${ngDir}/uwsgi; scgi_temp_path ${ngDir}/scgi;
  upstream relais { least_conn; ${ports.map((p) => `server 127.0.0.1:${p};`).join(' ')} keepalive 64; }
  server {
    listen 127.0.0.1:${lbPort};
    location / { proxy_pass http://relais; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 300s; }
  }
}
`,
        );
        const nginx = await startProcess('nginx', ['-p', ngDir, '-c', join(ngDir, 'nginx.conf'), '-g', 'daemon off;'], { name: `nginx-${n}` });
        procs.push(nginx);
        const lb = `http://127.0.0.1:${lbPort}`;
        await waitForHttp(`${lb}/healthz`, 10_000, { accept: (s) => s === 200, process: nginx });

        upstream.clearLog();
        const t0 = performance.now();
        const bytes = (await Promise.all(Array.from({ length: clients }, () => pull(lb, image)))).reduce((a, b) => a + b, 0);
        const coldSeconds = (performance.now() - t0) / 1000;
        await upstream.settle();
        const blob = await runWrk(`${lb}/v2/library/bench/blobs/${warmBlob.digest}`, '*/*', { threads: 2, connections: 32, seconds: wrkSeconds });
        const manifest = await runWrk(`${lb}/v2/library/bench/manifests/v1`, ACCEPT, { threads: 2, connections: 64, seconds: wrkSeconds });
        rows.push({
          replicas: n,
          coldSeconds,
          coldMBps: bytes / 1e6 / coldSeconds,
          upstreamBlobGets: upstream.blobGets(),
          blobs: 1 + image.layers.length,
          warmBlobReqPerSec: blob.requestsPerSec,
          warmBlobMBps: (blob.requestsPerSec * warmBlob.size) / 1e6,
          manifestReqPerSec: manifest.requestsPerSec,
        });
        console.error(`replicas=${n}: ${JSON.stringify(rows.at(-1))}`);
      } finally {
        for (const p of procs.reverse()) await p.stop();
      }
    }
  } finally {
    await Promise.all([upstream.close(), s3.close(), pg.close()]);
    await removeDir(dir);
  }
  console.log(`relais cluster: ${clients} clients cold-pull one image (5 blobs, 60 MB) through nginx at once; then wrk for ${wrkSeconds}s`);
  console.log('| replicas | cold pull (s) | cold MB/s | upstream blob GETs | warm 4 MB blob req/s | warm MB/s | manifest req/s |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.replicas} | ${r.coldSeconds.toFixed(2)} | ${r.coldMBps.toFixed(0)} | ${r.upstreamBlobGets} (of ${r.blobs}) | ${r.warmBlobReqPerSec.toFixed(0)} | ${r.warmBlobMBps.toFixed(0)} | ${r.manifestReqPerSec.toFixed(0)} |`,
    );
  }
}

await main();
