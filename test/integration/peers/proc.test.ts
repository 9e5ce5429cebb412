// Self-test of the process helpers against real programs (busybox httpd, sh, node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../peers/ports.js';
import { MissingProgramError, RunTimeoutError, removeDir, run, runOk, startProcess, tempDir, waitForHttp } from '../../peers/proc.js';

/** True while `pid` runs; a zombie (dead, not reaped yet: this machine's init does not reap) is not alive. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

void test('freePort gives distinct bindable ports', async () => {
  const a = await freePort();
  const b = await freePort();
  assert.ok(a > 0 && a < 65536);
  assert.notEqual(a, b);
});

void test('startProcess + waitForHttp + stop on busybox httpd', async (t) => {
  const dir = await tempDir('proc-test');
  t.after(() => removeDir(dir));
  await writeFile(join(dir, 'hello.txt'), 'hello from busybox\n');
  const port = await freePort();
  const p = await startProcess('busybox', ['httpd', '-f', '-v', '-p', `127.0.0.1:${port}`, '-h', dir], { logDir: dir });
  t.after(() => p.stop());
  const status = await waitForHttp(`http://127.0.0.1:${port}/hello.txt`, 10_000, { process: p, accept: (s) => s === 200 });
  assert.equal(status, 200);
  const body = await (await fetch(`http://127.0.0.1:${port}/hello.txt`)).text();
  assert.equal(body, 'hello from busybox\n');
  // busybox httpd -v logs each request to stderr; the log file sees it.
  const m = await p.waitForOutput(/(response:200[\s\S]*){2}/, 5000);
  assert.ok(m.length > 0);
  const info = await p.stop();
  assert.equal(info.signal, 'SIGTERM');
  assert.equal(alive(p.pid), false);
  await assert.rejects(fetch(`http://127.0.0.1:${port}/hello.txt`));
});

void test('waitForHttp fails fast with the output of a process that died', async () => {
  const port = await freePort();
  const p = await startProcess('sh', ['-c', 'echo "dying on purpose" >&2; exit 7']);
  await assert.rejects(waitForHttp(`http://127.0.0.1:${port}/`, 10_000, { process: p }), /exited[\s\S]*dying on purpose/);
  assert.deepEqual(await p.exited, { code: 7, signal: null });
});

void test('stop escalates to SIGKILL when SIGTERM is ignored', async () => {
  const p = await startProcess('sh', ['-c', 'trap "" TERM; echo ready; while true; do sleep 1; done']);
  await p.waitForOutput(/ready/, 5000);
  const info = await p.stop({ graceMs: 300 });
  assert.equal(info.signal, 'SIGKILL');
});

void test('run returns code and output, times out, and reports a missing program', async () => {
  const r = await run('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'in\n' });
  assert.deepEqual([r.code, r.stdout, r.stderr], [3, 'in\n', 'err\n']);
  await assert.rejects(runOk('sh', ['-c', 'echo boom >&2; exit 1']), /exited with 1[\s\S]*boom/);
  await assert.rejects(run('sleep', ['30'], { timeoutMs: 300 }), RunTimeoutError);
  await assert.rejects(run('relais-no-such-program', []), MissingProgramError);
  await assert.rejects(startProcess('relais-no-such-program', []), MissingProgramError);
});

void test('processes started by a test process die with it, even when it crashes', async () => {
  const procModule = fileURLToPath(new URL('../../peers/proc.js', import.meta.url));
  const script = `
    import { startProcess } from ${JSON.stringify(procModule)};
    const p = await startProcess('sh', ['-c', 'sleep 300 & wait']);
    console.log(p.pid);
    setTimeout(() => { throw new Error('crash on purpose'); }, 100);
  `;
  const r = await run(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 20_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /crash on purpose/);
  const pid = Number(r.stdout.trim());
  assert.ok(pid > 1, r.stdout);
  // The whole group (sh and its sleep) was SIGKILLed on exit.
  const ps = await run('ps', ['-o', 'pid=', '-g', String(pid)]);
  const members = ps.stdout.split('\n').map((l) => Number(l.trim())).filter((n) => n > 0);
  assert.ok(members.length >= 1 || ps.code !== 0, 'ps should have listed the group (zombies at least)');
  for (const member of members) assert.equal(alive(member), false, `process ${member} of the group survived`);
  assert.equal(alive(pid), false);
});

void test('a test process that forgets stop() still exits, killing the process and deleting registered dirs', async () => {
  const procModule = fileURLToPath(new URL('../../peers/proc.js', import.meta.url));
  const script = `
    import { startProcess, removeDirAtExit, tempDir } from ${JSON.stringify(procModule)};
    const dir = await tempDir('forgotten');
    removeDirAtExit(dir);
    const p = await startProcess('sleep', ['300']);
    console.log(JSON.stringify({ pid: p.pid, dir }));
  `;
  const r = await run(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 15_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.durationMs < 10_000, `took ${r.durationMs} ms`);
  const { pid, dir } = JSON.parse(r.stdout) as { pid: number; dir: string };
  assert.equal(alive(pid), false);
  assert.equal(existsSync(dir), false);
});
