// The shared index suite against SQLite.
import { join } from 'node:path';
import { SqliteIndex } from '../../../src/index/sqlite.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { registerIndexSuite } from './index-suite.js';

registerIndexSuite('sqlite', async () => {
  const dir = await tempDir('sqlite-index');
  return {
    open: () => Promise.resolve(new SqliteIndex(join(dir, 'index.db'))),
    cleanup: () => removeDir(dir),
  };
});
