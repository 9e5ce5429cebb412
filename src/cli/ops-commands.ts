// `relais gc`, `relais ls`, `relais stats`, `relais prefetch`: operating a cache.
// gc, ls and stats read the index the config names (index.driver: SQLite in the data directory, which can be
// read while relais serves, or the cluster's PostgreSQL);
// prefetch pulls through a running relais (--server) or one started in this process for the run.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';
import { startRelais } from '../app.js';
import { cacheStats, listImages } from '../upkeep/inventory.js';
import { gcFoundNothing, runGc, type GcReport } from '../eviction/gc.js';
import { cacheRetentionJson, renderCacheRetention, runCacheRetention, wantsRetention, type CacheRetentionOptions } from '../upkeep/cache-retention-run.js';
import { parseShare } from '../products/cleanup/cleanup-command.js';
import { acquireDataLock, liveServerPid, type DataLock } from '../upkeep/pidfile.js';
import { clientAuthorization, hostPlatform, prefetch, type PrefetchSummary, type PrefetchTarget } from '../upkeep/prefetch.js';
import { prefetchTargets, scanPrefetchFiles, setApartNotMirrored, type PrefetchSources } from '../upkeep/prefetch-files.js';
import { loadConfig, usesLibraryPrefix, type ResolvedConfig } from '../config/load.js';
import { formatBytes, parseDuration } from '../config/units.js';
import { errors, isRelaisError } from '../errors.js';
import { openIndex as openConfiguredIndex } from '../index/create-index.js';
import type { CacheIndex } from '../index/cache-index.js';
import { createLogger } from '../observability/logger.js';
import { parsePin, type PinPattern } from '../eviction/eviction-plan.js';
import { FilesystemDriver } from '../storage/fs.js';
import { printError } from './output.js';

interface DataOptions {
  config?: string;
  data?: string;
}

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

function platformArg(v: string, prev: string[] | undefined): string[] {
  if (!/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(v)) throw new InvalidArgumentError('expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7');
  return [...(prev ?? []), v];
}

function keyValue(v: string, prev: Record<string, string> | undefined): Record<string, string> {
  const eq = v.indexOf('=');
  if (eq < 1 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(v.slice(0, eq))) throw new InvalidArgumentError('expected NAME=VALUE');
  return { ...(prev ?? {}), [v.slice(0, eq)]: v.slice(eq + 1) };
}

function positiveInt(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('must be a whole number of at least 1');
  return Number(v);
}

function dataOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'the config file relais serves with (its dataDir and storage settings)')
    .option('-d, --data <dir>', 'the data directory (default: the config\'s dataDir, else ./relais-data)');
}

async function resolveData(opts: DataOptions): Promise<ResolvedConfig> {
  return loadConfig(opts.config, { dataDir: opts.data });
}

/**
 * The index the config names (index.driver: SQLite in dataDir, or PostgreSQL), through the same factory
 * relais serve uses. A missing SQLite file is refused rather than created: ls on the wrong directory
 * must say so, not report an empty cache.
 */
async function openIndex(config: ResolvedConfig): Promise<CacheIndex> {
  const dataDir = resolve(config.dataDir);
  if (config.index.driver === 'sqlite' && !existsSync(join(dataDir, 'index.db'))) {
    throw errors.noCache(dataDir);
  }
  return (await openConfiguredIndex(config.index, dataDir)).index;
}

function pinsOf(config: ResolvedConfig): PinPattern[] {
  const ctx = { defaultUpstream: config.defaultUpstream, libraryPrefix: (u: string) => { const c = config.upstreams[u]; return c ? usesLibraryPrefix(u, c) : false; } };
  return config.storage.pin.map((p) => parsePin(p, ctx));
}

function ago(t: number, now = Date.now()): string {
  if (t <= 0) return 'never';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function table(rows: string[][], rightAligned: ReadonlySet<number> = new Set()): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 && !rightAligned.has(i) ? c : rightAligned.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n';
}

interface GcRetentionFlags {
  policy?: string;
  keepLast?: number;
  olderThan?: string;
  protect?: string[];
  liveBranches?: string;
  defaultBranch?: string;
  maxDeleteShare?: number;
  repo?: string[];
  apply?: boolean;
  age?: 'cached' | 'created';
}

function retentionOptions(o: GcRetentionFlags): CacheRetentionOptions {
  return {
    policyFile: o.policy,
    apply: o.apply === true,
    ...(o.age !== undefined ? { age: o.age } : {}),
    ...(o.keepLast !== undefined ? { keepLast: o.keepLast } : {}),
    ...(o.olderThan !== undefined ? { olderThan: o.olderThan } : {}),
    ...(o.protect !== undefined ? { protect: o.protect } : {}),
    ...(o.liveBranches !== undefined ? { liveBranches: o.liveBranches } : {}),
    ...(o.defaultBranch !== undefined ? { defaultBranch: o.defaultBranch } : {}),
    ...(o.maxDeleteShare !== undefined ? { maxDeleteShare: o.maxDeleteShare } : {}),
    ...(o.repo !== undefined ? { repos: o.repo } : {}),
  };
}

function printGc(r: GcReport, out: NodeJS.WritableStream): void {
  const verb = r.dryRun ? 'would remove' : 'removed';
  if (gcFoundNothing(r)) {
    out.write('gc: index and storage agree; nothing to do\n');
    return;
  }
  for (const f of r.orphanFiles) out.write(`orphan file      ${f.key} (${formatBytes(f.size)})\n`);
  for (const m of r.missingFiles) out.write(`missing file     ${m.digest} (index says ${m.size} bytes, ${m.found === undefined ? 'no file' : `file has ${m.found}`})\n`);
  for (const d of r.dependentManifests) out.write(`broken manifest  ${d} (references content that is gone)\n`);
  for (const t of r.tempFiles) out.write(`temp file        ${t.id} (${formatBytes(t.size)})\n`);
  out.write(
    `gc: ${r.orphanFiles.length} orphan files, ${r.missingFiles.length} index entries without their file, ${r.dependentManifests.length} manifests depending on them, ${r.tempFiles.length} temp files; ${verb} ${formatBytes(r.freedBytes)} on disk and ${r.droppedRows} index entries\n`,
  );
}

export function registerOpsCommands(program: Command): void {
  dataOptions(
    program
      .command('gc')
      .description('Reconcile the cache index with the disk: orphan files, index entries without their file (and manifests that need them), temp files left by a crash; with a retention policy, expire cached tags first (plan, then --apply)')
      .option('--dry-run', 'only print what would be removed')
      .option('--grace <duration>', 'leave files younger than this alone (default: storage.gcGrace, 15m, while a relais serves the directory; 0 when none does)')
      .option('--json', 'print the report as JSON')
      .option('--policy <file>', 'tag retention on the cache: a relais cleanup policy (YAML, see docs/cleanup.md); prints the plan, deletes with --apply')
      .option('--keep-last <n>', 'retention: keep the N newest images of each tag family (by --age)', positiveInt)
      .option('--older-than <duration>', 'retention: delete tags older than this (by --age), e.g. 30d')
      .addOption(new Option('--age <from>', 'retention: a tag\'s age is the image config\'s created, where the config is cached, else when relais fetched it (created, the default), or when relais fetched it (cached)').choices(['cached', 'created']))
      .addOption(new Option('--protect <regex>', 'retention: never delete cached tags matching this; repeatable').argParser(collect))
      .option('--live-branches <source>', 'retention: FILE (one branch per line) or git:REMOTE; tags of other branches are deleted')
      .option('--default-branch <name>', 'retention: the default branch (its slug tag is protected)')
      .option('--max-delete-share <share>', 'retention: leave a repository alone if more than this share of its tags would go (default 0.5)', parseShare)
      .addOption(new Option('--repo <name>', 'retention: only this cached repository (UPSTREAM/REPO, or REPO under any upstream); repeatable').argParser(collect))
      .option('--apply', 'retention: delete the DELETE tags and the content only they hold, then gc (default: print the plan)'),
  )
    .addHelpText(
      'after',
      `
Safe while relais serves the same directory: files being written, downloaded or served are left alone.
With a retention policy (--policy, --keep-last, --older-than, --live-branches) gc plans tag retention on the
cache with the planner of relais cleanup and changes nothing unless --apply is given; then the tags go, the
manifests and blobs no remaining tag or cached image needs are freed, and the usual gc runs. A tag's age is
the image's own date (its config's created, read from the cache; when relais fetched it where the config is
not cached), so a branch's newest build stays even when an older build was pulled later; --age cached ages
tags by when relais last fetched them instead.
Exit status: 0 when done (or nothing found), 1 on errors, 2 when a safety limit stopped a repository's plan.

Examples:
  relais gc --data /var/cache/relais --keep-last 3 --older-than 30d
  relais gc --data /var/cache/relais --policy cache-retention.yaml --apply`,
    )
    .action(async (opts: DataOptions & GcRetentionFlags & { dryRun?: boolean; grace?: string; json?: boolean }) => {
      let index: CacheIndex | undefined;
      let lock: DataLock | undefined;
      try {
        const config = await resolveData(opts);
        if (config.storage.driver !== 'filesystem') {
          throw errors.gcNeedsFilesystem(config.storage.driver);
        }
        const dataDir = resolve(config.dataDir);
        index = await openIndex(config);
        // The data directory's lock: taken when nobody serves it (no relais can start under this gc);
        // alongside a serving relais, gc works with the grace period. Another gc or prefetch: refused.
        let live: number | undefined;
        try {
          lock = await acquireDataLock(dataDir, 'gc');
        } catch (e) {
          const holder = isRelaisError(e) && e.code === 'DATA_DIR_IN_USE' ? (e.detail as { pid: number; command: string }) : undefined;
          if (holder?.command !== 'serve') throw e;
          live = holder.pid;
        }
        let graceMs = live !== undefined ? config.storage.gcGrace : 0;
        if (opts.grace !== undefined) {
          const g = parseDuration(opts.grace);
          if (g === undefined) throw errors.gcGraceInvalid(opts.grace);
          graceMs = g;
        }
        const storage = new FilesystemDriver(join(dataDir, 'storage'));
        const retention = retentionOptions(opts);
        if (wantsRetention(retention)) {
          if (opts.dryRun === true && opts.apply === true) throw errors.gcDryRunAndApply();
          const run = await runCacheRetention(index, storage, retention, { graceMs });
          const gcReport = opts.apply === true ? await runGc({ index, storage, dryRun: false, graceMs }) : null;
          if (opts.json === true) process.stdout.write(`${JSON.stringify({ retention: cacheRetentionJson(run), gc: gcReport, liveServerPid: live ?? null, graceMs }, null, 2)}\n`);
          else {
            if (live !== undefined) process.stdout.write(`relais (pid ${live}) serves this directory: content used within ${formatDurationShort(graceMs)} is left alone\n`);
            process.stdout.write(renderCacheRetention(run));
            if (gcReport) printGc(gcReport, process.stdout);
            else if (run.plan.deleteTags.length > 0) process.stderr.write('dry run: nothing was deleted; run again with --apply to delete the DELETE tags\n');
          }
          if (run.plan.plans.some((p) => p.aborted !== null)) process.exitCode = 2;
          return;
        }
        if (retention.apply || retention.protect !== undefined || retention.defaultBranch !== undefined || retention.maxDeleteShare !== undefined || retention.repos !== undefined || retention.age !== undefined)
          throw errors.gcNeedsPolicy();
        const report = await runGc({ index, storage, dryRun: opts.dryRun === true, graceMs });
        if (opts.json === true) process.stdout.write(`${JSON.stringify({ ...report, liveServerPid: live ?? null, graceMs }, null, 2)}\n`);
        else {
          if (live !== undefined) process.stdout.write(`relais (pid ${live}) serves this directory: files younger than ${formatDurationShort(graceMs)} are left alone\n`);
          printGc(report, process.stdout);
        }
      } catch (e) {
        printError(e);
        process.exitCode = 1;
      } finally {
        await lock?.release();
        await index?.close();
      }
    });

  dataOptions(
    program
      .command('ls')
      .description('List cached images: repository and tag, size, last use')
      .option('--upstream <name>', 'only this upstream')
      .option('--json', 'print JSON'),
  ).action(async (opts: DataOptions & { upstream?: string; json?: boolean }) => {
    let index: CacheIndex | undefined;
    try {
      const config = await resolveData(opts);
      index = await openIndex(config);
      const rows = (await listImages(index, pinsOf(config))).filter((r) => opts.upstream === undefined || r.upstream === opts.upstream);
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(rows.map((r) => ({ ...r, lastUsed: new Date(r.lastUsed).toISOString() })), null, 2)}\n`);
        return;
      }
      if (rows.length === 0) {
        process.stdout.write('the cache holds no images\n');
        return;
      }
      const now = Date.now();
      process.stdout.write(
        table(
          [['IMAGE', 'SIZE', 'LAST USED', 'DIGEST', ''], ...rows.map((r) => [r.name, formatBytes(r.bytes), ago(r.lastUsed, now), r.digest.slice(0, 19), r.pinned ? 'pinned' : ''])],
          new Set([1]),
        ),
      );
    } catch (e) {
      printError(e);
      process.exitCode = 1;
    } finally {
      await index?.close();
    }
  });

  dataOptions(program.command('stats').description('Cache totals: size against the budget, items, upstreams, largest images').option('--json', 'print JSON')).action(
    async (opts: DataOptions & { json?: boolean }) => {
      let index: CacheIndex | undefined;
      try {
        const config = await resolveData(opts);
        index = await openIndex(config);
        const s = await cacheStats(index, pinsOf(config));
        const max = config.storage.maxSize;
        if (opts.json === true) {
          process.stdout.write(`${JSON.stringify({ ...s, maxSize: max ?? null, lowWatermark: config.storage.lowWatermark }, null, 2)}\n`);
          return;
        }
        const out = process.stdout;
        out.write(`cache size   ${formatBytes(s.usage.bytes)}${max !== undefined ? ` of ${formatBytes(max)} (${((s.usage.bytes / max) * 100).toFixed(1)}%; eviction down to ${(config.storage.lowWatermark * 100).toFixed(0)}%)` : ' (no storage.maxSize: unbounded)'}\n`);
        out.write(`items        ${s.usage.blobs} blobs (${formatBytes(s.usage.blobBytes)}), ${s.usage.manifests} manifests (${formatBytes(s.usage.manifestBytes)}), ${s.usage.tags} tags in ${s.usage.repositories} repositories\n`);
        out.write(`images       ${s.images}; layers shared between them save ${formatBytes(s.sharedBytes)}\n`);
        if (s.oldestUse !== undefined && s.newestUse !== undefined) out.write(`last use     newest ${ago(s.newestUse)}, oldest ${ago(s.oldestUse)}\n`);
        if (config.storage.pin.length > 0) out.write(`pinned       ${config.storage.pin.join(', ')}\n`);
        if (s.upstreams.length > 0) {
          out.write('\n');
          out.write(table([['UPSTREAM', 'REPOSITORIES', 'TAGS', 'SIZE'], ...s.upstreams.map((u) => [u.upstream, String(u.repositories), String(u.tags), formatBytes(u.bytes)])], new Set([1, 2, 3])));
        }
        if (s.largest.length > 0) {
          out.write('\nlargest images\n');
          out.write(table(s.largest.map((r) => [r.name, formatBytes(r.bytes)]), new Set([1])));
        }
      } catch (e) {
        printError(e);
        process.exitCode = 1;
      } finally {
        await index?.close();
      }
    },
  );

  program
    .command('prefetch')
    .description('Warm the cache: pull images through relais (manifests and every blob) before the CI rush')
    .argument('[image...]', 'images: alpine:3.20, docker.io/library/node:22, ghcr.io/org/app@sha256:…')
    .addOption(new Option('--gitlab-ci <file>', 'also the images a .gitlab-ci.yml runs (image:, services:, defaults, local includes); repeatable').argParser(collect))
    .addOption(new Option('--dockerfile <file>', 'also the images a Dockerfile pulls (FROM, COPY --from, # syntax); repeatable').argParser(collect))
    .addOption(new Option('--build-arg <name=value>', 'a Dockerfile ARG value (as docker build --build-arg); repeatable').argParser(keyValue))
    .addOption(new Option('--variable <name=value>', 'a CI variable the .gitlab-ci.yml does not define (CI_REGISTRY_IMAGE…); repeatable').argParser(keyValue))
    .addOption(new Option('--platform <os/arch>', `platform to take from multi-platform images; repeatable (default ${hostPlatform()})`).argParser(platformArg))
    .option('--all-platforms', 'every platform of multi-platform images')
    .option('-s, --server <url>', 'a running relais, e.g. http://127.0.0.1:5000 (credentials: RELAIS_USERNAME/RELAIS_PASSWORD or RELAIS_TOKEN)')
    .option('-c, --config <file>', 'without --server: start relais in this process with this config for the run')
    .option('-d, --data <dir>', 'without --server: the data directory to fill')
    .addOption(new Option('-u, --upstream <name=url>', 'without --server: an upstream (as for relais serve); repeatable').argParser(collect))
    .option('--concurrency <n>', 'blobs fetched at once', positiveInt, 4)
    .option('--json', 'print the summary as JSON')
    .addHelpText(
      'after',
      `
Images without a registry host go to the relais's default upstream; with one (ghcr.io/...), to the upstream
of that name. Progress goes to stderr (a bar on a terminal), the summary to stdout. Exit status 1 when an
image could not be fetched. Images of --gitlab-ci / --dockerfile that name a variable nothing defines are
listed as "unresolved" (with the variables) and not fetched; give them with --variable / --build-arg.

Examples:
  relais prefetch --server http://relais:5000 docker:27-dind node:22 ghcr.io/org/builder:main
  relais prefetch --data /var/cache/relais --all-platforms alpine:3.20
  relais prefetch --server http://relais:5000 --gitlab-ci .gitlab-ci.yml --dockerfile Dockerfile --build-arg NODE_VERSION=22`,
    )
    .action(
      async (
        images: string[],
        opts: {
          platform?: string[];
          allPlatforms?: boolean;
          server?: string;
          config?: string;
          data?: string;
          upstream?: string[];
          concurrency: number;
          json?: boolean;
          gitlabCi?: string[];
          dockerfile?: string[];
          buildArg?: Record<string, string>;
          variable?: Record<string, string>;
        },
      ) => {
        let stop: (() => Promise<void>) | undefined;
        try {
          const sources = await scanPrefetchFiles({ gitlabCi: opts.gitlabCi ?? [], dockerfiles: opts.dockerfile ?? [], buildArgs: opts.buildArg ?? {}, variables: opts.variable ?? {} });
          const targets: PrefetchTarget[] = prefetchTargets(images, sources.found);
          if (targets.length === 0 && sources.unresolved.length === 0) {
            throw errors.prefetchNothing();
          }
          let server = opts.server?.replace(/\/+$/, '');
          if (server === undefined) {
            const config = await loadConfig(opts.config, { dataDir: opts.data, upstreams: opts.upstream, listen: '127.0.0.1:0' });
            const live = await liveServerPid(resolve(config.dataDir));
            if (live !== undefined) {
              throw errors.prefetchBesideServer(live, resolve(config.dataDir));
            }
            const relais = await startRelais({ ...config, log: { ...config.log, level: 'warn', requests: false }, prefetch: { ...config.prefetch, images: [], onStart: false, at: [], every: undefined } }, {
              logger: createLogger('warn', process.stderr),
              lockCommand: 'prefetch',
            });
            stop = () => relais.close();
            server = relais.url;
          }
          const run = await runPrefetchWithProgress(targets, {
            server,
            platforms: opts.platform ?? [hostPlatform()],
            allPlatforms: opts.allPlatforms === true,
            concurrency: opts.concurrency,
            authorization: clientAuthorization(),
          });
          const { summary, notMirrored } = setApartNotMirrored(run, images);
          if (opts.json === true) process.stdout.write(`${JSON.stringify({ ...summary, sources: { ...sources, notMirrored } }, null, 2)}\n`);
          else {
            printPrefetchSummary(summary, process.stdout);
            printPrefetchSources(sources, process.stdout);
            for (const r of notMirrored) process.stdout.write(`not mirrored  ${r.image}: ${r.error ?? ''}\n`);
          }
          if (summary.failed > 0) process.exitCode = 1;
        } catch (e) {
          printError(e);
          process.exitCode = 1;
        } finally {
          await stop?.();
        }
      },
    );
}

function formatDurationShort(ms: number): string {
  if (ms % 3600_000 === 0 && ms > 0) return `${ms / 3600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

async function runPrefetchWithProgress(targets: PrefetchTarget[], opts: Parameters<typeof prefetch>[1]): Promise<PrefetchSummary> {
  const tty = process.stderr.isTTY;
  let bar: SingleBar | undefined;
  let total = 0;
  let done = 0;
  const summary = await prefetch(targets, {
    ...opts,
    progress: {
      planned: (image, blobs, bytes) => {
        total += bytes;
        if (tty) {
          if (!bar) {
            bar = new SingleBar({
              stream: process.stderr,
              format: '{image} [{bar}] {percentage}% {doneh} / {totalh}',
              hideCursor: true,
              clearOnComplete: true,
            });
            bar.start(total, done, { image, doneh: formatBytes(done), totalh: formatBytes(total) });
          } else {
            bar.setTotal(total);
            bar.update(done, { image, doneh: formatBytes(done), totalh: formatBytes(total) });
          }
        } else {
          process.stderr.write(`${image}: ${blobs} blobs, ${formatBytes(bytes)}\n`);
        }
      },
      bytes: (n) => {
        done += n;
        bar?.update(done, { doneh: formatBytes(done), totalh: formatBytes(total) });
      },
      imageDone: (r) => {
        if (!r.ok) {
          bar?.stop();
          bar = undefined;
          process.stderr.write(`${r.image}: failed: ${r.error ?? 'unknown error'}\n`);
        }
      },
    },
  });
  bar?.stop();
  return summary;
}

/** What the files named that was NOT fetched (--json also has where each image came from). */
function printPrefetchSources(s: PrefetchSources, out: NodeJS.WritableStream): void {
  for (const u of s.unresolved) out.write(`unresolved  ${u.raw} (${u.source}): ${u.missing.map((m) => `$${m}`).join(', ')} not defined\n`);
  for (const i of s.skippedIncludes) out.write(`not read    include ${i}\n`);
}

function printPrefetchSummary(s: PrefetchSummary, out: NodeJS.WritableStream): void {
  for (const r of s.images) {
    out.write(r.ok ? `ok      ${r.image} (${r.platforms.join(', ')}): ${r.manifests} manifests, ${r.blobs} blobs, ${formatBytes(r.bytes)}\n` : `FAILED  ${r.image}: ${r.error ?? ''}\n`);
  }
  const upstream = s.upstreamBytes !== undefined ? `; relais fetched ${formatBytes(s.upstreamBytes)} from upstreams (the rest was cached)` : '';
  out.write(`prefetch: ${s.images.length - s.failed}/${s.images.length} images, ${s.blobs} blobs, ${formatBytes(s.bytes)} in ${s.seconds.toFixed(1)}s${upstream}\n`);
}
