// Host names GitLab Runner gives a service container, derived from its image name.
//
// GitLab Runner (helpers/container/services: SplitNameAndVersion) matches the image against
// distribution's reference grammar, strips the tag or digest and the registry port, then
// replaces "/" with "__" (the primary alias) and with "-" (a second alias, only when it differs).
// Only names that are valid RFC 1123 host names can be resolved by every client; the
// Kubernetes executor even drops the others. dind's TLS certificate names `docker` (plus
// localhost and the container's host name), so with TLS on only `alias: docker` verifies.

// distribution/reference (v2.8) grammar, same leftmost-first semantics as Go's regexp.
const alphaNumeric = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]*)';
const nameComponent = `${alphaNumeric}(?:${separator}${alphaNumeric})*`;
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const domain = `${domainComponent}(?:\\.${domainComponent})*(?::[0-9]+)?`;
const tag = '[\\w][\\w.-]{0,127}';
const digest = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}';
const nameRe = `(?:${domain}/)?${nameComponent}(?:/${nameComponent})*`;
const referenceRe = new RegExp(`^(${nameRe})(?::(${tag}))?(?:@(${digest}))?$`);
// GitLab Runner's referenceRegexpNoPort: (host)(:port)(/path).
const noPortRe = /^(.*?)(|:[0-9]+)(|\/.*)$/;

export interface ServiceAlias {
  readonly name: string;
  /** A valid RFC 1123 host name (what DNS, TLS and the Kubernetes executor accept). */
  readonly validDns: boolean;
  /** Why it is not a valid host name, when it is not. */
  readonly problem?: string;
}

export interface ServiceAliases {
  readonly image: string;
  /** The image name without tag, digest and registry port ("service" in GitLab Runner). */
  readonly service: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
  readonly aliases: readonly ServiceAlias[];
}

/** Checks a host name against RFC 1123 (labels of letters, digits and inner hyphens, <= 63 chars, <= 253 in all). */
export function dnsProblem(name: string): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (name.length > 253) return `it is ${name.length} characters long (at most 253)`;
  for (const label of name.split('.')) {
    if (label.length === 0) return 'it has an empty label (two dots in a row, or a leading or trailing dot)';
    if (label.length > 63) return `the label "${label}" is ${label.length} characters long (at most 63)`;
    const bad = /[^a-zA-Z0-9-]/.exec(label);
    if (bad !== null) return `"${bad[0]}" is not allowed in a host name (only letters, digits and "-")`;
    if (label.startsWith('-') || label.endsWith('-')) return `the label "${label}" starts or ends with "-"`;
  }
  return undefined;
}

/**
 * The host names GitLab Runner derives for a service image, in the runner's order.
 * Returns undefined when the image is not a valid reference (the runner then adds no alias).
 */
export function serviceAliases(image: string): ServiceAliases | undefined {
  const m = referenceRe.exec(image);
  if (m === null) return undefined;
  const name = m[1] ?? '';
  const parts = noPortRe.exec(name);
  const service = parts === null ? name : `${parts[1] ?? ''}${parts[3] ?? ''}`;
  const primary = service.replaceAll('/', '__');
  const secondary = service.replaceAll('/', '-');
  const names = primary === secondary ? [primary] : [primary, secondary];
  return {
    image,
    service,
    tag: m[2],
    digest: m[3],
    aliases: names.map((n) => {
      const problem = dnsProblem(n);
      return problem === undefined ? { name: n, validDns: true } : { name: n, validDns: false, problem };
    }),
  };
}

/** A person-readable explanation of serviceAliases (what `relais ci service-alias` prints). */
export function describeServiceAliases(result: ServiceAliases): string {
  const lines = [`image:   ${result.image}`, `service: ${result.service}`];
  for (const a of result.aliases) {
    lines.push(`alias:   ${a.name}  ${a.validDns ? '(valid host name)' : `(NOT a valid host name: ${a.problem ?? ''})`}`);
  }
  const valid = result.aliases.find((a) => a.validDns);
  if (valid === undefined) {
    lines.push('No derived name is a valid host name: set `alias:` on the service (e.g. `alias: docker`).');
  } else if (valid.name !== 'docker') {
    lines.push(
      `Use DOCKER_HOST=tcp://${valid.name}:2375 only with TLS off (DOCKER_TLS_CERTDIR: ""): dind's TLS certificate names "docker",`,
      'so with TLS (tcp://docker:2376) set `alias: docker` on the service.',
    );
  }
  return lines.join('\n');
}
