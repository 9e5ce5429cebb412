// The shared storage driver suite against the filesystem driver.
import { readdir } from 'node:fs/promises';
import { FilesystemDriver } from '../../../src/storage/fs.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { registerDriverSuite } from './driver-suite.js';

registerDriverSuite('filesystem', async () => {
  const root = await tempDir('fs-driver');
  const driver = new FilesystemDriver(root);
  return {
    driver,
    stagedFiles: () => readdir(driver.tmpDir).catch(() => []),
    cleanup: async () => {
      await driver.close();
      await removeDir(root);
    },
  };
});
