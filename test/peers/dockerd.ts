// A private dockerd (20.10) for tests: vfs storage, no iptables, no bridge, its own socket,
// data root and exec root in a temp dir, in its own session (setsid). It runs its own
// containerd under EXEC_ROOT/containerd/containerd.sock, which ctr can use too.
//
// Docker reaches registries the way a user's would: `registry-mirrors` (docker.io only, what
// docker:dind --registry-mirror does) and `insecure-registries` (plain HTTP).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeDir, removeDirAtExit, run, startProcess, tempDir, type RunOptions, type RunResult } from './proc.js';

export interface DockerdOptions {
  /** registry-mirrors, e.g. ['http://127.0.0.1:5002'] */
  mirrors?: string[];
  /** insecure-registries (plain HTTP), e.g. ['127.0.0.1:5002'] */
  insecureRegistries?: string[];
  /** More daemon.json keys. */
  extraConfig?: Record<string, unknown>;
  /** Extra environment of the daemon, e.g. HTTPS_PROXY and SSL_CERT_FILE (the proxy door's tests). */
  env?: Record<string, string>;
  /**
   * Per-host CA files: host -> PEM, written as `<certs.d>/<host>/ca.crt`. dockerd 20.10 reads only
   * /etc/docker/certs.d (no flag changes it), so the daemon then runs in a private mount namespace
   * (`unshare -m`) where a temp dir is bind-mounted onto /etc/docker: nothing global is touched.
   */
  certsD?: Record<string, string>;
  /** How long to wait for `docker version` to answer; default 60 s. */
  startTimeoutMs?: number;
}

export interface Dockerd {
  /** unix:///tmp/.../docker.sock, for DOCKER_HOST */
  readonly host: string;
  readonly dir: string;
  /** The containerd socket dockerd runs (for ctr --address). */
  readonly containerdSocket: string;
  /** Environment for the docker CLI: DOCKER_HOST and a private DOCKER_CONFIG. */
  readonly env: Record<string, string>;
  /** Runs the docker CLI against this daemon (default timeout 180 s). */
  docker(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Like docker(), but rejects with the output (and the daemon's log tail) on a non-zero exit. */
  dockerOk(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** dockerd's log so far (stdout + stderr). */
  log(): string;
  /** Stops dockerd (and its containerd) and deletes its temp dir. */
  stop(): Promise<void>;
}

function tail(text: string, max = 4000): string {
  return text.length <= max ? text : `...${text.slice(-max)}`;
}

/** Unmounts anything a crashed daemon left mounted under dir (so the dir can be removed). */
async function unmountUnder(dir: string): Promise<void> {
  let mounts: string;
  try {
    mounts = await readFile('/proc/self/mounts', 'utf8');
  } catch {
    return;
  }
  const points = mounts
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p], { timeoutMs: 10_000 }).catch(() => undefined);
}

/** Starts a private dockerd and waits until `docker version` answers. */
export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  const dir = await tempDir('dockerd');
  removeDirAtExit(dir);
  const sock = join(dir, 'docker.sock');
  const execRoot = join(dir, 'exec');
  const dataRoot = join(dir, 'root');
  const dockerConfig = join(dir, 'cli-config');
  const config: Record<string, unknown> = {
    'storage-driver': 'vfs',
    iptables: false,
    ip6tables: false,
    bridge: 'none',
    'ip-forward': false,
    'ip-masq': false,
    'userland-proxy': false,
    'insecure-registries': opts.insecureRegistries ?? [],
    'registry-mirrors': opts.mirrors ?? [],
    ...(opts.extraConfig ?? {}),
  };
  const configFile = join(dir, 'daemon.json');
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const daemonArgs = ['--config-file', configFile, '--data-root', dataRoot, '--exec-root', execRoot, '-H', `unix://${sock}`, '--pidfile', join(dir, 'docker.pid')];
  let cmd = 'dockerd';
  let args = daemonArgs;
  if (opts.certsD !== undefined) {
    const etcDocker = join(dir, 'etc-docker');
    // An empty certsD ({}) still gets its own (empty) certs.d: nothing of the host's /etc/docker is seen.
    await mkdir(join(etcDocker, 'certs.d'), { recursive: true });
    for (const [host, pem] of Object.entries(opts.certsD)) {
      await mkdir(join(etcDocker, 'certs.d', host), { recursive: true });
      await writeFile(join(etcDocker, 'certs.d', host, 'ca.crt'), pem);
    }
    // unshare execs sh, sh execs dockerd: the managed pid is dockerd's; the mount lives as long as the namespace.
    cmd = 'unshare';
    args = ['--mount', '--propagation', 'private', 'sh', '-c', '[ -d /etc/docker ] || { echo "certsD needs an existing /etc/docker to mount over (in a private namespace)" >&2; exit 1; }; mount --bind "$0" /etc/docker && exec dockerd "$@"', etcDocker, ...daemonArgs];
  }
  const proc = await startProcess(cmd, args, { name: 'dockerd', logDir: dir, ...(opts.env ? { extraEnv: opts.env } : {}) });
  const host = `unix://${sock}`;
  const env = { DOCKER_HOST: host, DOCKER_CONFIG: dockerConfig };
  const docker = (args: string[], runOpts: RunOptions = {}): Promise<RunResult> =>
    run('docker', args, { timeoutMs: 180_000, ...runOpts, extraEnv: { ...env, ...(runOpts.extraEnv ?? {}) } });

  const stop = async (): Promise<void> => {
    // dockerd stops its containers and its containerd on SIGTERM; give it time.
    await proc.stop({ graceMs: 20_000 });
    await unmountUnder(dir);
    await removeDir(dir);
  };

  try {
    const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
    for (;;) {
      if (proc.exitInfo() !== null) {
        throw new Error(`dockerd exited (${JSON.stringify(proc.exitInfo())}) while starting\n${tail(proc.output())}`);
      }
      if (existsSync(sock)) {
        const v = await docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 10_000 }).catch(() => null);
        if (v?.code === 0 && v.stdout.trim() !== '') break;
      }
      if (Date.now() > deadline) throw new Error(`dockerd did not answer 'docker version' in time\n${tail(proc.output())}`);
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const managed = join(execRoot, 'containerd', 'containerd.sock');
  const containerdSocket = existsSync(managed) ? managed : '/run/containerd/containerd.sock';

  return {
    host,
    dir,
    containerdSocket,
    env,
    docker,
    dockerOk: async (args, runOpts) => {
      const r = await docker(args, runOpts);
      if (r.code !== 0) {
        throw new Error(
          `docker ${args.join(' ')} exited with ${r.code ?? r.signal ?? '?'}\nstdout: ${tail(r.stdout)}\nstderr: ${tail(r.stderr)}\n--- dockerd log tail ---\n${tail(proc.output(), 3000)}`,
        );
      }
      return r;
    },
    log: () => proc.output(),
    stop,
  };
}
