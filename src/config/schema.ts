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

const httpUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === '';
  } catch {
    return false;
  }
}, 'expected an http:// or https:// URL without credentials in it (use username/password)');

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 0.0.0.0:5000');

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
    /** Allow the upstream to redirect to loopback/private addresses (other than its own host). */
    allowPrivateRedirects: z.boolean().default(false),
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
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One JSON line per request. */
        requests: z.boolean().default(true),
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
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type RelaisConfigInput = z.input<typeof configSchema>;
export type RelaisConfig = z.output<typeof configSchema>;
export type UpstreamConfig = z.output<typeof upstreamSchema>;
