// Live branches: a file (one branch per line, or `git ls-remote` output), `git ls-remote --heads REMOTE`,
// or the GitLab API. Each becomes { name, slug (CI_COMMIT_REF_SLUG), commit when known }.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { errors } from '../errors.js';
import type { LiveBranch } from './families.js';
import { branchName, refSlug } from '../gitlab-slug.js';

const execFileP = promisify(execFile);

/** Parses a branch list: plain names, or `<sha>\trefs/heads/<name>` lines; blank lines and # comments skipped. */
export function parseBranchList(text: string): LiveBranch[] {
  const out = new Map<string, LiveBranch>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([0-9a-f]{40}|[0-9a-f]{64})\s+(\S+)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) {
      if (!m[2].startsWith('refs/heads/')) continue;
      const name = branchName(m[2]);
      out.set(name, { name, slug: refSlug(name), commit: m[1] });
    } else {
      const name = branchName(line);
      out.set(name, { name, slug: refSlug(name) });
    }
  }
  return [...out.values()];
}

export async function gitLsRemote(remote: string, cwd?: string): Promise<LiveBranch[]> {
  try {
    const { stdout } = await execFileP('git', ['ls-remote', '--heads', remote], {
      maxBuffer: 64 * 1024 * 1024,
      timeout: 120_000,
      ...(cwd !== undefined ? { cwd } : {}),
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0' },
    });
    return parseBranchList(stdout);
  } catch (e) {
    const err = e as { stderr?: string; code?: string | number };
    throw errors.cleanupGitFailed(remote, (err.stderr ?? String(err.code ?? e)).trim());
  }
}

/** Loads live branches from a --live-branches value; `gitlab` is resolved by the caller. */
export async function loadLiveBranches(spec: string, cwd?: string): Promise<LiveBranch[]> {
  if (spec.startsWith('git:')) {
    const remote = spec.slice(4);
    if (remote === '') throw errors.cleanupGitNoRemote();
    const heads = await gitLsRemote(remote, cwd);
    if (heads.length === 0)
      throw errors.cleanupGitNoBranch(remote);
    return heads;
  }
  let text: string;
  try {
    text = await readFile(spec, 'utf8');
  } catch (e) {
    throw errors.cleanupBranchesUnreadable(spec, (e as NodeJS.ErrnoException).code ?? 'error');
  }
  const branches = parseBranchList(text);
  if (branches.length === 0)
    throw errors.cleanupBranchesEmpty(spec);
  return branches;
}
