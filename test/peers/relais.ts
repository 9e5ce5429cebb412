// relais itself as a test peer: started in-process on a free port with its own temp data dir.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { startRelais as start, type RelaisInstance } from '../../src/app.js';
import { resolveConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { RequestLog } from '../../src/observability/request-log.js';

export interface RelaisPeer {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** 127.0.0.1:PORT */
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly instance: RelaisInstance;
  /** Parsed JSON log lines so far. */
  logs(): Record<string, unknown>[];
  /** Stops relais (data kept). */
  stop(): Promise<void>;
  /** Starts again on the same port and data dir. */
  restart(): Promise<RelaisPeer>;
  /** Stops and deletes the data dir. */
  close(): Promise<void>;
}

export interface RelaisPeerOptions {
  /** name -> URL; the first is the default upstream. */
  readonly upstreams: Record<string, string>;
  /** Anything else of the config file (merged under the upstreams' entries by name). */
  readonly config?: Record<string, unknown>;
  readonly dataDir?: string;
  readonly port?: number;
  /** The clock of the circuit breakers, the readiness cache and the tags' TTLs (src/app.ts StartOptions.clock). */
  readonly clock?: () => number;
}

export async function startRelais(opts: RelaisPeerOptions): Promise<RelaisPeer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'relais-test-')));
  const extra = opts.config ?? {};
  const extraUpstreams = (extra.upstreams ?? {}) as Record<string, Record<string, unknown>>;
  const upstreams: Record<string, unknown> = {};
  for (const [name, url] of Object.entries(opts.upstreams)) upstreams[name] = { ...(extraUpstreams[name] ?? {}), url };
  const config = resolveConfig({
    ...extra,
    listen: `127.0.0.1:${opts.port ?? 0}`,
    dataDir,
    upstreams,
    defaultUpstream: Object.keys(opts.upstreams)[0],
  });
  const lines: Record<string, unknown>[] = [];
  const sink = new PassThrough();
  let partial = '';
  sink.on('data', (chunk: Buffer) => {
    partial += chunk.toString('utf8');
    let nl;
    while ((nl = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        /* not JSON */
      }
    }
  });
  const instance = await start(config, {
    logger: createLogger(process.env.RELAIS_TEST_LOG_LEVEL ?? 'info', sink),
    // Every request line at once (not batched): tests read the log right after their requests.
    requestLog: new RequestLog({ write: (chunk: string) => sink.write(chunk) }, { bufferBytes: 0, flushMs: 0 }),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  const peer: RelaisPeer = {
    url: instance.url,
    host: `127.0.0.1:${instance.port}`,
    port: instance.port,
    dataDir,
    instance,
    logs: () => lines,
    stop: () => instance.close(),
    restart: async () => {
      await instance.close();
      return startRelais({ ...opts, dataDir, port: instance.port });
    },
    close: async () => {
      await instance.close();
      if (opts.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
  return peer;
}
