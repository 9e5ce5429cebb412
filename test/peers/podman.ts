// podman pulling through a registries.conf (see skopeo.ts writeRegistriesConf), with vfs storage
// in a private temp root/runroot so nothing touches the machine's own container storage.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Creds } from './images.js';
import { removeDir, run, tempDir, type RunResult } from './proc.js';

export interface PodmanPullOptions {
  /** A registries.conf file (see writeRegistriesConf in skopeo.ts). */
  registriesConf?: string;
  creds?: Creds;
  /** Default false: plain HTTP allowed. */
  tlsVerify?: boolean;
  /** A directory with ca.crt to trust (--cert-dir); implies tlsVerify unless set. */
  certDir?: string;
  /** More environment, e.g. HTTPS_PROXY (the proxy door's tests). */
  env?: Record<string, string>;
  /** e.g. linux/arm64 */
  platform?: string;
  /** Keep storage in this dir instead of a temp dir deleted after the pull. */
  storageDir?: string;
  timeoutMs?: number;
}

export interface PodmanPullResult extends RunResult {
  /** The image ID podman printed (when the pull succeeded). */
  imageId?: string;
  /** RepoDigests of the pulled image (when the pull succeeded). */
  repoDigests?: string[];
}

/** podman's global flags for a private vfs store under dir. */
export function podmanStorageArgs(dir: string): string[] {
  return [
    '--root', join(dir, 'root'),
    '--runroot', join(dir, 'runroot'),
    '--storage-driver', 'vfs',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'none',
    '--tmpdir', join(dir, 'tmp'),
  ];
}

/** `podman pull REF` with private storage; never throws for a failed pull (check code). */
export async function podmanPull(ref: string, opts: PodmanPullOptions = {}): Promise<PodmanPullResult> {
  const dir = opts.storageDir ?? (await tempDir('podman'));
  const env: Record<string, string> = { ...(opts.env ?? {}), REGISTRY_AUTH_FILE: join(dir, 'auth.json') };
  if (opts.registriesConf !== undefined) env.CONTAINERS_REGISTRIES_CONF = opts.registriesConf;
  try {
    await writeFile(env.REGISTRY_AUTH_FILE ?? '', '{"auths":{}}\n'); // podman wants the file to exist
    const args = [...podmanStorageArgs(dir), 'pull', `--tls-verify=${String(opts.tlsVerify ?? opts.certDir !== undefined)}`];
    if (opts.certDir !== undefined) args.push('--cert-dir', opts.certDir);
    if (opts.creds !== undefined) args.push('--creds', `${opts.creds.username}:${opts.creds.password}`);
    if (opts.platform !== undefined) args.push('--platform', opts.platform);
    args.push(ref);
    const r = await run('podman', args, { timeoutMs: opts.timeoutMs ?? 300_000, extraEnv: env });
    if (r.code !== 0) return r;
    const imageId = r.stdout.trim().split('\n').pop() ?? '';
    const inspect = await run('podman', [...podmanStorageArgs(dir), 'image', 'inspect', '--format', '{{json .RepoDigests}}', imageId], { extraEnv: env });
    const out: PodmanPullResult = { ...r, imageId };
    if (inspect.code === 0) out.repoDigests = JSON.parse(inspect.stdout) as string[];
    return out;
  } finally {
    if (opts.storageDir === undefined) await removeDir(dir);
  }
}
