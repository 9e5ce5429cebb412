// The shared storage driver suite against the filesystem driver.
import { readdir } from 'node:fs/promises';
import { FilesystemDriver } from '../../../src/storage/fs.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { registerDriverSuite } from './driver-suite.js';

registerDriverSuite('filesystem', async () => {
  const root = await tempDir('fs-driver');
  const driver = new FilesystemDriver(root);
  const siblings: FilesystemDriver[] = [];
  return {
    driver,
    stagedFiles: () => readdir(driver.tmpDir).catch(() => []),
    sibling: () => {
      const s = new FilesystemDriver(root);
      siblings.push(s);
      return Promise.resolve(s);
    },
    cleanup: async () => {
      for (const s of [driver, ...siblings]) await s.close();
      await removeDir(root);
    },
  };
});
