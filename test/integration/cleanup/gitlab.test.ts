// The GitLab backend cannot be run against a real GitLab here: it is tested against a small HTTP
// server in this file that implements the documented endpoints it uses (Container registry API:
// list repositories, list tags with pagination, tag details, delete a tag, bulk delete; Branches
// API), with GitLab's headers (x-next-page, Link) and PRIVATE-TOKEN authentication. The CLI runs as
// a real subprocess against it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { run } from '../../peers/proc.js';

const CLI = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));
const TOKEN = 'glpat-test-4b1d-never-print';
const DAY = 86_400_000;

interface Tag {
  name: string;
  digest: string;
  created: string;
}

interface FakeGitLab {
  url: string;
  tags: Map<number, Map<string, Tag>>;
  log: string[];
  bulk: { repo: number; params: Record<string, string> }[];
  close: () => Promise<void>;
}

const digestOf = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const ago = (days: number): string => new Date(Date.now() - days * DAY).toISOString();

async function startGitLab(): Promise<FakeGitLab> {
  const repos = [
    { id: 11, name: '', path: 'group/app', project_id: 7, location: 'registry.example.com/group/app' },
    { id: 12, name: 'cache', path: 'group/app/cache', project_id: 7, location: 'registry.example.com/group/app/cache' },
  ];
  const tags = new Map<number, Map<string, Tag>>([
    [11, new Map()],
    [12, new Map()],
  ]);
  const add = (repo: number, name: string, days: number, image = name): void => {
    tags.get(repo)?.set(name, { name, digest: digestOf(image), created: ago(days) });
  };
  add(11, 'main', 1, 'build-0');
  add(11, 'latest', 1, 'build-0');
  add(11, 'v1.0.0', 300);
  add(11, 'feature-x', 3);
  add(11, 'feature-y', 2);
  // 105 builds of main: more than one page of 100.
  for (let i = 0; i < 105; i++) add(11, `main-${i.toString(16).padStart(8, '0')}`, i + 1, `build-${i}`);
  for (let i = 0; i < 4; i++) add(12, createHash('sha256').update(`key${i}`).digest('hex'), i * 10 + 1);
  const branches = [
    { name: 'main', commit: { id: 'a'.repeat(40) } },
    { name: 'feature/y', commit: { id: 'b'.repeat(40) } },
  ];
  const log: string[] = [];
  const bulk: FakeGitLab['bulk'] = [];
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const paginate = (res: ServerResponse, u: URL, items: unknown[]): void => {
    const per = Math.min(Number(u.searchParams.get('per_page') ?? '20'), 100);
    const page = Number(u.searchParams.get('page') ?? '1');
    const slice = items.slice((page - 1) * per, page * per);
    const more = page * per < items.length;
    const headers: Record<string, string> = { 'x-page': String(page), 'x-per-page': String(per), 'x-total': String(items.length), 'x-next-page': more ? String(page + 1) : '' };
    if (more) {
      const next = new URL(u.href);
      next.searchParams.set('page', String(page + 1));
      headers.link = `<${next.href}>; rel="next"`;
    }
    json(res, 200, slice, headers);
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', `http://${req.headers.host ?? 'x'}`);
      log.push(`${req.method ?? ''} ${u.pathname}`);
      if (req.headers['private-token'] !== TOKEN) return json(res, 401, { message: '401 Unauthorized' });
      const prefix = '/api/v4/projects/group%2Fapp';
      if (!u.pathname.startsWith(prefix)) return json(res, 404, { message: '404 Project Not Found' });
      const p = u.pathname.slice(prefix.length);
      if (req.method === 'GET' && p === '/registry/repositories') return paginate(res, u, repos);
      if (req.method === 'GET' && p === '/repository/branches') return paginate(res, u, branches);
      const m = /^\/registry\/repositories\/(\d+)\/tags(?:\/([^/]+))?$/.exec(p);
      const repoTags = m ? tags.get(Number(m[1])) : undefined;
      if (!m || !repoTags) return json(res, 404, { message: '404 Repository Not Found' });
      const tagName = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
      if (req.method === 'GET' && tagName === undefined)
        return paginate(res, u, [...repoTags.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map((t) => ({ name: t.name, path: `group/app:${t.name}`, location: `registry.example.com/group/app:${t.name}` })));
      if (req.method === 'GET' && tagName !== undefined) {
        const t = repoTags.get(tagName);
        if (!t) return json(res, 404, { message: '404 Tag Not Found' });
        return json(res, 200, { name: t.name, path: `group/app:${t.name}`, revision: t.digest.slice(7), short_revision: t.digest.slice(7, 16), digest: t.digest, created_at: t.created, total_size: 1234 });
      }
      if (req.method === 'DELETE' && tagName !== undefined) {
        if (!repoTags.delete(tagName)) return json(res, 404, { message: '404 Tag Not Found' });
        return json(res, 200, {});
      }
      if (req.method === 'DELETE' && tagName === undefined) {
        // Bulk delete: asynchronous on GitLab; applied at once here. `latest` is never deleted.
        const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
        bulk.push({ repo: Number(m[1]), params });
        const re = new RegExp(params.name_regex_delete ?? '^$');
        for (const name of [...repoTags.keys()]) if (name !== 'latest' && re.test(name)) repoTags.delete(name);
        return json(res, 202, {});
      }
      return json(res, 405, { message: '405 Method Not Allowed' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    tags,
    log,
    bulk,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Plan {
  repositories: { repo: string; entries: { tag: string; action: string; rule: string; kind: string; family: string | null }[]; applied: { untagged: string[]; method: string } | null }[];
}

const ARGS = ['--gitlab-project', 'group/app', '--live-branches', 'gitlab', '--default-branch', 'main', '--keep-last', '5', '--max-delete-share', '1', '--json'];

void test('GitLab API backend: every repository of the project, branches from the API, per-tag delete', async () => {
  const gl = await startGitLab();
  try {
    const env = { RELAIS_GITLAB_TOKEN: TOKEN };
    const dry = await run(process.execPath, [CLI, 'cleanup', '--registry', gl.url, ...ARGS], { extraEnv: env });
    assert.equal(dry.code, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout) as Plan;
    assert.deepEqual(plan.repositories.map((r) => r.repo), ['group/app', 'group/app/cache']);
    const app = Object.fromEntries((plan.repositories[0]?.entries ?? []).map((e) => [e.tag, `${e.action} ${e.rule}`]));
    assert.equal(app.main, 'KEEP protected: default branch');
    assert.equal(app.latest, 'KEEP protected: latest');
    assert.equal(app['v1.0.0'], 'KEEP protected: semver');
    assert.equal(app['feature-x'], 'DELETE branch gone');
    assert.equal(app['feature-y'], 'KEEP keep last 5');
    const mainBuilds = Object.entries(app).filter(([t]) => t.startsWith('main-'));
    assert.equal(mainBuilds.length, 105, 'both pages of tags were read');
    assert.deepEqual(mainBuilds.filter(([, d]) => d.startsWith('KEEP')).map(([t]) => t), ['main-00000000', 'main-00000001', 'main-00000002', 'main-00000003', 'main-00000004']);
    const cache = plan.repositories[1]?.entries ?? [];
    assert.ok(cache.every((e) => e.kind === 'kaniko-cache' && e.family === 'kaniko-cache'));
    assert.deepEqual(cache.map((e) => e.action).sort(), ['KEEP', 'KEEP', 'KEEP', 'KEEP']);
    assert.ok(!gl.log.some((l) => l.startsWith('DELETE')), 'the dry run deleted something');
    assert.ok(gl.log.includes('GET /api/v4/projects/group%2Fapp/repository/branches'));

    const applied = await run(process.execPath, [CLI, 'cleanup', '--registry', gl.url, '--repo', 'group/app', ...ARGS, '--apply'], { extraEnv: env });
    assert.equal(applied.code, 0, applied.stderr);
    const res = (JSON.parse(applied.stdout) as Plan).repositories[0]?.applied;
    assert.equal(res?.method, 'tag-delete');
    assert.equal(res.untagged.length, 101);
    const left = [...(gl.tags.get(11)?.keys() ?? [])].sort();
    assert.deepEqual(left, ['feature-y', 'latest', 'main', 'main-00000000', 'main-00000001', 'main-00000002', 'main-00000003', 'main-00000004', 'v1.0.0']);
    assert.equal(gl.log.filter((l) => l.startsWith('DELETE /api/v4/projects/group%2Fapp/registry/repositories/11/tags/')).length, 101);
    assert.ok(!applied.stdout.includes(TOKEN) && !applied.stderr.includes(TOKEN));

    const bad = await run(process.execPath, [CLI, 'cleanup', '--registry', gl.url, ...ARGS], { extraEnv: { RELAIS_GITLAB_TOKEN: 'nope' } });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /answered 401/);
    assert.match(bad.stderr, /^hint: set RELAIS_GITLAB_TOKEN/m);
  } finally {
    await gl.close();
  }
});

void test('GitLab bulk delete: one call per repository with a regex matching exactly the planned tags', async () => {
  const gl = await startGitLab();
  try {
    const r = await run(process.execPath, [CLI, 'cleanup', '--registry', gl.url, '--repo', 'group/app', ...ARGS, '--apply', '--gitlab-bulk', '--password-stdin'], { input: `${TOKEN}\n` });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(gl.bulk.length, 1);
    const re = new RegExp(gl.bulk[0]?.params.name_regex_delete ?? '');
    assert.ok(re.test('feature-x') && re.test('main-00000068') && !re.test('main-00000004') && !re.test('main') && !re.test('feature-y'));
    assert.ok(!re.test('main-0000006') && !re.test('xfeature-x'), 'the regex is anchored');
    assert.equal([...(gl.tags.get(11)?.keys() ?? [])].length, 9);
  } finally {
    await gl.close();
  }
});
