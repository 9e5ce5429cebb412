// The pure half of `relais ci build`: which GitLab variables it needs, which docker
// commands each mode runs, and what docker's output says about the cache.

import type { CacheMode } from './gitlab-yaml.js';
import { refSlug } from '../../gitlab-slug.js';

export interface CiVariable {
  readonly name: string;
  readonly what: string;
  readonly example: string;
}

export const REQUIRED_VARIABLES: readonly CiVariable[] = [
  { name: 'CI_REGISTRY_IMAGE', what: "the project's image repository", example: 'registry.example.com/group/project' },
  { name: 'CI_COMMIT_REF_NAME', what: 'the branch or tag being built', example: 'feature/login' },
  { name: 'CI_COMMIT_REF_SLUG', what: 'the branch name as an image tag', example: 'feature-login' },
  { name: 'CI_COMMIT_SHA', what: 'the commit being built', example: '0123456789abcdef0123456789abcdef01234567' },
  { name: 'CI_DEFAULT_BRANCH', what: "the project's default branch (its image seeds new branches)", example: 'main' },
];

export const LOGIN_VARIABLES: readonly CiVariable[] = [
  { name: 'CI_REGISTRY', what: 'the registry to log in to', example: 'registry.example.com' },
  { name: 'CI_JOB_TOKEN', what: "the job's token (password for gitlab-ci-token)", example: '<a personal access token>' },
];

export interface CiContext {
  readonly image: string;
  readonly refName: string;
  readonly refSlug: string;
  readonly sha: string;
  readonly defaultBranch: string;
  readonly defaultSlug: string;
  /** Undefined when login is off. */
  readonly login?: { readonly registry: string; readonly user: string; readonly password: string };
}

export type CiContextResult =
  | { readonly ok: true; readonly context: CiContext }
  | { readonly ok: false; readonly missing: readonly CiVariable[]; readonly inCi: boolean };

/** Reads GitLab's predefined variables from an environment. */
export function readCiContext(env: Readonly<Record<string, string | undefined>>, login: boolean): CiContextResult {
  const needed = login ? [...REQUIRED_VARIABLES, ...LOGIN_VARIABLES] : REQUIRED_VARIABLES;
  const missing = needed.filter((v) => (env[v.name] ?? '') === '');
  if (missing.length > 0) return { ok: false, missing, inCi: env['GITLAB_CI'] === 'true' || env['CI'] === 'true' };
  const get = (name: string): string => env[name] ?? '';
  const defaultBranch = get('CI_DEFAULT_BRANCH');
  return {
    ok: true,
    context: {
      image: get('CI_REGISTRY_IMAGE'),
      refName: get('CI_COMMIT_REF_NAME'),
      refSlug: get('CI_COMMIT_REF_SLUG'),
      sha: get('CI_COMMIT_SHA'),
      defaultBranch,
      defaultSlug: refSlug(defaultBranch),
      ...(login
        ? { login: { registry: get('CI_REGISTRY'), user: env['CI_REGISTRY_USER'] || 'gitlab-ci-token', password: get('CI_JOB_TOKEN') } }
        : {}),
    },
  };
}

/** What `relais ci build` says when variables are missing. */
export function explainMissing(missing: readonly CiVariable[], inCi: boolean): string {
  const lines = [
    inCi
      ? 'relais ci build: GitLab did not set these variables for this job:'
      : 'relais ci build runs inside a GitLab CI job and reads its predefined variables; these are not set:',
  ];
  const width = Math.max(...missing.map((v) => v.name.length));
  for (const v of missing) lines.push(`  ${v.name.padEnd(width)}  ${v.what} (e.g. ${v.example})`);
  if (!inCi) {
    lines.push(
      'To try it outside CI, set them yourself, e.g.:',
      `  ${missing.map((v) => `${v.name}=${shellWord(v.example)}`).join(' ')} relais ci build`,
    );
  }
  if (missing.some((v) => LOGIN_VARIABLES.includes(v))) {
    lines.push('Or pass --no-login when docker is already logged in to the registry.');
  }
  return lines.join('\n');
}

function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@-]+$/.test(s) ? s : `'${s}'`;
}

export type Phase = 'login' | 'pull' | 'build' | 'push';

export interface DockerStep {
  readonly phase: Phase;
  readonly args: readonly string[];
  /** A failure is expected and harmless (cache source absent). */
  readonly tolerateFailure?: boolean;
  /** Text piped to docker's stdin (the password for login). */
  readonly stdin?: string;
  /** For pulls: which cache source this is. */
  readonly source?: 'branch' | 'default-branch';
  /** For pushes: the reference pushed. */
  readonly ref?: string;
}

export interface BuildPlanOptions {
  readonly mode: CacheMode;
  /** Extra `docker build` arguments; the last one is the context (default "."). */
  readonly buildArgs: readonly string[];
  /** registry mode: a buildkitd.toml (e.g. with the Docker Hub mirror) for the buildx builder. */
  readonly buildkitdConfig?: string;
}

/** The docker commands of one build, in order. */
export function planBuild(ctx: CiContext, options: BuildPlanOptions): DockerStep[] {
  const steps: DockerStep[] = [];
  const branchRef = `${ctx.image}:${ctx.refSlug}`;
  const defaultRef = `${ctx.image}:${ctx.defaultSlug}`;
  const shaRef = `${ctx.image}:${ctx.sha}`;
  const latestRef = `${ctx.image}:latest`;
  const onDefault = ctx.refName === ctx.defaultBranch;
  const args = options.buildArgs.length === 0 ? ['.'] : [...options.buildArgs];
  const sameRef = branchRef === defaultRef;

  if (ctx.login !== undefined) {
    steps.push({
      phase: 'login',
      args: ['login', '--username', ctx.login.user, '--password-stdin', ctx.login.registry],
      stdin: ctx.login.password,
    });
  }
  if (options.mode === 'inline') {
    steps.push({ phase: 'pull', args: ['pull', branchRef], tolerateFailure: true, source: 'branch' });
    if (!sameRef) steps.push({ phase: 'pull', args: ['pull', defaultRef], tolerateFailure: true, source: 'default-branch' });
    steps.push({
      phase: 'build',
      args: [
        'build',
        '--build-arg',
        'BUILDKIT_INLINE_CACHE=1',
        '--cache-from',
        branchRef,
        ...(sameRef ? [] : ['--cache-from', defaultRef]),
        '--tag',
        branchRef,
        '--tag',
        shaRef,
        ...args,
      ],
    });
    steps.push({ phase: 'push', args: ['push', branchRef], ref: branchRef });
    steps.push({ phase: 'push', args: ['push', shaRef], ref: shaRef });
    if (onDefault) {
      steps.push({ phase: 'push', args: ['tag', shaRef, latestRef] });
      steps.push({ phase: 'push', args: ['push', latestRef], ref: latestRef });
    }
  } else {
    const cacheRef = (slug: string): string => `type=registry,ref=${ctx.image}:cache-${slug}`;
    steps.push({
      phase: 'build',
      args: [
        'buildx',
        'create',
        '--use',
        '--driver',
        'docker-container',
        ...(options.buildkitdConfig === undefined ? [] : ['--config', options.buildkitdConfig]),
      ],
    });
    steps.push({
      phase: 'build',
      args: [
        'buildx',
        'build',
        '--push',
        '--cache-to',
        `${cacheRef(ctx.refSlug)},mode=max`,
        '--cache-from',
        cacheRef(ctx.refSlug),
        ...(sameRef ? [] : ['--cache-from', cacheRef(ctx.defaultSlug)]),
        '--tag',
        branchRef,
        '--tag',
        shaRef,
        ...args,
      ],
    });
    if (onDefault) {
      steps.push({ phase: 'push', args: ['buildx', 'imagetools', 'create', '--tag', latestRef, shaRef], ref: latestRef });
    }
  }
  return steps;
}

export interface BuildOutputStats {
  readonly builder: 'classic' | 'buildkit' | 'unknown';
  /** Layer steps (FROM excluded). */
  readonly steps: number;
  readonly cached: number;
  /** Labels of the steps that ran (not cached), in order. */
  readonly rebuilt: readonly string[];
  /** Labels of the cached steps, in order. */
  readonly cachedSteps: readonly string[];
}

const classicStepRe = /^Step (\d+)\/(\d+) : (.*)$/;
const buildkitStepRe = /^#(\d+) \[(?:[^\]]*? )?(\d+)\/(\d+)\] (.*)$/;
const buildkitCachedRe = /^#(\d+) CACHED\s*$/;

/**
 * Counts cached and rebuilt steps in `docker build` output: the classic builder prints
 * `Step i/n : ...` then ` ---> Using cache`; BuildKit's plain progress prints `#id [i/n] ...`
 * then `#id CACHED`. FROM steps are not counted (they pull, they do not build).
 */
export function parseBuildOutput(output: string): BuildOutputStats {
  const lines = output.split(/\r?\n/);
  if (lines.some((l) => classicStepRe.test(l))) {
    const cachedSteps: string[] = [];
    const rebuilt: string[] = [];
    let current: { label: string; cached: boolean } | undefined;
    const flush = (): void => {
      if (current !== undefined) (current.cached ? cachedSteps : rebuilt).push(current.label);
      current = undefined;
    };
    for (const l of lines) {
      const m = classicStepRe.exec(l);
      if (m !== null) {
        flush();
        const label = m[3] ?? '';
        if (!/^FROM\s/i.test(label)) current = { label, cached: false };
      } else if (current !== undefined && /^ ---> Using cache\s*$/.test(l)) {
        current.cached = true;
      }
    }
    flush();
    return { builder: 'classic', steps: cachedSteps.length + rebuilt.length, cached: cachedSteps.length, rebuilt, cachedSteps };
  }
  const labels = new Map<string, string>();
  const cachedIds = new Set<string>();
  for (const l of lines) {
    const m = buildkitStepRe.exec(l);
    if (m !== null) {
      const label = m[4] ?? '';
      if (!/^FROM\s/i.test(label) && m[1] !== undefined && !labels.has(m[1])) labels.set(m[1], label);
      continue;
    }
    const c = buildkitCachedRe.exec(l);
    if (c?.[1] !== undefined) cachedIds.add(c[1]);
  }
  if (labels.size === 0) return { builder: 'unknown', steps: 0, cached: 0, rebuilt: [], cachedSteps: [] };
  const cachedSteps: string[] = [];
  const rebuilt: string[] = [];
  for (const [id, label] of labels) (cachedIds.has(id) ? cachedSteps : rebuilt).push(label);
  return { builder: 'buildkit', steps: labels.size, cached: cachedSteps.length, rebuilt, cachedSteps };
}

/** Short layer ids that `docker pull` downloaded (not "Already exists"). */
export function pulledLayerIds(output: string): string[] {
  const ids: string[] = [];
  for (const l of output.split(/\r?\n/)) {
    const m = /^([0-9a-f]{12}): Pull complete\s*$/.exec(l);
    if (m?.[1] !== undefined && !ids.includes(m[1])) ids.push(m[1]);
  }
  return ids;
}

/** Short layer ids (of diff ids) that `docker push` uploaded (not "Layer already exists"). */
export function pushedLayerIds(output: string): string[] {
  const ids: string[] = [];
  for (const l of output.split(/\r?\n/)) {
    const m = /^([0-9a-f]{12}): Pushed\s*$/.exec(l);
    if (m?.[1] !== undefined && !ids.includes(m[1])) ids.push(m[1]);
  }
  return ids;
}

export interface PhaseTiming {
  readonly phase: Phase;
  readonly ms: number;
}

export interface BuildSummary {
  readonly mode: CacheMode;
  /** The cache sources that existed (pulled), in order of preference. */
  readonly cacheSources: readonly { ref: string; source: 'branch' | 'default-branch'; found: boolean }[];
  readonly stats: BuildOutputStats;
  /** Undefined when unknown (e.g. the registry could not be asked). */
  readonly bytesPulled: number | undefined;
  readonly bytesPushed: number | undefined;
  readonly timings: readonly PhaseTiming[];
  readonly pushed: readonly string[];
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i] ?? 'TiB'}`;
}

/** The short summary printed at the end of `relais ci build`. */
export function formatSummary(s: BuildSummary): string {
  const lines = ['', `relais ci build summary (${s.mode} cache)`];
  const found = s.cacheSources.filter((c) => c.found);
  if (s.mode === 'registry') lines.push('  cache source:  registry cache tags (see buildx output)');
  else if (found.length === 0) lines.push('  cache source:  none found (first build of this branch and of the default branch)');
  else lines.push(`  cache source:  ${found.map((c) => `${c.ref} (${c.source === 'branch' ? 'this branch' : 'default branch'})`).join(', ')}`);
  const st = s.stats;
  if (st.builder === 'unknown') lines.push('  cached steps:  unknown (no step lines in the build output)');
  else {
    lines.push(`  cached steps:  ${st.cached} of ${st.steps} (${st.builder === 'classic' ? 'classic builder' : 'BuildKit'})`);
    if (st.rebuilt.length > 0 && st.cached > 0) lines.push(`  rebuilt from:  ${st.rebuilt[0] ?? ''}`);
  }
  lines.push(`  pulled:        ${s.bytesPulled === undefined ? 'unknown' : formatBytes(s.bytesPulled)}`);
  lines.push(`  pushed:        ${s.bytesPushed === undefined ? 'unknown' : formatBytes(s.bytesPushed)}${s.pushed.length > 0 ? ` (${s.pushed.join(', ')})` : ''}`);
  const byPhase = new Map<Phase, number>();
  for (const t of s.timings) byPhase.set(t.phase, (byPhase.get(t.phase) ?? 0) + t.ms);
  lines.push(`  time:          ${[...byPhase].map(([p, ms]) => `${p} ${(ms / 1000).toFixed(1)}s`).join(', ')}`);
  return lines.join('\n');
}
