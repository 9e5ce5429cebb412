// CNCF distribution 2.8 (`docker-registry serve CONFIG`, the `registry:2` program) as a test peer:
// plain, with htpasswd Basic auth, with Docker-Hub-style bearer tokens, or in proxy mode.
//
// What the upstream saw comes from distribution's access log: one Apache "combined" line per
// request on its stdout, e.g.
//   127.0.0.1 - - [27/Nov/2026:20:56:52 +0000] "GET /v2/foo/manifests/x?ns=docker.io HTTP/1.1" 404 91 "" "curl/7.88.1"
// The process writes that file itself and the helpers below read it synchronously, so a count
// sees every line distribution has written. Distribution writes a line when its handler returns:
// for small responses that is before the client gets the response; for a large blob the client
// may hold the last bytes a few microseconds before the line is written, so call
// `await registry.settle()` before counting when exactness right after a blob download matters.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { statSync } from 'node:fs';
import { freePort } from './ports.js';
import { removeDir, removeDirAtExit, run, runOk, startProcess, tempDir, waitForHttp, type ManagedProcess } from './proc.js';
import { startTokenIssuer, type TokenIssuer } from './token-issuer.js';

export type { TokenIssuer, TokenRequestRecord, TokenAccess } from './token-issuer.js';

export interface AccessLogEntry {
  method: string;
  /** Path without the query string, e.g. /v2/library/alpine/manifests/3.20 */
  path: string;
  status: number;
  /** Response bytes written, as distribution logged them (0 when it logged '-'). */
  bytes: number;
  /** Path with the query string as sent, e.g. /v2/library/alpine/manifests/3.20?ns=docker.io */
  uri: string;
  /** The query string without '?' ('' when none). */
  query: string;
  userAgent: string;
  /** The raw log line. */
  line: string;
}

export interface RegistryPeer {
  /** http://127.0.0.1:PORT (https:// with tls: true) */
  readonly url: string;
  /** With tls: true, the PEM file of the self-signed certificate to trust (it is its own CA). */
  readonly caFile: string | undefined;
  /** 127.0.0.1:PORT */
  readonly host: string;
  readonly port: number;
  /** Temp dir holding config.yml, data/, logs. */
  readonly dir: string;
  /** distribution's storage root (dir/data). */
  readonly dataDir: string;
  readonly configFile: string;
  /** Credentials accepted by this registry (htpasswd users, or token users), if any. */
  readonly users: Record<string, string> | undefined;
  /**
   * Entries parsed from distribution's access log since start (or the last clearLog()), across
   * restarts. Requests for '/' (the readiness probe) are left out.
   */
  accessLog(): AccessLogEntry[];
  /** Requests with this method (case-insensitive; '*' for any) whose path (no query) matches pathRe. */
  count(method: string, pathRe: RegExp): number;
  /** GET /v2/<name>/blobs/<digest> answered 200, 206 or 307 (optionally for one digest). */
  blobGets(digest?: string): number;
  /** GET /v2/<name>/manifests/<ref>, any status. */
  manifestGets(): number;
  /** HEAD /v2/<name>/manifests/<ref>, any status. */
  manifestHeads(): number;
  /** Forget entries seen so far. */
  clearLog(): void;
  /** Resolves once the access log has not grown for quietMs (default 100 ms). */
  settle(quietMs?: number): Promise<void>;
  /** Waits until count(method, pathRe) >= n; rejects with the log after timeoutMs. */
  waitForCount(method: string, pathRe: RegExp, n: number, timeoutMs?: number): Promise<number>;
  /** distribution's own log (stderr), for failure messages. */
  appLog(): string;
  /** Stop the process (data kept). */
  stop(): Promise<void>;
  /** Start again on the same port with the same data. */
  start(): Promise<void>;
  /** True while the process runs. */
  running(): boolean;
  /** Stop and delete the temp dir (and the token issuer). */
  close(): Promise<void>;
}

export interface RegistryOptions {
  auth?: { kind: 'htpasswd'; users: Record<string, string> } | { kind: 'token'; users?: Record<string, string>; repositories?: Record<string, string[]> };
  /** distribution in proxy (pull-through cache) mode, the benchmark anchor. */
  proxy?: { remoteUrl: string; username?: string; password?: string };
  /** Allow DELETE of manifests and blobs; default true. */
  deleteEnabled?: boolean;
  /**
   * Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 and localhost (see caFile);
   * clients must be told to trust it (undici Agent {connect: {ca}}, curl --cacert, skopeo --src-cert-dir).
   */
  tls?: boolean;
  /** Log level of distribution's own log (stderr); default 'error'. */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
}

const COMBINED = /^(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) (\S+) ([^"]*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"/;

/** Parses one Apache combined log line as distribution (gorilla/handlers) writes it. */
export function parseAccessLogLine(line: string): AccessLogEntry | null {
  const m = COMBINED.exec(line);
  if (m === null) return null;
  const uri = m[5] ?? '';
  const q = uri.indexOf('?');
  return {
    method: m[4] ?? '',
    path: q < 0 ? uri : uri.slice(0, q),
    uri,
    query: q < 0 ? '' : uri.slice(q + 1),
    status: Number(m[7]),
    bytes: m[8] === '-' ? 0 : Number(m[8]),
    userAgent: m[10] ?? '',
    line,
  };
}

const BLOB_PATH = /^\/v2\/.+\/blobs\/([a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$/;
const MANIFEST_PATH = /^\/v2\/.+\/manifests\/[^/]+$/;

/** Waits until an HTTPS server on host answers (trusting caFile), failing early if p exits. */
async function waitForTls(host: string, caFile: string, p: ManagedProcess): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', '--cacert', caFile, `https://${host}/`]);
    if (r.code === 0 && r.stdout !== '000') return;
    if (p.exitInfo() !== null) throw new Error(`registry exited while starting\n${p.output()}`);
    if (Date.now() > deadline) throw new Error(`registry https://${host}/ did not answer: ${r.stderr}\n${p.output()}`);
    await sleep(50);
  }
}

function htpasswdLine(user: string, password: string): Promise<string> {
  return runOk('htpasswd', ['-Bbn', user, password]).then((r) => r.stdout.trim());
}

/** Starts distribution on a free loopback port in a fresh temp dir. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<RegistryPeer & { token?: TokenIssuer }> {
  const dir = await tempDir('registry');
  removeDirAtExit(dir);
  try {
    return await startIn(dir, opts);
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
}

async function startIn(dir: string, opts: RegistryOptions): Promise<RegistryPeer & { token?: TokenIssuer }> {
  let port = await freePort();
  let host = `127.0.0.1:${port}`;
  const dataDir = join(dir, 'data');
  const configFile = join(dir, 'config.yml');
  let token: TokenIssuer | undefined;
  let users: Record<string, string> | undefined;

  // JSON is YAML; distribution reads it as its config file.
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: opts.logLevel ?? 'error', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: dataDir },
      delete: { enabled: opts.deleteEnabled ?? true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: host, secret: 'relais-test-secret', headers: { 'X-Content-Type-Options': ['nosniff'] } },
    health: { storagedriver: { enabled: false } },
  };
  if (opts.auth?.kind === 'htpasswd') {
    users = { ...opts.auth.users };
    const lines = await Promise.all(Object.entries(users).map(([u, p]) => htpasswdLine(u, p)));
    const file = join(dir, 'htpasswd');
    await writeFile(file, `${lines.join('\n')}\n`);
    config.auth = { htpasswd: { realm: 'relais-test', path: file } };
  } else if (opts.auth?.kind === 'token') {
    users = opts.auth.users === undefined ? undefined : { ...opts.auth.users };
    token = await startTokenIssuer({ dir, ...(users === undefined ? {} : { users }), ...(opts.auth.repositories === undefined ? {} : { repositories: opts.auth.repositories }) });
    config.auth = {
      token: { realm: token.realm, service: token.service, issuer: token.issuer, rootcertbundle: token.certFile },
    };
  }
  if (opts.proxy !== undefined) {
    const proxy: Record<string, string> = { remoteurl: opts.proxy.remoteUrl };
    if (opts.proxy.username !== undefined) proxy.username = opts.proxy.username;
    if (opts.proxy.password !== undefined) proxy.password = opts.proxy.password;
    config.proxy = proxy;
  }
  let caFile: string | undefined;
  if (opts.tls === true) {
    caFile = join(dir, 'tls-cert.pem');
    await runOk('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', join(dir, 'tls-key.pem'), '-out', caFile, '-days', '30', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-addext', 'basicConstraints=critical,CA:TRUE',
    ]);
  }
  const scheme = opts.tls === true ? 'https' : 'http';

  const writeConfig = (): Promise<void> => {
    const http: Record<string, unknown> = { addr: host, secret: 'relais-test-secret', headers: { 'X-Content-Type-Options': ['nosniff'] } };
    if (caFile !== undefined) http.tls = { certificate: caFile, key: join(dir, 'tls-key.pem') };
    config.http = http;
    return writeFile(configFile, JSON.stringify(config, null, 2));
  };
  await writeConfig();

  let proc: ManagedProcess | null = null;
  let logOffset = 0; // bytes of stdout already parsed
  let entries: AccessLogEntry[] = [];
  let starts = 0;

  const launch = async (): Promise<void> => {
    // Appending after the first start keeps one access log across restarts (offsets stay valid).
    const p = await startProcess('docker-registry', ['serve', configFile], { name: 'registry', logDir: dir, appendLogs: starts > 0 });
    starts += 1;
    proc = p;
    try {
      if (caFile === undefined) await waitForHttp(`http://${host}/`, 15_000, { process: p });
      else await waitForTls(host, caFile, p);
    } catch (err) {
      await p.stop();
      throw err;
    }
    // The readiness probe hits '/', which refresh() never records.
    refresh();
  };

  const refresh = (): void => {
    if (proc === null) return;
    const { text, offset } = proc.readStdoutFrom(logOffset);
    logOffset = offset;
    if (text === '') return;
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const e = parseAccessLogLine(line);
      if (e !== null && e.path !== '/') entries.push(e);
    }
  };

  const count = (method: string, pathRe: RegExp): number => {
    refresh();
    const m = method.toUpperCase();
    const re = pathRe.global || pathRe.sticky ? new RegExp(pathRe.source, pathRe.flags.replace(/[gy]/g, '')) : pathRe;
    return entries.filter((e) => (m === '*' || e.method === m) && re.test(e.path)).length;
  };

  const stdoutSize = (): number => {
    if (proc === null) return 0;
    try {
      return statSync(proc.stdoutFile).size;
    } catch {
      return 0;
    }
  };

  // Another process may grab the free port before distribution binds it: retry with a new one.
  for (let attempt = 1; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      const inUse = proc !== null && /address already in use/.test((proc as ManagedProcess).stderr());
      if (!inUse || attempt >= 3) {
        if (token !== undefined) await token.close();
        throw err;
      }
      port = await freePort();
      host = `127.0.0.1:${port}`;
      await writeConfig();
    }
  }

  const peer: RegistryPeer & { token?: TokenIssuer } = {
    url: `${scheme}://${host}`,
    caFile,
    host,
    port,
    dir,
    dataDir,
    configFile,
    users,
    accessLog: () => {
      refresh();
      return entries.map((e) => ({ ...e }));
    },
    count,
    blobGets: (digest) => {
      refresh();
      return entries.filter((e) => {
        if (e.method !== 'GET' || (e.status !== 200 && e.status !== 206 && e.status !== 307)) return false;
        const m = BLOB_PATH.exec(e.path);
        return m !== null && (digest === undefined || m[1] === digest);
      }).length;
    },
    manifestGets: () => count('GET', MANIFEST_PATH),
    manifestHeads: () => count('HEAD', MANIFEST_PATH),
    clearLog: () => {
      refresh();
      entries = [];
    },
    settle: async (quietMs = 100) => {
      let size = stdoutSize();
      let stableSince = Date.now();
      while (Date.now() - stableSince < quietMs) {
        await sleep(Math.min(20, quietMs));
        const now = stdoutSize();
        if (now !== size) {
          size = now;
          stableSince = Date.now();
        }
      }
      refresh();
    },
    waitForCount: async (method, pathRe, n, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const c = count(method, pathRe);
        if (c >= n) return c;
        if (Date.now() > deadline) {
          const log = entries.map((e) => e.line).join('\n');
          throw new Error(`registry ${host}: ${c} of ${n} ${method} ${String(pathRe)} requests after ${timeoutMs} ms\n${log}`);
        }
        await sleep(20);
      }
    },
    appLog: () => (proc === null ? '' : proc.stderr()),
    stop: async () => {
      if (proc === null) return;
      refresh();
      await proc.stop();
      refresh();
    },
    start: async () => {
      if (proc !== null && proc.exitInfo() === null) throw new Error(`registry ${host} is already running`);
      await launch();
    },
    running: () => proc !== null && proc.exitInfo() === null,
    close: async () => {
      if (proc !== null) await proc.stop();
      if (token !== undefined) await token.close();
      await removeDir(dir);
    },
  };
  if (token !== undefined) peer.token = token;
  return peer;
}
