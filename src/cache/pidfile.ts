// Which process serves a data directory: `relais serve` writes DATA/relais.pid, and removes it on a clean
// stop. Commands that work on the data directory (gc) read it to know whether a live relais may be writing.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const PID_FILE = 'relais.pid';

export async function writePidFile(dataDir: string): Promise<() => Promise<void>> {
  const file = join(dataDir, PID_FILE);
  await writeFile(file, `${process.pid}\n`);
  return async () => {
    // Only our own: another relais may have taken the directory over meanwhile.
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.trim() === String(process.pid)) await rm(file, { force: true });
  };
}

/** The pid of a live relais serving the directory, or undefined (none, or it died without cleaning up). */
export async function liveServerPid(dataDir: string): Promise<number | undefined> {
  const text = await readFile(join(dataDir, PID_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (e) {
    // EPERM: alive, owned by someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}
