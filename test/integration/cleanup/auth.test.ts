// relais cleanup through the registry's own auth: Docker-Hub-style Bearer tokens (distribution with
// auth.token and a token issuer) and htpasswd Basic auth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { startRegistry } from '../../peers/registry.js';
import { registryFetch } from '../../peers/registry-client.js';
import { run } from '../../peers/proc.js';
import { OciRegistry } from '../../../src/products/cleanup/oci-backend.js';
import { isoDaysAgo, pushImage } from './fixture.js';

const CLI = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));
const REPO = 'team/app';
const PASSWORD = 'pw-7f3a9c1e-never-print-me';

function noStack(s: string): void {
  assert.doesNotMatch(s, /^\s+at .+:\d+:\d+\)?$/m, `stack trace printed:\n${s}`);
}

void test('Bearer token registry: --password-stdin, delete scope from the challenge, secret never printed', async () => {
  const reg = await startRegistry({ auth: { kind: 'token', users: { ci: PASSWORD } }, deleteEnabled: true });
  try {
    const creds = { username: 'ci', password: PASSWORD };
    await pushImage(reg.url, REPO, 'app-aaaa0001', isoDaysAgo(40), 4096, creds);
    await pushImage(reg.url, REPO, 'app-aaaa0002', isoDaysAgo(30), 4096, creds);
    const newest = await pushImage(reg.url, REPO, 'app-aaaa0003', isoDaysAgo(1), 4096, creds);
    const token = reg.token;
    assert.ok(token);
    token.clearRequests();

    // Anonymous: the issuer grants pull only, so the plan works and the first delete is refused.
    const anon = await run(process.execPath, [CLI, 'cleanup', '--registry', reg.url, '--repo', REPO, '--keep-last', '1', '--max-delete-share', '1', '--apply'], {
      extraEnv: { RELAIS_REGISTRY_PASSWORD: '', RELAIS_REGISTRY_USERNAME: '' },
    });
    assert.equal(anon.code, 1, anon.stdout + anon.stderr);
    assert.match(anon.stdout, /app-aaaa0001 .*DELETE/);
    assert.match(anon.stderr, /^relais: registry .*: DELETE team\/app:app-aaaa000[12] answered 401/m);
    assert.match(anon.stderr, /^hint: pass --username with --password-stdin/m);
    noStack(anon.stderr);

    const wrong = await run(process.execPath, [CLI, 'cleanup', '--registry', reg.url, '--repo', REPO, '--keep-last', '1', '--username', 'ci', '--password-stdin'], { input: 'wrong\n' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /refused the credentials/);
    noStack(wrong.stderr);

    token.clearRequests();
    const r = await run(
      process.execPath,
      [CLI, 'cleanup', '--registry', reg.url, '--repo', REPO, '--keep-last', '1', '--max-delete-share', '1', '--username', 'ci', '--password-stdin', '--apply'],
      { input: `${PASSWORD}\n`, timeoutMs: 60_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /app-aaaa0001 .*DELETE\s+beyond last 1/);
    assert.match(r.stdout, /app-aaaa0003 .*KEEP\s+keep last 1/);
    assert.match(r.stdout, /deleted 2 tags \(throwaway\), 2 manifests by digest/);
    assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD), 'the password was printed');

    // The issuer saw the user's credentials and the scopes the registry asked for, delete included.
    const reqs = token.requests();
    assert.ok(reqs.every((q) => q.authorizedUser === 'ci'), JSON.stringify(reqs));
    assert.ok(reqs.some((q) => q.scopes.some((s) => s === `repository:${REPO}:delete`)), `no delete scope in ${JSON.stringify(reqs.map((q) => q.scope))}`);
    assert.ok(reqs.some((q) => q.scopes.some((s) => /^repository:team\/app:(pull,push|push,pull)$/.test(s))), 'no push scope (throw-away manifest)');
    // Tokens are reused: far fewer token requests than registry requests.
    assert.ok(reqs.length <= 6, `${reqs.length} token requests`);

    const tags = await registryFetch(`${reg.url}/v2/${REPO}/tags/list`, { creds });
    assert.deepEqual((JSON.parse(tags.body.toString()) as { tags: string[] }).tags, ['app-aaaa0003']);
    const head = await registryFetch(`${reg.url}/v2/${REPO}/manifests/app-aaaa0003`, { method: 'HEAD', creds, headers: { accept: newest.mediaType } });
    assert.equal(head.headers.get('docker-content-digest'), newest.digest);
  } finally {
    await reg.close();
  }
});

void test('htpasswd Basic auth from the environment', async () => {
  const users = { ci: PASSWORD };
  const reg = await startRegistry({ auth: { kind: 'htpasswd', users }, deleteEnabled: true });
  try {
    const creds = { username: 'ci', password: PASSWORD };
    const names = ['p-aaaa0001', 'p-aaaa0002', 'p-aaaa0003', 'p-aaaa0004', 'p-aaaa0005'];
    for (const [i, n] of names.entries()) await pushImage(reg.url, REPO, n, isoDaysAgo(10 - i), 1024, creds);

    reg.clearLog();
    const client = new OciRegistry({ url: reg.url, credentials: creds, tagsPageSize: 2 });
    try {
      assert.deepEqual((await client.listTags(REPO)).sort(), names);
    } finally {
      await client.close();
    }
    // distribution 2.8 ignores n= and sends every tag in one page (Link pagination: test/unit/cleanup/oci.test.ts).
    const pages = reg.accessLog().filter((e) => e.method === 'GET' && e.path === `/v2/${REPO}/tags/list` && e.status === 200);
    assert.equal(pages.length, 1);
    assert.match(pages[0]?.query ?? '', /^n=2$/);

    reg.clearLog();
    const r = await run(process.execPath, [CLI, 'cleanup', '--registry', reg.url, '--repo', REPO, '--keep-last', '2', '--json'], {
      extraEnv: { RELAIS_REGISTRY_USERNAME: 'ci', RELAIS_REGISTRY_PASSWORD: PASSWORD },
    });
    assert.equal(r.code, 2, r.stderr); // 3 of 5 would go: more than the default 50% limit
    const plan = JSON.parse(r.stdout) as { repositories: { aborted: string | null; entries: { tag: string; action: string }[] }[] };
    assert.match(plan.repositories[0]?.aborted ?? '', /would delete 3 of 5 tags/);
    assert.deepEqual(plan.repositories[0]?.entries.filter((e) => e.action === 'KEEP').map((e) => e.tag), ['p-aaaa0004', 'p-aaaa0005']);
    // Basic credentials are sent after the first challenge, not re-challenged on every request.
    assert.equal(reg.accessLog().filter((e) => e.status === 401).length, 1);
    assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD));
  } finally {
    await reg.close();
  }
});
