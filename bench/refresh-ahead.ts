// `node dist/bench/refresh-ahead.js [--link 200mbit] [--layers 3] [--layer-mib 16] [--rounds 3]`:
// the row "first pull after an upstream re-push", with refresh-ahead off and on (issue 19).
// relais runs as a real process; its upstream (distribution) sits behind a throttling TCP proxy (the slow
// link to a far registry: loopback would hide what a cold pull costs). Per round and mode, on a fresh cache:
//   1. the tag is pulled three times (hot: refreshAhead.minPulls 3); the third pull is the warm anchor;
//   2. the tag is re-pushed upstream with new layers;
//   3. on: the bench awaits refresh-ahead's `moved` (metrics) and relais answering the new digest;
//      off: it waits out the tag's TTL (nothing to await: nothing happens until a client asks);
//   4. the first pull of the tag is timed, and the upstream blob GETs during it counted (access log).
// Reported: medians over the rounds, and the ratio to the warm pull of the same round.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { pushRandomImage } from '../test/peers/images.js';
import { freePort } from '../test/peers/ports.js';
import { removeDir, startProcess, tempDir, waitForHttp } from '../test/peers/proc.js';
import { startRegistry } from '../test/peers/registry.js';
import { MANIFEST_ACCEPT, runPull } from './lib/pull.js';
import { parseRate, proxySlowLink } from './lib/slowlink.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const TAG_TTL_MS = 4_000;

const { values } = parseArgs({
  options: {
    link: { type: 'string', default: '200mbit' },
    layers: { type: 'string', default: '3' },
    'layer-mib': { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
  },
});
const rateBits = parseRate(values.link);
const layers = Array.from({ length: Number(values.layers) }, () => Number(values['layer-mib']) * 1024 * 1024);
const rounds = Number(values.rounds);

type Mode = 'off' | 'on';

async function metric(base: string, name: string, label: string): Promise<number> {
  const text = await (await request(`${base}/metrics`)).body.text();
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(label)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

async function until(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
}

async function main(): Promise<void> {
  const dir = await tempDir('bench-refresh');
  const upstream = await startRegistry();
  const link = proxySlowLink(rateBits);
  const upstreamAddr = await link.upstreamAddr(upstream.port);
  const results: Record<Mode, { warmMs: number[]; firstMs: number[]; blobGets: number[] }> = {
    off: { warmMs: [], firstMs: [], blobGets: [] },
    on: { warmMs: [], firstMs: [], blobGets: [] },
  };
  try {
    for (let round = 0; round < rounds; round++) {
      for (const mode of ['off', 'on'] as const) {
        const repo = `library/bench-${mode}-${round}`;
        const port = await freePort();
        const base = `http://127.0.0.1:${port}`;
        const file = join(dir, `relais-${mode}-${round}.json`);
        await writeFile(
          file,
          JSON.stringify({
            listen: `127.0.0.1:${port}`,
            dataDir: join(dir, `data-${mode}-${round}`),
            upstreams: { 'docker.io': { url: `http://${upstreamAddr}`, tagTtl: `${TAG_TTL_MS}ms` } },
            refreshAhead: { enabled: mode === 'on', minPulls: 3, window: '1m', lead: `${TAG_TTL_MS / 2}ms`, checkEvery: '100ms' },
            log: { level: 'warn', requests: false },
          }),
        );
        const p = await startProcess(process.execPath, [MAIN, 'serve', '--config', file], { name: `relais-${mode}-${round}` });
        try {
          await waitForHttp(`${base}/readyz`, 30_000, { accept: (s) => s === 200, process: p });
          await pushRandomImage(upstream.host, `${repo}:v1`, { layers });
          const job = { kind: 'pull' as const, baseUrl: base, images: [{ repo, tag: 'v1' }], clients: 1, layerConcurrency: 3, timeoutMs: 300_000 };
          let warm = 0;
          for (let i = 0; i < 3; i++) {
            const r = await runPull(job);
            if (r.errors.length > 0) throw new Error(`pull: ${r.errors[0] ?? ''}`);
            warm = r.wallMs;
          }
          const lastPull = Date.now();
          const next = await pushRandomImage(upstream.host, `${repo}:v1`, { layers });
          if (mode === 'on') {
            await until(async () => (await metric(base, 'relais_refresh_ahead_total', 'result="moved"')) >= 1, 120_000, 'refresh-ahead');
            await until(async () => {
              const res = await request(`${base}/v2/${repo}/manifests/v1`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
              await res.body.dump();
              return res.headers['docker-content-digest'] === next.manifestDigest;
            }, 30_000, 'the new digest');
          } else {
            await sleep(Math.max(0, lastPull + TAG_TTL_MS + 200 - Date.now()));
          }
          await upstream.settle();
          upstream.clearLog();
          const first = await runPull(job);
          if (first.errors.length > 0) throw new Error(`first pull: ${first.errors[0] ?? ''}`);
          await upstream.settle();
          results[mode].warmMs.push(warm);
          results[mode].firstMs.push(first.wallMs);
          results[mode].blobGets.push(upstream.blobGets());
          console.error(`round ${round} ${mode}: warm ${warm.toFixed(0)} ms, first pull after re-push ${first.wallMs.toFixed(0)} ms, upstream blob GETs during it ${upstream.blobGets()}`);
        } finally {
          await p.stop();
        }
      }
    }
  } finally {
    await link.close();
    await upstream.close();
    await removeDir(dir);
  }
  const mib = (layers.length * (layers[0] ?? 0)) / 1024 / 1024;
  console.log(`first pull after an upstream re-push: 1 client, ${layers.length} new layers (${mib} MiB), upstream behind ${link.description}; medians of ${rounds} rounds`);
  console.log('| refresh-ahead | warm pull (ms) | first pull after re-push (ms) | ratio to warm | upstream blob GETs during the pull |');
  console.log('|---|---:|---:|---:|---:|');
  for (const mode of ['off', 'on'] as const) {
    const r = results[mode];
    const ratios = r.firstMs.map((f, i) => f / (r.warmMs[i] ?? NaN));
    console.log(`| ${mode} | ${median(r.warmMs).toFixed(0)} | ${median(r.firstMs).toFixed(0)} | ${median(ratios).toFixed(2)}x | ${median(r.blobGets)} |`);
  }
}

await main();
