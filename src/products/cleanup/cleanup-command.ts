// `relais cleanup`: tag retention for container registries that knows about branches, digests and caches.
import { createInterface } from 'node:readline/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { printError } from '../../cli/output.js';
import { errors } from '../../errors.js';
import { runCleanup, type CleanupOptions } from './cleanup-run.js';

interface RawOptions {
  registry?: string;
  repo?: string[];
  policy?: string;
  apply?: boolean;
  json?: boolean;
  yes?: boolean;
  keepLast?: number;
  olderThan?: string;
  protect?: string[];
  liveBranches?: string;
  defaultBranch?: string;
  maxDeleteShare?: number;
  username?: string;
  passwordStdin?: boolean;
  concurrency: number;
  gitlabProject?: string;
  gitlabBulk?: boolean;
}

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

function positiveInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${name} must be a whole number of at least 1`);
    return Number(v);
  };
}

/** "0.5", "50%" -> 0.5 */
export function parseShare(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(v);
  if (!m) throw new InvalidArgumentError('give a fraction like 0.5 or a percentage like 50%');
  const x = Number(m[1]) / (m[2] === '%' ? 100 : 1);
  if (x < 0 || x > 1) throw new InvalidArgumentError('must be between 0 and 1 (or 0% and 100%)');
  return x;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(question);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

export function registerCleanupCommand(program: Command): void {
  program
    .command('cleanup')
    .description('Plan (and with --apply, carry out) tag retention in a registry: per-branch families, digest-safe deletes, cache images')
    .option('--registry <url>', 'registry base URL, e.g. https://registry.example.com (with --gitlab-project: the GitLab URL)')
    .addOption(new Option('--repo <name>', 'repository to clean, e.g. team/app; repeatable (GitLab: default all of the project)').argParser(collect))
    .option('--policy <file>', 'YAML policy: rules in priority order, protections, limits (see docs/cleanup.md)')
    .option('--apply', 'delete the DELETE tags (default: print the plan and change nothing)')
    .option('--json', 'print the plan (and results) as JSON for scripts')
    .option('-y, --yes', 'do not ask for confirmation (it is only asked when stdin is a terminal)')
    .option('--keep-last <n>', 'keep the N newest images of each tag family (branch); with --older-than only older ones go', positiveInt('--keep-last'))
    .option('--older-than <duration>', 'delete images older than this, e.g. 30d, 12h, 2w (by the config blob\'s created)')
    .addOption(new Option('--protect <regex>', 'never delete tags matching this; repeatable (latest, semver and the default branch are protected already)').argParser(collect))
    .option('--live-branches <source>', 'branches that exist: FILE (one per line), git:REMOTE (git ls-remote --heads) or gitlab; tags of other branches are deleted')
    .option('--default-branch <name>', 'the default branch: its slug tag is protected')
    .option('--max-delete-share <share>', 'abort a repository\'s plan if more than this share of its tags would go (default 0.5)', parseShare)
    .option('--username <user>', 'registry user (or RELAIS_REGISTRY_USERNAME)')
    .option('--password-stdin', 'read the password (GitLab: the token) from stdin (or RELAIS_REGISTRY_PASSWORD / RELAIS_GITLAB_TOKEN)')
    .option('--concurrency <n>', 'requests in flight at most', positiveInt('--concurrency'), 8)
    .option('--gitlab-project <id>', 'use GitLab\'s API for this project (numeric id or group/project) instead of the registry API')
    .option('--gitlab-bulk', 'GitLab: delete with the bulk endpoint (asynchronous; GitLab allows it once per hour per repository)')
    .addHelpText(
      'after',
      `
How tags are judged (first decision wins):
  1. protected: latest, semver (v1.2.3, 1.2), the default branch's slug, --protect patterns: KEEP
  2. images without a trustworthy created date (missing or 1970): KEEP (policy undated: keep|delete|rules)
  3. the policy's rules in priority order, then the flags: --live-branches (branch gone: DELETE),
     --keep-last N (KEEP the N newest images per family), --older-than D (DELETE older ones)
  4. anything else: KEEP (policy default)
  A tag family is a branch: its CI_COMMIT_REF_SLUG tag, SHA tags of the same image or of the branch's
  head commit, cache-<slug> / <slug>-cache tags. Safety: a repository never ends with zero tags, a plan
  deleting more than --max-delete-share of the tags is aborted, and an image a kept tag still reaches
  (same digest, index child, referrer) is never deleted: that tag is only untagged.

Exit codes: 0 done, 1 error, 2 a safety limit stopped a plan, 3 some deletions failed.

Examples:
  relais cleanup --registry https://registry.example.com --repo team/app --keep-last 5 --older-than 30d
  relais cleanup --registry https://registry.example.com --repo team/app \\
    --live-branches git:origin --default-branch main --keep-last 3 --apply
  relais cleanup --registry https://registry.example.com --repo team/app --policy cleanup.yaml --json
  echo "$GITLAB_TOKEN" | relais cleanup --registry https://gitlab.example.com --gitlab-project group/app \\
    --password-stdin --live-branches gitlab --keep-last 5
After --apply on distribution, run its garbage collector (registry read-only or stopped) to free the space:
  registry garbage-collect /etc/docker/registry/config.yml`,
    )
    .action(async (raw: RawOptions) => {
      try {
        if (raw.registry === undefined) throw errors.cleanupRegistryMissing();
        const stdinIsTTY = Boolean(process.stdin.isTTY as boolean | undefined);
        if (raw.passwordStdin === true && stdinIsTTY && raw.apply === true && raw.yes !== true)
          throw errors.cleanupPasswordStdinTty();
        const secret = raw.passwordStdin === true ? await readStdin() : undefined;
        const gitlab = raw.gitlabProject !== undefined;
        const env = (name: string): string | undefined => (process.env[name] === '' ? undefined : process.env[name]);
        const username = raw.username ?? env('RELAIS_REGISTRY_USERNAME');
        const password = gitlab ? undefined : (secret ?? env('RELAIS_REGISTRY_PASSWORD'));
        if (!gitlab && password !== undefined && username === undefined)
          throw errors.cleanupPasswordWithoutUser();
        const opts: CleanupOptions = {
          registry: raw.registry,
          repos: raw.repo ?? [],
          policyFile: raw.policy,
          apply: raw.apply === true,
          json: raw.json === true,
          yes: raw.yes === true,
          ...(raw.keepLast !== undefined ? { keepLast: raw.keepLast } : {}),
          ...(raw.olderThan !== undefined ? { olderThan: raw.olderThan } : {}),
          ...(raw.protect !== undefined ? { protect: raw.protect } : {}),
          ...(raw.liveBranches !== undefined ? { liveBranches: raw.liveBranches } : {}),
          ...(raw.defaultBranch !== undefined ? { defaultBranch: raw.defaultBranch } : {}),
          ...(raw.maxDeleteShare !== undefined ? { maxDeleteShare: raw.maxDeleteShare } : {}),
          username,
          password,
          concurrency: raw.concurrency,
          gitlabProject: raw.gitlabProject,
          gitlabToken: gitlab ? (secret ?? env('RELAIS_GITLAB_TOKEN')) : undefined,
          gitlabBulk: raw.gitlabBulk === true,
        };
        if (!gitlab && opts.repos.length === 0) throw errors.cleanupNoRepository();
        process.exitCode = await runCleanup(opts, {
          stdout: process.stdout,
          stderr: process.stderr,
          stdinIsTTY: stdinIsTTY && raw.passwordStdin !== true,
          confirm,
        });
      } catch (e) {
        printError(e);
        process.exitCode = 1;
      }
    });
}
