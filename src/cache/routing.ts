// Which upstream serves a request, and under which repository name.
// One instance mirrors many registries; relais never connects to a host that is not configured.
import { errors } from '../errors.js';
import type { ClientCredential } from '../upstream/credential.js';
import { validateName } from './reference.js';

export interface UpstreamRoute {
  /** The configured upstream's name (a registry host name such as docker.io). */
  readonly upstream: string;
  /** The repository name at the upstream (after the library/ rule). */
  readonly repo: string;
  /**
   * A passthrough upstream (docs/access.md): the requesting client's own credential, which every upstream
   * request made for this route carries (undefined: anonymous). Never part of a cache key.
   */
  readonly credential?: ClientCredential | undefined;
}

export interface RoutingTable {
  readonly defaultUpstream: string;
  /** Configured upstream names -> whether Docker Hub's library/ rule applies. */
  readonly upstreams: ReadonlyMap<string, { readonly libraryPrefix: boolean }>;
}

/** A first path component that names a registry host: has a dot or a port, or is localhost. */
function looksLikeRegistryHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

/**
 * Resolves the client's repository name (and containerd's ?ns=) to an upstream and its repository:
 * - `?ns=<registry>` selects that upstream (containerd hosts.toml mirrors);
 * - a first component equal to a configured upstream name selects it (`/v2/ghcr.io/owner/img/...`);
 * - a first component that looks like another registry host is refused (not an open proxy);
 * - anything else goes to the default upstream (dockerd's registry-mirrors).
 */
export function resolveRoute(table: RoutingTable, name: string, ns: string | undefined): UpstreamRoute {
  validateName(name);
  let upstream: string;
  let repo: string;
  if (ns !== undefined && ns !== '') {
    if (!table.upstreams.has(ns)) {
      throw errors.nameUnknown(name, `upstream "${ns.slice(0, 100)}" (from ?ns=) is not configured`, 'add it under upstreams: in the config');
    }
    upstream = ns;
    repo = name;
  } else {
    const slash = name.indexOf('/');
    const first = slash === -1 ? name : name.slice(0, slash);
    if (slash !== -1 && table.upstreams.has(first)) {
      upstream = first;
      repo = name.slice(slash + 1);
    } else if (slash !== -1 && looksLikeRegistryHost(first)) {
      throw errors.nameUnknown(name, `upstream "${first}" is not configured`, 'add it under upstreams: in the config');
    } else {
      upstream = table.defaultUpstream;
      repo = name;
    }
  }
  const opts = table.upstreams.get(upstream);
  if (opts?.libraryPrefix === true && !repo.includes('/')) repo = `library/${repo}`;
  validateName(repo);
  return { upstream, repo };
}

/**
 * The route of a request on a connection bound to an upstream (the proxy door): the name is the repository
 * at that upstream as the client wrote it, with Docker Hub's library/ rule where it applies.
 */
export function resolveBoundRoute(table: RoutingTable, upstream: string, name: string): UpstreamRoute {
  validateName(name);
  const opts = table.upstreams.get(upstream);
  if (opts === undefined) throw errors.nameUnknown(name, `upstream "${upstream.slice(0, 100)}" is not configured`, 'add it under upstreams: in the config');
  const repo = opts.libraryPrefix && !name.includes('/') ? `library/${name}` : name;
  validateName(repo);
  return { upstream, repo };
}
