// `relais serve`: start the pull-through cache.
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { startRelais, type StartOptions } from '../app.js';
import { loadConfig } from '../config/load.js';
import { createLogger, flushLogger } from '../observability/logger.js';
import { RequestLog } from '../observability/request-log.js';
import { startupProbes } from './check.js';
import { humanLogStream, renderBanner } from './human.js';
import { printError } from './output.js';

/** Human output (banner, short log lines) on a terminal, unless log.format says otherwise. */
function humanOutput(format: 'auto' | 'json' | 'human', isTTY: boolean | undefined): boolean {
  return format === 'human' || (format === 'auto' && isTTY === true);
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('Start the pull-through cache (defaults: listen 0.0.0.0:5000, data ./relais-data, upstream docker.io=https://registry-1.docker.io)')
    .option('-c, --config <file>', 'YAML config file (see "Configuration reference" in README.md); flags override it')
    .option('-l, --listen <host:port>', 'address to listen on (default 0.0.0.0:5000)')
    .option('-d, --data <dir>', 'data directory: blobs, manifests and the SQLite index (default ./relais-data)')
    .addOption(new Option('--startup-checks <mode>', 'probe GET /v2/ of every upstream at start: warn (default), refuse, off').choices(['warn', 'refuse', 'off']))
    .addOption(
      new Option('-u, --upstream <name=url>', 'an upstream registry, e.g. docker.io=https://registry-1.docker.io; repeatable; unprefixed requests go to docker.io if given, else to the first')
        .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]),
    )
    .addHelpText(
      'after',
      `
Routing (one instance for every upstream):
  /v2/library/alpine/...            -> the default upstream (dockerd registry-mirrors)
  /v2/alpine/...?ns=ghcr.io         -> the upstream named ghcr.io (containerd hosts.toml mirrors)
  /v2/ghcr.io/owner/img/...         -> the upstream named ghcr.io (path prefix; podman/skopeo mirrors)
  A registry host that is not configured gets NAME_UNKNOWN: relais is not an open proxy.

Start-up: relais refuses a data directory another relais uses (DATA/relais.lock), checks upstream URLs, and
probes GET /v2/ of every upstream (startupChecks: warn | refuse | off; relais check does it without serving).
On a terminal it prints where to point dockerd, containerd and podman; otherwise JSON log lines (log.format).

Signals: SIGTERM or SIGINT drain in-flight requests (server.drainTimeout), then exit.

Examples:
  relais serve
  relais serve --listen 127.0.0.1:5000 --data /var/cache/relais \\
    --upstream docker.io=https://registry-1.docker.io --upstream ghcr.io=https://ghcr.io
  relais serve --config /etc/relais/config.yaml`,
    )
    .action(async (opts: { config?: string; listen?: string; data?: string; upstream?: string[]; startupChecks?: string }) => {
      let relais;
      try {
        const config = await loadConfig(opts.config, { listen: opts.listen, dataDir: opts.data, upstreams: opts.upstream, startupChecks: opts.startupChecks });
        const human = humanOutput(config.log.format, process.stdout.isTTY);
        const start: StartOptions = human
          ? (() => {
              const out = humanLogStream(process.stdout);
              return { logger: createLogger(config.log.level, out), requestLog: new RequestLog(out, { bufferBytes: 0, flushMs: 0 }) };
            })()
          : { logger: createLogger(config.log.level) };
        if (start.logger) await startupProbes(config, start.logger);
        relais = await startRelais(config, start);
        if (human) {
          process.stdout.write(
            `\n${renderBanner({
              version: version(),
              listen: config.listen,
              port: relais.port,
              tls: config.tls !== undefined,
              dataDir: resolve(config.dataDir),
              upstreams: Object.fromEntries(Object.entries(config.upstreams).map(([n, u]) => [n, u.url])),
              defaultUpstream: config.defaultUpstream,
              auth: config.auth !== undefined,
              statusPage: config.metrics.statusPage,
            })}`,
          );
        }
      } catch (e) {
        printError(e);
        process.exitCode = 1;
        return;
      }
      const instance = relais;
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) {
          instance.logger.warn({ signal }, 'second signal: exiting now');
          process.exit(1);
        }
        stopping = true;
        instance.logger.info({ signal, inFlight: instance.http.active() }, 'draining');
        instance.close().then(
          () => flushLogger(instance.logger).then(() => process.exit(0)),
          (e: unknown) => {
            printError(e);
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '';
  } catch {
    return '';
  }
}
