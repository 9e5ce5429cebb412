// `npm run bench`: relais against CNCF distribution (proxy mode) and nginx (proxy_cache +
// proxy_cache_lock), in one run, on the same upstream and the same client load. See
// docs/performance.md for what each figure means. Everything listens on 127.0.0.1 or inside
// network namespaces the run creates, every process is stopped and every temp dir removed at the end.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { dockerPullColdWarm, startMirroredDockerd, type DockerPullResult } from './lib/docker.js';
import { buildAndPush, type Blob, type BuiltImage, type ImageSpec } from './lib/images.js';
import { runCmd, startProc, stopAll, waitHttp } from './lib/procs.js';

/**
 * Writes back every dirty page before a measurement: on 2 cores, the kernel flushing the previous
 * phase's (or the previous target's) hundreds of MB stalled whichever target ran next, by up to 300 ms
 * at a time (seen as event-loop gaps in relais with no CPU of its own), which moved the joining-TTFB
 * figure between 7 and 130 ms from run to run.
 */
async function settleDisk(): Promise<void> {
  await runCmd('sync', [], { timeoutMs: 120_000 });
}
import { cpuBoundCeiling, linkBoundCeiling, reach, renderCeilings, type Ceiling } from './lib/ceilings.js';
import { runInClient, runPullSplit } from './lib/clients.js';
import { MANIFEST_ACCEPT, type PullResult, type TtfbResult } from './lib/pull.js';
import { pausePageReporting, touchMemory, type PageReporting } from './lib/page-reporting.js';
import { median, overRounds, renderTable, toRows, type Metric } from './lib/report.js';
import { sampleRss, treeCpuSeconds } from './lib/rss.js';
import { netnsSlowLink, parseRate, proxySlowLink, slowLink, type SlowLink } from './lib/slowlink.js';
import {
  RELAIS_MAIN,
  PROXY_REGISTRY,
  RELAIS_NODE_FLAGS,
  TARGET_KINDS,
  countUpstream,
  startTarget,
  startUpstream,
  type Running,
  type TargetKind,
  type Upstream,
  type UpstreamCounts,
} from './lib/targets.js';
import { runWrk, type WrkResult } from './lib/wrk.js';
import { evpOfCipher, parseOpensslSpeed, probeTls, proxyRows, renderProxyTable, tlsBound, WARM_RATIO_TARGET, type DoorPull, type TlsBound } from './lib/proxy.js';
import { freePort } from '../test/peers/ports.js';
import { request } from 'undici';

const MiB = 1024 * 1024;
const MB = 1e6;
/** dist/bench: where the compiled helpers (floor-server.js, client.js) are. */
const BENCH_DIR = dirname(fileURLToPath(import.meta.url));

const USAGE = `usage: npm run bench -- [options]

  --clients N         concurrent clients for the cold/warm pulls (default 8)
  --big-clients N     clients of the extra cold pull for upstream bytes and peak RSS (default 32, 0 = skip)
  --client-procs N    processes the pull clients are spread over (default 2)
  --rounds N          cold+warm rounds per target, each on an empty cache; medians are reported (default 1)
  --profile P         full (82 MB 4-layer multi-arch, 4 MB 20-layer, 128 MB 1-layer) or quick (about 1/8 the size)
  --scale F           multiply every layer size by F
  --targets LIST      comma-separated subset of relais,distribution,nginx (default all three)
  --slow-link RATE    also run the cold runs with the upstream behind a RATE link (default 200mbit; off = loopback only)
  --slow-link-method M  auto (netns+tbf, else the proxy), netns, or proxy (token-bucket TCP proxy, no root needed)
  --wrk-seconds S     duration of the manifest-by-tag wrk run (default 10, quick 3)
  --skip-docker       skip the docker pull row
  --skip-proxy        skip the proxy-door rows (relais's HTTPS proxy door next to its HTTP door)
  --only proxy        only the proxy-door rows: relais's HTTP door and proxy door, cold and warm (implies
                      --targets relais --slow-link off --skip-docker --big-clients 0, no TTFB/wrk rows)
  --relais-main FILE  relais entry point to measure (default dist/src/cli/main.js; e.g. another build for before/after)
  --cpu-prof DIR      run relais with node --cpu-prof, profiles written to DIR
  --keep-page-reporting  leave a VM's free page reporting on (default: paused for the run when root; bench/lib/page-reporting.ts)
  --keep              keep the temp dir (logs, configs, caches) for inspection
  --out FILE          JSON output (default bench/results/<date>-<clients>[-proxy][-quick].json)
  -h, --help          this text`;

interface Options {
  clients: number;
  clientProcs: number;
  bigClients: number;
  rounds: number;
  profile: 'full' | 'quick';
  scale: number;
  targets: TargetKind[];
  slowLinkBits: number | undefined;
  slowLinkText: string;
  slowLinkMethod: 'auto' | 'netns' | 'proxy';
  wrkSeconds: number;
  skipDocker: boolean;
  /** The proxy-door rows (relais through its HTTPS proxy door), when relais is a target. */
  proxy: boolean;
  /** Only the proxy-door rows. */
  only: 'proxy' | undefined;
  cpuProf: string | undefined;
  relaisMain: string;
  keep: boolean;
  keepPageReporting: boolean;
  out: string | undefined;
}

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

function positiveInt(name: string, s: string | undefined, dflt: number, allowZero = false): number {
  if (s === undefined) return dflt;
  const n = Number(s);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1)) fail(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got "${s}"`);
  return n;
}

function parseOptions(argv: string[]): Options {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        clients: { type: 'string' },
        'big-clients': { type: 'string' },
        'client-procs': { type: 'string' },
        rounds: { type: 'string' },
        profile: { type: 'string' },
        sizes: { type: 'string' },
        scale: { type: 'string' },
        targets: { type: 'string' },
        'slow-link': { type: 'string' },
        'slow-link-method': { type: 'string' },
        'wrk-seconds': { type: 'string' },
        'skip-docker': { type: 'boolean' },
        'skip-proxy': { type: 'boolean' },
        only: { type: 'string' },
        'cpu-prof': { type: 'string' },
        'relais-main': { type: 'string' },
        keep: { type: 'boolean' },
        'keep-page-reporting': { type: 'boolean' },
        quick: { type: 'boolean' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    fail(`${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
  }
  if (v.help === true) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const profileText = v.quick === true ? 'quick' : (v.profile ?? v.sizes ?? 'full');
  if (profileText !== 'full' && profileText !== 'quick') fail(`--profile must be full or quick, got "${profileText}"`);
  const scale = v.scale === undefined ? 1 : Number(v.scale);
  if (!(scale > 0)) fail(`--scale must be a positive number, got "${v.scale ?? ''}"`);
  const targets = (v.targets ?? TARGET_KINDS.join(',')).split(',').map((s) => s.trim());
  for (const t of targets) {
    if (!(TARGET_KINDS as readonly string[]).includes(t)) fail(`--targets: unknown target "${t}" (use ${TARGET_KINDS.join(',')})`);
  }
  const slowText = v['slow-link'] ?? '200mbit';
  let slowLinkBits: number | undefined;
  if (slowText !== 'off') {
    try {
      slowLinkBits = parseRate(slowText);
    } catch (e) {
      fail(e instanceof Error ? e.message : String(e));
    }
  }
  const only = v.only;
  if (only !== undefined && only !== 'proxy') fail(`--only: the one subset is "proxy", got "${only}"`);
  if (only === 'proxy' && v['skip-proxy'] === true) fail('--only proxy and --skip-proxy contradict each other');
  if (only === 'proxy' && (v.targets ?? 'relais') !== 'relais') fail('--only proxy measures relais only (no --targets)');
  const method = v['slow-link-method'] ?? 'auto';
  if (method !== 'auto' && method !== 'netns' && method !== 'proxy') fail(`--slow-link-method must be auto, netns or proxy, got "${method}"`);
  return {
    clients: positiveInt('clients', v.clients, 8),
    clientProcs: positiveInt('client-procs', v['client-procs'], 2),
    bigClients: only === 'proxy' ? 0 : positiveInt('big-clients', v['big-clients'], 32, true),
    rounds: positiveInt('rounds', v.rounds, 1),
    profile: profileText,
    scale,
    // Keep the issue's order: the anchors first, relais last.
    targets: only === 'proxy' ? ['relais'] : TARGET_KINDS.filter((k) => targets.includes(k)),
    slowLinkBits: only === 'proxy' ? undefined : slowLinkBits,
    slowLinkText: only === 'proxy' ? 'off' : slowText,
    slowLinkMethod: method,
    wrkSeconds: positiveInt('wrk-seconds', v['wrk-seconds'], profileText === 'quick' ? 3 : 10),
    skipDocker: only === 'proxy' || v['skip-docker'] === true,
    proxy: v['skip-proxy'] !== true && (only === 'proxy' || targets.includes('relais')),
    only,
    cpuProf: v['cpu-prof'],
    relaisMain: v['relais-main'] === undefined ? RELAIS_MAIN : resolve(v['relais-main']),
    keep: v.keep === true,
    keepPageReporting: v['keep-page-reporting'] === true,
    out: v.out,
  };
}

/** A layer of `mib` MiB at the run's profile (quick: 1/8) and --scale. */
function layerSize(o: Options, mib: number): number {
  return Math.max(1024, Math.round(mib * MiB * (o.profile === 'quick' ? 1 / 8 : 1) * o.scale));
}

/** The manifest-rate load (`wrk -t2 -c64`), the same for the targets and the node:http floor. */
const WRK_LOAD = { threads: 2, connections: 64 } as const;

function imageSpecs(o: Options): ImageSpec[] {
  const sz = (mib: number): number => layerSize(o, mib);
  // 20 layers of uneven size (16 KiB .. 400 KiB at full scale), 4 MiB in total.
  const weights = Array.from({ length: 20 }, (_, i) => 1 + ((i * 7) % 11));
  const wsum = weights.reduce((a, b) => a + b, 0);
  return [
    { name: 'mixed', tag: 'latest', layers: [30, 40, 10, 2].map(sz), multiArch: true },
    { name: 'small', tag: 'latest', layers: weights.map((w) => sz((4 * w) / wsum)) },
    { name: 'big', tag: 'latest', layers: [128].map(sz) },
  ];
}

const log = (s: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
};

interface PullMeasure {
  readonly result: PullResult;
  readonly mbPerSec: number;
  readonly upstream: UpstreamCounts;
  readonly upstreamOverImage: number;
  readonly peakRssBytes: number;
  readonly cpuSeconds: number;
  /** CPU-seconds the upstream registry used during the pull (for the CPU-bound ceiling). */
  readonly upstreamCpuSeconds: number;
}

/** relais measured another way than its default HTTP door: through the proxy door, or with sendfile off. */
type Door = 'proxy' | 'streamed';

interface TargetResults {
  ttfb?: TtfbResult;
  cold: PullMeasure[];
  warm: PullMeasure[];
  wrk?: WrkResult;
  big?: PullMeasure;
  docker?: DockerPullResult;
  slow: { ttfb?: TtfbResult; cold?: PullMeasure };
  errors: string[];
}

class Bench {
  images: BuiltImage[] = [];
  imageBytes = 0;
  /** CPU-seconds of one sha256 over the unique blob bytes (the cold-pull ceiling of a digest-verifying cache). */
  hashCpuSeconds = 0;
  /** Pulled (cold, then warm) by a few clients right after each target starts; never measured. */
  warmupImage: BuiltImage | undefined;
  link: SlowLink | undefined;
  /** wrk against a bare node:http server answering the same manifest: the ceiling of any Node server here. */
  floor: WrkResult | undefined;
  /** Payload bytes/s one transfer gets through the slow link (a 40 MiB blob straight from the upstream). */
  linkBytesPerSec: number | undefined;
  /** relais pulled through its HTTPS proxy door (the proxy-door rows), when measured. */
  proxyDoor: TargetResults | undefined;
  /** relais's HTTP door with sendfile off (the proxy-door rows: what streaming through user space costs without TLS). */
  streamedDoor: TargetResults | undefined;
  /** What the proxy door negotiated with the load client's TLS. */
  tls: { protocol: string; cipher: string } | undefined;
  /** Blobs a linux/amd64 client of the measured images fetches (each once per cold pull upstream). */
  uniqueBlobs = 0;
  private seq = 0;

  constructor(
    readonly o: Options,
    readonly work: string,
  ) {}

  pullTimeoutMs(clients: number, slow: boolean): number {
    // Generous bound: 2 MB/s of delivered bytes (slow link: the link rate times 10 per fetch), at most 15 min.
    const delivered = clients * this.imageBytes;
    const ms = slow && this.o.slowLinkBits !== undefined ? (10 * this.imageBytes * 8 * 1000) / this.o.slowLinkBits : 0;
    return Math.round(Math.min(900_000, 60_000 + (delivered / (2 * MB)) * 1000 + ms));
  }

  async fresh(kind: TargetKind, upstream: string, prefix: readonly string[], dir: string, door?: Door): Promise<Running> {
    await mkdir(dir, { recursive: true });
    const t = await startTarget(kind, {
      workDir: dir,
      upstream,
      prefix,
      relaisMain: this.o.relaisMain,
      relaisProxyDoor: door === 'proxy',
      relaisSendfile: door !== 'streamed',
      ...(kind === 'relais' && this.o.cpuProf !== undefined
        ? { relaisNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${this.o.cpuProf}`] }
        : {}),
    });
    try {
      await this.warmUp(t, prefix);
    } catch (e) {
      await t.stop();
      throw e;
    }
    return t;
  }

  /**
   * An empty cache, not a cold process: a cache runs for days, so its code paths are warmed up first:
   * a few /v2/ pings, a miss + hit of the linux/arm64 layer of the multi-arch image, then 4 clients pull
   * the warm-up image (a 8 MiB layer and 12 small ones, never pulled by a measured client) cold and warm.
   * Without it a freshly started node spends the measured pull JIT-compiling its request and download
   * paths (V8's compiler threads used 0.42 s of relais's 1.26 CPU-seconds in a first cold pull, 0.08 s
   * of 1.12 in a later one of other images by the same process).
   */
  async warmUp(t: Running, prefix: readonly string[]): Promise<void> {
    const mixed = this.images.find((i) => i.otherBlobs.length > 0);
    const urls = Array.from({ length: 5 }, () => `${t.url}/v2/`);
    for (const b of mixed?.otherBlobs ?? []) urls.push(`${t.url}/v2/${mixed?.repo ?? ''}/blobs/${b.digest}`);
    for (const b of mixed?.otherBlobs ?? []) urls.push(`${t.url}/v2/${mixed?.repo ?? ''}/blobs/${b.digest}`);
    const args = ['-s', '--max-time', '30'];
    for (const u of urls) args.push('-o', '/dev/null', u);
    await runCmd('curl', args, { prefix, timeoutMs: 60_000 });
    const w = this.warmupImage;
    if (w === undefined) return;
    for (let i = 0; i < 2; i++) {
      const r = await runPullSplit(
        { kind: 'pull', ...this.via(t), images: [{ repo: w.repo, tag: w.spec.tag }], clients: 4, layerConcurrency: 3, timeoutMs: 300_000 },
        1,
        prefix,
      );
      if (r.errors.length > 0) throw new Error(`warm-up pull: ${r.errors[0] ?? ''}`);
    }
  }

  /** Where a pull job goes: the target's URL, or through relais's proxy door when the target has it open. */
  via(t: Running): { baseUrl: string; proxy?: { url: string; ca: string } } {
    return t.proxy === undefined ? { baseUrl: t.url } : { baseUrl: t.proxy.registry, proxy: { url: t.proxy.url, ca: t.proxy.ca } };
  }

  async ttfb(t: Running, prefix: readonly string[], slow: boolean): Promise<TtfbResult> {
    await settleDisk();
    const big = this.images.find((i) => i.spec.name === 'big');
    const layer = big?.blobs[1];
    if (big === undefined || layer === undefined) throw new Error('no big image');
    const r = await runInClient(
      {
        kind: 'ttfb',
        baseUrl: t.url,
        repo: big.repo,
        digest: layer.digest,
        joinAfterBytes: Math.min(MiB, Math.floor(layer.size / 4)),
        timeoutMs: Math.round(this.pullTimeoutMs(2, slow) / 4 + 60_000),
      },
      prefix,
    );
    if (r.kind !== 'ttfb') throw new Error('unexpected job result');
    return r;
  }

  async pull(t: Running, up: Upstream, clients: number, prefix: readonly string[], slow: boolean): Promise<PullMeasure> {
    await settleDisk();
    const mark = up.access.length;
    const cpu0 = treeCpuSeconds(t.proc.pid);
    const upCpu0 = treeCpuSeconds(up.proc.pid);
    const rss = sampleRss(t.proc.pid);
    let r: PullResult;
    try {
      r = await runPullSplit(
        {
          kind: 'pull',
          ...this.via(t),
          images: this.images.map((i) => ({ repo: i.repo, tag: i.spec.tag })),
          clients,
          layerConcurrency: 3,
          timeoutMs: this.pullTimeoutMs(clients, slow),
        },
        this.o.clientProcs,
        prefix,
      );
    } catch (e) {
      rss.stop();
      throw e;
    }
    const peakRssBytes = rss.stop();
    const cpuSeconds = treeCpuSeconds(t.proc.pid) - cpu0;
    const upstreamCpuSeconds = treeCpuSeconds(up.proc.pid) - upCpu0;
    // The access log line is written when the upstream finishes the response: let it settle.
    let n = -1;
    for (let i = 0; i < 20 && n !== up.access.length; i++) {
      n = up.access.length;
      await sleep(150);
    }
    const upstream = countUpstream(up.access.slice(mark));
    log(
      `  ${t.name}: ${clients} clients, ${(r.bytes / MB).toFixed(0)} MB in ${(r.wallMs / 1000).toFixed(1)} s, ` +
        `target CPU ${cpuSeconds.toFixed(1)} s, client CPU ${(r.clientCpuSeconds ?? 0).toFixed(1)} s, ` +
        `upstream blob GETs ${upstream.blobGets}${r.errors.length > 0 ? `, ${r.errors.length} errors: ${r.errors[0] ?? ''}` : ''}`,
    );
    return {
      result: r,
      mbPerSec: r.bytes / MB / (r.wallMs / 1000),
      upstream,
      upstreamOverImage: upstream.blobBytes / this.imageBytes,
      peakRssBytes,
      cpuSeconds,
      upstreamCpuSeconds,
    };
  }

  /** The manifest-rate ceiling: the same wrk against a bare node:http server answering the same manifest. */
  async measureFloor(up: Upstream): Promise<void> {
    const mixed = this.images.find((i) => i.spec.name === 'mixed');
    const res = await request(`${up.url}/v2/${mixed?.repo ?? 'library/mixed'}/manifests/latest`, { headers: { accept: MANIFEST_ACCEPT } });
    const body = Buffer.from(await res.body.arrayBuffer());
    const type = res.headers['content-type'];
    if (res.statusCode !== 200 || typeof type !== 'string') throw new Error(`upstream answered ${res.statusCode} to the manifest`);
    const dir = join(this.work, 'floor');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'manifest.json'), body);
    const port = await freePort();
    const proc = startProc({
      name: 'node:http floor',
      cmd: process.execPath,
      args: [...RELAIS_NODE_FLAGS, join(BENCH_DIR, 'floor-server.js'), String(port), join(dir, 'manifest.json'), type],
      logFile: join(dir, 'floor.log'),
    });
    try {
      const url = `http://127.0.0.1:${port}/v2/${mixed?.repo ?? 'library/mixed'}/manifests/latest`;
      await waitHttp(url, proc, 10_000);
      // Warmed up like the targets (which had the pulls before their wrk run).
      await runWrk(url, MANIFEST_ACCEPT, { ...WRK_LOAD, seconds: 1 });
      this.floor = await runWrk(url, MANIFEST_ACCEPT, { ...WRK_LOAD, seconds: this.o.wrkSeconds });
      log(`node:http floor: ${Math.round(this.floor.requestsPerSec)} req/s`);
    } finally {
      await proc.stop();
    }
  }

  /** The slow link's payload rate: one 40 MiB blob fetched straight from the upstream, through the link. */
  async measureLink(upstreamAddr: string, prefix: readonly string[]): Promise<void> {
    const mixed = this.images.find((i) => i.spec.name === 'mixed');
    const blob = [...(mixed?.blobs ?? [])].sort((a, b) => b.size - a.size)[0];
    if (mixed === undefined || blob === undefined) return;
    await settleDisk();
    const out = await runCmd(
      'curl',
      ['-s', '-o', '/dev/null', '--max-time', '300', '-w', '%{size_download} %{time_total}', `http://${upstreamAddr}/v2/${mixed.repo}/blobs/${blob.digest}`],
      { prefix, timeoutMs: 310_000 },
    );
    const [bytes, seconds] = out.trim().split(' ').map(Number);
    if (bytes === blob.size && seconds !== undefined && seconds > 0) {
      this.linkBytesPerSec = bytes / seconds;
      log(`slow link carries ${(this.linkBytesPerSec / MB).toFixed(1)} MB/s of payload (${(bytes / MB).toFixed(1)} MB in ${seconds.toFixed(2)} s)`);
    }
  }

  /** Runs one measurement on a fresh target with an empty cache; a failure is recorded, not thrown. */
  async step(
    kind: TargetKind,
    res: TargetResults,
    what: string,
    where: { upstream: string; prefix: readonly string[] },
    f: (t: Running) => Promise<void>,
    door?: Door,
  ): Promise<void> {
    const t0 = performance.now();
    try {
      this.seq += 1;
      const dir = join(this.work, 'targets', `${kind}${door === undefined ? '' : `-${door}`}-${this.seq}`);
      try {
        const t = await this.fresh(kind, where.upstream, where.prefix, dir, door);
        try {
          await f(t);
        } finally {
          await t.stop();
        }
      } finally {
        // The cache goes with its target: its page cache is freed for the next one, which then reuses memory
        // the host already backs (bench/lib/page-reporting.ts) instead of growing the page cache step by step.
        if (!this.o.keep) await rm(dir, { recursive: true, force: true });
      }
      log(`${kind}: ${what} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (e) {
      const msg = `${what}: ${e instanceof Error ? e.message : String(e)}`;
      res.errors.push(msg);
      log(`${kind}: FAILED ${msg}`);
    }
  }

  /**
   * The loopback measurements. Phases run in the outer loop and targets in the inner one, so that
   * the targets' runs of one phase (and of each round) are close in time: other work on the machine
   * then skews them alike.
   */
  async measureLoopback(up: Upstream, results: Partial<Record<TargetKind, TargetResults>>): Promise<void> {
    const o = this.o;
    const where = { upstream: new URL(up.url).host, prefix: [] as readonly string[] };
    const each = async (what: string, f: (t: Running, res: TargetResults, kind: TargetKind) => Promise<void>): Promise<void> => {
      for (const kind of o.targets) {
        const res = results[kind];
        if (res !== undefined) await this.step(kind, res, what, where, (t) => f(t, res, kind));
      }
    };
    const only = o.only === 'proxy';
    if (!only) {
      await each('cold TTFB of a joining client', async (t, res) => {
        res.ttfb = await this.ttfb(t, [], false);
      });
    }
    for (let round = 0; round < o.rounds; round++) {
      const wrk = round === 0 && !only;
      await each(`round ${round + 1}: cold pull, warm pull${wrk ? ', wrk' : ''} with ${o.clients} clients`, async (t, res) => {
        res.cold.push(await this.pull(t, up, o.clients, [], false));
        res.warm.push(await this.pull(t, up, o.clients, [], false));
        if (wrk) {
          const mixed = this.images.find((i) => i.spec.name === 'mixed');
          res.wrk = await runWrk(`${t.url}/v2/${mixed?.repo ?? 'library/mixed'}/manifests/latest`, MANIFEST_ACCEPT, { ...WRK_LOAD, seconds: o.wrkSeconds });
        }
      });
      // Right after relais's HTTP door of the same round, so that other work on the machine skews them alike.
      const sd = this.streamedDoor;
      if (sd !== undefined) {
        await this.step('relais', sd, `round ${round + 1}: HTTP door, sendfile off: cold pull, warm pull with ${o.clients} clients`, where, async (t) => {
          sd.cold.push(await this.pull(t, up, o.clients, [], false));
          sd.warm.push(await this.pull(t, up, o.clients, [], false));
        }, 'streamed');
      }
      const pr = this.proxyDoor;
      if (pr !== undefined) {
        await this.step(
          'relais',
          pr,
          `round ${round + 1}: proxy door (CONNECT + TLS): cold pull, warm pull with ${o.clients} clients`,
          where,
          async (t) => {
            if (t.proxy === undefined) throw new Error('relais started without its proxy door');
            if (this.tls === undefined) {
              this.tls = await probeTls(t.proxy.url, t.proxy.registry, t.proxy.ca);
              log(`proxy door negotiates ${this.tls.protocol} ${this.tls.cipher}`);
            }
            pr.cold.push(await this.pull(t, up, o.clients, [], false));
            pr.warm.push(await this.pull(t, up, o.clients, [], false));
          },
          'proxy',
        );
      }
    }
    if (!only) {
      try {
        await this.measureFloor(up);
      } catch (e) {
        log(`node:http floor: FAILED ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (o.bigClients > 0 && o.bigClients !== o.clients) {
      await each(`cold pull with ${o.bigClients} clients`, async (t, res) => {
        res.big = await this.pull(t, up, o.bigClients, [], false);
      });
    }
    if (!o.skipDocker) {
      await each('docker pull through the mirror, cold and warm', async (t, res) => {
        const d = await startMirroredDockerd(t.url);
        try {
          res.docker = await dockerPullColdWarm(d, 'mixed:latest', 600_000);
        } finally {
          await d.stop();
        }
      });
    }
  }

  /** The 2b runs: the cold TTFB and the cold pull with the upstream behind the slow link. */
  async measureSlow(up: Upstream, link: SlowLink, results: Partial<Record<TargetKind, TargetResults>>): Promise<void> {
    const where = { upstream: await link.upstreamAddr(Number(new URL(up.url).port)), prefix: link.cachePrefix };
    try {
      await this.measureLink(where.upstream, where.prefix);
    } catch (e) {
      log(`slow link payload rate: FAILED ${e instanceof Error ? e.message : String(e)}`);
    }
    for (const phase of ['ttfb', 'cold'] as const) {
      for (const kind of this.o.targets) {
        const res = results[kind];
        if (res === undefined) continue;
        if (phase === 'ttfb') {
          await this.step(kind, res, 'slow link: cold TTFB of a joining client', where, async (t) => {
            res.slow.ttfb = await this.ttfb(t, where.prefix, true);
          });
        } else {
          await this.step(kind, res, `slow link: cold pull with ${this.o.clients} clients`, where, async (t) => {
            res.slow.cold = await this.pull(t, up, this.o.clients, where.prefix, true);
          });
        }
      }
    }
  }
}


function buildMetrics(o: Options, results: Partial<Record<TargetKind, TargetResults>>, bigBlobMb: number): Metric[] {
  type Get = (r: TargetResults) => number | undefined;
  const collect = (get: Get, errOf?: (r: TargetResults) => readonly string[]): Pick<Metric, 'values' | 'notes'> => {
    const values: Partial<Record<TargetKind, number>> = {};
    const notes: Partial<Record<TargetKind, string>> = {};
    for (const k of o.targets) {
      const r = results[k];
      if (r === undefined) continue;
      const errs = errOf?.(r) ?? [];
      if (errs.length > 0) {
        notes[k] = `${errs.length} client errors`;
        continue;
      }
      const v = get(r);
      if (v !== undefined && Number.isFinite(v)) values[k] = v;
    }
    return { values, notes };
  };
  /** A pull figure over the rounds (bench/lib/report.ts overRounds: relais strict, the anchors from their error-free rounds). */
  const rounds = (pick: (r: TargetResults) => readonly PullMeasure[], get: (m: PullMeasure) => number): Pick<Metric, 'values' | 'notes'> => {
    const values: Partial<Record<TargetKind, number>> = {};
    const notes: Partial<Record<TargetKind, string>> = {};
    for (const k of o.targets) {
      const r = results[k];
      if (r === undefined) continue;
      const f = overRounds(pick(r).map((m) => ({ value: get(m), errors: m.result.errors.length })), k === 'relais');
      if (f.value !== undefined) values[k] = f.value;
      if (f.note !== undefined) notes[k] = f.note;
    }
    return { values, notes };
  };
  const rel = (v: Partial<Record<TargetKind, number>>, k: TargetKind): number | undefined => {
    const a = v.relais;
    const b = v[k];
    return a === undefined || b === undefined || b === 0 ? undefined : a / b;
  };
  const atLeast = (k: TargetKind, x: number) => (v: Partial<Record<TargetKind, number>>) => {
    const r = rel(v, k);
    return r === undefined ? undefined : r >= x;
  };
  const atMost = (k: TargetKind, x: number) => (v: Partial<Record<TargetKind, number>>) => {
    const r = rel(v, k);
    return r === undefined ? undefined : r <= x;
  };
  const one = (v: Partial<Record<TargetKind, number>>): boolean | undefined =>
    v.relais === undefined ? undefined : Math.round(v.relais * 100) / 100 <= 1;
  const n = o.clients;
  const big = o.bigClients;
  const metrics: Metric[] = [
    {
      id: 'cold_mbps',
      label: `cold pull, ${n} clients`,
      unit: 'MB/s',
      better: 'higher',
      ...rounds((r) => r.cold, (m) => m.mbPerSec),
      target: { text: '>= 1.2x nginx', check: atLeast('nginx', 1.2) },
    },
    {
      id: 'upstream_ratio',
      label: `upstream bytes / image bytes, ${n} clients`,
      unit: 'ratio',
      better: 'lower',
      ...rounds((r) => r.cold, (m) => m.upstreamOverImage),
      target: { text: '= 1.00', check: one },
    },
    {
      id: 'warm_mbps',
      label: `warm pull, ${n} clients`,
      unit: 'MB/s',
      better: 'higher',
      ...rounds((r) => r.warm, (m) => m.mbPerSec),
      target: { text: '>= 1.0x nginx', check: atLeast('nginx', 1.0) },
    },
    {
      id: 'manifest_rps',
      label: 'manifest GET by tag (wrk -t2 -c64)',
      unit: 'req/s',
      better: 'higher',
      ...collect((r) => (r.wrk === undefined || r.wrk.non2xx > 0 ? undefined : r.wrk.requestsPerSec)),
      target: {
        text: '>= 0.5x nginx, >= 50x distribution',
        check: (v) => {
          const a = atLeast('nginx', 0.5)(v);
          const b = atLeast('distribution', 50)(v);
          return a === undefined || b === undefined ? undefined : a && b;
        },
      },
    },
    {
      id: 'ttfb_join_ms',
      label: `cold TTFB, client joining an in-flight ${bigBlobMb.toFixed(0)} MB blob`,
      unit: 'ms',
      better: 'lower',
      ...collect((r) => r.ttfb?.bTtfbMs, (r) => r.ttfb?.errors ?? []),
      target: { text: '<= 0.1x nginx', check: atMost('nginx', 0.1) },
    },
    {
      id: 'cold_rss_mb',
      label: `peak RSS, cold pull, ${n} clients`,
      unit: 'MB',
      better: 'lower',
      ...collect((r) => median(r.cold.map((m) => m.peakRssBytes / MB))),
    },
    {
      id: 'cold_cpu_s',
      label: `target CPU time, cold pull, ${n} clients`,
      unit: 's',
      better: 'lower',
      ...collect((r) => median(r.cold.map((m) => m.cpuSeconds))),
    },
    {
      id: 'warm_cpu_s',
      label: `target CPU time, warm pull, ${n} clients`,
      unit: 's',
      better: 'lower',
      ...collect((r) => median(r.warm.map((m) => m.cpuSeconds))),
    },
  ];
  if (big > 0 && big !== n) {
    metrics.push(
      {
        id: 'big_cold_mbps',
        label: `cold pull, ${big} clients`,
        unit: 'MB/s',
        better: 'higher',
        ...collect((r) => r.big?.mbPerSec, (r) => r.big?.result.errors ?? []),
      },
      {
        id: 'big_upstream_ratio',
        label: `upstream bytes / image bytes, ${big} clients`,
        unit: 'ratio',
        better: 'lower',
        ...collect((r) => r.big?.upstreamOverImage, (r) => r.big?.result.errors ?? []),
        target: { text: '= 1.00', check: one },
      },
      {
        id: 'big_rss_mb',
        label: `peak RSS, cold pull, ${big} clients`,
        unit: 'MB',
        better: 'lower',
        ...collect((r) => (r.big === undefined ? undefined : r.big.peakRssBytes / MB)),
        target: { text: '<= 150 MB', check: (v) => (v.relais === undefined ? undefined : v.relais <= 150) },
      },
    );
  } else if (big === n) {
    const rssRow = metrics.find((m) => m.id === 'cold_rss_mb');
    if (rssRow !== undefined) {
      metrics[metrics.indexOf(rssRow)] = {
        ...rssRow,
        target: { text: '<= 150 MB', check: (v) => (v.relais === undefined ? undefined : v.relais <= 150) },
      };
    }
  }
  if (!o.skipDocker) {
    metrics.push(
      {
        id: 'docker_cold_s',
        label: 'docker pull mixed (mirror), cold',
        unit: 's',
        better: 'lower',
        ...collect((r) => (r.docker === undefined ? undefined : r.docker.coldMs / 1000)),
      },
      {
        id: 'docker_warm_s',
        label: 'docker pull mixed (mirror), warm',
        unit: 's',
        better: 'lower',
        ...collect((r) => (r.docker === undefined ? undefined : r.docker.warmMs / 1000)),
      },
    );
  }
  if (o.slowLinkBits !== undefined) {
    const s = o.slowLinkText;
    metrics.push(
      {
        id: 'slow_cold_mbps',
        label: `slow link ${s}: cold pull, ${n} clients`,
        unit: 'MB/s',
        better: 'higher',
        ...collect((r) => r.slow.cold?.mbPerSec, (r) => r.slow.cold?.result.errors ?? []),
        target: { text: '>= 1.2x nginx', check: atLeast('nginx', 1.2) },
      },
      {
        id: 'slow_upstream_ratio',
        label: `slow link ${s}: upstream bytes / image bytes, ${n} clients`,
        unit: 'ratio',
        better: 'lower',
        ...collect((r) => r.slow.cold?.upstreamOverImage, (r) => r.slow.cold?.result.errors ?? []),
        target: { text: '= 1.00', check: one },
      },
      {
        id: 'slow_ttfb_join_ms',
        label: `slow link ${s}: cold TTFB, joining client`,
        unit: 'ms',
        better: 'lower',
        ...collect((r) => r.slow.ttfb?.bTtfbMs, (r) => r.slow.ttfb?.errors ?? []),
        target: { text: '<= 0.1x nginx', check: atMost('nginx', 0.1) },
      },
    );
  }
  return metrics;
}

/** CPU-seconds of sha256 over the blobs (read first, so that only the hashing is counted). */
async function hashCpuSeconds(images: readonly { dir: string; blobs: readonly Blob[] }[]): Promise<number> {
  const seen = new Set<string>();
  let micros = 0;
  for (const img of images) {
    for (const b of img.blobs) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      const data = await readFile(join(img.dir, 'blobs', 'sha256', b.digest.slice('sha256:'.length)));
      const before = process.cpuUsage();
      createHash('sha256').update(data).digest('hex');
      const used = process.cpuUsage(before);
      micros += used.user + used.system;
    }
  }
  return micros / 1e6;
}

/** Memory touched once at the start when free page reporting is paused: more than the bench's working set (page cache of the images and one target's cache, the processes). */
const TOUCH_MEMORY_BYTES = 3 * 2 ** 30;

function pageReportingText(pages: PageReporting | undefined): string {
  return pages === undefined ? 'free page reporting: left as it is (--keep-page-reporting)' : pages.detail;
}

/** The best relais/nginx ratio this machine allows for each throughput target of the run (bench/lib/ceilings.ts). */
function buildCeilings(o: Options, results: Partial<Record<TargetKind, TargetResults>>, bench: Bench, cores: number): Ceiling[] {
  const relais = results.relais;
  const nginx = results.nginx;
  if (relais === undefined) return [];
  const out: Ceiling[] = [];
  const pullCeiling = (id: string, label: string, target: number, r: readonly PullMeasure[], n: readonly PullMeasure[], cold: boolean): void => {
    // The same figures as the table's (overRounds): relais voided by any client error, nginx from its clean rounds.
    const rm = overRounds(r.map((m) => ({ value: m.mbPerSec, errors: m.result.errors.length })), true).value;
    const nm = overRounds(n.map((m) => ({ value: m.mbPerSec, errors: m.result.errors.length })), false).value;
    const client = median(r.map((m) => m.result.clientCpuSeconds ?? 0)) ?? 0;
    const upstream = median(r.map((m) => m.upstreamCpuSeconds)) ?? 0;
    const bytes = median(r.map((m) => m.result.bytes)) ?? 0;
    const any = cpuBoundCeiling({ bytes, clientCpuSeconds: client, upstreamCpuSeconds: upstream }, cores);
    // A cold pull's cache fetches and verifies every unique byte: that hash is CPU no verifying cache avoids.
    const best = cold ? cpuBoundCeiling({ bytes, clientCpuSeconds: client, upstreamCpuSeconds: upstream, cacheCpuSeconds: bench.hashCpuSeconds }, cores) : any;
    // As frugal as nginx at moving the bytes (its CPU in the same phase), plus the digest checks.
    const nginxCpu = median(n.map((m) => m.cpuSeconds));
    const frugal =
      cold && nginxCpu !== undefined
        ? cpuBoundCeiling({ bytes, clientCpuSeconds: client, upstreamCpuSeconds: upstream, cacheCpuSeconds: bench.hashCpuSeconds + nginxCpu }, cores)
        : undefined;
    const mbs = (v: number | undefined): string => (v === undefined ? '-' : (v / MB).toFixed(0));
    out.push({
      id,
      label,
      target,
      ratio: rm !== undefined && nm !== undefined ? rm / nm : undefined,
      ceiling: best !== undefined && nm !== undefined ? best / MB / nm : undefined,
      atNginxCpu: frugal !== undefined && nm !== undefined ? frugal / MB / nm : undefined,
      boundBy:
        `CPU: clients ${client.toFixed(1)} s + upstream ${upstream.toFixed(1)} s on ${cores} cores, cache at 0 s: ${mbs(any)} MB/s` +
        (cold ? `; verifying digests (sha256 ${bench.hashCpuSeconds.toFixed(2)} s): ${mbs(best)} MB/s` : '') +
        (frugal !== undefined ? `; at nginx's CPU (${(nginxCpu ?? 0).toFixed(2)} s) + sha256: ${mbs(frugal)} MB/s` : ''),
    });
  };
  pullCeiling('cold_mbps', `cold pull, ${o.clients} clients`, 1.2, relais.cold, nginx?.cold ?? [], true);
  pullCeiling('warm_mbps', `warm pull, ${o.clients} clients`, 1.0, relais.warm, nginx?.warm ?? [], false);
  const rw = relais.wrk?.requestsPerSec;
  const nw = nginx?.wrk?.requestsPerSec;
  const fw = bench.floor?.requestsPerSec;
  out.push({
    id: 'manifest_rps',
    label: 'manifest GET by tag',
    target: 0.5,
    ratio: rw !== undefined && nw !== undefined ? rw / nw : undefined,
    ceiling: fw !== undefined && nw !== undefined ? fw / nw : undefined,
    boundBy: `Node's HTTP stack: a bare node:http server with a constant manifest: ${fw === undefined ? '-' : Math.round(fw).toLocaleString('en-US')} req/s`,
  });
  if (o.slowLinkBits !== undefined) {
    const rs = relais.slow.cold?.mbPerSec;
    const ns = nginx?.slow.cold?.mbPerSec;
    const link = bench.linkBytesPerSec;
    const best = link === undefined ? undefined : linkBoundCeiling(o.clients, link);
    out.push({
      id: 'slow_cold_mbps',
      label: `slow link ${o.slowLinkText}: cold pull, ${o.clients} clients`,
      target: 1.2,
      ratio: rs !== undefined && ns !== undefined ? rs / ns : undefined,
      ceiling: best !== undefined && ns !== undefined ? best / MB / ns : undefined,
      boundBy: `the link: ${link === undefined ? '-' : (link / MB).toFixed(1)} MB/s of payload x ${o.clients} clients = ${best === undefined ? '-' : (best / MB).toFixed(0)} MB/s`,
    });
  }
  return out;
}

const doorPull = (m: PullMeasure): DoorPull => ({
  mbPerSec: m.mbPerSec,
  bytes: m.result.bytes,
  cpuSeconds: m.cpuSeconds,
  clientCpuSeconds: m.result.clientCpuSeconds ?? 0,
  blobGets: m.upstream.blobGets,
  errors: m.result.errors.length,
});

/** What one core encrypts with `evp` (openssl speed, 16 KiB blocks: a full TLS record), bytes/s; undefined if it cannot run. */
async function cipherSpeed(evp: string): Promise<number | undefined> {
  try {
    const out = await runCmd('openssl', ['speed', '-seconds', '2', '-bytes', '16384', '-evp', evp], { timeoutMs: 30_000 });
    return parseOpensslSpeed(out, evp);
  } catch (e) {
    log(`openssl speed -evp ${evp}: FAILED ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}

/** The proxy-door rows (bench/lib/proxy.ts) and what bounds them, as text and for the JSON. */
async function proxySection(
  o: Options,
  httpDoor: TargetResults | undefined,
  bench: Bench,
  cores: number,
): Promise<{ text: string; json: Record<string, unknown> } | undefined> {
  const pd = bench.proxyDoor;
  if (pd === undefined || httpDoor === undefined) return undefined;
  const http = { cold: httpDoor.cold.map(doorPull), warm: httpDoor.warm.map(doorPull) };
  const proxy = { cold: pd.cold.map(doorPull), warm: pd.warm.map(doorPull) };
  const sd = bench.streamedDoor;
  const streamed = sd === undefined ? undefined : { cold: sd.cold.map(doorPull), warm: sd.warm.map(doorPull) };
  const rows = proxyRows(http, proxy, bench.uniqueBlobs, streamed);
  const evp = bench.tls === undefined ? undefined : evpOfCipher(bench.tls.cipher);
  const cipherBytesPerSec = evp === undefined ? undefined : await cipherSpeed(evp);
  const bound: TlsBound | undefined = tlsBound({ http: http.warm, proxy: proxy.warm, ...(streamed === undefined ? {} : { streamed: streamed.warm }), cipherBytesPerSec, cores });
  const warm = rows.find((r) => r.id === 'proxy_warm_mbps');
  const f2 = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(2));
  const signed = (v: number | undefined): string => (v === undefined ? '-' : `${v >= 0 ? '+' : ''}${v.toFixed(2)}`);
  const lines = [
    `Proxy door: the same pulls through relais's HTTPS proxy door (HTTPS_PROXY: CONNECT ${new URL(PROXY_REGISTRY).host}:443, TLS with relais's CA trusted), ` +
      `next to relais's HTTP door in the same run, ${o.rounds} round(s) each (medians; bench/lib/proxy.ts):`,
    '',
    renderProxyTable(rows),
    '',
    `warm pull proxy/HTTP: ${warm?.ratio === null || warm?.ratio === undefined ? '-' : `${warm.ratio.toFixed(2)}x`} (target >= ${WARM_RATIO_TARGET}x). What bounds it, measured in this run:`,
    `  TLS: ${bench.tls === undefined ? 'not probed' : `${bench.tls.protocol} ${bench.tls.cipher}`}; one core ${evp === undefined ? '-' : `encrypts ${evp} at ${cipherBytesPerSec === undefined ? '-' : (cipherBytesPerSec / MB).toFixed(0)} MB/s (openssl speed, 16 KiB records)`}`,
  ];
  if (bound !== undefined) {
    lines.push(
      `  extra CPU of the warm pull through the proxy door over the HTTP door's: relais ${signed(bound.extraRelaisCpu)} s ` +
        `(${bound.noSendfileRelaisCpu === undefined ? '' : `no sendfile through TLS, every byte read into user space: ${signed(bound.noSendfileRelaisCpu)} s as measured with sendfile off; TLS on top: ${signed(bound.tlsRelaisCpu)} s`}), ` +
        `clients ${signed(bound.extraClientCpu)} s (decrypting, on the same ${cores} cores); the cipher alone needs ${f2(bound.cipherCpuEachSide)} s on each side`,
      `  best proxy/HTTP if TLS cost only the cipher: ${f2(bound.cipherOnlyRatio)}x; from the CPU measured through the door (relais + clients on ${cores} cores): ${f2(bound.measuredCpuRatio)}x`,
    );
  }
  return {
    text: lines.join('\n'),
    json: { rows, tls: bench.tls ?? null, cipherEvp: evp ?? null, cipherBytesPerSec: cipherBytesPerSec ?? null, bound: bound ?? null },
  };
}

function versions(): Record<string, string> {
  const tryRun = (f: () => string): string => {
    try {
      return f().trim();
    } catch {
      return 'unknown';
    }
  };
  const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return {
    node: process.version,
    distribution: tryRun(() => sh('docker-registry', ['--version'])),
    nginx: tryRun(() => sh('sh', ['-c', 'nginx -v 2>&1'])),
    wrk: tryRun(() => sh('sh', ['-c', 'wrk -v 2>&1 | head -1'])),
    skopeo: tryRun(() => sh('skopeo', ['--version'])),
    dockerd: tryRun(() => sh('dockerd', ['--version'])),
    relais: tryRun(() => sh('git', ['rev-parse', 'HEAD'])),
    relaisDirty: tryRun(() => (sh('git', ['status', '--porcelain', '--', 'src']).trim() === '' ? 'no' : 'yes')),
    kernel: tryRun(() => sh('uname', ['-r'])),
  };
}

async function checkPrograms(o: Options): Promise<void> {
  const need = ['docker-registry', 'skopeo', 'wrk', 'curl'];
  if (o.targets.includes('nginx')) need.push('nginx');
  if (!o.skipDocker) need.push('dockerd', 'docker');
  if (o.slowLinkBits !== undefined && o.slowLinkMethod !== 'proxy') need.push('ip', 'tc');
  const missing: string[] = [];
  for (const p of need) {
    try {
      await runCmd('sh', ['-c', `command -v ${p}`], { timeoutMs: 5000 });
    } catch {
      missing.push(p);
    }
  }
  if (missing.length > 0) fail(`missing programs: ${missing.join(', ')} (install them with scripts/setup-peers.sh)`);
  if (o.targets.includes('relais') && !existsSync(o.relaisMain)) {
    fail(`${o.relaisMain} not found: build first (npx tsc -p tsconfig.json) from the repository root`);
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  await checkPrograms(o);
  const started = new Date();
  const loadStart = loadavg();
  const vers = versions(); // before the run: the checkout may move while it runs
  const t0 = performance.now();
  const work = await mkdtemp(join(tmpdir(), 'relais-bench-'));
  let link: SlowLink | undefined;
  const pages = o.keepPageReporting ? undefined : await pausePageReporting();
  const cleanup = async (): Promise<void> => {
    await stopAll();
    await link?.close();
    await pages?.restore().catch((e: unknown) => log(`could not restore free page reporting: ${e instanceof Error ? e.message : String(e)}`));
    if (!o.keep) await rm(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  };
  let stopping = false;
  const onSignal = (sig: string): void => {
    // Stay registered: a second Ctrl-C (or timeout(1) forwarding one) must not kill the cleanup.
    if (stopping) return;
    stopping = true;
    log(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const bench = new Bench(o, work);
  const results: Partial<Record<TargetKind, TargetResults>> = {};
  let linkMethod: string | undefined;
  try {
    log(`work dir ${work}; ${cpus().length} cores; targets ${o.targets.join(', ')}; ${o.clients} clients; profile ${o.profile}`);
    log(pageReportingText(pages));
    if (pages?.state === 'paused') {
      const bytes = Math.min(TOUCH_MEMORY_BYTES, freemem() / 2);
      const t = performance.now();
      await touchMemory(bytes);
      log(`touched ${(bytes / 2 ** 30).toFixed(1)} GiB of memory once in ${((performance.now() - t) / 1000).toFixed(1)} s, so that no target is the first to fault it in`);
    }
    const dataDir = join(work, 'upstream', 'data');
    const up = await startUpstream({ workDir: join(work, 'upstream'), dataDir });
    for (const spec of imageSpecs(o)) {
      const img = await buildAndPush(spec, join(work, 'images', spec.name), new URL(up.url).host);
      bench.images.push(img);
      log(`pushed ${img.repo}:${spec.tag}: ${img.blobs.length - 1} layers, ${(img.bytes / MB).toFixed(1)} MB${img.indexDigest === undefined ? '' : ' (multi-arch index)'}`);
    }
    bench.warmupImage = await buildAndPush(
      { name: 'warmup', tag: 'latest', layers: [8, 1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25].map((mib) => layerSize(o, mib)) },
      join(work, 'images', 'warmup'),
      new URL(up.url).host,
    );
    const unique = new Map<string, number>();
    for (const img of bench.images) for (const b of img.blobs) unique.set(b.digest, b.size);
    bench.imageBytes = [...unique.values()].reduce((a, b) => a + b, 0);
    bench.uniqueBlobs = unique.size;
    log(`image bytes (unique blobs a linux/amd64 client pulls): ${(bench.imageBytes / MB).toFixed(1)} MB`);
    bench.hashCpuSeconds = await hashCpuSeconds(bench.images.map((img) => ({ dir: join(work, 'images', img.spec.name), blobs: img.blobs })));
    log(`sha256 of those bytes: ${bench.hashCpuSeconds.toFixed(2)} CPU-seconds (the least a cache that verifies digests spends on a cold pull)`);
    await rm(join(work, 'images'), { recursive: true, force: true });

    for (const kind of o.targets) results[kind] = { cold: [], warm: [], slow: {}, errors: [] };
    if (o.proxy) {
      bench.proxyDoor = { cold: [], warm: [], slow: {}, errors: [] };
      bench.streamedDoor = { cold: [], warm: [], slow: {}, errors: [] };
    }
    await bench.measureLoopback(up, results);
    await up.stop();

    if (o.slowLinkBits !== undefined) {
      link =
        o.slowLinkMethod === 'proxy'
          ? proxySlowLink(o.slowLinkBits)
          : o.slowLinkMethod === 'netns'
            ? await netnsSlowLink(o.slowLinkBits)
            : await slowLink(o.slowLinkBits, log);
      linkMethod = `${link.method}: ${link.description}`;
      log(`slow link: ${linkMethod}`);
      const slowUp = await startUpstream({
        workDir: join(work, 'upstream-slow'),
        dataDir,
        host: link.upListenHost,
        prefix: link.upPrefix,
      });
      await bench.measureSlow(slowUp, link, results);
      await slowUp.stop();
    }
  } finally {
    await cleanup();
  }

  const bigBlob = bench.images.find((i) => i.spec.name === 'big')?.blobs[1]?.size ?? 0;
  const rows = toRows(buildMetrics(o, results, bigBlob / MB));
  const table = renderTable(rows);
  const wallS = (performance.now() - t0) / 1000;
  const header = [
    `relais bench ${started.toISOString()}: ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${o.clients} clients, ` +
      `profile ${o.profile}, ${(bench.imageBytes / MB).toFixed(1)} MB of images (${bench.images.map((i) => `${i.spec.name} ${(i.bytes / MB).toFixed(1)} MB/${i.blobs.length - 1} layers`).join(', ')})`,
    `slow link: ${linkMethod ?? 'off'}`,
    pageReportingText(pages),
    `load average at start ${loadStart.map((x) => x.toFixed(2)).join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')} (other work on the machine skews every figure)`,
    `wall time ${wallS.toFixed(0)} s`,
  ];
  process.stdout.write(`\n${header.join('\n')}\n\n${o.only === 'proxy' ? '' : `${table}\n`}`);
  const ceilings = o.only === 'proxy' ? [] : buildCeilings(o, results, bench, cpus().length);
  const proxy = o.proxy ? await proxySection(o, results.relais, bench, cpus().length) : undefined;
  if (proxy !== undefined) process.stdout.write(`${o.only === 'proxy' ? '' : '\n'}${proxy.text}\n`);
  if (ceilings.length > 0) {
    process.stdout.write(`\nWhat this machine allows (best relais/nginx any cache could reach in this run; bench/lib/ceilings.ts):\n\n${renderCeilings(ceilings)}\n`);
  }
  const errors = Object.entries(results).flatMap(([k, r]) => r.errors.map((e) => `${k}: ${e}`));
  for (const e of bench.proxyDoor?.errors ?? []) errors.push(`relais proxy door: ${e}`);
  for (const e of bench.streamedDoor?.errors ?? []) errors.push(`relais, sendfile off: ${e}`);
  if (errors.length > 0) process.stdout.write(`\nerrors:\n${errors.map((e) => `  ${e}`).join('\n')}\n`);

  const date = started.toISOString().slice(0, 10);
  const out = o.out ?? join(process.cwd(), 'bench', 'results', `${date}-${o.clients}${o.only === 'proxy' ? '-proxy' : ''}${o.profile === 'quick' ? '-quick' : ''}.json`);
  await mkdir(dirname(out), { recursive: true });
  const json = {
    started: started.toISOString(),
    wallSeconds: wallS,
    machine: {
      cores: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      memoryBytes: totalmem(),
      loadAverageAtStart: loadStart,
      loadAverageAtEnd: loadavg(),
      pageReporting: pages === undefined ? 'kept (--keep-page-reporting)' : `${pages.state}: ${pages.detail}`,
    },
    versions: vers,
    options: { ...o, slowLinkMethod: linkMethod ?? null },
    images: bench.images.map((i) => ({
      repo: i.repo,
      tag: i.spec.tag,
      bytes: i.bytes,
      layers: i.blobs.slice(1).map((b) => b.size),
      manifestDigest: i.manifestDigest,
      indexDigest: i.indexDigest ?? null,
    })),
    imageBytes: bench.imageBytes,
    hashCpuSeconds: bench.hashCpuSeconds,
    table: rows,
    ceilings: ceilings.map((c) => ({ ...c, verdict: reach(c) })),
    floor: bench.floor ?? null,
    linkBytesPerSec: bench.linkBytesPerSec ?? null,
    proxyDoor: proxy === undefined ? null : { ...proxy.json, raw: { proxy: bench.proxyDoor ?? null, streamed: bench.streamedDoor ?? null } },
    raw: results,
    errors,
  };
  await writeFile(out, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(`\nwrote ${out}\n`);
}

main().catch(async (e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  await stopAll();
  process.exit(1);
});
