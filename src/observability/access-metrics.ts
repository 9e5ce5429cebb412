// The series of passthrough upstreams' read gate (docs/access.md), registered on the instance's metrics
// registry. Labels are the upstream and the outcome: never a credential, a user or a repository.
import { Counter, type Registry } from 'prom-client';

export type GateOutcome = 'cached' | 'confirmed' | 'refused';

export class AccessMetrics {
  readonly checks: Counter<'upstream' | 'outcome'>;

  constructor(registry: Registry) {
    this.checks = new Counter({
      name: 'relais_passthrough_checks_total',
      help: 'Reads of passthrough upstreams by how the client was authorized: cached (a confirmation within passthrough.confirmTtl), confirmed (the upstream answered 200 to the client\'s credential), refused (401/403/404/503, no cached byte served)',
      labelNames: ['upstream', 'outcome'],
      registers: [registry],
    });
  }

  check(upstream: string, outcome: GateOutcome): void {
    this.checks.inc({ upstream, outcome });
  }
}
