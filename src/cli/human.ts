// What a person sees when relais runs on a terminal: a start banner (where to point dockerd, containerd
// and podman, the status page), and log lines as "12:03:04 WARN message key=value" instead of JSON.
// Not on a terminal (a service, a container, a pipe) the log stays JSON lines, one per event.
import { networkInterfaces } from 'node:os';
import { Writable } from 'node:stream';

/** The JSON log lines of pino and of the request log, turned into short human lines. */
export function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 19) : '';
  const level = typeof o.level === 'number' ? (LEVELS[o.level] ?? String(o.level)) : '';
  const msg = typeof o.msg === 'string' ? o.msg : '';
  const rest = Object.entries(o).filter(([k]) => !OMIT.has(k));
  if (msg === 'request') {
    const f = (k: string): string => (o[k] === undefined ? '' : ` ${typeof o[k] === 'string' ? o[k] : JSON.stringify(o[k])}`);
    return `${time} ${level.padEnd(5)} ${f('method').trim()} ${f('path').trim()}${f('status')}${f('cache')}${typeof o.ms === 'number' ? ` ${o.ms}ms` : ''}${o.aborted === true ? ' aborted' : ''}`;
  }
  const hint = typeof o.hint === 'string' ? o.hint : undefined;
  const fields = rest.filter(([k]) => k !== 'hint').map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return `${time} ${level.padEnd(5)} ${msg}${fields.length > 0 ? `  ${fields.join(' ')}` : ''}${hint === undefined ? '' : `\n         hint: ${hint}`}`;
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMIT = new Set(['level', 'time', 'msg', 'service', 'pid', 'hostname']);

/** A stream for the logger and the request log that writes human lines to `out`. */
export function humanLogStream(out: NodeJS.WritableStream): Writable & { flushSync(): void } {
  let partial = '';
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      partial += chunk.toString();
      let nl;
      let text = '';
      while ((nl = partial.indexOf('\n')) !== -1) {
        text += `${humanLine(partial.slice(0, nl))}\n`;
        partial = partial.slice(nl + 1);
      }
      // Straight through, in order with the banner and everything else written to `out`.
      if (text !== '') out.write(text);
      cb();
    },
  });
  return Object.assign(stream, {
    flushSync: () => undefined,
  });
}

export interface BannerInfo {
  readonly version: string;
  /** The configured listen address (0.0.0.0:5000). */
  readonly listen: string;
  /** The port actually bound. */
  readonly port: number;
  readonly tls: boolean;
  readonly dataDir: string;
  readonly upstreams: Readonly<Record<string, string>>;
  readonly defaultUpstream: string;
  readonly auth: boolean;
  readonly statusPage: boolean;
}

/** An address of this machine other machines can use: the first non-internal IPv4 one. */
function externalAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

/** The start banner: what runs, where to point each client, and what to look out for. */
export function renderBanner(b: BannerInfo, address: () => string | undefined = externalAddress): string {
  const host = b.listen.slice(0, b.listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  const everywhere = host === '0.0.0.0' || host === '::' || host === '';
  const shownHost = everywhere ? (address() ?? 'HOST') : host.includes(':') ? `[${host}]` : host;
  const hostPort = `${shownHost}:${b.port}`;
  const scheme = b.tls ? 'https' : 'http';
  const url = `${scheme}://${hostPort}`;
  const others = Object.keys(b.upstreams).filter((n) => n !== b.defaultUpstream);
  const lines = [
    `relais ${b.version}: a pull-through cache on ${url} (listening on ${b.listen.replace(/:\d+$/, `:${b.port}`)}${everywhere ? ', every interface' : ''})`,
    `  data directory  ${b.dataDir}`,
    ...Object.entries(b.upstreams).map(([n, u], i) => `  ${i === 0 ? 'upstreams      ' : '               '} ${n} -> ${u}${n === b.defaultUpstream ? '   (default: unprefixed requests, dockerd mirror traffic)' : ''}`),
    b.statusPage ? `  status page     ${url}/${b.auth ? '   (admins only)' : ''}` : '  status page     off (metrics.statusPage: false)',
    '',
    'Point your clients at it:',
    `  dockerd     /etc/docker/daemon.json: "registry-mirrors": ["${url}"]${b.tls ? '' : `, "insecure-registries": ["${hostPort}"]`}`,
    `  containerd  /etc/containerd/certs.d/docker.io/hosts.toml:`,
    `                server = "https://registry-1.docker.io"`,
    `                [host."${url}"]`,
    `                  capabilities = ["pull", "resolve"]`,
    ...(others.length > 0 ? [`              (the same in certs.d/${others.join('/, certs.d/')}/: relais routes by ?ns=)`] : []),
    `  podman      /etc/containers/registries.conf:`,
    `                [[registry]]`,
    `                prefix = "docker.io"`,
    `                location = "docker.io"`,
    `                [[registry.mirror]]`,
    `                location = "${hostPort}/docker.io"${b.tls ? '' : '\n                insecure = true'}`,
    `  any client  ${hostPort}/${others[0] ?? b.defaultUpstream}/OWNER/IMAGE:TAG   (path prefix: the upstream's name, then the image)`,
  ];
  if (everywhere && shownHost !== 'HOST') lines.push(`  (${shownHost} is this machine's first address; use the one your clients reach it on)`);
  if (everywhere && !b.auth) {
    lines.push('', 'warning: listening on every interface without authentication: anyone who reaches this port can pull through', '         relais. Fine on a private CI network; otherwise --listen 10.0.0.5:5000 (a private address) or add auth:.');
  }
  return `${lines.join('\n')}\n\n`;
}
