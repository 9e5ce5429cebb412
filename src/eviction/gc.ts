// Garbage collection: reconciles the index with the disk, online or from `relais gc`.
//   - orphan files: objects in storage the index does not know (a crash between the file and its row, or
//     an eviction that could not delete a file in use);
//   - index rows without their file (or with a file of the wrong size): the rows go, and so do the
//     manifests that reference them (up to the index that lists them) and the tags pointing there;
//   - temporary files: the storage driver's stale writes (StorageDriver.staleWrites): the staged files of
//     downloads that died with a crash, and (S3) multipart uploads a dead process left open. Where they are
//     and which writers are live only the driver knows: gc asks it.
// Files younger than the grace period, digests being downloaded or served, and the writes of live writers are
// never touched: gc runs while relais serves.
import type { CacheIndex } from '../index/cache-index.js';
import { dependentManifests } from './eviction-plan.js';
import { blobKey, type StorageDriver } from '../storage/driver.js';

export interface GcOptions {
  readonly index: CacheIndex;
  readonly storage: StorageDriver;
  readonly dryRun: boolean;
  /** Files modified within this many ms are left alone. */
  readonly graceMs: number;
  readonly now?: number;
  /** Digests being downloaded or served right now (online gc). */
  readonly busy?: () => ReadonlySet<string>;
}

export interface GcReport {
  readonly dryRun: boolean;
  /** Files in storage that no index row accounts for. */
  readonly orphanFiles: readonly { readonly key: string; readonly size: number }[];
  /** Index rows whose file is missing or has the wrong size. */
  readonly missingFiles: readonly { readonly digest: string; readonly size: number; readonly found: number | undefined }[];
  /** Manifests dropped because content they reference is gone. */
  readonly dependentManifests: readonly string[];
  /** Unfinished writes no live writer owns (the driver's stale writes: a staged file's path, an S3 upload's object and id). */
  readonly tempFiles: readonly { readonly id: string; readonly size: number }[];
  /** Bytes on disk removed (or that would be, in a dry run). */
  readonly freedBytes: number;
  /** Index entries dropped (or that would be). */
  readonly droppedRows: number;
}

const BLOB_KEY = /^blobs\/([a-z0-9]+)\/[0-9a-f]{2}\/([0-9a-f]+)$/;

export function digestOfKey(key: string): string | undefined {
  const m = BLOB_KEY.exec(key);
  return m ? `${m[1] ?? ''}:${m[2] ?? ''}` : undefined;
}

export async function runGc(opts: GcOptions): Promise<GcReport> {
  const now = opts.now ?? Date.now();
  const cutoff = now - opts.graceMs;
  await opts.index.flush();
  const content = await opts.index.listContent();
  const rows = new Map(content.map((c) => [c.digest, c]));

  const files = new Map<string, { key: string; size: number; modTime: number }>();
  const orphanFiles: { key: string; size: number }[] = [];
  for await (const f of opts.storage.list('blobs/')) {
    const digest = digestOfKey(f.key);
    if (digest === undefined) {
      // Something relais did not write under blobs/: an orphan all the same, when old enough.
      if (f.modTime.getTime() < cutoff) orphanFiles.push({ key: f.key, size: f.size });
      continue;
    }
    files.set(digest, { key: f.key, size: f.size, modTime: f.modTime.getTime() });
  }
  const busy = opts.busy?.() ?? new Set<string>();
  for (const [digest, f] of files) {
    if (rows.has(digest) || busy.has(digest) || f.modTime >= cutoff) continue;
    orphanFiles.push({ key: f.key, size: f.size });
  }
  const missingFiles: { digest: string; size: number; found: number | undefined }[] = [];
  for (const c of content) {
    if (busy.has(c.digest)) continue;
    const f = files.get(c.digest);
    if (f?.size !== c.size) missingFiles.push({ digest: c.digest, size: c.size, found: f?.size });
  }
  const dependents = [...dependentManifests(missingFiles.map((m) => m.digest), await opts.index.listReferences())].filter((d) => rows.has(d));

  const tempFiles: { id: string; size: number }[] = [];
  // A capability asked of the driver: one that stages nothing has no stale writes.
  if (opts.storage.staleWrites) for await (const w of opts.storage.staleWrites(cutoff)) tempFiles.push({ id: w.id, size: w.size });

  let freedBytes = orphanFiles.reduce((n, f) => n + f.size, 0) + tempFiles.reduce((n, f) => n + f.size, 0);
  for (const m of missingFiles) freedBytes += m.found ?? 0;
  for (const d of dependents) freedBytes += files.get(d)?.size ?? 0;
  const drop = [...new Set([...missingFiles.map((m) => m.digest), ...dependents])];

  if (!opts.dryRun) {
    if (drop.length > 0) await opts.index.deleteContent(drop);
    const stillBusy = opts.busy?.() ?? new Set<string>();
    for (const d of drop) {
      if (files.has(d) && !stillBusy.has(d)) await opts.storage.delete(blobKey(d));
    }
    for (const f of orphanFiles) {
      const d = digestOfKey(f.key);
      if (d !== undefined && (stillBusy.has(d) || (await opts.index.getContent(d)) !== undefined)) continue;
      await opts.storage.delete(f.key);
    }
    // The driver refuses (false) what became live or went meanwhile.
    for (const t of tempFiles) await opts.storage.dropStaleWrite?.(t.id);
  }
  return { dryRun: opts.dryRun, orphanFiles, missingFiles, dependentManifests: dependents, tempFiles, freedBytes, droppedRows: drop.length };
}

export function gcFoundNothing(r: GcReport): boolean {
  return r.orphanFiles.length === 0 && r.missingFiles.length === 0 && r.dependentManifests.length === 0 && r.tempFiles.length === 0;
}
