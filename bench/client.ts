// Child-process entry of the bench's load client: `node dist/bench/client.js '<job json>'`.
// Runs in its own process (and, for the slow-link runs, inside the cache's network namespace) so
// the load it generates does not share the orchestrator's event loop; several of them split the
// clients of one pull between cores. Protocol on stdio: prints {"ready":true}, waits for one line
// on stdin (the start signal, so that all client processes start together), runs the job and
// prints one line of JSON with the result and its start/end time (ms since the epoch).
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { runJob, type Job } from './lib/pull.js';

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write('usage: node dist/bench/client.js <job json>\n');
  process.exit(2);
}
const job = JSON.parse(arg) as Job;
const lines = createInterface({ input: process.stdin });
const go = new Promise<void>((resolve) => lines.once('line', () => resolve()));
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
await go;
lines.close();
const startEpochMs = performance.timeOrigin + performance.now();
const cpu0 = process.cpuUsage();
const result = await runJob(job);
const cpu = process.cpuUsage(cpu0);
const endEpochMs = performance.timeOrigin + performance.now();
const clientCpuSeconds = (cpu.user + cpu.system) / 1e6;
process.stdout.write(`${JSON.stringify({ ...result, clientCpuSeconds, startEpochMs, endEpochMs })}\n`);
