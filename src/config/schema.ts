// The configuration schema: one zod schema is the single source of truth for the YAML file,
// the defaults, and the types the rest of relais sees. Every default is documented in README.md.
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';

const duration = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const parsed = parseDuration(v);
    if (parsed === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a duration like "30s", "5m", "7d", got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return parsed;
  });

const size = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const parsed = parseSize(v);
    if (parsed === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected a size like "50GiB" or "512MB", got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return parsed;
  });

/** A share of something: 0.9, or "90%". */
const share = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = typeof v === 'number' ? [String(v), String(v), ''] : /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(v);
  const x = m ? Number(m[1]) / (m[2] === '%' ? 100 : 1) : NaN;
  if (!(x > 0 && x <= 1)) {
    ctx.addIssue({ code: 'custom', message: `expected a share of maxSize like 0.9 or "90%", got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return x;
});

/**
 * Bounded disk (docs/operations.md). Without maxSize the cache only grows (maxIdleAge still applies).
 *   maxSize        unset     budget for cached blobs and manifests, e.g. "50GiB"; over it, relais evicts
 *                            least-recently-used images down to lowWatermark, online
 *   lowWatermark   0.9       where eviction stops, as a share of maxSize (0.9 or "90%")
 *   maxIdleAge     unset     images unused for this long are evicted whatever the size, e.g. "30d"
 *   pin            []        never evicted: "docker.io/library/docker:*-dind", "ghcr.io/org/*", "alpine:3.*"
 *   evictInterval  1m        how often the budget and idle ages are checked (also after every blob stored)
 *   gcInterval     6h        how often the online gc reconciles index and disk ("0" disables it)
 *   gcGrace        15m       files younger than this are never taken for orphans or crash leftovers
 */
export const storageSchema = z
  .object({
    /** Where blobs and manifests live: "filesystem" (dataDir/storage) or "s3" (see s3Schema; docs/cluster.md). */
    driver: z.enum(['filesystem', 's3']).default('filesystem'),
    s3: z.lazy(() => s3Schema).optional(),
    maxSize: size.optional(),
    lowWatermark: share.default(0.9),
    maxIdleAge: duration.optional(),
    pin: z.array(z.string().min(1)).default([]),
    evictInterval: duration.default(60_000),
    gcInterval: duration.default(6 * 3600_000),
    gcGrace: duration.default(15 * 60_000),
  })
  .strict();

/**
 * Observability (docs/operations.md).
 *   enabled        true      serve /metrics (Prometheus text format)
 *   statusPage     true      serve the status page at / and its JSON at /_relais/status
 *   recentErrors   50        errors kept for the status page
 *   topImages      20        most-pulled images shown on the status page
 */
export const metricsSchema = z
  .object({
    enabled: z.boolean().default(true),
    statusPage: z.boolean().default(true),
    recentErrors: z.number().int().min(0).max(1000).default(50),
    topImages: z.number().int().min(0).max(1000).default(20),
  })
  .strict();

/** One image to warm: "alpine:3.20", "ghcr.io/org/app:main", or with its platforms. */
const prefetchImage = z.union([
  z.string().min(1),
  z
    .object({
      image: z.string().min(1),
      /** os/arch[/variant] to fetch from a multi-platform image; default the prefetch section's. */
      platforms: z.array(z.string().regex(/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/, 'expected os/arch like linux/amd64')).optional(),
      allPlatforms: z.boolean().optional(),
    })
    .strict(),
]);

/**
 * Warming the cache before the CI rush (docs/operations.md); `relais prefetch` does the same by hand.
 *   images         []        what to fetch
 *   platforms      [linux/<this machine's arch>]   platforms taken from multi-platform images
 *   allPlatforms   false     every platform of multi-platform images
 *   at             []        times of day (UTC, "HH:MM") to run, e.g. ["05:30"]
 *   every          unset     or an interval, e.g. "6h"
 *   onStart        false     also run once when relais starts
 *   concurrency    4         blobs fetched at once
 */
export const prefetchSchema = z
  .object({
    images: z.array(prefetchImage).default([]),
    platforms: z.array(z.string().regex(/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/, 'expected os/arch like linux/amd64')).optional(),
    allPlatforms: z.boolean().default(false),
    at: z.array(z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected a UTC time of day like "05:30"')).default([]),
    every: duration.optional(),
    onStart: z.boolean().default(false),
    concurrency: z.number().int().min(1).max(64).default(4),
  })
  .strict();

/**
 * S3-compatible object storage (docs/cluster.md): AWS S3, Ceph RGW, MinIO...
 *   bucket           -         must exist
 *   endpoint         unset     http(s)://host:port of an S3-compatible service; unset for AWS
 *   region           us-east-1
 *   accessKeyId      unset     with secretAccessKey; write "${S3_ACCESS_KEY_ID}" to take it from the environment;
 *                              unset: the AWS SDK's default chain (environment, instance or pod role)
 *   prefix           ""        key prefix, to share a bucket ("relais/")
 *   partSize         8MiB      multipart part size (at least 5MiB)
 */
export const s3Schema = z
  .object({
    bucket: z.string().min(1),
    endpoint: z
      .string()
      .refine((v) => /^https?:\/\/[^/\s@]+(\/.*)?$/.test(v), 'expected an http:// or https:// URL without credentials in it')
      .optional(),
    region: z.string().min(1).default('us-east-1'),
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    prefix: z.string().regex(/^([^/\s]+\/)*[^/\s]*$/, 'expected a key prefix like "relais/"').default(''),
    partSize: size.refine((n) => n >= 5 * 1024 * 1024 && n <= 5 * 1024 * 1024 * 1024, 'S3 parts are 5MiB to 5GiB').default(8 * 1024 * 1024),
  })
  .strict()
  .refine((v) => (v.accessKeyId === undefined) === (v.secretAccessKey === undefined), 'accessKeyId and secretAccessKey go together');

/**
 * The cache index (docs/cluster.md): SQLite in dataDir for one node (default), PostgreSQL shared by replicas.
 *   driver         sqlite
 *   postgres.url   -          postgres://user:password@host:5432/db (write "${DATABASE_URL}" to keep it out of the file)
 *   postgres.poolSize 10
 */
export const indexSchema = z
  .object({
    driver: z.enum(['sqlite', 'postgres']).default('sqlite'),
    postgres: z
      .object({
        url: z.string().regex(/^postgres(ql)?:\/\//, 'expected postgres://user:password@host:5432/database'),
        poolSize: z.number().int().min(1).max(100).default(10),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((v) => v.driver !== 'postgres' || v.postgres !== undefined, { error: 'index.driver postgres needs index.postgres.url', path: ['postgres'] });

/**
 * Cluster mode (docs/cluster.md): replicas sharing S3 storage and a PostgreSQL index fetch each blob from
 * the upstream once, cluster-wide.
 *   secret       -          shared by every replica; authenticates their internal requests (at least 16 characters)
 *   advertiseUrl derived    how the other replicas reach this one (http://POD_IP:5000); default: the listen address
 *   leaseTtl     15s        a replica that stops renewing its download lease for this long loses it
 */
export const clusterSchema = z
  .object({
    secret: z.string().min(16, 'cluster.secret must be at least 16 characters'),
    advertiseUrl: z
      .string()
      .refine((v) => /^https?:\/\/[^/\s@]+\/?$/.test(v), 'expected http(s)://HOST:PORT')
      .optional(),
    leaseTtl: duration.refine((n) => n >= 1000, 'at least 1s').default(15_000),
  })
  .strict();

/**
 * Refresh-ahead of hot tags (docs/operations.md): a tag pulled at least `minPulls` times within `window` is
 * revalidated in the background `lead` before its tagTtl ends (HEAD first); when its digest moved, the new
 * manifest, the platforms clients pulled and their blobs are fetched before the tag points to it.
 *   enabled          false     turn it on
 *   minPulls         5         pulls (GET or HEAD of the manifest by tag) ...
 *   window           1h        ... within this long make a tag hot
 *   lead             30s       how long before the tag's TTL ends it is refreshed (at most half the tagTtl)
 *   checkEvery       5s        how often hot tags are looked at
 *   concurrency      2         tags refreshed at once
 *   blobConcurrency  3         blobs fetched at once per tag
 *   maxBytesPerHour  10GiB     blob bytes refresh-ahead may fetch per sliding hour ("0": no blobs, manifests only)
 */
export const refreshAheadSchema = z
  .object({
    enabled: z.boolean().default(false),
    minPulls: z.number().int().min(1).max(1_000_000).default(5),
    window: duration.refine((n) => n >= 1000, 'at least 1s').default(3600_000),
    lead: duration.default(30_000),
    checkEvery: duration.refine((n) => n >= 50, 'at least 50ms').default(5_000),
    concurrency: z.number().int().min(1).max(32).default(2),
    blobConcurrency: z.number().int().min(1).max(32).default(3),
    maxBytesPerHour: size.default(10 * 1024 ** 3),
  })
  .strict();

/** Pulls kept for real misses: a count (20) or a share of the upstream's announced limit ("10%"). */
const pullReserve = z.union([z.number().int().min(0), z.string()]).transform((v, ctx): { pulls: number } | { share: number } => {
  if (typeof v === 'number') return { pulls: v };
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v);
  const x = m ? Number(m[1]) / 100 : NaN;
  if (!(x >= 0 && x <= 1)) {
    ctx.addIssue({ code: 'custom', message: `expected a number of pulls (20) or a share of the limit ("10%"), got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return { share: x };
});

export type RefreshAheadConfig = z.output<typeof refreshAheadSchema>;
export type StorageConfig = z.output<typeof storageSchema>;
export type S3Config = z.output<typeof s3Schema>;
export type IndexConfig = z.output<typeof indexSchema>;
export type ClusterConfig = z.output<typeof clusterSchema>;
export type MetricsConfig = z.output<typeof metricsSchema>;
export type PrefetchConfig = z.output<typeof prefetchSchema>;

/** An upstream's base URL: scheme and host, optionally a path prefix, never the /v2 relais adds itself. */
export function upstreamUrlProblem(v: string): string | undefined {
  if (!/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(v)) {
    const host = v.replace(/^\/+/, '');
    return `"${v}" has no scheme: write https://${host} (or http://${host} for a registry without TLS)`;
  }
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return `"${v}" is not a URL`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `expected an http:// or https:// URL, got "${v}"`;
  // (the URL is not repeated: it holds a secret)
  if (u.username !== '' || u.password !== '') return 'expected a URL without credentials in it: give them as username and password';
  if (u.search !== '' || u.hash !== '') return `"${v}": a registry base URL has no ?query or #fragment`;
  if (/\/v2\/?$/.test(u.pathname)) {
    return `"${v}" ends in /v2, but relais adds /v2/ itself (requests would go to .../v2/v2/...): write ${u.protocol}//${u.host}${u.pathname.replace(/\/v2\/?$/, '')}`;
  }
  return undefined;
}

const httpUrl = z.string().superRefine((v, ctx) => {
  const problem = upstreamUrlProblem(v);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 0.0.0.0:5000');

/** A DNS host name (not an IP literal), optionally with a port: what a client names in CONNECT host:port. */
export const registryHostName = z
  .string()
  .transform((v) => v.toLowerCase())
  .refine(
    (v) => /^(?=[^:]*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/.test(v),
    'expected a DNS host name like "ghcr.io" or "registry.gitlab.example:5050" (no IP literals)',
  );

/**
 * The HTTPS forward-proxy door (docs/proxy.md): off unless listen is set.
 *   listen     unset    e.g. "0.0.0.0:3128"; clients set HTTPS_PROXY=http://relais:3128
 *   tunnel     []       hosts (host or host:port, default port 443) passed through as plain TCP tunnels,
 *                       never intercepted; every other host that is not an upstream's is refused
 *   ca.cert    unset    the operator's CA (PEM); default: generated at first start into <dataDir>/ca/
 *   ca.key     unset    its private key (PEM), never served
 *   keepPushes.enabled      true   keep what clients push through the door once the upstream accepted it
 *   keepPushes.maxUploads   32     blob uploads tracked at once (more are forwarded without being kept)
 *   keepPushes.idleTimeout  10m    a tracked upload without a request for this long is dropped (its spool removed)
 */
export const proxySchema = z
  .object({
    listen: hostPort.optional(),
    tunnel: z.array(registryHostName).default([]),
    ca: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
    keepPushes: z
      .object({
        enabled: z.boolean().default(true),
        maxUploads: z.number().int().min(1).max(10_000).default(32),
        idleTimeout: duration.default(10 * 60_000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

/** Upstream names are what clients write as a path prefix or in ?ns=: registry host names. */
export const upstreamName = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$/, 'expected a registry host name like "docker.io" or "ghcr.io"');

export const upstreamSchema = z
  .object({
    url: httpUrl,
    username: z.string().optional(),
    password: z.string().optional(),
    /** Docker Hub's rule: a one-component repository name means library/NAME. Default: true for docker.io. */
    libraryPrefix: z.boolean().optional(),
    /** How long a tag -> digest mapping is served without asking the upstream. */
    tagTtl: duration.default(300_000),
    /** How long past its TTL a tag may still be served when the upstream fails (stale-if-error). */
    maxStale: duration.default(7 * 24 * 3600_000),
    /** How long a 404 from the upstream is remembered. */
    notFoundTtl: duration.default(30_000),
    timeouts: z
      .object({
        connect: duration.default(10_000),
        /** Time to the response headers. */
        headers: duration.default(30_000),
        /** Longest silence while a body streams before the transfer is abandoned. */
        idle: duration.default(30_000),
      })
      .prefault({}),
    retries: z
      .object({
        /** Attempts for one upstream call (connection errors, 5xx, resets), resuming blobs with Range. */
        attempts: z.number().int().min(1).max(10).default(3),
        backoff: duration.default(200),
        /** Longest Retry-After relais will honour before failing the request instead. */
        maxRetryAfter: duration.default(10_000),
      })
      .prefault({}),
    circuitBreaker: z
      .object({
        /** Consecutive failures that open the circuit. 0 disables it. */
        failures: z.number().int().min(0).default(5),
        /** How long an open circuit rejects calls before one probe is let through. */
        cooldown: duration.default(30_000),
      })
      .prefault({}),
    /**
     * Pulls of this upstream's rate limit (Docker Hub's ratelimit-remaining header) kept for real misses: at or
     * under it, relais spends no GET on refresh-ahead, prefetch or revalidation (docs/operations.md).
     */
    pullReserve: pullReserve.default({ share: 0.1 }),
    /** Allow the upstream to redirect to loopback/private addresses (other than its own host). */
    allowPrivateRedirects: z.boolean().default(false),
    /**
     * Host names clients use for this upstream through the proxy door (proxy.listen; docs/proxy.md), each
     * optionally with a port (default 443). Default: registry-1.docker.io, docker.io, index.docker.io for
     * docker.io; the upstream's own name for the others.
     */
    hosts: z.array(registryHostName).optional(),
    /**
     * Who may read what relais cached of this upstream (docs/access.md): "shared" (default) serves it to
     * every client relais lets in, fetched with the configured username/password; "passthrough" uses each
     * client's own credentials upstream and serves cached content only after the upstream confirmed them.
     */
    access: z.enum(['shared', 'passthrough']).default('shared'),
  })
  .strict();

/**
 * Client access control. Without an `auth:` section relais is open to every client (the usual setup on a
 * private CI network). With it, clients authenticate with Basic (htpasswd bcrypt users) or a static Bearer token.
 */
export const authSchema = z
  .object({
    realm: z.string().default('relais'),
    /** htpasswd file with bcrypt entries (`htpasswd -B`). */
    htpasswd: z.string().min(1).optional(),
    /** Static bearer tokens: name -> secret (use ${ENV}). The name is the principal. */
    tokens: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'token names are [A-Za-z0-9_.-]+'), z.string().min(16, 'tokens must be at least 16 characters')).default({}),
    /** Upstreams unauthenticated clients may pull from ("*" = all). Default: none. */
    anonymous: z.array(z.string()).default([]),
    /** Principal (user or token name; "*" = any authenticated client) -> upstreams it may pull from ("*" = all). */
    permissions: z.record(z.string(), z.array(z.string())).default({ '*': ['*'] }),
    /** Principals allowed on admin endpoints (the status page and /_relais/*). */
    admins: z.array(z.string()).default([]),
    /** Serve /metrics without authentication. */
    publicMetrics: z.boolean().default(true),
  })
  .strict();

/**
 * The confirmations of passthrough upstreams (docs/access.md): in memory only, keyed by a hash.
 *   confirmTtl         60s      how long "the upstream confirmed this credential may pull this repository" is trusted
 *   maxConfirmations   10000    confirmations kept at most (the oldest go first)
 */
export const passthroughSchema = z
  .object({
    confirmTtl: duration.refine((n) => n <= 3600_000, 'at most 1h: a revoked credential keeps reading the cache this long').default(60_000),
    maxConfirmations: z.number().int().min(0).max(1_000_000).default(10_000),
  })
  .strict();

export const configSchema = z
  .object({
    listen: hostPort.default('0.0.0.0:5000'),
    dataDir: z.string().min(1).default('./relais-data'),
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
    /** Which upstream serves requests with no prefix and no ?ns= (dockerd's registry-mirrors). */
    defaultUpstream: upstreamName.optional(),
    upstreams: z.record(upstreamName, upstreamSchema).default({
      'docker.io': upstreamSchema.parse({ url: 'https://registry-1.docker.io' }),
    }),
    auth: authSchema.optional(),
    /**
     * What relais does at start when an upstream does not answer /v2/ like a registry (docs/operations.md):
     * "warn" (log and serve), "refuse" (exit), "off" (no probe). URL shape errors always refuse.
     */
    startupChecks: z.enum(['warn', 'refuse', 'off']).default('warn'),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One JSON line per request. */
        requests: z.boolean().default(true),
        /** "auto": a start banner and human lines on a terminal, JSON lines otherwise; or always "json" / "human". */
        format: z.enum(['auto', 'json', 'human']).default('auto'),
      })
      .strict()
      .prefault({}),
    server: z
      .object({
        /** How long SIGTERM waits for in-flight requests before closing connections. */
        drainTimeout: duration.default(30_000),
        /** Largest manifest accepted from an upstream (the spec's recommended limit is 4 MiB). */
        maxManifestSize: size.default(4 * 1024 * 1024),
        /** Idle keep-alive and header timeouts for client connections (slowloris protection). */
        headersTimeout: duration.default(20_000),
        keepAliveTimeout: duration.default(65_000),
        requestTimeout: duration.default(0),
        /** Send cached blobs with sendfile(2) (zero-copy, Linux, plain HTTP; needs the native addon): false streams them. */
        sendfile: z.boolean().default(true),
        /** A sendfile transfer whose client reads nothing for this long is dropped. */
        sendIdleTimeout: duration.default(300_000),
      })
      .strict()
      .prefault({}),
    storage: storageSchema.prefault({}).refine((v) => v.driver !== 's3' || v.s3 !== undefined, { error: 'storage.driver s3 needs a storage.s3 section', path: ['s3'] }),
    index: indexSchema.prefault({}),
    cluster: clusterSchema.optional(),
    metrics: metricsSchema.prefault({}),
    prefetch: prefetchSchema.prefault({}),
    proxy: proxySchema.prefault({}),
    refreshAhead: refreshAheadSchema.prefault({}),
    passthrough: passthroughSchema.prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const [name, u] of Object.entries(c.upstreams)) {
      if (u.access === 'passthrough' && (u.username !== undefined || u.password !== undefined)) {
        ctx.addIssue({ code: 'custom', path: ['upstreams', name, 'username'], message: 'a passthrough upstream (access: passthrough) uses each client\'s own credentials: remove username and password' });
      }
    }
  })
  .refine((c) => c.cluster === undefined || (c.index.driver === 'postgres' && c.storage.driver === 's3'), {
    error: 'cluster mode needs a shared index and shared storage: index.driver postgres and storage.driver s3',
    path: ['cluster'],
  });

export type RelaisConfigInput = z.input<typeof configSchema>;
export type RelaisConfig = z.output<typeof configSchema>;
export type UpstreamConfig = z.output<typeof upstreamSchema>;
export type AuthConfig = z.output<typeof authSchema>;
export type ProxyConfig = z.output<typeof proxySchema>;
export type PassthroughConfig = z.output<typeof passthroughSchema>;
