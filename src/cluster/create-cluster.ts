// Cluster mode (config `cluster:`): download leases in the shared PostgreSQL, the wrapper around the core's
// blob source (every fetch from an upstream claims the lease first), the internal endpoint the other
// replicas stream from, and the invalidations that make every replica forget what another one changed
// (pushes, deletes, eviction; LISTEN/NOTIFY). app.ts wires it around the core.
import { randomUUID } from 'node:crypto';
import type { ClusterConfig } from '../config/schema.js';
import type { CacheIndex } from '../index/cache-index.js';
import type { PostgresIndex } from '../index/postgres.js';
import type { Logger } from '../observability/logger.js';
import type { BlobSource, LocalBlobSource } from '../cache/blob-source.js';
import type { BlobService } from '../cache/blobs.js';
import type { StorageDriver } from '../storage/driver.js';
import { LeaseManager } from './leases.js';
import { ClusterInvalidations } from './invalidations.js';
import { leaseCoordinator } from './manifest-flight.js';
import { ClusterBlobSource, ClusterPeers, createClusterHandler, type ClusterHandler } from './peers.js';
import type { ManifestCoordinator } from '../cache/manifests.js';

export interface Cluster {
  /** This process's identity in the leases table. */
  readonly id: string;
  readonly leases: LeaseManager;
  readonly peers: ClusterPeers;
  /** One replica at a time fetches a given manifest. */
  readonly manifests: ManifestCoordinator;
  /** What one replica changed (pushes, deletes, eviction) is forgotten by the others: start(manifests) in app.ts. */
  readonly invalidations: ClusterInvalidations;
  /** The core's own blob source, wrapped: a fetch claims the blob cluster-wide first. */
  wrap(local: LocalBlobSource): BlobSource;
  handler(blobs: Pick<BlobService, 'localDownload'>): ClusterHandler;
  /** Where the other replicas reach this one: cluster.advertiseUrl, or the URL the server listens on. */
  setUrl(url: string): void;
  /** Graceful stop: releases this replica's leases. */
  close(): Promise<void>;
}

export function startCluster(cfg: ClusterConfig, deps: { postgres: PostgresIndex; index: CacheIndex; storage: StorageDriver; logger: Logger }): Cluster {
  const id = randomUUID();
  const leases = new LeaseManager(deps.postgres.pool, {
    owner: id,
    ownerUrl: cfg.advertiseUrl ?? '',
    ttlMs: cfg.leaseTtl,
    onLost: (name) => deps.logger.warn({ lease: name }, 'cluster: a lease was taken over while held (a pause longer than cluster.leaseTtl?)'),
    onError: (e) => deps.logger.warn({ err: String(e) }, 'cluster: lease renewal failed'),
  });
  const peers = new ClusterPeers({ leases, index: deps.index, storage: deps.storage, secret: cfg.secret, logger: deps.logger });
  const invalidations = new ClusterInvalidations({ id, channel: deps.postgres, logger: deps.logger });
  return {
    id,
    leases,
    peers,
    manifests: leaseCoordinator(leases, { pollMs: 50, waitMs: Math.max(cfg.leaseTtl, 15_000) }),
    invalidations,
    wrap: (local) => new ClusterBlobSource(local, peers),
    handler: (blobs) => createClusterHandler({ secret: cfg.secret, blobs, leases }),
    setUrl: (url) => {
      leases.opts.ownerUrl = (cfg.advertiseUrl ?? url).replace(/\/$/, '');
    },
    close: async () => {
      await invalidations.close();
      await leases.close();
      await peers.close();
    },
  };
}
