// Runs `relais ci ...` in a child process through registerCiCommands on a fresh commander
// program (independent of src/cli/main.ts), from any working directory.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function relaisCi(args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const commander = join(repoRoot, 'node_modules/commander/esm.mjs');
  const entry = join(repoRoot, 'dist/src/products/ci/ci-command.js');
  const code = `import { Command } from ${JSON.stringify(commander)}; import { registerCiCommands } from ${JSON.stringify(entry)};
const p = new Command('relais'); registerCiCommands(p); await p.parseAsync(process.argv.slice(1), { from: 'user' });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code, 'ci', ...args], {
    encoding: 'utf8',
    cwd: opts.cwd ?? repoRoot,
    env: opts.env ?? process.env,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
