// The real-client row: `docker pull` through a target configured as dockerd's registry mirror
// (what docker:dind --registry-mirror does), cold (empty target cache) and warm (after docker rmi).
// dockerd is the test peers' private one (vfs, own socket and roots).
import { performance } from 'node:perf_hooks';
import { startDockerd, type Dockerd } from '../../test/peers/dockerd.js';

export interface DockerPullResult {
  readonly coldMs: number;
  readonly warmMs: number;
}

/** A private dockerd with `mirrorUrl` as its only registry mirror (dockerd's default 3 parallel layer downloads). */
export function startMirroredDockerd(mirrorUrl: string): Promise<Dockerd> {
  return startDockerd({
    mirrors: [mirrorUrl],
    insecureRegistries: [new URL(mirrorUrl).host],
    extraConfig: { 'max-concurrent-downloads': 3 },
  });
}

/** Pulls `image` twice through dockerd's mirror, removing it in between. */
export async function dockerPullColdWarm(d: Dockerd, image: string, timeoutMs: number): Promise<DockerPullResult> {
  const pull = async (): Promise<number> => {
    const t0 = performance.now();
    await d.dockerOk(['pull', '--quiet', image], { timeoutMs });
    return performance.now() - t0;
  };
  const coldMs = await pull();
  await d.dockerOk(['rmi', image], { timeoutMs: 60_000 });
  const warmMs = await pull();
  return { coldMs, warmMs };
}
