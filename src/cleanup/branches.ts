// Live branches: a file (one branch per line, or `git ls-remote` output), `git ls-remote --heads REMOTE`,
// or the GitLab API. Each becomes { name, slug (CI_COMMIT_REF_SLUG), commit when known }.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { RelaisError } from '../errors.js';
import type { LiveBranch } from './families.js';
import { branchName, refSlug } from '../gitlab/slug.js';

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
    throw new RelaisError('CONFIG_INVALID', `git ls-remote --heads ${remote} failed: ${(err.stderr ?? String(err.code ?? e)).trim()}`, {
      status: 400,
      hint: 'check the remote name or URL given to --live-branches git:REMOTE (run it in the repository, or give a URL)',
    });
  }
}

/** Loads live branches from a --live-branches value; `gitlab` is resolved by the caller. */
export async function loadLiveBranches(spec: string, cwd?: string): Promise<LiveBranch[]> {
  if (spec.startsWith('git:')) {
    const remote = spec.slice(4);
    if (remote === '') throw new RelaisError('CONFIG_INVALID', '--live-branches git: needs a remote, e.g. git:origin', { status: 400 });
    const heads = await gitLsRemote(remote, cwd);
    if (heads.length === 0)
      throw new RelaisError('CONFIG_INVALID', `git ls-remote --heads ${remote} lists no branch`, {
        status: 400,
        hint: 'an empty list would mark every branch as gone; refusing',
      });
    return heads;
  }
  let text: string;
  try {
    text = await readFile(spec, 'utf8');
  } catch (e) {
    throw new RelaisError('CONFIG_INVALID', `cannot read the live branches file ${spec} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, {
      status: 400,
      hint: 'give a file with one branch name per line, or git:REMOTE',
    });
  }
  const branches = parseBranchList(text);
  if (branches.length === 0)
    throw new RelaisError('CONFIG_INVALID', `the live branches file ${spec} lists no branch`, {
      status: 400,
      hint: 'an empty list would mark every branch as gone; refusing',
    });
  return branches;
}
