// `relais cleanup`: inspect -> plan -> (confirm) -> apply, for one or more repositories.
import { SingleBar } from 'cli-progress';
import { errors } from '../../errors.js';
import { applyPlan, type ApplyResult } from '../../retention/apply-plan.js';
import type { RegistryBackend } from '../../retention/registry-backend.js';
import { loadLiveBranches } from '../../retention/branches.js';
import type { LiveBranch } from '../../retention/families.js';
import { GitLabRegistry } from './gitlab-backend.js';
import { inspectRepository, type Inspection } from './registry-inspect.js';
import { OciRegistry } from './oci-backend.js';
import { planRepository, type RepoPlan } from '../../retention/retention-plan.js';
import { resolvePolicy, type Policy, type PolicyFlags } from '../../retention/retention-policy.js';
import { renderApplyResult, renderPlanTable, type JsonReport } from '../../retention/plan-render.js';

export interface CleanupOptions extends PolicyFlags {
  readonly registry: string;
  readonly repos: readonly string[];
  readonly policyFile?: string | undefined;
  readonly apply: boolean;
  readonly json: boolean;
  readonly yes: boolean;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly concurrency: number;
  readonly gitlabProject?: string | undefined;
  readonly gitlabToken?: string | undefined;
  readonly gitlabBulk?: boolean;
  /** Where `git ls-remote` runs for --live-branches git:REMOTE. */
  readonly cwd?: string;
}

export interface CleanupIO {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stdinIsTTY: boolean;
  readonly confirm: (question: string) => Promise<boolean>;
  readonly now?: () => Date;
}

/** Exit codes: 0 done, 1 error (thrown), 2 a safety limit stopped a repository's plan, 3 some deletions failed. */
export const EXIT_SAFETY = 2;
export const EXIT_PARTIAL = 3;

const PROGRESS_MIN_ITEMS = 20;

function progressReporter(io: CleanupIO): { report: (phase: string, done: number, total: number) => void; stop: () => void } {
  if (io.stderr.isTTY !== true) return { report: () => undefined, stop: () => undefined };
  let bar: SingleBar | undefined;
  let current = '';
  return {
    report: (phase, done, total) => {
      if (total < PROGRESS_MIN_ITEMS) return;
      if (bar === undefined) {
        bar = new SingleBar({ stream: io.stderr, format: '{phase} [{bar}] {value}/{total}', hideCursor: true, clearOnComplete: true });
        bar.start(total, 0, { phase });
        current = phase;
      } else if (phase !== current) {
        current = phase;
        bar.setTotal(total);
      }
      bar.update(done, { phase });
    },
    stop: () => {
      bar?.stop();
      bar = undefined;
    },
  };
}

export function makeBackend(opts: CleanupOptions): RegistryBackend {
  if (opts.gitlabProject !== undefined) {
    if (opts.gitlabToken === undefined || opts.gitlabToken === '')
      throw errors.cleanupGitlabToken();
    return new GitLabRegistry({ url: opts.registry, project: opts.gitlabProject, token: opts.gitlabToken, concurrency: opts.concurrency, bulk: opts.gitlabBulk === true });
  }
  const credentials = opts.username !== undefined && opts.password !== undefined ? { username: opts.username, password: opts.password } : undefined;
  return new OciRegistry({ url: opts.registry, credentials, concurrency: opts.concurrency });
}

async function liveBranchesFor(policy: Policy, backend: RegistryBackend, cwd: string | undefined): Promise<LiveBranch[] | null> {
  const spec = policy.liveBranches;
  if (spec === undefined) return null;
  if (spec === 'gitlab') {
    if (!(backend instanceof GitLabRegistry))
      throw errors.cleanupLiveBranchesGitlab();
    return backend.liveBranches();
  }
  return loadLiveBranches(spec, cwd);
}

export async function runCleanup(opts: CleanupOptions, io: CleanupIO, backendOverride?: RegistryBackend): Promise<number> {
  const now = io.now?.() ?? new Date();
  const policy = await resolvePolicy(opts.policyFile, opts);
  const backend = backendOverride ?? makeBackend(opts);
  const progress = progressReporter(io);
  try {
    let repos = [...opts.repos];
    if (repos.length === 0) {
      if (!backend.listRepositories) throw errors.cleanupNoRepository();
      repos = await backend.listRepositories();
    }
    const live = await liveBranchesFor(policy, backend, opts.cwd);
    const inspections: Inspection[] = [];
    const plans: RepoPlan[] = [];
    for (const repo of repos) {
      const ins = await inspectRepository(backend, repo, { concurrency: opts.concurrency, kanikoCacheRepos: policy.kanikoCacheRepos, onProgress: progress.report });
      inspections.push(ins);
      const plan = planRepository(repo, ins.tags, ins.graph, policy, { now, liveBranches: live });
      plans.push({ ...plan, warnings: [...ins.warnings, ...plan.warnings] });
    }
    progress.stop();
    const anyAborted = plans.some((p) => p.aborted !== null);
    if (!opts.json) io.stdout.write(renderPlanTable(plans, now));

    let applied: (ApplyResult | null)[] = plans.map(() => null);
    if (opts.apply) {
      const toApply = plans.filter((p) => p.aborted === null && p.summary.delete > 0);
      const tags = toApply.reduce((n, p) => n + p.summary.delete, 0);
      let go = toApply.length > 0;
      if (go && io.stdinIsTTY && !opts.yes) {
        go = await io.confirm(`Delete ${tags} tag${tags === 1 ? '' : 's'} in ${toApply.length} repositor${toApply.length === 1 ? 'y' : 'ies'} of ${backend.description}? [y/N] `);
        if (!go) io.stderr.write('nothing deleted\n');
      }
      if (go) {
        applied = [];
        for (let i = 0; i < plans.length; i++) {
          const p = plans[i];
          const ins = inspections[i];
          if (!p || !ins || p.aborted !== null || p.summary.delete === 0) {
            applied.push(null);
            continue;
          }
          applied.push(await applyPlan(backend, p, ins.graph, { concurrency: opts.concurrency, onProgress: progress.report }));
        }
        progress.stop();
        if (!opts.json) io.stdout.write(renderApplyResult(applied.filter((a): a is ApplyResult => a !== null)));
      }
    } else if (!opts.json && plans.some((p) => p.summary.delete > 0)) {
      io.stderr.write('dry run: nothing was deleted; run again with --apply to delete the DELETE tags\n');
    }
    if (opts.json) {
      const report: JsonReport = {
        version: 1,
        registry: backend.description,
        generatedAt: now.toISOString(),
        mode: opts.apply ? 'apply' : 'plan',
        repositories: plans.map((p, i) => ({ ...p, applied: applied[i] ?? null })),
      };
      io.stdout.write(JSON.stringify(report, null, 2) + '\n');
    }
    if (anyAborted) return EXIT_SAFETY;
    if (applied.some((a) => a !== null && (a.failed.length > 0 || a.keptTagsChanged.length > 0))) return EXIT_PARTIAL;
    return 0;
  } finally {
    progress.stop();
    await backend.close();
  }
}
