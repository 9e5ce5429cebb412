// Composition root: builds storage, index, upstream clients, services and the server from a config.
// Everything else receives its dependencies; nothing reaches for globals.
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { Evictor } from './eviction/evictor.js';
import { acquireDataLock, type DataLock } from './upkeep/pidfile.js';
import { RefreshAhead } from './upkeep/refresh-ahead.js';
import { PrefetchScheduler } from './upkeep/prefetch-schedule.js';
import type { ResolvedConfig } from './config/load.js';
import { defaultUpstreamWarning, usesLibraryPrefix } from './config/load.js';
import { errors, isRelaisError } from './errors.js';
import { createAccessControl } from './doors/http/access.js';
import { createRegistryHandler } from './doors/http/handlers.js';
import type { HotManifests } from './doors/http/hot-manifests.js';
import { createOpsHandler } from './doors/http/ops-endpoints.js';
import { Sendfile, loadSendfile } from './doors/http/sendfile.js';
import { createServer, type RouteHandler, type RunningServer } from './doors/http/server.js';
import { startCluster } from './cluster/create-cluster.js';
import type { ClusterInvalidations } from './cluster/invalidations.js';
import { makeEvictor } from './eviction/cluster-evictor.js';
import { openIndex } from './index/create-index.js';
import type { CacheIndex } from './index/cache-index.js';
import { createLogger, type Logger } from './observability/logger.js';
import { createRequestLog, type RequestLog } from './observability/request-log.js';
import { RelaisMetrics, type RequestInfo } from './observability/metrics.js';
import { RefreshMetrics } from './observability/refresh-metrics.js';
import { AccessMetrics } from './observability/access-metrics.js';
import { PullBudgets } from './policy/budget.js';
import { StorageBudgetLedger } from './policy/storage-budget.js';
import { BlobService } from './cache/blobs.js';
import { ListingService } from './cache/listing.js';
import { ReferrersService } from './cache/referrers.js';
import { ManifestService } from './cache/manifests.js';
import { PassthroughGate } from './cache/passthrough.js';
import { ConfirmationCache } from './policy/confirmations.js';
import type { RoutingTable, UpstreamRoute } from './cache/routing.js';
import { openStorage } from './storage/create-storage.js';
import type { StorageDriver } from './storage/driver.js';
import { UpstreamClient } from './upstream/client.js';
import { ACCEPT_CACHED_MANIFESTS } from './upstream/media-types.js';
import { loadCa, type ProxyCa } from './doors/proxy/ca.js';
import { createProxyDoor, type ProxyBinding, type ProxyDoor } from './doors/proxy/door.js';
import { proxyHosts } from './doors/proxy/hosts.js';
import { createInterceptHandler, LearnedHosts } from './doors/proxy/intercept.js';
import { observePush } from './doors/proxy/push.js';
import { UploadSessions } from './cache/pushes.js';
import { resolveBoundRoute } from './cache/routing.js';
import { pushedManifest } from './doors/proxy/manifest-writes.js';
import { ANONYMOUS, type Principal } from './doors/http/access.js';

export interface RelaisInstance {
  readonly config: ResolvedConfig;
  readonly url: string;
  readonly port: number;
  readonly logger: Logger;
  readonly blobs: BlobService;
  readonly manifests: ManifestService;
  readonly storage: StorageDriver;
  readonly index: CacheIndex;
  readonly http: RunningServer;
  readonly metrics: RelaisMetrics;
  readonly evictor: Evictor;
  /** Prepared responses for fresh manifests by tag (src/doors/http/hot-manifests.ts). */
  readonly hotManifests: HotManifests;
  /** The HTTPS proxy door (proxy.listen), when configured: its address and CA. */
  readonly proxy?: { readonly url: string; readonly port: number; readonly ca: ProxyCa; readonly door: ProxyDoor } | undefined;
  /** Pushes kept from the proxy door (src/cache/pushes.ts), when the door is on and proxy.keepPushes.enabled. */
  readonly pushes?: UploadSessions | undefined;
  /** Refresh-ahead of hot tags (src/upkeep/refresh-ahead.ts). */
  readonly refreshAhead: RefreshAhead;
  /** The upstreams' pull budgets, from their rate-limit headers (src/policy/budget.ts). */
  readonly budgets: PullBudgets;
  /** Whether cached blobs go out with sendfile(2), and why not when they do not. */
  readonly sendfile: { readonly enabled: boolean; readonly reason?: string };
  /** Cluster mode: this replica's id and the invalidations it sends and receives (src/cluster/invalidations.ts). */
  readonly cluster?: { readonly id: string; readonly invalidations: ClusterInvalidations } | undefined;
  /** Graceful stop: drain requests, cancel downloads, close the index. */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly logger?: Logger;
  /** Where request lines go (default: stdout, in batches; src/observability/request-log.ts). */
  readonly requestLog?: RequestLog;
  /**
   * ms since the epoch for the upstreams' circuit breakers and token caches, the storage's readiness
   * cache, and the tags' and referrers' freshness (manifests, prepared responses) (default Date.now):
   * tests advance it instead of sleeping through a cooldown or a TTL.
   */
  readonly clock?: () => number;
  /** What holds the data directory's lock (src/upkeep/pidfile.ts): "serve" (default), "prefetch"... */
  readonly lockCommand?: string;
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

export async function startRelais(config: ResolvedConfig, opts: StartOptions = {}): Promise<RelaisInstance> {
  const logger = opts.logger ?? createLogger(config.log.level);
  // Request lines are info lines: none when the level is above info or log.requests is off.
  const requestLog = config.log.requests && logger.isLevelEnabled('info') ? (opts.requestLog ?? createRequestLog()) : undefined;
  const dataDir = resolve(config.dataDir);
  try {
    await mkdir(dataDir, { recursive: true });
  } catch (e) {
    throw errors.dataDirUnusable(dataDir, (e as NodeJS.ErrnoException).code ?? 'error', e);
  }
  // One relais per data directory: a second one would remove the first one's spool files (below).
  const lock = await acquireDataLock(dataDir, opts.lockCommand ?? 'serve').catch((e: unknown) => {
    const code = (e as NodeJS.ErrnoException).code;
    throw isRelaisError(e) || code === undefined ? e : errors.dataDirUnusable(dataDir, code, e);
  });
  try {
    return await startLocked(config, opts, logger, requestLog, dataDir, lock);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function startLocked(config: ResolvedConfig, opts: StartOptions, logger: Logger, requestLog: RequestLog | undefined, dataDir: string, lock: DataLock): Promise<RelaisInstance> {
  // Filesystem or S3 (storage.driver); spool files left by a crash are removed before serving.
  const storageSetup = await openStorage(config.storage, dataDir, { now: opts.clock });
  const { storage } = storageSetup;
  // SQLite in dataDir, or PostgreSQL shared by a cluster (index.driver).
  const indexSetup = await openIndex(config.index, dataDir).catch((e: unknown) => {
    storageSetup.close();
    throw e;
  });
  const { index } = indexSetup;
  // Cluster mode: one upstream fetch per blob across replicas (leases in PostgreSQL; docs/cluster.md).
  const cluster = config.cluster && indexSetup.postgres ? startCluster(config.cluster, { postgres: indexSetup.postgres, index, storage, logger }) : undefined;

  const upstreams = new Map<string, UpstreamClient>();
  const routing: RoutingTable = {
    defaultUpstream: config.defaultUpstream,
    upstreams: new Map(Object.entries(config.upstreams).map(([n, u]) => [n, { libraryPrefix: usesLibraryPrefix(n, u) }])),
  };
  const metrics = new RelaisMetrics({
    upstreams: Object.keys(config.upstreams),
    credential: (name) => config.upstreams[name]?.username ?? 'anonymous',
    recentErrors: config.metrics.recentErrors,
    version: relaisVersion(),
  });
  // Docker Hub's rate-limit headers: shown (metrics) and acted upon (a reserve of pulls for real misses).
  const budgets = new PullBudgets((name) => upstreamCfg(name).pullReserve);
  const upstreamObserver = {
    onExchange: metrics.upstreamExchange.bind(metrics),
    onHeaders: (name: string, headers: Readonly<Record<string, string | string[] | undefined>>) => {
      metrics.upstreamHeaders(name, headers);
      const change = budgets.observe(name, headers);
      if (change !== undefined) {
        const v = budgets.view(name);
        const detail = { event: 'pull-budget', upstream: name, remaining: v.remaining, limit: v.limit, reserve: v.reserve };
        if (change === 'under') logger.warn(detail, `pull budget: ${name} is at or under its reserve of ${v.reserve} pulls; refresh-ahead, prefetch and revalidation GETs stop`);
        else logger.info(detail, `pull budget: ${name} is above its reserve again; refresh-ahead, prefetch and revalidation resume`);
      }
    },
  };
  for (const [name, cfg] of Object.entries(config.upstreams)) upstreams.set(name, new UpstreamClient(name, cfg, upstreamObserver, { now: opts.clock }));
  const upstreamCfg = (name: string) => {
    const u = config.upstreams[name];
    if (!u) throw new Error(`upstream ${name} is not configured`);
    return u;
  };

  // storage.maxSize: what the index does not count (stores in progress, files not unlinked yet), shared by the
  // admission (before a store) and the evictor (around its deletes), so that the bound on disk is exact.
  const budgetLedger = config.storage.maxSize === undefined ? undefined : new StorageBudgetLedger(config.storage.maxSize);
  const blobs = new BlobService({
    storage,
    index,
    upstreams,
    attempts: (name) => upstreamCfg(name).retries.attempts,
    // Cluster mode: every fetch from an upstream (a miss, a refetch of a lost object) claims the download lease.
    wrapSource: cluster ? (local) => cluster.wrap(local) : undefined,
    // Room for a download (the budget's, or the disk's when it is full): evict least-recently-used images, when
    // storage.maxSize is set (the evictor is built below).
    makeRoom: (bytes, recheck) => evictor.makeRoom(bytes, recheck),
    // storage.maxSize: a blob's room is made (by eviction) and reserved before it is stored.
    budget: budgetLedger && { ledger: budgetLedger, usage: async () => (await index.usage()).bytes },
    observer: {
      event: (event, detail) => logger.warn({ event, ...detail }, `blob download: ${event}`),
      bytesFetched: (upstream, n) => metrics.bytesFetched(upstream, n),
      downloadEnded: (d) => {
        metrics.downloadEnded(d);
        if (d.state === 'committed') evictor.onStored();
      },
    },
  });
  const manifests = new ManifestService({
    storage,
    index,
    upstreams,
    settings: (name) => upstreamCfg(name),
    maxManifestSize: config.server.maxManifestSize,
    coordinator: cluster?.manifests,
    space: budgetLedger && blobs,
    ...(opts.clock ? { now: opts.clock } : {}),
    budget: {
      maySpend: (name) => budgets.maySpend(name),
      heldBack: (route, tag) => {
        refreshMetrics.heldBack.inc({ upstream: route.upstream, what: 'revalidation' });
        logger.debug({ event: 'pull-budget', image: `${route.upstream}/${route.repo}:${tag}` }, 'pull budget: upstream under its reserve; tag moved upstream, cached digest served stale');
      },
    },
  });
  // Hot tags revalidated (and warmed) in the background before their TTL ends (refreshAhead: in the config).
  const refreshAhead = new RefreshAhead(config.refreshAhead, {
    manifests,
    blobs,
    index,
    tagTtl: (name) => upstreamCfg(name).tagTtl,
    maySpend: (name) => budgets.maySpend(name),
    maxSize: config.storage.maxSize,
    logger,
  });
  const refreshMetrics = new RefreshMetrics(metrics.registry, {
    upstreams: Object.keys(config.upstreams),
    credential: (name) => config.upstreams[name]?.username ?? 'anonymous',
    budget: (name) => budgets.view(name),
    hotTags: () => refreshAhead.hotTags(),
    inFlight: () => refreshAhead.inFlight,
  });
  refreshAhead.setMetrics(refreshMetrics);
  const listing = new ListingService(upstreams, index);
  const referrers = new ReferrersService({
    upstreams,
    manifest: (route, tag) => manifests.get(route, tag),
    settings: (name) => upstreamCfg(name),
    maxBodySize: config.server.maxManifestSize,
    ...(opts.clock ? { now: opts.clock } : {}),
  });
  // Bounded disk: LRU eviction under storage.maxSize, idle age, pins; periodic online gc.
  const evictor = makeEvictor(cluster?.leases, {
    index,
    storage,
    blobs,
    forget: (digests) => manifests.forget(digests),
    ledger: budgetLedger,
    settings: config.storage,
    pinContext: { defaultUpstream: config.defaultUpstream, libraryPrefix: (u) => routing.upstreams.get(u)?.libraryPrefix ?? false },
    logger,
    metrics,
  });
  const sendfile = zeroCopy(config, logger);
  metrics.setSources({
    downloads: () => blobs.downloadsInFlight(),
    usage: () => index.usage(),
    maxSize: () => config.storage.maxSize,
    circuitOpen: (u) => upstreams.get(u)?.breaker.state === 'open',
    sendfile: () => sendfile.sender?.stats,
  });
  const ops = createOpsHandler({
    metrics,
    blobs,
    evictor,
    upstreams,
    version: relaisVersion(),
    lowWatermark: config.storage.lowWatermark,
    pins: config.storage.pin,
    metricsEnabled: config.metrics.enabled,
    statusPage: config.metrics.statusPage,
    topImages: config.metrics.topImages,
    budget: (name) => budgets.view(name),
    refreshAhead: () => ({
      enabled: config.refreshAhead.enabled,
      hotTags: refreshAhead.hotTags(),
      inFlight: refreshAhead.inFlight,
      bytesLastHour: refreshAhead.bytesLastHour(),
      maxBytesPerHour: config.refreshAhead.maxBytesPerHour,
    }),
  });
  const access = createAccessControl(config.auth);
  // The proxy door (docs/proxy.md): connections it decrypted are bound to the upstream whose host the client named.
  const proxyOn = config.proxy.listen !== undefined;
  const hosts = proxyHosts(config);
  const ca = proxyOn ? await loadCa({ files: config.proxy.ca, dataDir, hosts: hosts.names }) : undefined;
  const bindings = new WeakMap<object, ProxyBinding<Principal>>();
  const binding = (req: { socket: object }): ProxyBinding<Principal> | undefined => bindings.get(req.socket);
  const learned = new LearnedHosts();
  // Pushes through the door: hashed as they pass, kept once the upstream accepted them (docs/proxy.md#pushes).
  // What is kept is served under the read rules of pulled content; with relais's own credential, only what
  // that credential can read is kept (asked with a HEAD once per pushed blob and manifest).
  // A passthrough upstream's content is served only after the upstream confirmed each client's own credential
  // (docs/access.md), so what its pushes leave is kept without asking: relais has no credential of its own there.
  const readable = async (route: UpstreamRoute, what: 'blobs' | 'manifests', digest: string): Promise<boolean> => {
    if (config.upstreams[route.upstream]?.access === 'passthrough') return true;
    const client = upstreams.get(route.upstream);
    if (!client) return false;
    try {
      const r = await client.send({ method: 'HEAD', repo: route.repo, path: `/v2/${route.repo}/${what}/${digest}`, ...(what === 'manifests' ? { headers: { accept: ACCEPT_CACHED_MANIFESTS } } : {}) });
      r.body.dump().catch(() => undefined);
      return r.status === 200;
    } catch {
      return false;
    }
  };
  const keep = config.proxy.keepPushes;
  // Kept pushes spool in a directory of their own (their key is known only at the end), emptied here: a crash's leftovers go.
  const pushSpool = join(dataDir, 'pushes');
  if (proxyOn && keep.enabled) {
    await rm(pushSpool, { recursive: true, force: true });
    await mkdir(pushSpool, { recursive: true });
  }
  const pushes = proxyOn && keep.enabled
    ? new UploadSessions({
        storage,
        index,
        spoolDir: pushSpool,
        maxUploads: keep.maxUploads,
        idleMs: keep.idleTimeout,
        mayKeep: (route, digest) => readable(route, 'blobs', digest),
        onStored: () => evictor.onStored(),
        onEvent: (event, detail) => {
          const line = { event: `push-${event}`, ...detail };
          if (event === 'kept' || event === 'mounted') logger.debug(line, `push: blob ${event}`);
          else logger.info(line, `push: blob not kept (${event})`);
        },
      })
    : undefined;
  const pushSweep = pushes ? setInterval(() => pushes.sweep(), Math.max(1000, Math.min(60_000, keep.idleTimeout / 2))) : undefined;
  pushSweep?.unref();
  const intercept = createInterceptHandler({
    binding,
    learned,
    push: proxyOn
      ? (name, method, url, headers) =>
          observePush(
            {
              route: (upstream, repoName) => resolveBoundRoute(routing, upstream, repoName),
              sessions: pushes,
              maxManifestSize: config.server.maxManifestSize,
              keepManifest: async (route, reference, body, contentType, upstreamDigest) => {
                manifests.forgetNotFound(route, reference);
                if (!pushes) return;
                await pushes.background(async () => {
                  const digest = upstreamDigest ?? reference;
                  if (!(await readable(route, 'manifests', digest))) {
                    logger.info({ event: 'push-refused', upstream: route.upstream, repo: route.repo, reference }, 'push: manifest not kept (not readable under the read rules)');
                    return;
                  }
                  const r = await manifests.keepPushed(route, reference, body, contentType, upstreamDigest);
                  if (r.kept) logger.debug({ event: 'push-kept', upstream: route.upstream, repo: route.repo, reference, digest: r.digest }, 'push: manifest kept');
                  else logger.info({ event: 'push-not-kept', upstream: route.upstream, repo: route.repo, reference, why: r.reason }, `push: manifest not kept (${r.reason})`);
                });
              },
              manifestDeleted: (route, reference) => {
                const work = async (): Promise<void> => {
                  const gone = await manifests.forgetDeleted(route, reference);
                  if (gone.length > 0) logger.info({ event: 'push-deleted', upstream: route.upstream, repo: route.repo, reference, tags: gone }, 'push: manifest deleted upstream, its tags forgotten');
                };
                return pushes ? pushes.background(work) : work();
              },
              onError: (e) => logger.warn({ event: 'push-failed', err: e instanceof Error ? e.message : String(e) }, 'push: keeping failed (the push itself was relayed)'),
            },
            name,
            method,
            url,
            headers,
          )
      : undefined,
    upstream: (name) => {
      const client = upstreams.get(name);
      if (!client) throw new Error(`upstream ${name} is not configured`);
      return { name, baseUrl: client.baseUrl, allowPrivate: upstreamCfg(name).allowPrivateRedirects };
    },
    forward: async (name, r) => {
      const client = upstreams.get(name);
      if (!client) throw new Error(`upstream ${name} is not configured`);
      const answer = await client.forward(r);
      // A pushed tag: relais's remembered 404 or old digest for it must not outlive the push.
      const pushed = pushedManifest(r.method, r.path, answer.status);
      if (pushed) await manifests.written({ upstream: name, repo: pushed.repo }, pushed.reference);
      return answer;
    },
  });
  // Passthrough upstreams (docs/access.md): reads pass a gate that asks the upstream with the client's credential.
  const accessMetrics = new AccessMetrics(metrics.registry);
  const passthrough = new PassthroughGate({
    upstreams,
    observe: (upstream, outcome) => accessMetrics.check(upstream, outcome),
    confirmations: new ConfirmationCache({ ttlMs: config.passthrough.confirmTtl, maxEntries: config.passthrough.maxConfirmations }, opts.clock ? { now: opts.clock } : {}),
  });
  const isPassthrough = (name: string | undefined): boolean => name !== undefined && passthrough.applies(name);
  const registry = createRegistryHandler({ routing, manifests, blobs, listing, referrers, access, sendfile: sendfile.sender, boundUpstream: (req) => binding(req)?.upstream, passthrough, now: opts.clock });
  // Runs first: identifies the client, and keeps admin endpoints (status page, /_relais/*) to admins.
  const guard: RouteHandler = async (req, _res, ctx) => {
    // On a proxy connection the Authorization header is the upstream's; the client was identified at CONNECT.
    const bound = binding(req);
    if (bound !== undefined) {
      ctx.principal = bound.principal;
      return false;
    }
    try {
      ctx.principal = await access.authenticate(req);
    } catch (e) {
      // For a passthrough upstream the Authorization header may be the client's credential for the upstream.
      if (!registry.passthroughRequest(req, ctx)) throw e;
      ctx.principal = ANONYMOUS;
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/_relais/ca.crt') return false;
    if (path === '/' || path.startsWith('/_relais/') || (path === '/metrics' && !access.publicMetrics)) {
      if (access.enabled) access.checkAdmin(ctx.principal);
    }
    return false;
  };

  const health: RouteHandler = (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    // The proxy door's CA certificate: public, what clients trust (its key is never served).
    if (path === '/_relais/ca.crt' && ca !== undefined && (req.method === 'GET' || req.method === 'HEAD')) {
      res.setHeader('content-type', 'application/x-pem-file');
      res.setHeader('content-length', Buffer.byteLength(ca.certPem));
      res.end(req.method === 'HEAD' ? undefined : ca.certPem);
      return Promise.resolve(true);
    }
    if (path === '/healthz') {
      res.setHeader('content-type', 'text/plain');
      res.end('ok\n');
      return Promise.resolve(true);
    }
    if (path === '/readyz') {
      return (async () => {
        const ok = (await indexSetup.ready()) && (await storageSetup.ready());
        res.statusCode = ok ? 200 : 503;
        res.setHeader('content-type', 'text/plain');
        res.end(ok ? 'ready\n' : 'not ready\n');
        return true;
      })();
    }
    return Promise.resolve(false);
  };

  const http = createServer({
    tls: config.tls,
    headersTimeout: config.server.headersTimeout,
    keepAliveTimeout: config.server.keepAliveTimeout,
    requestTimeout: config.server.requestTimeout,
    logger,
    requestLog,
    fast: registry.fast,
    // registry.label parses the URL once, before the guard: the metrics' labels even for a refused request.
    handlers: [intercept, ...(cluster ? [cluster.handler(blobs)] : []), registry.label, guard, registry.handle, health, ops],
    onRequestEnd: (info) => {
      metrics.request(info);
      // Passthrough tags are not refreshed ahead: relais holds no credential of its own for them.
      if (config.refreshAhead.enabled && !isPassthrough(info.upstream)) {
        const pull = tagPull(info);
        if (pull) refreshAhead.recordPull(pull.route, pull.tag);
      }
    },
  });
  const { host, port } = splitListen(config.listen);
  try {
    // Cluster mode: a push, delete or eviction through any replica is forgotten by every replica (docs/cluster.md).
    await cluster?.invalidations.start(manifests);
    await new Promise<void>((resolveListen, reject) => {
      http.server.once('error', reject);
      http.server.listen(port, host, () => {
        http.server.off('error', reject);
        resolveListen();
      });
    });
  } catch (e) {
    await Promise.all([...upstreams.values()].map((u) => u.close()));
    await cluster?.close();
    await index.close();
    storageSetup.close();
    throw listenError(config.listen, e);
  }
  const addr = http.server.address() as AddressInfo;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `${config.tls ? 'https' : 'http'}://${shownHost}:${addr.port}`;
  cluster?.setUrl(url);
  logger.info({ listen: `${host}:${addr.port}`, dataDir, upstreams: Object.fromEntries(Object.entries(config.upstreams).map(([n, u]) => [n, u.url])), defaultUpstream: config.defaultUpstream }, 'relais serving');

  let proxy: RelaisInstance['proxy'];
  if (ca !== undefined && config.proxy.listen !== undefined) {
    const door = createProxyDoor<Principal>({
      ca,
      intercepted: hosts.intercepted,
      tunnels: hosts.tunnels,
      learned,
      logger,
      connectTimeout: 10_000,
      authorize: async (header, upstream) => {
        if (!access.enabled) return ANONYMOUS;
        let principal: Principal;
        try {
          principal = await access.authenticateHeader(header);
        } catch {
          throw errors.proxyAuthRequired(config.auth?.realm ?? 'relais');
        }
        if (upstream === undefined) {
          if (principal.kind === 'anonymous' && !access.anonymousPullsAnything) throw errors.proxyAuthRequired(config.auth?.realm ?? 'relais');
          return principal;
        }
        try {
          access.checkPull(principal, upstream);
        } catch (e) {
          if (principal.kind === 'anonymous') throw errors.proxyAuthRequired(config.auth?.realm ?? 'relais');
          throw e;
        }
        return principal;
      },
      accept: (socket, b) => {
        bindings.set(socket, b);
        http.accept(socket);
      },
    });
    const p = splitListen(config.proxy.listen);
    await new Promise<void>((resolveListen, reject) => {
      door.server.once('error', reject);
      door.server.listen(p.port, p.host, () => {
        door.server.off('error', reject);
        resolveListen();
      });
    });
    const paddr = door.server.address() as AddressInfo;
    const pHost = p.host === '0.0.0.0' || p.host === '::' ? '127.0.0.1' : p.host.includes(':') ? `[${p.host}]` : p.host;
    proxy = { url: `http://${pHost}:${paddr.port}`, port: paddr.port, ca, door };
    logger.info({ listen: `${p.host}:${paddr.port}`, intercepted: Object.fromEntries(hosts.intercepted), tunnels: [...hosts.tunnels] }, 'relais proxy door serving (HTTPS_PROXY)');
  }

  const defaultWarning = defaultUpstreamWarning(config);
  if (defaultWarning !== undefined) logger.warn({ defaultUpstream: config.defaultUpstream, hint: defaultWarning.hint }, defaultWarning.message);
  if (config.auth === undefined && (host === '0.0.0.0' || host === '::' || host === '')) {
    logger.warn({ listen: config.listen, hint: 'fine on a private CI network; otherwise listen on a private address (--listen 10.0.0.5:5000) or add an auth: section' }, 'listening on all interfaces without authentication: anyone who reaches this port can pull through relais');
  }

  evictor.start();
  // Warming before the CI rush (prefetch: in the config), through this relais like any client.
  const prefetcher = new PrefetchScheduler(config.prefetch, {
    server: url,
    logger,
    metrics,
    // Under an upstream's pull reserve, a scheduled prefetch waits for its next run.
    paused: () => {
      const u = budgets.anyUnderReserve();
      if (u !== undefined) refreshMetrics.heldBack.inc({ upstream: u, what: 'prefetch' });
      return u === undefined ? undefined : `upstream ${u} is under its pull reserve`;
    },
  });
  prefetcher.start();
  refreshAhead.start();

  let closing: Promise<void> | undefined;
  return {
    config,
    url,
    port: addr.port,
    logger,
    blobs,
    manifests,
    storage,
    index,
    http,
    metrics,
    evictor,
    hotManifests: registry.hot,
    proxy,
    pushes,
    refreshAhead,
    budgets,
    sendfile: sendfile.status,
    cluster: cluster && { id: cluster.id, invalidations: cluster.invalidations },
    close: () => {
      closing ??= (async () => {
        // A scheduled prefetch is a client of this relais: stop it before draining.
        await prefetcher.stop();
        await refreshAhead.stop();
        await Promise.all([proxy?.door.close(), http.drain(config.server.drainTimeout)]);
        if (pushSweep) clearInterval(pushSweep);
        await pushes?.close();
        await evictor.stop();
        await blobs.cancelAll();
        // Refreshes whose downloads were just cancelled end now; none may touch the index once it is closed.
        await refreshAhead.idle();
        await cluster?.close();
        await Promise.all([...upstreams.values()].map((u) => u.close()));
        await index.close();
        await lock.release();
        storageSetup.close();
        logger.info('relais stopped');
        requestLog?.close();
        logger.flush();
      })();
      return closing;
    },
  };
}

/** A listen failure with its cause named and a hint (EADDRINUSE, EACCES, EADDRNOTAVAIL). */
function listenError(address: string, e: unknown): unknown {
  switch ((e as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE':
      return errors.listenInUse(address, e);
    case 'EACCES':
      return errors.listenDenied(address, e);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return errors.listenUnavailable(address, e);
    default:
      return e;
  }
}

/**
 * A successful GET or HEAD of a manifest by tag, as refresh-ahead counts pulls: the registry door already named
 * the image (`upstream/repo:tag`, RequestInfo.image) when it routed the request, so nothing is parsed again.
 */
function tagPull(info: RequestInfo): { route: UpstreamRoute; tag: string } | undefined {
  if (info.status !== 200 || (info.method !== 'GET' && info.method !== 'HEAD') || info.image === undefined) return undefined;
  const slash = info.image.indexOf('/');
  const colon = info.image.lastIndexOf(':');
  if (slash <= 0 || colon <= slash) return undefined;
  return { route: { upstream: info.image.slice(0, slash), repo: info.image.slice(slash + 1, colon) }, tag: info.image.slice(colon + 1) };
}

/** The zero-copy sender, when configured and the native addon loads; says so in the log either way. */
function zeroCopy(config: ResolvedConfig, logger: Logger): { sender?: Sendfile; status: RelaisInstance['sendfile'] } {
  if (!config.server.sendfile) {
    logger.info('sendfile: off (server.sendfile: false); blobs are streamed');
    return { status: { enabled: false, reason: 'server.sendfile: false' } };
  }
  const loaded = loadSendfile();
  if (!loaded.native) {
    logger.warn({ hint: 'build it with a C compiler present: node scripts/build-native.mjs' }, `sendfile: unavailable, blobs are streamed: ${loaded.reason}`);
    return { status: { enabled: false, reason: loaded.reason } };
  }
  logger.info(config.tls ? 'sendfile: on, but not for TLS connections (blobs are streamed over HTTPS)' : 'sendfile: on (blobs go from the page cache to the socket)');
  return { sender: new Sendfile(loaded.native, config.server.sendIdleTimeout), status: { enabled: true } };
}

/** relais's version, from package.json (shown on the status page). */
function relaisVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
