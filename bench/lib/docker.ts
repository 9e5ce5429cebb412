// The real-client row: `docker pull` through a target configured as dockerd's registry mirror
// (what docker:dind --registry-mirror does), cold (empty target cache) and warm (after docker rmi).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCmd, startProc, type Proc } from './procs.js';

export interface Dockerd {
  readonly proc: Proc;
  readonly host: string; // unix://...
  stop(): Promise<void>;
}

export async function startDockerd(dir: string, mirrorUrl: string): Promise<Dockerd> {
  await mkdir(dir, { recursive: true });
  const mirrorHost = new URL(mirrorUrl).host;
  const config = join(dir, 'daemon.json');
  await writeFile(
    config,
    JSON.stringify({
      'storage-driver': 'vfs',
      iptables: false,
      bridge: 'none',
      'ip-forward': false,
      'ip-masq': false,
      'insecure-registries': [mirrorHost],
      'registry-mirrors': [mirrorUrl],
      'max-concurrent-downloads': 3,
    }),
  );
  const host = `unix://${dir}/docker.sock`;
  const proc = startProc({
    name: 'dockerd',
    cmd: 'dockerd',
    args: [
      '--config-file',
      config,
      '--data-root',
      join(dir, 'root'),
      '--exec-root',
      join(dir, 'exec'),
      '-H',
      host,
      '--pidfile',
      join(dir, 'docker.pid'),
    ],
    logFile: join(dir, 'dockerd.log'),
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await runCmd('docker', ['version', '--format', '{{.Server.Version}}'], {
        timeoutMs: 5000,
        env: { ...process.env, DOCKER_HOST: host },
      });
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        await proc.stop();
        throw new Error(`dockerd did not come up within 60 s (see ${proc.logFile}): ${e instanceof Error ? e.message : String(e)}`);
      }
      await sleep(250);
    }
  }
  return { proc, host, stop: () => proc.stop() };
}

export interface DockerPullResult {
  readonly coldMs: number;
  readonly warmMs: number;
}

/** Pulls `image` twice through dockerd's mirror, removing it in between. */
export async function dockerPullColdWarm(d: Dockerd, image: string, timeoutMs: number): Promise<DockerPullResult> {
  const env = { ...process.env, DOCKER_HOST: d.host };
  const pull = async (): Promise<number> => {
    const t0 = performance.now();
    await runCmd('docker', ['pull', '--quiet', image], { timeoutMs, env });
    return performance.now() - t0;
  };
  const coldMs = await pull();
  await runCmd('docker', ['rmi', image], { timeoutMs: 60_000, env });
  const warmMs = await pull();
  return { coldMs, warmMs };
}
