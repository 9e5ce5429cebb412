// `relais check`: lints a configuration and probes its upstreams without serving (exit 1 on problems);
// and the same probes at the start of `relais serve` (startupChecks: warn | refuse | off).
import { access, constants, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { readLock } from '../upkeep/pidfile.js';
import { defaultUpstreamWarning, loadConfig, type ResolvedConfig } from '../config/load.js';
import { errors } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { probeUpstreams, type ProbeResult } from '../upstream/probe.js';
import { printError } from './output.js';

export interface Finding {
  readonly level: 'ok' | 'warning' | 'error';
  readonly what: string;
  readonly message: string;
  readonly hint?: string | undefined;
}

/** What can be said of a configuration without touching the network. */
export async function lintConfig(config: ResolvedConfig): Promise<Finding[]> {
  const out: Finding[] = [];
  const d = defaultUpstreamWarning(config);
  out.push(d ? { level: 'warning', what: 'defaultUpstream', message: d.message, hint: d.hint } : { level: 'ok', what: 'defaultUpstream', message: `unprefixed requests (dockerd mirror traffic) go to ${config.defaultUpstream}` });
  const host = config.listen.slice(0, config.listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  if ((host === '0.0.0.0' || host === '::') && config.auth === undefined) {
    out.push({ level: 'warning', what: 'listen', message: `${config.listen}: every interface, without authentication: anyone who reaches this port can pull through relais`, hint: 'fine on a private CI network; otherwise listen on a private address or add an auth: section' });
  } else {
    out.push({ level: 'ok', what: 'listen', message: config.listen });
  }
  const dataDir = resolve(config.dataDir);
  const dirState = await stat(dataDir).then(
    async (s) => {
      if (!s.isDirectory()) return { level: 'error' as const, message: `${dataDir} is not a directory`, hint: 'choose another --data directory' };
      try {
        await access(dataDir, constants.W_OK);
      } catch {
        return { level: 'error' as const, message: `${dataDir} is not writable by uid ${process.getuid?.() ?? '?'}`, hint: 'change its owner, or choose another --data directory' };
      }
      const lock = await readLock(dataDir);
      if (lock?.alive === true) return { level: 'ok' as const, message: `${dataDir} (in use by relais ${lock.holder.command}, pid ${lock.holder.pid}: another relais serve would refuse it)` };
      return { level: 'ok' as const, message: dataDir };
    },
    () => ({ level: 'ok' as const, message: `${dataDir} (created at start)` }),
  );
  out.push({ what: 'dataDir', ...dirState });
  return out;
}

export function probeFindings(results: readonly ProbeResult[]): Finding[] {
  return results.map((r) => ({ level: r.ok ? 'ok' : 'error', what: `upstream ${r.upstream}`, message: r.ok ? `${r.url}: ${r.summary}` : r.summary, hint: r.hint }));
}

/**
 * The start-up probes of `relais serve`: problems are logged (warn) or refuse the start (refuse).
 * Throws UPSTREAM_CHECK_FAILED in refuse mode.
 */
export async function startupProbes(config: ResolvedConfig, logger: Logger): Promise<void> {
  if (config.startupChecks === 'off') return;
  const results = await probeUpstreams(config.upstreams);
  const bad = results.filter((r) => !r.ok);
  if (bad.length === 0) return;
  if (config.startupChecks === 'refuse') {
    throw errors.upstreamCheckFailed(
      bad.map((r) => `${r.upstream}: ${r.summary}${r.hint === undefined ? '' : ` (${r.hint})`}`),
      'fix the upstream URLs (relais check probes them without serving), or set startupChecks: warn to serve anyway',
    );
  }
  for (const r of bad) logger.warn({ upstream: r.upstream, url: r.url, status: r.status, hint: r.hint }, `upstream check: ${r.upstream}: ${r.summary}; pulls from it will fail until this is fixed`);
}

function render(findings: readonly Finding[]): string {
  const tag = { ok: 'ok     ', warning: 'warning', error: 'error  ' } as const;
  return findings.map((f) => `${tag[f.level]}  ${f.what}: ${f.message}${f.hint === undefined || f.level === 'ok' ? '' : `\n         hint: ${f.hint}`}`).join('\n');
}

export function registerCheckCommand(program: Command): void {
  program
    .command('check')
    .description('Check a configuration and probe its upstreams (GET /v2/) without serving; exit status 1 on problems')
    .option('-c, --config <file>', 'YAML config file, as for relais serve')
    .option('-l, --listen <host:port>', 'as for relais serve')
    .option('-d, --data <dir>', 'as for relais serve')
    .addOption(new Option('-u, --upstream <name=url>', 'as for relais serve; repeatable').argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]))
    .addOption(new Option('--startup-checks <mode>', 'accepted as for relais serve (check always probes unless --no-probe)').choices(['warn', 'refuse', 'off']))
    .option('--json', 'print the findings as JSON')
    .option('--no-probe', 'only check the configuration, do not contact the upstreams')
    .addHelpText(
      'after',
      `
Checks: the config file against the schema (names the field and what was expected), upstream URLs (a scheme,
no /v2 suffix), which upstream gets dockerd's mirror traffic, listening everywhere without auth, the data
directory, and a GET /v2/ of every upstream: a registry answers 200 or 401 with a WWW-Authenticate challenge.
Exit status: 0 when nothing is wrong (warnings allowed), 1 on errors.

Examples:
  relais check --config /etc/relais/config.yaml
  relais check --upstream docker.io=https://registry-1.docker.io --upstream ghcr.io=https://ghcr.io`,
    )
    .action(async (opts: { config?: string; listen?: string; data?: string; upstream?: string[]; json?: boolean; probe: boolean }) => {
      let config: ResolvedConfig;
      try {
        config = await loadConfig(opts.config, { listen: opts.listen, dataDir: opts.data, upstreams: opts.upstream });
      } catch (e) {
        if (opts.json === true) {
          const err = e as { code?: string; message?: string; hint?: string };
          process.stdout.write(`${JSON.stringify({ ok: false, findings: [{ level: 'error', what: 'config', message: err.message ?? String(e), hint: err.hint }] }, null, 2)}\n`);
        } else printError(e);
        process.exitCode = 1;
        return;
      }
      const findings = [{ level: 'ok' as const, what: 'config', message: opts.config ?? '(flags and defaults)' }, ...(await lintConfig(config))];
      if (opts.probe) findings.push(...probeFindings(await probeUpstreams(config.upstreams)));
      const ok = !findings.some((f) => f.level === 'error');
      if (opts.json === true) process.stdout.write(`${JSON.stringify({ ok, findings }, null, 2)}\n`);
      else process.stdout.write(`${render(findings)}\n${ok ? 'no problems found' : 'problems found'}\n`);
      if (!ok) process.exitCode = 1;
    });
}
