// The slow link of the 2b runs: Docker Hub is far away, loopback hides that. Two network
// namespaces created for the run, "up" (the upstream registry) and "cache" (the target and the
// load client), joined by a veth pair in a /30 of 10.x with a tbf qdisc on both ends. Addresses and
// qdiscs exist only inside those namespaces; deleting them removes everything. When namespaces
// cannot be created (no root, no CAP_NET_ADMIN), a token-bucket TCP proxy in this process stands
// in for the link.
import { execFile } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** "200mbit" / "50mbit" / "1gbit" / "25mbyte"-less forms -> bits per second. */
export function parseRate(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?bit$/i.exec(s.trim());
  if (m?.[1] === undefined) throw new Error(`--slow-link: cannot read rate "${s}" (use e.g. 200mbit, 50mbit, 1gbit)`);
  const mult = { k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? '').toLowerCase() as 'k' | 'm' | 'g'] ?? 1;
  return Number(m[1]) * mult;
}

export interface SlowLink {
  readonly method: 'netns+tbf' | 'node-throttle-proxy';
  readonly description: string;
  /** Command prefix to run a program on the upstream side ([] for the proxy fallback). */
  readonly upPrefix: readonly string[];
  /** Command prefix to run a program on the cache side (targets and load client). */
  readonly cachePrefix: readonly string[];
  /** Address the upstream registry listens on. */
  readonly upListenHost: string;
  /** host:port the targets use to reach an upstream listening on upListenHost:port. */
  upstreamAddr(port: number): Promise<string>;
  close(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  await run('ip', args, { timeout: 10_000 });
}

export async function netnsSlowLink(rateBits: number, tag = String(process.pid)): Promise<SlowLink> {
  const nsUp = `relais-bench-up-${tag}`;
  const nsCache = `relais-bench-cache-${tag}`;
  const vUp = `rbu${tag}`.slice(0, 15);
  const vCache = `rbc${tag}`.slice(0, 15);
  const third = Number(tag) % 250;
  const cacheIp = `10.213.${third}.1`;
  const upIp = `10.213.${third}.2`;
  const rate = `${Math.round(rateBits / 1000)}kbit`;
  const tbf = ['root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms'];
  const close = async (): Promise<void> => {
    for (const ns of [nsUp, nsCache]) await ip(['netns', 'del', ns]).catch(() => undefined);
  };
  try {
    await ip(['netns', 'add', nsUp]);
    await ip(['netns', 'add', nsCache]);
    // Create the pair inside the cache namespace, then move one end: nothing touches the host's stack.
    await ip(['-n', nsCache, 'link', 'add', vCache, 'type', 'veth', 'peer', 'name', vUp]);
    await ip(['-n', nsCache, 'link', 'set', vUp, 'netns', nsUp]);
    await ip(['-n', nsCache, 'addr', 'add', `${cacheIp}/30`, 'dev', vCache]);
    await ip(['-n', nsUp, 'addr', 'add', `${upIp}/30`, 'dev', vUp]);
    for (const [ns, dev] of [
      [nsCache, vCache],
      [nsUp, vUp],
    ] as const) {
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', ns, 'link', 'set', dev, 'up']);
      await run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, ...tbf], { timeout: 10_000 });
    }
  } catch (e) {
    await close();
    throw e;
  }
  return {
    method: 'netns+tbf',
    description: `upstream in netns ${nsUp}, targets and clients in netns ${nsCache}, veth ${cacheIp}<->${upIp}/30, tbf rate ${rate} burst 256kb latency 50ms on both ends`,
    upPrefix: ['ip', 'netns', 'exec', nsUp],
    cachePrefix: ['ip', 'netns', 'exec', nsCache],
    upListenHost: upIp,
    upstreamAddr: (port) => Promise.resolve(`${upIp}:${port}`),
    close,
  };
}

/** A shared token bucket: every byte crossing the "link" in one direction takes a token. */
class Bucket {
  private tokens: number;
  private last = performance.now();
  private chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly bytesPerSec: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }
  take(n: number): Promise<void> {
    const next = this.chain.then(async () => {
      const now = performance.now();
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec);
      this.last = now;
      this.tokens -= n;
      if (this.tokens < 0) await sleep((-this.tokens / this.bytesPerSec) * 1000);
    });
    this.chain = next;
    return next;
  }
}

function pipeThrottled(from: Socket, to: Socket, bucket: Bucket): void {
  from.on('data', (chunk: Buffer) => {
    from.pause();
    void bucket.take(chunk.length).then(() => {
      if (to.destroyed) return;
      const ok = to.write(chunk);
      if (ok) from.resume();
      else to.once('drain', () => from.resume());
    });
  });
  from.on('end', () => {
    void bucket.take(0).then(() => to.end());
  });
}

/** Fallback: a TCP proxy on 127.0.0.1 that throttles both directions to rateBits. */
export function proxySlowLink(rateBits: number): SlowLink {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const bytesPerSec = rateBits / 8;
  return {
    method: 'node-throttle-proxy',
    description: `token-bucket TCP proxy in the bench process, ${rateBits / 1e6} Mbit/s each way, burst 256 KiB`,
    upPrefix: [],
    cachePrefix: [],
    upListenHost: '127.0.0.1',
    upstreamAddr: (port) =>
      new Promise((resolve, reject) => {
        const down = new Bucket(bytesPerSec, 256 * 1024);
        const up = new Bucket(bytesPerSec, 256 * 1024);
        const server = createServer((client) => {
          const remote = connect({ host: '127.0.0.1', port });
          for (const s of [client, remote]) {
            sockets.add(s);
            s.on('close', () => sockets.delete(s));
            s.on('error', () => {
              client.destroy();
              remote.destroy();
            });
          }
          pipeThrottled(client, remote, up);
          pipeThrottled(remote, client, down);
        });
        servers.push(server);
        server.once('error', reject);
        server.listen({ host: '127.0.0.1', port: 0 }, () => {
          const a = server.address();
          if (a === null || typeof a === 'string') reject(new Error('throttle proxy: no address'));
          else resolve(`127.0.0.1:${a.port}`);
        });
      }),
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

/** netns + tbf when possible, else the proxy; says which in `method`. */
export async function slowLink(rateBits: number, log: (s: string) => void): Promise<SlowLink> {
  try {
    return await netnsSlowLink(rateBits);
  } catch (e) {
    log(`slow link: network namespaces not available (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); using a throttling TCP proxy`);
    return proxySlowLink(rateBits);
  }
}
