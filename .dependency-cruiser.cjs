// The architecture lint (`npm run lint:arch`, part of `npm test`): which parts of src/ may import which.
// The folders are the layers (docs/architecture.md has the map); imports point downward only:
//   entry     src/cli/, src/app.ts (the one composition root)          may import everything
//   doors     src/doors/http/, src/doors/proxy/                         get the cluster and each other only from app.ts
//   cluster   src/cluster/                                              wraps the core's blob source
//   upkeep    src/upkeep/ (prefetch, refresh-ahead, cache retention),   beside the cluster, above the core
//             src/eviction/ (evictor, gc, the cluster's evictor; eviction-plan.ts is pure policy)
//   core      src/cache/ (the cache: single-flight, verification)      knows neither HTTP nor the cluster
//   below     src/storage/, src/index/, src/upstream/, src/policy/, src/observability/,
//             src/retention/ (the tag-retention engine `relais cleanup` and the cache's retention share)
//   base      src/config/, src/errors.ts, src/types.ts and every other module at src/'s top (leaves)
//   products  src/products/ci/, src/products/cleanup/ (separate commands) upstream client, retention, policy, base
// Type-only imports count (`import type` ties modules together as much as a value import does).
// Known violations that other work removes are listed in .dependency-cruiser-known-violations.json
// (run with --ignore-known): they are reported, not failed; a new one fails.

/** Base: leaves every layer may use. */
const BASE = '^src/(config/|(?!app\\.ts$)[^/]+\\.ts$)';
const PRODUCTS = '^src/products/';
const PURE_POLICY = '^src/policy/|^src/eviction/eviction-plan\\.ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No import cycles: a cycle makes two modules one, and it is how layers start leaning on each other.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'base-is-a-leaf',
      comment: 'Base (config schema, the error table, shared types) imports nothing of relais but base.',
      severity: 'error',
      from: { path: BASE },
      to: { path: '^src/', pathNot: BASE },
    },
    {
      name: 'policy-is-pure',
      comment: 'Policy (TTL, eviction plans, budgets, circuit breaker) is pure functions over base.',
      severity: 'error',
      from: { path: PURE_POLICY },
      to: { path: '^src/', pathNot: [BASE, PURE_POLICY] },
    },
    {
      name: 'storage-knows-bytes',
      comment: 'Storage knows bytes under keys, not registries, indexes or HTTP: only base.',
      severity: 'error',
      from: { path: '^src/storage/' },
      to: { path: '^src/', pathNot: [BASE, '^src/storage/'] },
    },
    {
      name: 'index-knows-rows',
      comment: 'The index (SQLite, PostgreSQL) knows rows: base and policy (freshness types) only.',
      severity: 'error',
      from: { path: '^src/index/' },
      to: { path: '^src/', pathNot: [BASE, '^src/index/', '^src/policy/'] },
    },
    {
      name: 'upstream-is-a-client',
      comment: 'The upstream client speaks HTTP to registries: base and policy (circuit breaker) only.',
      severity: 'error',
      from: { path: '^src/upstream/' },
      to: { path: '^src/', pathNot: [BASE, '^src/upstream/', '^src/policy/'] },
    },
    {
      name: 'retention-engine-stands-alone',
      comment: 'The tag-retention engine (families, plans, applying them through a backend interface) uses base, policy and the upstream layer (media types, the limiter); `relais cleanup` and the cache\'s retention both import it.',
      severity: 'error',
      from: { path: '^src/retention/' },
      to: { path: '^src/', pathNot: [BASE, '^src/retention/', '^src/policy/', '^src/upstream/'] },
    },
    {
      name: 'observability-takes-what-it-is-given',
      comment: 'Logs and metrics are fed through hooks and the request context: they import base only, never the core or a door.',
      severity: 'error',
      from: { path: '^src/observability/' },
      to: { path: '^src/', pathNot: [BASE, '^src/observability/'] },
    },
    {
      name: 'core-knows-no-door-and-no-cluster',
      comment: 'The core (src/cache) uses storage, index, upstream, policy and base; the cluster wraps it, doors call it.',
      severity: 'error',
      from: { path: '^src/cache/' },
      to: { path: '^src/', pathNot: [BASE, '^src/cache/', '^src/storage/', '^src/index/', '^src/upstream/', '^src/policy/'] },
    },
    {
      name: 'cluster-wraps-the-core',
      comment: 'The cluster wraps the core; it knows no door, no upkeep, no entry and no product: app.ts wires it.',
      severity: 'error',
      from: { path: '^src/cluster/' },
      to: { path: '^src/(doors|upkeep|eviction|cli)/|^src/app\\.ts$|' + PRODUCTS },
    },
    {
      name: 'eviction-in-one-place',
      comment: 'Eviction and gc (src/eviction) work on the index, storage and the pure plan; the cluster\'s evictor takes the cluster\'s leases, nothing else of the cluster.',
      severity: 'error',
      from: { path: '^src/eviction/' },
      to: { path: '^src/', pathNot: [BASE, '^src/eviction/', '^src/storage/', '^src/index/', '^src/policy/', '^src/observability/', '^src/cluster/leases\\.ts$'] },
    },
    {
      name: 'upkeep-below-the-doors',
      comment: 'Prefetch, refresh-ahead and the cache\'s retention (src/upkeep) work on the core and what is below it; no door, cluster, entry or product.',
      severity: 'error',
      from: { path: '^src/upkeep/' },
      to: { path: '^src/(doors|cluster|cli)/|^src/app\\.ts$|' + PRODUCTS },
    },
    {
      name: 'http-door-gets-the-rest-injected',
      comment: 'The HTTP door parses, checks access and streams: it calls the core and upkeep it is given, never the cluster, another door or a product.',
      severity: 'error',
      from: { path: '^src/doors/http/' },
      to: { path: '^src/(doors/proxy|cluster|cli)/|^src/app\\.ts$|' + PRODUCTS },
    },
    {
      name: 'proxy-door-is-its-own-door',
      comment: 'The proxy door uses base, upstream, observability, policy and the core\'s types; what it needs besides comes from app.ts.',
      severity: 'error',
      from: { path: '^src/doors/proxy/' },
      to: { path: '^src/', pathNot: [BASE, '^src/doors/proxy/', '^src/upstream/', '^src/observability/', '^src/policy/', '^src/cache/'] },
    },
    {
      name: 'proxy-door-takes-core-types-only',
      comment: 'The proxy door imports the core for its types only: the services themselves are injected by app.ts.',
      severity: 'error',
      from: { path: '^src/doors/proxy/' },
      to: { path: '^src/cache/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'products-stand-apart',
      comment: 'Products (src/products: ci, cleanup) use the upstream client, the retention engine, policy, base, each other and the CLI\'s output helpers; nothing of the server.',
      severity: 'error',
      from: { path: PRODUCTS },
      to: { path: '^src/', pathNot: [BASE, PRODUCTS, '^src/upstream/', '^src/retention/', '^src/policy/', '^src/cli/output\\.ts$'] },
    },
    {
      name: 'every-module-in-a-room',
      comment: 'A new folder under src/ needs a place in the layers above (and in docs/architecture.md) before it holds code.',
      severity: 'error',
      from: { path: '^src/(?!(cli|doors/http|doors/proxy|cluster|upkeep|eviction|cache|storage|index|upstream|policy|observability|retention|config|products/ci|products/cleanup)/)[^/]+/' },
      to: {},
    },
    {
      name: 'nothing-imports-the-entry',
      comment: 'Commands and the composition root are on top: only the CLI imports them (cli/output.ts is a shared leaf of console helpers).',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/(?!output\\.ts$)|^src/app\\.ts$' },
    },
    {
      name: 'heavy-drivers-load-lazily',
      comment: 'The AWS SDK (~23 MB) and pg load only when configured: their drivers are imported dynamically (storage/create-storage.ts, index/create-index.ts) or for types.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/storage/s3\\.ts$|^src/index/postgres\\.ts$', dynamic: false, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'one-registry-client',
      comment:
        'relais speaks the registry API through ONE client, src/upstream/registry-client.ts (the server through its facade upstream/client.ts, the commands directly): only it, and the token service that shares its connection pool (upstream/auth.ts), import undici. ' +
        'Two other modules speak HTTP that is not a registry exchange: the cluster\'s replica-to-replica streams (cluster/peers.ts) and the GitLab REST API of `relais cleanup` (products/cleanup/gitlab-backend.ts). ' +
        'A new HTTP client elsewhere would grow a second exchange loop (auth, redirects, retries, Retry-After): use RegistryClient and its options instead.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/upstream/(registry-client|auth)\\.ts$|^src/cluster/peers\\.ts$|^src/products/cleanup/gitlab-backend\\.ts$' },
      to: { path: 'node_modules/undici/' },
    },
    {
      name: 'aws-sdk-and-pg-stay-in-their-drivers',
      comment: 'Only the S3 driver imports the AWS SDK; only the PostgreSQL index (and, for types, the cluster leases) imports pg.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/storage/s3\\.ts$|^src/index/postgres\\.ts$|^src/cluster/leases\\.ts$' },
      to: { path: 'node_modules/(@aws-sdk|pg)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|test|bench)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs', '.cjs', '.json'] },
  },
};
