// `relais serve`: start the pull-through cache.
import { Command, Option } from 'commander';
import { startRelais } from '../app.js';
import { loadConfig } from '../config/load.js';
import { flushLogger } from '../observability/logger.js';
import { printError } from './output.js';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('Start the pull-through cache (defaults: listen 0.0.0.0:5000, data ./relais-data, upstream docker.io=https://registry-1.docker.io)')
    .option('-c, --config <file>', 'YAML config file (see "Configuration reference" in README.md); flags override it')
    .option('-l, --listen <host:port>', 'address to listen on (default 0.0.0.0:5000)')
    .option('-d, --data <dir>', 'data directory: blobs, manifests and the SQLite index (default ./relais-data)')
    .addOption(
      new Option('-u, --upstream <name=url>', 'an upstream registry, e.g. docker.io=https://registry-1.docker.io; repeatable; the first one given is the default upstream')
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

Signals: SIGTERM or SIGINT drain in-flight requests (server.drainTimeout), then exit.

Examples:
  relais serve
  relais serve --listen 127.0.0.1:5000 --data /var/cache/relais \\
    --upstream docker.io=https://registry-1.docker.io --upstream ghcr.io=https://ghcr.io
  relais serve --config /etc/relais/config.yaml`,
    )
    .action(async (opts: { config?: string; listen?: string; data?: string; upstream?: string[] }) => {
      let relais;
      try {
        const config = await loadConfig(opts.config, { listen: opts.listen, dataDir: opts.data, upstreams: opts.upstream });
        relais = await startRelais(config);
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
