#!/usr/bin/env node
// The relais command line.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerServeCommand } from './serve.js';
import { registerCiCommands } from '../ci/command.js';
import { registerCleanupCommand } from '../cleanup/command.js';
import { registerOpsCommands } from './ops.js';
import { printError } from './output.js';

const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('relais')
  .description('A pull-through cache for container registries: one instance for every upstream, one upstream fetch per blob.')
  .version(pkg.version)
  .showHelpAfterError('(run with --help for usage)');

registerServeCommand(program);
registerOpsCommands(program);
registerCiCommands(program);
registerCleanupCommand(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  printError(e);
  process.exitCode = 1;
});
