// Cleanup through GitLab's API (GitLab.com or self-managed): the project's container repositories
// (/projects/:id/registry/repositories), their tags and tag details (digest, created_at), single tag
// delete and the bulk delete endpoint, plus the project's branches for "the branch is gone".
// GitLab's API shows no manifests, so the digest graph is flat (tag -> digest); GitLab's registry
// deletes tags, not digests, so a shared image is never deleted through it.
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { errors, RelaisError } from '../../errors.js';
import { parseRetryAfter } from '../../policy/circuit-breaker.js';
import type { DeleteOutcome, Descriptor, FetchedManifest, ManifestRef, RegistryBackend, TagDetails } from '../../retention/registry-backend.js';
import type { LiveBranch } from '../../retention/families.js';
import { Limiter } from '../../retention/limit.js';
import { nextLink } from './oci-backend.js';
import { refSlug } from '../../gitlab-slug.js';

export interface GitLabOptions {
  readonly url: string;
  /** Numeric id or full path (group/project). */
  readonly project: string;
  readonly token: string;
  readonly concurrency?: number;
  readonly retries?: number;
  readonly retryBaseMs?: number;
  /** Use the bulk delete endpoint (asynchronous, once per hour per repository on GitLab.com). */
  readonly bulk?: boolean;
}

interface Res {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

interface GitLabRepository {
  id: number;
  name: string;
  path: string;
  location?: string;
}

function hdr(h: Res['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** An RE2/PCRE-safe regex that matches exactly these tag names (tags are [A-Za-z0-9_][A-Za-z0-9_.-]*). */
export function exactTagsRegex(tags: readonly string[]): string {
  return `^(?:${tags.map((t) => t.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')).join('|')})$`;
}

export class GitLabRegistry implements RegistryBackend {
  readonly description: string;
  readonly canReadManifests = false;
  readonly deleteTagsBulk: ((repo: string, tags: readonly string[]) => Promise<readonly string[]>) | undefined;
  private readonly api: URL;
  private readonly dispatcher = new Agent({ connections: 16 });
  private readonly limiter: Limiter;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private repos: Map<string, GitLabRepository> | undefined;

  constructor(private readonly opts: GitLabOptions) {
    const base = opts.url.replace(/\/+$/, '');
    this.api = new URL(`${base}/api/v4/projects/${encodeURIComponent(opts.project)}`);
    this.description = `GitLab project ${opts.project} at ${new URL(base).origin}`;
    this.limiter = new Limiter(opts.concurrency ?? 8);
    this.retries = opts.retries ?? 4;
    this.retryBaseMs = opts.retryBaseMs ?? 250;
    this.deleteTagsBulk = opts.bulk === true ? (repo, tags) => this.bulkDelete(repo, tags) : undefined;
  }

  private async send(method: string, target: URL, form?: URLSearchParams): Promise<Res> {
    const body = form?.toString();
    return this.limiter.run(async () => {
      for (let attempt = 0; ; attempt++) {
        let res: Res;
        try {
          const r = await request(target, {
            method: method as 'GET',
            headers: { 'private-token': this.opts.token, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
            body: body ?? null,
            dispatcher: this.dispatcher,
          });
          res = { status: r.statusCode, headers: r.headers, body: await r.body.text() };
        } catch (e) {
          if (attempt < this.retries) {
            await sleep(this.retryBaseMs * 2 ** attempt);
            continue;
          }
          throw errors.gitlabUnreachable(this.description, `${method} ${target.pathname}`, (e as { code?: string }).code ?? (e as Error).message);
        }
        if ((res.status === 429 || res.status >= 500) && attempt < this.retries) {
          await sleep(parseRetryAfter(hdr(res.headers, 'retry-after')) ?? this.retryBaseMs * 2 ** attempt);
          continue;
        }
        return res;
      }
    });
  }

  private fail(res: Res, what: string): RelaisError {
    let detail = res.body.slice(0, 200);
    try {
      const j = JSON.parse(res.body) as { message?: unknown; error?: unknown };
      detail = JSON.stringify(j.message ?? j.error ?? j);
    } catch {
      /* text */
    }
    const msg = `${this.description}: ${what} answered ${res.status} (${detail})`;
    if (res.status === 401) return errors.gitlabUnauthorized(msg);
    if (res.status === 403) return errors.gitlabDenied(msg);
    if (res.status === 404) return errors.gitlabNotFound(msg);
    return errors.gitlabFailed(msg);
  }

  private endpoint(path: string, query: Record<string, string> = {}): URL {
    const u = new URL(this.api.href + path);
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u;
  }

  /** GETs every page (GitLab paginates with x-next-page and Link). */
  private async all<T>(path: string, what: string): Promise<T[]> {
    const out: T[] = [];
    let next: URL | undefined = this.endpoint(path, { per_page: '100', page: '1' });
    for (let page = 0; next !== undefined && page < 10_000; page++) {
      const res = await this.send('GET', next);
      if (res.status !== 200) throw this.fail(res, what);
      out.push(...(JSON.parse(res.body) as T[]));
      const link = nextLink(hdr(res.headers, 'link'), next);
      const np = hdr(res.headers, 'x-next-page');
      if (link) next = link;
      else if (np !== undefined && np !== '') {
        next = new URL(next.href);
        next.searchParams.set('page', np);
      } else next = undefined;
    }
    return out;
  }

  private async repositories(): Promise<Map<string, GitLabRepository>> {
    if (this.repos) return this.repos;
    const list = await this.all<GitLabRepository>('/registry/repositories', 'listing container repositories');
    this.repos = new Map(list.map((r) => [r.path, r]));
    return this.repos;
  }

  private async repoId(repo: string): Promise<number> {
    const repos = await this.repositories();
    const r = repos.get(repo) ?? [...repos.values()].find((x) => x.location?.endsWith(`/${repo}`) === true);
    if (!r)
      throw errors.gitlabNoRepository(this.description, repo, [...repos.keys()].join(', ') || '(none)');
    return r.id;
  }

  async listRepositories(): Promise<string[]> {
    return [...(await this.repositories()).keys()].sort();
  }

  async listTags(repo: string): Promise<string[]> {
    const id = await this.repoId(repo);
    const tags = await this.all<{ name: string }>(`/registry/repositories/${id}/tags`, `listing tags of ${repo}`);
    return tags.map((t) => t.name);
  }

  async tagDetails(repo: string, tag: string): Promise<TagDetails | null> {
    const id = await this.repoId(repo);
    const res = await this.send('GET', this.endpoint(`/registry/repositories/${id}/tags/${encodeURIComponent(tag)}`));
    if (res.status === 404) return null;
    if (res.status !== 200) throw this.fail(res, `tag details of ${repo}:${tag}`);
    const j = JSON.parse(res.body) as { digest?: string; created_at?: string | null; total_size?: number };
    if (typeof j.digest !== 'string') throw this.fail(res, `tag details of ${repo}:${tag} (no digest)`);
    const t = typeof j.created_at === 'string' ? Date.parse(j.created_at) : NaN;
    return { digest: j.digest, created: Number.isNaN(t) ? null : new Date(t), ...(typeof j.total_size === 'number' ? { size: j.total_size } : {}) };
  }

  async deleteManifest(repo: string, ref: string): Promise<DeleteOutcome> {
    if (ref.includes(':')) return 'unsupported';
    const id = await this.repoId(repo);
    const res = await this.send('DELETE', this.endpoint(`/registry/repositories/${id}/tags/${encodeURIComponent(ref)}`));
    if (res.status === 200 || res.status === 202 || res.status === 204) return 'deleted';
    if (res.status === 404) return 'not-found';
    throw this.fail(res, `deleting tag ${repo}:${ref}`);
  }

  private async bulkDelete(repo: string, tags: readonly string[]): Promise<readonly string[]> {
    const id = await this.repoId(repo);
    // As in GitLab's documented example: form-encoded parameters on the DELETE.
    const form = new URLSearchParams({ name_regex_delete: exactTagsRegex(tags) });
    const res = await this.send('DELETE', this.endpoint(`/registry/repositories/${id}/tags`), form);
    if (res.status !== 202 && res.status !== 200) throw this.fail(res, `bulk delete in ${repo}`);
    // GitLab never deletes `latest` through this endpoint.
    return tags.filter((t) => t !== 'latest');
  }

  async liveBranches(): Promise<LiveBranch[]> {
    const list = await this.all<{ name: string; commit?: { id?: string } }>('/repository/branches', 'listing branches');
    return list.map((b) => ({ name: b.name, slug: refSlug(b.name), ...(typeof b.commit?.id === 'string' ? { commit: b.commit.id } : {}) }));
  }

  headManifest(): Promise<ManifestRef | null> {
    return Promise.resolve(null);
  }
  getManifest(): Promise<FetchedManifest | null> {
    return Promise.resolve(null);
  }
  getBlob(): Promise<Buffer | null> {
    return Promise.resolve(null);
  }
  referrers(): Promise<Descriptor[] | null> {
    return Promise.resolve(null);
  }
  putManifest(): Promise<string> {
    return Promise.reject(errors.gitlabPushUnsupported(this.description));
  }
  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
