// TEST UPSTREAM WITH A REFERRERS API, built over a real distribution 2.8.
//
// Debian ships no registry with the OCI 1.1 referrers API (no zot, distribution is 2.8), so for the ONE case
// "the upstream has the referrers API" this small server sits in front of a real distribution peer: it answers
// GET /v2/<repo>/referrers/<digest> itself, by reading the manifests distribution stored for the repository
// (its filesystem layout: repositories/<repo>/_manifests/revisions and blobs/sha256/<xx>/<hex>/data) and
// listing those whose `subject` is the digest; every other request is passed to distribution unchanged.
// Options mimic what real registries differ in: whether they apply the artifactType filter (and say so with
// OCI-Filters-Applied), and page size (Link: rel="next"). Everything else relais sees is distribution.
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { RegistryPeer } from './registry.js';

export interface ReferrersUpstreamOptions {
  /** Apply ?artifactType= and answer OCI-Filters-Applied: artifactType (default true). */
  readonly filter?: boolean;
  /** Descriptors per page; more come with Link: <...>; rel="next" (default: all in one page). */
  readonly pageSize?: number;
}

export interface ReferrersRequest {
  readonly path: string;
  readonly query: string;
}

export interface ReferrersUpstream {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** Referrers requests this server answered (distribution's own log has the rest). */
  referrersRequests(): ReferrersRequest[];
  clearLog(): void;
  close(): Promise<void>;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

const REFERRERS = /^\/v2\/(.+)\/referrers\/(sha256:[a-f0-9]{64})$/;

async function referrersOf(dataDir: string, repo: string, subject: string): Promise<Descriptor[]> {
  const root = join(dataDir, 'docker', 'registry', 'v2');
  let revisions: string[];
  try {
    revisions = await readdir(join(root, 'repositories', repo, '_manifests', 'revisions', 'sha256'));
  } catch {
    return [];
  }
  const out: Descriptor[] = [];
  for (const hex of revisions.sort()) {
    let body: Buffer;
    try {
      body = await readFile(join(root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'));
    } catch {
      continue;
    }
    const m = JSON.parse(body.toString('utf8')) as { mediaType?: string; artifactType?: string; config?: { mediaType?: string }; subject?: { digest?: string }; annotations?: Record<string, string> };
    if (m.subject?.digest !== subject) continue;
    const d: Descriptor = { mediaType: m.mediaType ?? 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${hex}`, size: body.byteLength };
    const artifactType = m.artifactType ?? m.config?.mediaType;
    if (artifactType !== undefined) d.artifactType = artifactType;
    if (m.annotations !== undefined) d.annotations = m.annotations;
    out.push(d);
  }
  return out;
}

function proxy(req: IncomingMessage, res: ServerResponse, target: RegistryPeer): void {
  const up = httpRequest(`${target.url}${req.url ?? '/'}`, { method: req.method, headers: { ...req.headers, host: target.host } }, (r) => {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
}

export async function startReferrersUpstream(registry: RegistryPeer, opts: ReferrersUpstreamOptions = {}): Promise<ReferrersUpstream> {
  const filter = opts.filter ?? true;
  let log: ReferrersRequest[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = REFERRERS.exec(url.pathname);
    if (req.method !== 'GET' || m?.[1] === undefined || m[2] === undefined) return proxy(req, res, registry);
    log.push({ path: url.pathname, query: url.search.slice(1) });
    const repo = m[1];
    void referrersOf(registry.dataDir, repo, m[2]).then((all) => {
      const artifactType = url.searchParams.get('artifactType');
      const list = filter && artifactType !== null ? all.filter((d) => d.artifactType === artifactType) : all;
      const start = Number(url.searchParams.get('last') ?? '0');
      const size = opts.pageSize ?? list.length;
      const page = list.slice(start, start + Math.max(size, 1));
      const headers: Record<string, string> = { 'content-type': 'application/vnd.oci.image.index.v1+json' };
      if (filter && artifactType !== null) headers['oci-filters-applied'] = 'artifactType';
      if (start + page.length < list.length) {
        const next = new URLSearchParams(url.searchParams);
        next.set('last', String(start + page.length));
        headers.link = `</v2/${repo}/referrers/${m[2]}?${next.toString()}>; rel="next"`;
      }
      res.writeHead(200, headers);
      res.end(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: page }));
    }, () => {
      res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    referrersRequests: () => [...log],
    clearLog: () => {
      log = [];
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
