// Builds the storage driver a config asks for. Every driver stages its writes in a local directory (the
// download spool that clients follow: src/storage/staged-writer.ts): for the filesystem driver inside the
// storage root (so the commit is a rename), for S3 in dataDir/spool. It is emptied here at start: a crash's
// leftovers are never served. Where a driver stages is its own business after that: gc asks the driver for
// its stale writes (StorageDriver.staleWrites), readiness asks it to check itself (StorageDriver.check).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { StorageConfig } from '../config/schema.js';
import { errors } from '../errors.js';
import type { StorageDriver } from './driver.js';
import { FilesystemDriver } from './fs.js';
import { guardS3Outages } from './outage.js';

export interface StorageSetup {
  readonly storage: StorageDriver;
  /** Readiness: the staging directory is there and the backend answers. */
  ready(): Promise<boolean>;
  close(): void;
}

/** How long a readiness answer from a remote backend is reused (probes come every few seconds). */
const READY_CACHE_MS = 2000;

async function emptyDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
}

/** `now`: the clock of the readiness cache (tests advance one instead of waiting it out). */
export async function openStorage(cfg: StorageConfig, dataDir: string, clock: { readonly now?: () => number } = {}): Promise<StorageSetup> {
  const now = clock.now ?? Date.now;
  if (cfg.driver === 's3') {
    const s3 = cfg.s3;
    if (!s3) throw errors.s3SectionMissing();
    // The AWS SDK is loaded only when configured (it adds tens of MB to a process that does not use it).
    const { S3Driver } = await import('./s3.js');
    const stagingDir = join(dataDir, 'spool');
    await emptyDir(stagingDir);
    const driver = new S3Driver({ ...s3, stagingDir });
    try {
      await driver.check(AbortSignal.timeout(15_000));
    } catch (e) {
      driver.close();
      throw errors.storageUnusable(`S3 bucket ${s3.bucket} at ${s3.endpoint ?? 'AWS'}`, e);
    }
    let last: { at: number; ok: boolean } | undefined;
    return {
      // An S3 outage answers 503 with Retry-After (storage/outage.ts), not 500.
      storage: guardS3Outages(driver),
      ready: async () => {
        if (last && now() - last.at < READY_CACHE_MS) return last.ok;
        let ok = true;
        try {
          await driver.check(AbortSignal.timeout(5000));
        } catch {
          ok = false;
        }
        last = { at: now(), ok };
        return ok;
      },
      close: () => {
        driver.close();
      },
    };
  }
  const driver = new FilesystemDriver(join(dataDir, 'storage'));
  await emptyDir(driver.tmpDir);
  return {
    storage: driver,
    ready: () =>
      driver.check().then(
        () => true,
        () => false,
      ),
    close: () => {
      void driver.close();
    },
  };
}
