// `relais ca`: prints the proxy door's CA certificate (PEM), creating the CA when there is none yet.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { loadCa } from '../doors/proxy/ca.js';
import { proxyHosts } from '../doors/proxy/hosts.js';
import { printError } from './output.js';

export function registerCaCommand(program: Command): void {
  program
    .command('ca')
    .description("Print the CA certificate (PEM) of relais's HTTPS proxy door, for clients to trust (made at first use; docs/proxy.md)")
    .option('-c, --config <file>', 'YAML config file')
    .option('-d, --data <dir>', 'data directory (default ./relais-data)')
    .addHelpText(
      'after',
      `
Examples:
  relais ca --config /etc/relais/config.yaml > relais-ca.crt
  # dockerd: one copy per intercepted registry host
  relais ca -c config.yaml | sudo tee /etc/docker/certs.d/ghcr.io/ca.crt`,
    )
    .action(async (opts: { config?: string; data?: string }) => {
      try {
        const config = await loadConfig(opts.config, { dataDir: opts.data });
        const hosts = proxyHosts(config);
        const ca = await loadCa({ files: config.proxy.ca, dataDir: resolve(config.dataDir), hosts: hosts.names });
        process.stdout.write(ca.certPem);
      } catch (e) {
        printError(e);
        process.exitCode = 1;
      }
    });
}
