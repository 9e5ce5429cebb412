// What a spool write costs by size: `node dist/bench/spool-writes.js [DIR] [MB]`. Writes MB (default 224, the
// bench's image bytes) into a new file in DIR (default: the OS temp dir) with positional writev calls of
// 64 KiB to 1 MiB, as the download's spool writer does, and prints the process's user and system CPU time
// for each size (docs/performance.md, optimisation 17). Run it on the disk relais's data directory lives on.
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = await mkdtemp(join(process.argv[2] ?? tmpdir(), 'relais-spool-writes-'));
const total = Number(process.argv[3] ?? 224) * 1_000_000;
const chunk = randomBytes(64 * 1024);
try {
  for (const kib of [64, 128, 256, 512, 1024]) {
    const path = join(dir, `spool-${kib}`);
    const fh = await open(path, 'wx');
    const bufs = Array.from({ length: kib / 64 }, () => chunk);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let pos = 0;
    while (pos < total) pos += (await fh.writev(bufs, pos)).bytesWritten;
    await fh.close();
    const cpu = process.cpuUsage(cpu0);
    process.stdout.write(`${String(kib).padStart(5)} KiB writes: ${(performance.now() - t0).toFixed(0).padStart(5)} ms wall, ${(cpu.user / 1000).toFixed(0).padStart(4)} ms user, ${(cpu.system / 1000).toFixed(0).padStart(4)} ms system\n`);
    await rm(path);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
