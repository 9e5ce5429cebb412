// On a terminal (a pseudo-terminal from util-linux `script`): a progress bar on long runs, and
// --apply asks before deleting; "n" deletes nothing, "y" deletes. Without a terminal (every other
// test) there is neither prompt nor bar.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { startRegistry } from '../../peers/registry.js';
import { registryFetch } from '../../peers/registry-client.js';
import { run } from '../../peers/proc.js';
import { isoDaysAgo, pushImage } from './fixture.js';

const CLI = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));

void test('a terminal gets a progress bar and a confirmation prompt', async () => {
  const reg = await startRegistry({ deleteEnabled: true });
  try {
    for (let i = 0; i < 24; i++) await pushImage(reg.url, 'x/y', `b-${String(i).padStart(8, '0')}`, isoDaysAgo(i + 1), 256);
    const cmd = [process.execPath, CLI, 'cleanup', '--registry', reg.url, '--repo', 'x/y', '--keep-last', '20', '--apply'].join(' ');
    const tags = async (): Promise<number> => (JSON.parse((await registryFetch(`${reg.url}/v2/x/y/tags/list`)).body.toString()) as { tags: string[] }).tags.length;

    reg.clearLog();
    const no = await run('script', ['-qec', cmd, '/dev/null'], { input: 'n\n', timeoutMs: 60_000 });
    assert.equal(no.code, 0, no.stdout);
    assert.match(no.stdout, /resolving tags \[[=-]+\] \d+\/24/);
    assert.match(no.stdout, /reading image configs \[[=-]+\] \d+\/24/);
    assert.match(no.stdout, /Delete 4 tags in 1 repository of registry http:\/\/127\.0\.0\.1:\d+\? \[y\/N\]/);
    assert.match(no.stdout, /nothing deleted/);
    assert.equal(await tags(), 24);
    assert.deepEqual(reg.accessLog().filter((e) => e.method !== 'GET' && e.method !== 'HEAD'), []);

    const yes = await run('script', ['-qec', cmd, '/dev/null'], { input: 'y\n', timeoutMs: 60_000 });
    assert.equal(yes.code, 0, yes.stdout);
    assert.match(yes.stdout, /x\/y: deleted 4 tags \(throwaway\), 4 manifests by digest/);
    assert.equal(await tags(), 20);

    // --password-stdin on a terminal takes the input the prompt would need: --apply wants --yes then.
    const pw = await run('script', ['-qec', `${cmd} --username u --password-stdin`, '/dev/null'], { input: 'secret\n', timeoutMs: 60_000 });
    assert.notEqual(pw.code, 0);
    assert.match(pw.stdout, /--password-stdin reads the terminal, so --apply cannot ask for confirmation there/);
    assert.equal(await tags(), 20);

    // Not a terminal: no prompt, no bar, it just deletes.
    const ci = await run(process.execPath, [CLI, 'cleanup', '--registry', reg.url, '--repo', 'x/y', '--keep-last', '19', '--apply']);
    assert.equal(ci.code, 0, ci.stderr);
    assert.doesNotMatch(ci.stdout + ci.stderr, /\[y\/N\]|\[[=-]{10,}\]/);
    assert.equal(await tags(), 19);
  } finally {
    await reg.close();
  }
});
