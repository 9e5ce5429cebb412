// `relais serve` on the filesystem driver and the SQLite index loads neither the AWS SDK nor pg: the S3 driver
// and the PostgreSQL index are imported only when configured (src/storage/create-storage.ts, src/index/create-index.ts), and
// nothing else asks for them (capabilities are asked of the driver, never found with `instanceof S3Driver`).
// A module resolve hook in the relais process records every module it loads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort } from '../../peers/ports.js';
import { removeDir, startProcess, tempDir, waitForHttp } from '../../peers/proc.js';

const MAIN = resolve('dist/src/cli/main.js');

test('relais serve on the filesystem driver and SQLite loads neither the AWS SDK nor pg', async () => {
  const dir = await tempDir('lazy-drivers');
  try {
    const log = join(dir, 'modules.log');
    const hooks = join(dir, 'hooks.mjs');
    await writeFile(
      hooks,
      `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(${JSON.stringify(log)}, r.url + '\\n');
  return r;
}
`,
    );
    const register = join(dir, 'register.mjs');
    await writeFile(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    const port = await freePort();
    const config = join(dir, 'relais.yaml');
    await writeFile(
      config,
      `listen: 127.0.0.1:${port}\ndataDir: ${JSON.stringify(join(dir, 'data'))}\nstartupChecks: off\nupstreams:\n  docker.io:\n    url: http://127.0.0.1:1\n`,
    );
    const relais = await startProcess(process.execPath, ['--import', pathToFileURL(register).href, MAIN, 'serve', '--config', config], { name: 'relais-lazy', logDir: dir });
    try {
      await waitForHttp(`http://127.0.0.1:${port}/readyz`, 20_000, { process: relais, accept: (s) => s === 200 });
    } finally {
      await relais.stop();
    }
    const modules = (await readFile(log, 'utf8')).split('\n').filter((l) => l !== '');
    assert.ok(modules.some((m) => m.endsWith('/dist/src/storage/fs.js')), 'the hook saw relais load its modules (the filesystem driver)');
    assert.ok(modules.some((m) => m.endsWith('/dist/src/index/sqlite.js')), 'and the SQLite index');
    assert.deepEqual(modules.filter((m) => m.includes('/@aws-sdk/') || m.endsWith('/dist/src/storage/s3.js')), [], 'no AWS SDK');
    assert.deepEqual(modules.filter((m) => m.includes('/node_modules/pg/') || m.includes('/node_modules/pg-') || m.endsWith('/dist/src/index/postgres.js')), [], 'no pg');
  } finally {
    await removeDir(dir);
  }
});
