// The upstream registry and the three targets the bench compares, each started with an empty
// cache on a free port: CNCF distribution in proxy mode, nginx with proxy_cache + proxy_cache_lock
// (the rpardini/docker-registry-proxy approach), and relais. All can run under a command prefix
// (`ip netns exec NS`) for the slow-link runs, which is why distribution is started here rather
// than with test/peers' startRegistry (loopback only); the access-log parser is shared.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../../test/peers/ports.js';
import { parseAccessLogLine, type AccessLogEntry } from '../../test/peers/registry.js';
import { startProc, waitHttp, type Proc } from './procs.js';

export type TargetKind = 'distribution' | 'nginx' | 'relais';
export const TARGET_KINDS: readonly TargetKind[] = ['distribution', 'nginx', 'relais'];

export interface Running {
  readonly name: string;
  /** http://host:port, as seen from the side the process runs on. */
  readonly url: string;
  readonly proc: Proc;
  /** relais with its HTTPS proxy door open: the door's URL, the https:// registry it intercepts, relais's CA (PEM). */
  readonly proxy?: { readonly url: string; readonly registry: string; readonly ca: string };
  stop(): Promise<void>;
}

/** One line of distribution's access log (the parser is the test peers' one). */
export type AccessEntry = Pick<AccessLogEntry, 'method' | 'path' | 'status' | 'bytes'>;

const BLOB_PATH = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/;
const MANIFEST_PATH = /^\/v2\/.+\/manifests\/[^/]+$/;

export interface UpstreamCounts {
  blobGets: number;
  blobBytes: number;
  manifestRequests: number;
  requests: number;
}

export function countUpstream(entries: readonly AccessEntry[]): UpstreamCounts {
  const c: UpstreamCounts = { blobGets: 0, blobBytes: 0, manifestRequests: 0, requests: entries.length };
  for (const e of entries) {
    if (e.method === 'GET' && e.status < 300 && BLOB_PATH.test(e.path)) {
      c.blobGets += 1;
      c.blobBytes += e.bytes;
    } else if (MANIFEST_PATH.test(e.path)) {
      c.manifestRequests += 1;
    }
  }
  return c;
}

export interface Upstream extends Running {
  /** Every access-log entry seen so far (append-only). */
  readonly access: AccessEntry[];
}

function distributionConfig(dir: string, addr: string, proxyRemote?: string): string {
  return [
    'version: 0.1',
    'log: {level: error, accesslog: {disabled: false}}',
    'storage:',
    '  cache: {blobdescriptor: inmemory}',
    `  filesystem: {rootdirectory: ${JSON.stringify(dir)}}`,
    '  delete: {enabled: true}',
    `http: {addr: ${JSON.stringify(addr)}}`,
    ...(proxyRemote === undefined ? [] : [`proxy: {remoteurl: ${JSON.stringify(proxyRemote)}}`]),
    '',
  ].join('\n');
}

async function startDistribution(o: {
  name: string;
  workDir: string;
  dataDir: string;
  host: string;
  port: number;
  proxyRemote?: string;
  prefix: readonly string[];
  onLine?: (line: string) => void;
}): Promise<Running> {
  await mkdir(o.workDir, { recursive: true });
  await mkdir(o.dataDir, { recursive: true });
  const config = join(o.workDir, 'config.yml');
  await writeFile(config, distributionConfig(o.dataDir, `${o.host}:${o.port}`, o.proxyRemote));
  const proc = startProc({
    name: o.name,
    cmd: 'docker-registry',
    args: ['serve', config],
    prefix: o.prefix,
    logFile: join(o.workDir, 'registry.log'),
    ...(o.onLine === undefined ? {} : { onStdoutLine: o.onLine }),
  });
  const url = `http://${o.host}:${o.port}`;
  try {
    await waitHttp(`${url}/v2/`, proc, 15_000, o.prefix);
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return { name: o.name, url, proc, stop: () => proc.stop() };
}

/** The upstream: plain distribution serving dataDir, its access log parsed as it comes. */
export async function startUpstream(o: {
  workDir: string;
  dataDir: string;
  host?: string;
  prefix?: readonly string[];
}): Promise<Upstream> {
  const access: AccessEntry[] = [];
  const host = o.host ?? '127.0.0.1';
  const r = await startDistribution({
    name: 'upstream',
    workDir: o.workDir,
    dataDir: o.dataDir,
    host,
    port: await freePort(),
    prefix: o.prefix ?? [],
    onLine: (line) => {
      const e = parseAccessLogLine(line);
      if (e !== null) access.push({ method: e.method, path: e.path, status: e.status, bytes: e.bytes });
    },
  });
  return { ...r, access };
}

function nginxConfig(dir: string, port: number, upstream: string, accessLog: boolean): string {
  return `# nginx as a registry cache: proxy_cache + proxy_cache_lock (the rpardini/docker-registry-proxy approach).
${process.getuid?.() === 0 ? '# Workers must write the cache in the (0700) temp dir.\nuser root;\n' : ''}worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
http {
${
  accessLog
    ? `  # Every request logged, as rpardini/docker-registry-proxy does (its "tweaked" format, with the cache status),
  # in 64 KiB batches at least every second: the same work relais does by default with its request log.
  log_format tweaked '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                     '"HOST: $host" "UPSTREAM: $upstream_addr" "UPSTREAM-STATUS: $upstream_status" '
                     '"CACHE-STATUS: $upstream_cache_status" $request_time';
  access_log ${dir}/access.log tweaked buffer=64k flush=1s;`
    : '  access_log off;'
}
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=registry:32m max_size=32g inactive=7d use_temp_path=off;
  upstream registry_upstream {
    server ${upstream};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location /v2/ {
      proxy_pass http://registry_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host ${upstream};
      proxy_read_timeout 900s;
      proxy_cache registry;
      # Manifests by tag are negotiated on Accept: keep one entry per Accept list.
      proxy_cache_key $uri$is_args$args|$http_accept;
      proxy_cache_valid 200 206 307 60m;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 1h;
      proxy_cache_lock_age 1h;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status;
    }
  }
}
`;
}

async function startNginx(o: { workDir: string; upstream: string; prefix: readonly string[]; nginxAccessLog?: boolean }): Promise<Running> {
  const dir = o.workDir;
  for (const d of ['tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi', 'cache']) {
    await mkdir(join(dir, d), { recursive: true });
  }
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, nginxConfig(dir, port, o.upstream, o.nginxAccessLog ?? true));
  const proc = startProc({
    name: 'nginx',
    cmd: 'nginx',
    args: ['-e', 'stderr', '-p', dir, '-c', conf, '-g', 'daemon off;'],
    prefix: o.prefix,
    logFile: join(dir, 'nginx.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/v2/`, proc, 15_000, o.prefix);
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return { name: 'nginx', url, proc, stop: () => proc.stop() };
}

export const RELAIS_MAIN = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
/** The node flags relais runs with everywhere it is started for real: its bin's shebang, `npm start`, deploy/Dockerfile. */
export const RELAIS_NODE_FLAGS = ['--max-semi-space-size=4'];

/** The host the proxy door intercepts for the docker.io upstream by default (docs/proxy.md), as clients name it. */
export const PROXY_REGISTRY = 'https://registry-1.docker.io';

async function startRelais(o: {
  workDir: string;
  upstream: string;
  prefix: readonly string[];
  nodeArgs: readonly string[];
  main: string;
  proxyDoor: boolean;
  sendfile: boolean;
}): Promise<Running> {
  const data = join(o.workDir, 'data');
  await mkdir(data, { recursive: true });
  const port = await freePort();
  // The proxy door and sendfile need the config file (no flags for them); the flags below still set the rest.
  const proxyPort = o.proxyDoor ? await freePort() : undefined;
  const config = join(o.workDir, 'relais.yaml');
  const yaml = [
    ...(proxyPort === undefined ? [] : ['proxy:', `  listen: 127.0.0.1:${proxyPort}`]),
    ...(o.sendfile ? [] : ['server:', '  sendfile: false']),
  ];
  if (yaml.length > 0) await writeFile(config, `${yaml.join('\n')}\n`);
  const proc = startProc({
    name: 'relais',
    cmd: process.execPath,
    args: [
      ...o.nodeArgs,
      o.main,
      'serve',
      ...(yaml.length === 0 ? [] : ['--config', config]),
      '--listen',
      `127.0.0.1:${port}`,
      '--data',
      data,
      '--upstream',
      `docker.io=http://${o.upstream}`,
    ],
    prefix: o.prefix,
    cwd: o.workDir,
    logFile: join(o.workDir, 'relais.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/v2/`, proc, 30_000, o.prefix);
    if (proxyPort !== undefined) {
      // The CA relais generated at start, as a client downloads it to trust it (GET /_relais/ca.crt).
      const res = await fetch(`${url}/_relais/ca.crt`);
      const ca = await res.text();
      if (res.status !== 200 || !ca.includes('BEGIN CERTIFICATE')) throw new Error(`GET /_relais/ca.crt answered ${res.status}`);
      return { name: 'relais proxy door', url, proc, proxy: { url: `http://127.0.0.1:${proxyPort}`, registry: PROXY_REGISTRY, ca }, stop: () => proc.stop() };
    }
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return { name: o.sendfile ? 'relais' : 'relais (sendfile off)', url, proc, stop: () => proc.stop() };
}

export interface TargetOptions {
  readonly workDir: string;
  /** host:port of the upstream as reachable from where the target runs. */
  readonly upstream: string;
  readonly prefix: readonly string[];
  /** Extra node flags for relais (e.g. --cpu-prof). */
  readonly relaisNodeArgs?: readonly string[];
  /** relais's entry point (default: this checkout's dist/src/cli/main.js). */
  readonly relaisMain?: string;
  /** nginx logs every request (buffered), like relais by default (default true). */
  readonly nginxAccessLog?: boolean;
  /** relais: also open the HTTPS proxy door (proxy.listen) on a free port (Running.proxy). */
  readonly relaisProxyDoor?: boolean;
  /** relais: send cached blobs with sendfile(2) (server.sendfile, default true); false streams them as through TLS. */
  readonly relaisSendfile?: boolean;
}

export async function startTarget(kind: TargetKind, o: TargetOptions): Promise<Running> {
  switch (kind) {
    case 'distribution': {
      const port = await freePort();
      return startDistribution({
        name: 'distribution',
        workDir: o.workDir,
        dataDir: join(o.workDir, 'data'),
        host: '127.0.0.1',
        port,
        proxyRemote: `http://${o.upstream}`,
        prefix: o.prefix,
      });
    }
    case 'nginx':
      return startNginx(o);
    case 'relais':
      return startRelais({ ...o, nodeArgs: [...RELAIS_NODE_FLAGS, ...(o.relaisNodeArgs ?? [])], main: o.relaisMain ?? RELAIS_MAIN, proxyDoor: o.relaisProxyDoor ?? false, sendfile: o.relaisSendfile ?? true });
  }
}
