// Which CONNECT targets the proxy door intercepts, and for which upstream; what the CA must vouch for.
import { hostKey, upstreamHosts, type ResolvedConfig } from '../../config/load.js';
import { errors } from '../../errors.js';

export interface ProxyHosts {
  /** host:port -> upstream name. */
  readonly intercepted: ReadonlyMap<string, string>;
  /** The intercepted host names without ports: the CA's name constraints. */
  readonly names: readonly string[];
  /** host:port of proxy.tunnel. */
  readonly tunnels: ReadonlySet<string>;
}

export function proxyHosts(config: Pick<ResolvedConfig, 'upstreams' | 'proxy'>): ProxyHosts {
  const intercepted = new Map<string, string>();
  for (const [name, up] of Object.entries(config.upstreams)) {
    for (const h of upstreamHosts(name, up)) {
      const key = hostKey(h);
      const other = intercepted.get(key);
      if (other !== undefined && other !== name) {
        throw errors.configInvalid('config', `upstreams.${name}.hosts: ${h} is already a host of upstream ${other}`, 'each host name belongs to one upstream');
      }
      intercepted.set(key, name);
    }
  }
  const names = [...new Set([...intercepted.keys()].map((k) => k.replace(/:\d+$/, '')))].sort();
  return { intercepted, names, tunnels: new Set(config.proxy.tunnel.map(hostKey)) };
}
