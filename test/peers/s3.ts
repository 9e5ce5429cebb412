// A real S3 server as a test peer: a throwaway single-node Ceph cluster with a RADOS Gateway, started by
// scripts/ceph-rgw.sh in a temp dir (memstore OSD, free ports, about 5-10 s). The daemons daemonize, so
// they are not in a process group of ours: stop() runs the script's stop, and an exit hook kills them by
// their pid files if the test process ends first.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { CreateBucketCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { removeDirSync, run, tempDir } from './proc.js';

/** scripts/ceph-rgw.sh, from dist/test/peers/ (compiled) or test/peers/ (source). */
const SCRIPT = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../scripts/ceph-rgw.sh' : '../../scripts/ceph-rgw.sh', import.meta.url));

export interface S3Peer {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** The cluster's directory (config, logs under log/). */
  readonly dir: string;
  /** An SDK client for the test's own checks (what the server holds, independent of relais). */
  readonly client: S3Client;
  /** Creates a bucket (unique names per test keep tests apart). */
  createBucket(name: string): Promise<void>;
  /** Multipart uploads not completed nor aborted in the bucket. */
  pendingUploads(bucket: string): Promise<number>;
  /** The `storage.s3` section of a relais config for this server. */
  storageConfig(bucket: string, prefix?: string): Record<string, unknown>;
  /** Stops the gateway only (S3 down; the cluster and its objects stay): outage tests. */
  stopGateway(): Promise<void>;
  /** Starts the gateway again on the same port; resolves once it answers HTTP. */
  startGateway(): Promise<void>;
  /** Stops the daemons and deletes the directory. Idempotent. */
  close(): Promise<void>;
}

const running = new Set<string>();
let hookInstalled = false;

function killByPidFiles(dir: string): void {
  let files: string[];
  try {
    files = readdirSync(join(dir, 'run')).filter((f) => f.endsWith('.pid'));
  } catch {
    return;
  }
  for (const f of files) {
    const pid = Number(readFileSync(join(dir, 'run', f), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on('exit', () => {
    for (const dir of running) {
      killByPidFiles(dir);
      removeDirSync(dir);
    }
  });
}

export async function startS3(): Promise<S3Peer> {
  installExitHook();
  const dir = await tempDir('ceph');
  running.add(dir);
  const r = await run('bash', [SCRIPT, 'start', dir], { timeoutMs: 120_000 });
  if (r.code !== 0) {
    killByPidFiles(dir);
    running.delete(dir);
    removeDirSync(dir);
    throw new Error(`scripts/ceph-rgw.sh start failed (exit ${String(r.code)}):\n${r.stderr}${r.stdout}`);
  }
  const env = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env.set(line.slice(0, eq), line.slice(eq + 1).trim());
  }
  const need = (k: string): string => {
    const v = env.get(k);
    if (v === undefined) throw new Error(`scripts/ceph-rgw.sh printed no ${k}:\n${r.stdout}`);
    return v;
  };
  const endpoint = need('S3_ENDPOINT');
  const region = need('S3_REGION');
  const accessKeyId = need('S3_ACCESS_KEY_ID');
  const secretAccessKey = need('S3_SECRET_ACCESS_KEY');
  const client = new S3Client({
    endpoint,
    region,
    credentials: { accessKeyId, secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  let closed: Promise<void> | undefined;
  return {
    endpoint,
    region,
    accessKeyId,
    secretAccessKey,
    dir,
    client,
    createBucket: async (name) => {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    pendingUploads: async (bucket) => {
      const res = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      return res.Uploads?.length ?? 0;
    },
    stopGateway: async () => {
      const r = await run('bash', [SCRIPT, 'rgw-stop', dir], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`scripts/ceph-rgw.sh rgw-stop failed:\n${r.stderr}`);
    },
    startGateway: async () => {
      const r = await run('bash', [SCRIPT, 'rgw-start', dir], { timeoutMs: 90_000 });
      if (r.code !== 0) throw new Error(`scripts/ceph-rgw.sh rgw-start failed:\n${r.stderr}`);
    },
    storageConfig: (bucket, prefix) => ({ bucket, endpoint, region, accessKeyId, secretAccessKey, ...(prefix !== undefined ? { prefix } : {}) }),
    close: () => {
      closed ??= (async () => {
        client.destroy();
        const stop = await run('bash', [SCRIPT, 'stop', dir], { timeoutMs: 30_000 }).catch(() => undefined);
        if (stop?.code !== 0) {
          killByPidFiles(dir);
          removeDirSync(dir);
        }
        running.delete(dir);
      })();
      return closed;
    },
  };
}
