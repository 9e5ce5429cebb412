// The shared storage driver suite against the filesystem driver.
import { FilesystemDriver } from '../../../src/storage/fs.js';
import { removeDir, tempDir } from '../../peers/proc.js';
import { registerDriverSuite } from './driver-suite.js';

registerDriverSuite('filesystem', async () => {
  const root = await tempDir('fs-driver');
  return { driver: new FilesystemDriver(root), cleanup: () => removeDir(root) };
});
