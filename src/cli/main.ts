#!/usr/bin/env -S node --max-semi-space-size=4
// The relais command line. Each group of commands is loaded only when it is asked for, so
// `relais serve` does not pay (in start-up time and memory) for the CI and cleanup tools.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { printError } from './output.js';

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

type Register = (program: Command) => void;
/** Command name -> the module that registers it (several names may share one module). */
const groups: readonly { readonly names: readonly string[]; readonly load: () => Promise<Register> }[] = [
  { names: ['serve'], load: async () => (await import('./serve.js')).registerServeCommand },
  { names: ['check'], load: async () => (await import('./check.js')).registerCheckCommand },
  { names: ['gc', 'prefetch', 'ls', 'stats'], load: async () => (await import('./ops-commands.js')).registerOpsCommands },
  { names: ['ca'], load: async () => (await import('./ca-command.js')).registerCaCommand },
  { names: ['ci'], load: async () => (await import('../products/ci/ci-command.js')).registerCiCommands },
  { names: ['cleanup'], load: async () => (await import('../products/cleanup/cleanup-command.js')).registerCleanupCommand },
];

async function main(): Promise<void> {
  const program = new Command()
    .name('relais')
    .description('A pull-through cache for container registries: one instance for every upstream, one upstream fetch per blob.')
    .version(pkg.version)
    .showHelpAfterError('(run with --help for usage)');
  const asked = process.argv[2];
  const only = groups.find((g) => asked !== undefined && g.names.includes(asked));
  for (const g of only ? [only] : groups) (await g.load())(program);
  await program.parseAsync(process.argv);
}

main().catch((e: unknown) => {
  printError(e);
  process.exitCode = 1;
});
