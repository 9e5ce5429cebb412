// `node dist/bench/passthrough-check.js [--seconds 8] [--connections 32] [--threads 2]`: the row "per-request
// cost of the authorization check on a hot private tag" (issue 16). One token-auth distribution holds
// team/private:1; relais (a real process, request log off) reaches it as two upstreams: `shared.test`
// (access: shared, relais's own credential) and `private.test` (access: passthrough). The tag is warm in the
// cache (tagTtl 1h: no revalidation). wrk then asks for its manifest, GET and HEAD, with the same Basic
// Authorization header on every request:
//   shared, anonymous             the prepared-response fast path (what a shared hot tag costs today)
//   shared, with Authorization    the full request path, no check (the anchor: same path, minus the gate)
//   passthrough, confirmed        the full path + the gate, its confirmation cached (passthrough.confirmTtl)
//   passthrough, confirmTtl 0     the full path + a HEAD upstream with the client's token on every request
// GET is measured with wrk; HEAD with an undici loop in the bench process (wrk does not handle HEAD answers
// that announce a Content-Length): compare HEAD rows with each other, not with GET rows.
// Reported: req/s and the ratio to the anchor measured in the same run.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool, request } from 'undici';
import { pushRandomImage } from '../test/peers/images.js';
import { freePort } from '../test/peers/ports.js';
import { removeDir, startProcess, tempDir, waitForHttp, type ManagedProcess } from '../test/peers/proc.js';
import { startRegistry } from '../test/peers/registry.js';
import { MANIFEST_ACCEPT } from './lib/pull.js';
import { runCmd } from './lib/procs.js';
import { parseWrk, type WrkResult } from './lib/wrk.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    connections: { type: 'string', default: '32' },
    threads: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
}

const ALICE = { username: 'alice', password: 'alice-bench-pw' };
const CI = { username: 'ci', password: 'ci-bench-pw' };
const basic = `Basic ${Buffer.from(`${ALICE.username}:${ALICE.password}`).toString('base64')}`;

async function wrk(url: string, method: 'GET' | 'HEAD', authorization: string | undefined, dir: string): Promise<WrkResult> {
  if (method === 'HEAD') return headLoop(url, authorization);
  const script = join(dir, `${method}.lua`);
  await writeFile(script, `wrk.method = "${method}"\n`);
  const args = [`-t${values.threads}`, `-c${values.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, '-H', `Accept: ${MANIFEST_ACCEPT}`];
  if (authorization !== undefined) args.push('-H', `Authorization: ${authorization}`);
  args.push(url);
  const r = parseWrk(await runCmd('wrk', args, { timeoutMs: (seconds + 30) * 1000 }));
  if (r.non2xx > 0 || r.requests === 0) throw new Error(`wrk ${method} ${url}: ${r.non2xx} non-2xx of ${r.requests}`);
  return r;
}

/**
 * HEAD with an undici loop (wrk waits for a body a HEAD answer announces but never sends): `connections`
 * requests in flight on as many keep-alive connections for `seconds`; same shape of result as wrk's.
 */
async function headLoop(url: string, authorization: string | undefined): Promise<WrkResult> {
  const u = new URL(url);
  const connections = Number(values.connections);
  const pool = new Pool(u.origin, { connections, pipelining: 1 });
  const headers = { accept: MANIFEST_ACCEPT, ...(authorization === undefined ? {} : { authorization }) };
  const end = performance.now() + seconds * 1000;
  let ok = 0;
  let bad = 0;
  let latency = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const t = performance.now();
      const res = await pool.request({ path: u.pathname, method: 'HEAD', headers });
      await res.body.dump();
      latency += performance.now() - t;
      if (res.statusCode === 200) ok++;
      else bad++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: connections }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  if (bad > 0 || ok === 0) throw new Error(`HEAD ${url}: ${bad} non-2xx of ${ok + bad}`);
  return { requestsPerSec: Math.round((ok / elapsed) * 100) / 100, requests: ok, non2xx: 0, socketErrors: undefined, latencyAvg: `${(latency / ok).toFixed(2)}ms` };
}

async function startRelaisProc(dir: string, name: string, upstreamUrl: string, confirmTtl: string): Promise<{ base: string; p: ManagedProcess }> {
  const port = await freePort();
  const file = join(dir, `${name}.json`);
  await writeFile(
    file,
    JSON.stringify({
      listen: `127.0.0.1:${port}`,
      dataDir: join(dir, `data-${name}`),
      upstreams: {
        'shared.test': { url: upstreamUrl, tagTtl: '1h', username: CI.username, password: CI.password },
        'private.test': { url: upstreamUrl, tagTtl: '1h', access: 'passthrough' },
      },
      passthrough: { confirmTtl },
      log: { level: 'warn', requests: false },
    }),
  );
  const p = await startProcess(process.execPath, [MAIN, 'serve', '--config', file], { name });
  const base = `http://127.0.0.1:${port}`;
  await waitForHttp(`${base}/readyz`, 30_000, { accept: (s) => s === 200, process: p });
  return { base, p };
}

async function warm(url: string, authorization?: string): Promise<void> {
  const res = await request(url, { headers: { accept: MANIFEST_ACCEPT, ...(authorization === undefined ? {} : { authorization }) } });
  await res.body.dump();
  if (res.statusCode !== 200) throw new Error(`warming ${url}: ${res.statusCode}`);
}

async function main(): Promise<void> {
  const dir = await tempDir('bench-passthrough');
  const upstream = await startRegistry({ auth: { kind: 'token', users: { alice: ALICE.password, ci: CI.password }, repositories: { 'team/private': ['alice', 'ci'] } } });
  const procs: ManagedProcess[] = [];
  const rows: { name: string; method: string; rps: number; ratio: number; latency: string }[] = [];
  try {
    await pushRandomImage(upstream.host, 'team/private:1', { layers: [4096], creds: CI });
    const cached = await startRelaisProc(dir, 'relais-confirmed', upstream.url, '1h');
    procs.push(cached.p);
    const uncached = await startRelaisProc(dir, 'relais-ttl0', upstream.url, '0s');
    procs.push(uncached.p);
    const sharedUrl = `${cached.base}/v2/shared.test/team/private/manifests/1`;
    const privateUrl = `${cached.base}/v2/private.test/team/private/manifests/1`;
    const privateUrl0 = `${uncached.base}/v2/private.test/team/private/manifests/1`;
    await warm(sharedUrl);
    await warm(privateUrl, basic);
    await warm(privateUrl0, basic);
    // Rounds interleave the four kinds (the machine may be shared): medians of req/s, ratios within a round.
    for (const method of ['GET', 'HEAD'] as const) {
      const kinds = ['anchor', 'fast', 'confirmed', 'ttl0'] as const;
      const rps: Record<(typeof kinds)[number], number[]> = { anchor: [], fast: [], confirmed: [], ttl0: [] };
      const ratio: Record<(typeof kinds)[number], number[]> = { anchor: [], fast: [], confirmed: [], ttl0: [] };
      const lat: Record<(typeof kinds)[number], string> = { anchor: '', fast: '', confirmed: '', ttl0: '' };
      let heads = 0;
      for (let round = 0; round < rounds; round++) {
        const anchor = await wrk(sharedUrl, method, basic, dir);
        const fast = await wrk(sharedUrl, method, undefined, dir);
        const confirmed = await wrk(privateUrl, method, basic, dir);
        upstream.clearLog();
        const ttl0 = await wrk(privateUrl0, method, basic, dir);
        await upstream.settle();
        heads += upstream.count('HEAD', /\/manifests\/1$/);
        const got = { anchor, fast, confirmed, ttl0 };
        for (const k of kinds) {
          rps[k].push(got[k].requestsPerSec);
          ratio[k].push(got[k].requestsPerSec / anchor.requestsPerSec);
          lat[k] = got[k].latencyAvg ?? '';
        }
        console.error(`${method} round ${round}: anchor ${anchor.requestsPerSec}, fast ${fast.requestsPerSec}, confirmed ${confirmed.requestsPerSec}, ttl0 ${ttl0.requestsPerSec} (${upstream.count('HEAD', /\/manifests\/1$/)} upstream HEADs)`);
      }
      const names = {
        fast: 'shared, anonymous (fast path)',
        anchor: 'shared, with Authorization (anchor: no check)',
        confirmed: 'passthrough, confirmation cached',
        ttl0: `passthrough, confirmTtl 0 (${Math.round(heads / rounds)} upstream HEADs per run)`,
      };
      for (const k of ['fast', 'anchor', 'confirmed', 'ttl0'] as const) rows.push({ name: names[k], method, rps: median(rps[k]), ratio: median(ratio[k]), latency: lat[k] });
    }
  } finally {
    for (const p of procs) await p.stop();
    await upstream.close();
    await removeDir(dir);
  }
  console.log(`hot private tag, manifest by tag: GET wrk -t${values.threads} -c${values.connections} -d${seconds}s, HEAD undici loop (${values.connections} connections, ${seconds}s); relais as a process (log.requests off), upstream CNCF distribution with token auth on loopback`);
  console.log(`medians of ${rounds} interleaved rounds; ratio: to the anchor of the same round`);
  console.log('| request | method | req/s | ratio to the anchor | avg latency (last round) |');
  console.log('|---|---|---:|---:|---:|');
  for (const row of rows) console.log(`| ${row.name} | ${row.method} | ${row.rps.toFixed(0)} | ${row.ratio.toFixed(2)}x | ${row.latency} |`);
}

await main();
