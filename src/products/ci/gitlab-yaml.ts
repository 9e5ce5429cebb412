// Generates the `.gitlab-ci.yml` build job of `relais ci gitlab`, with the yaml package's
// Document API (nodes and comments, never string templates), so the output is valid YAML
// whatever the inputs and stays readable.

import { Document, isMap, Scalar, YAMLMap, YAMLSeq } from 'yaml';
import { errors } from '../../errors.js';
import { refSlug, shellSlug } from '../../gitlab-slug.js';
import { dindProxyEntrypoint, INTERCEPT_HOSTS_VAR, interceptHosts, noProxyFor, normalizeProxy } from './proxy.js';

export type CacheMode = 'inline' | 'registry';

export interface GitlabJobOptions {
  /** inline: BUILDKIT_INLINE_CACHE in the pushed image; registry: buildx cache manifests. */
  readonly mode: CacheMode;
  /** relais's URL, given to dind as --registry-mirror (Docker Hub pulls only). */
  readonly mirror?: string | undefined;
  /** The image repository to push; default $CI_REGISTRY_IMAGE. */
  readonly image?: string | undefined;
  /** A fixed default branch; default $CI_DEFAULT_BRANCH (never a hard-coded "master"). */
  readonly defaultBranch?: string | undefined;
  /** TLS between the job and dind (tcp://docker:2376); false: tcp://docker:2375 with DOCKER_TLS_CERTDIR "". */
  readonly tls?: boolean | undefined;
  /** Tag of the official docker images used for the job (docker:<v>) and the service (docker:<v>-dind). */
  readonly dockerVersion?: string | undefined;
  /** A custom dind image that already carries the mirror (Dockerfile.dind): no `command:` then. */
  readonly dindImage?: string | undefined;
  /** false: the runner's config.toml provides the dind service (relais ci runner-config --via service). */
  readonly service?: boolean | undefined;
  readonly jobName?: string | undefined;
  readonly stage?: string | undefined;
  /** Build context and Dockerfile. */
  readonly context?: string | undefined;
  readonly dockerfile?: string | undefined;
  /** Extra `docker build` options, one word each (e.g. "--network=none", "--target=app"). */
  readonly buildOptions?: readonly string[] | undefined;
  /** An include-able file: no top-level `stages:`. */
  readonly include?: boolean | undefined;
  /** The command line that produced the file, for the header comment. */
  readonly generatedBy?: string | undefined;
  /** Proxy mode: dind reaches the intercepted registries through relais's HTTPS proxy door. */
  readonly proxy?: ProxyWiring | undefined;
}

export interface ProxyWiring {
  /** The proxy door as dind sees it (http://relais.example.com:3128). */
  readonly url: string;
  /** Host names relais intercepts (its upstreams' `hosts`); Docker Hub's when empty. */
  readonly hosts: readonly string[];
  /** Where dind fetches the CA at start (relais's HTTP door); default http://<proxy host>:5000/_relais/ca.crt. */
  readonly caUrl?: string | undefined;
  /** The CA certificate itself (PEM), written into the file instead of fetched. */
  readonly caPem?: string | undefined;
}

export interface ServiceSpec {
  readonly name: string;
  readonly alias: string;
  readonly command?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly variables?: Readonly<Record<string, string>>;
}

export interface ScriptLine {
  readonly run: string;
  readonly comment?: string;
}

/** The job as data: what the YAML says, before any formatting. */
export interface GitlabJob {
  readonly name: string;
  readonly stage: string;
  readonly image: string;
  readonly services: readonly ServiceSpec[];
  readonly variables: Readonly<Record<string, string>>;
  readonly beforeScript: readonly ScriptLine[];
  readonly script: readonly ScriptLine[];
}

const DEFAULT_DOCKER_VERSION = '27';

/** Checks and normalizes a mirror URL (dockerd wants scheme://host[:port], no path). */
export function normalizeMirror(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw errors.ciMirrorUnparsable(url);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw errors.ciMirrorScheme(url);
  }
  if (u.pathname !== '/' || u.search !== '' || u.hash !== '') {
    throw errors.ciMirrorPath(url, `${u.protocol}//${u.host}`);
  }
  return `${u.protocol}//${u.host}`;
}

/**
 * The dockerd flags that make dind use relais as its Docker Hub mirror: `--registry-mirror`, and for a
 * plain-HTTP relais `--insecure-registry` too, so images named through relais directly
 * (relais.example.com:5000/ghcr.io/org/app, the path-prefix pulls `relais ci doctor` recommends) are
 * pulled over HTTP instead of failing with "server gave HTTP response to HTTPS client".
 * The daemon.json of `runner-config --via volume` says the same (registry-mirrors, insecure-registries).
 */
export function dindMirrorFlags(mirror: string): string[] {
  const m = normalizeMirror(mirror);
  const u = new URL(m);
  return u.protocol === 'http:' ? [`--registry-mirror=${m}`, `--insecure-registry=${u.host}`] : [`--registry-mirror=${m}`];
}

/** Top-level keywords of .gitlab-ci.yml: a job cannot have these names. */
export const RESERVED_JOB_NAMES: readonly string[] = [
  'image', 'services', 'stages', 'types', 'before_script', 'after_script', 'variables', 'cache', 'include',
  'default', 'workflow', 'spec',
];

/** The job model for the given options (pure). */
export function buildGitlabJob(options: GitlabJobOptions): GitlabJob {
  const name = options.jobName ?? 'build';
  if (RESERVED_JOB_NAMES.includes(name) || name.startsWith('.') || name.trim() === '') {
    throw errors.ciJobNameReserved(name);
  }
  const tls = options.tls ?? true;
  const version = options.dockerVersion ?? DEFAULT_DOCKER_VERSION;
  const mirror = options.mirror === undefined ? undefined : normalizeMirror(options.mirror);
  const image = options.image ?? '$CI_REGISTRY_IMAGE';
  const context = options.context ?? '.';
  const defaultSlug = options.defaultBranch === undefined ? shellSlug('CI_DEFAULT_BRANCH') : refSlug(options.defaultBranch);
  const isDefaultBranch =
    options.defaultBranch === undefined
      ? '[ "$CI_COMMIT_REF_NAME" = "$CI_DEFAULT_BRANCH" ]'
      : `[ "$CI_COMMIT_REF_NAME" = ${shQuote(options.defaultBranch)} ]`;

  const services: ServiceSpec[] = [];
  const proxy = options.proxy === undefined ? undefined : proxyService(options.proxy);
  if (proxy !== undefined && options.service === false) {
    throw errors.ciUsage('--proxy sets up the dind service of the job, but --no-service declares none', 'with a runner-provided dind, wire the proxy on the runner: relais ci runner-config --via proxy');
  }
  if (proxy !== undefined && options.mode === 'registry') {
    throw errors.ciUsage('--proxy is not available with --mode registry yet', "buildx's docker-container builder does not see dind's proxy settings or certs.d: use --mode inline, or --mirror for Docker Hub");
  }
  if (options.service ?? true) {
    const base: ServiceSpec =
      options.dindImage !== undefined
        ? { name: options.dindImage, alias: 'docker' }
        : mirror !== undefined
          ? { name: `docker:${version}-dind`, alias: 'docker', command: dindMirrorFlags(mirror) }
          : { name: `docker:${version}-dind`, alias: 'docker' };
    services.push(proxy === undefined ? base : { ...base, ...proxy });
  }

  const variables: Record<string, string> = tls
    ? {
        DOCKER_HOST: 'tcp://docker:2376',
        DOCKER_TLS_CERTDIR: '/certs',
        DOCKER_TLS_VERIFY: '1',
        DOCKER_CERT_PATH: '$DOCKER_TLS_CERTDIR/client',
      }
    : { DOCKER_HOST: 'tcp://docker:2375', DOCKER_TLS_CERTDIR: '' };
  variables['IMAGE'] = image;

  const beforeScript: ScriptLine[] = [
    {
      run: 'echo "$CI_JOB_TOKEN" | docker login --username gitlab-ci-token --password-stdin "$CI_REGISTRY"',
      comment: ' The job token can push to this project\'s registry.',
    },
  ];
  const slugLine: ScriptLine = { run: `DEFAULT_SLUG=${defaultSlug}`, comment: ' The default branch\'s tag (its CI_COMMIT_REF_SLUG).' };

  const file = [
    ...(options.dockerfile === undefined ? [] : ['--file', shQuote(options.dockerfile)]),
    ...(options.buildOptions ?? []).map(shQuote),
  ];
  const latest: ScriptLine = {
    run:
      options.mode === 'inline'
        ? `if ${isDefaultBranch}; then docker tag "$IMAGE:$CI_COMMIT_SHA" "$IMAGE:latest" && docker push "$IMAGE:latest"; fi`
        : `if ${isDefaultBranch}; then docker buildx imagetools create --tag "$IMAGE:latest" "$IMAGE:$CI_COMMIT_SHA"; fi`,
    comment: ' `latest` follows the default branch only.',
  };

  let script: ScriptLine[];
  if (options.mode === 'inline') {
    script = [
      slugLine,
      {
        run: 'docker pull "$IMAGE:$CI_COMMIT_REF_SLUG" || true',
        comment: ' Cache sources: this branch\'s last image, then the default branch\'s (absent on a first build).',
      },
      { run: 'docker pull "$IMAGE:$DEFAULT_SLUG" || true' },
      {
        run: [
          'docker build',
          '--build-arg BUILDKIT_INLINE_CACHE=1',
          '--cache-from "$IMAGE:$CI_COMMIT_REF_SLUG"',
          '--cache-from "$IMAGE:$DEFAULT_SLUG"',
          '--tag "$IMAGE:$CI_COMMIT_REF_SLUG"',
          '--tag "$IMAGE:$CI_COMMIT_SHA"',
          ...file,
          shQuote(context),
        ].join(' '),
        comment:
          ' BUILDKIT_INLINE_CACHE=1 writes the cache metadata into the image: without it BuildKit\n ignores --cache-from after a fresh daemon (the classic builder uses the pulled layers).',
      },
      { run: 'docker push "$IMAGE:$CI_COMMIT_REF_SLUG"' },
      { run: 'docker push "$IMAGE:$CI_COMMIT_SHA"' },
      latest,
    ];
  } else {
    const mirrorConfig: ScriptLine[] =
      mirror === undefined
        ? []
        : [
            {
              run: `printf '%s\\n' ${buildkitdToml(mirror)
                .map((l) => shQuote(l))
                .join(' ')} > buildkitd.toml`,
              comment: ' BuildKit pulls base images itself: give it the mirror too (dind\'s --registry-mirror does not apply).',
            },
          ];
    script = [
      slugLine,
      ...mirrorConfig,
      {
        run: `docker buildx create --use --driver docker-container${mirror === undefined ? '' : ' --config buildkitd.toml'}`,
        comment: ' The docker-container driver can export cache to a registry (the default driver cannot).',
      },
      {
        run: [
          'docker buildx build',
          '--push',
          '--cache-to "type=registry,ref=$IMAGE:cache-$CI_COMMIT_REF_SLUG,mode=max"',
          '--cache-from "type=registry,ref=$IMAGE:cache-$CI_COMMIT_REF_SLUG"',
          '--cache-from "type=registry,ref=$IMAGE:cache-$DEFAULT_SLUG"',
          '--tag "$IMAGE:$CI_COMMIT_REF_SLUG"',
          '--tag "$IMAGE:$CI_COMMIT_SHA"',
          ...file,
          shQuote(context),
        ].join(' '),
        comment: ' mode=max caches every stage, not just the final one, in a separate cache-<slug> tag.',
      },
      latest,
    ];
  }

  return {
    name,
    stage: options.stage ?? 'build',
    image: `docker:${version}`,
    services,
    variables,
    beforeScript,
    script,
  };
}

/** The dind service's proxy settings: variables (GitLab gives a service its own) and the certs.d entrypoint. */
function proxyService(p: ProxyWiring): Pick<ServiceSpec, 'entrypoint' | 'variables'> {
  const url = normalizeProxy(p.url);
  const hosts = interceptHosts(p.hosts);
  const variables: Record<string, string> = {
    HTTPS_PROXY: url,
    NO_PROXY: noProxyFor(url, hosts),
    [INTERCEPT_HOSTS_VAR]: hosts.join(' '),
  };
  if (p.caPem !== undefined) variables['RELAIS_CA'] = p.caPem.trimEnd();
  else variables['RELAIS_CA_URL'] = p.caUrl ?? `http://${new URL(url).hostname}:5000/_relais/ca.crt`;
  return { variables, entrypoint: dindProxyEntrypoint() };
}

/** buildkitd.toml lines routing Docker Hub pulls through the mirror. */
export function buildkitdToml(mirror: string): string[] {
  const u = new URL(mirror);
  const lines = ['[registry."docker.io"]', `  mirrors = ["${u.host}"]`];
  if (u.protocol === 'http:') lines.push(`[registry."${u.host}"]`, '  http = true');
  return lines;
}

/** A Dockerfile for a dind image whose daemon always uses the mirror (for runners that pin services). */
export function dindDockerfile(mirror: string, dockerVersion = DEFAULT_DOCKER_VERSION): string {
  const m = normalizeMirror(mirror);
  return [
    '# Dockerfile.dind: docker:dind with relais as its Docker Hub mirror, for runners where',
    '# jobs cannot pass `command:` to their services. Build and push it, then use it as the service.',
    `FROM docker:${dockerVersion}-dind`,
    `CMD [${dindMirrorFlags(m).map((f) => JSON.stringify(f)).join(', ')}]`,
    '',
  ].join('\n');
}

/** Renders the job as a commented YAML document. */
export function gitlabJobDocument(job: GitlabJob, options: GitlabJobOptions): Document {
  const doc = new Document();
  const root = new YAMLMap();
  doc.contents = root;
  const header = [
    ` Generated by: ${options.generatedBy ?? 'relais ci gitlab'}`,
    ` Builds the image with ${options.mode === 'inline' ? 'inline' : 'registry'} cache reuse and pushes`,
    ` $IMAGE:$CI_COMMIT_REF_SLUG and $IMAGE:$CI_COMMIT_SHA (and :latest on the default branch).`,
  ];
  if (options.include === true) {
    header.push(' Include it from .gitlab-ci.yml with `include: {local: <this file>}`.');
  }
  if (options.tls ?? true) {
    header.push(
      ' The runner must be privileged (dind) and share /certs/client (volumes = ["/certs/client"]):',
      ' `relais ci runner-config` and `relais ci doctor` check both.',
    );
  } else {
    header.push(' The runner must be privileged (dind): `relais ci runner-config` and `relais ci doctor` check it.');
  }
  doc.commentBefore = header.join('\n');

  if (options.include !== true) {
    root.add(doc.createPair('stages', [job.stage]));
  }

  const jobMap = new YAMLMap();
  jobMap.add(doc.createPair('stage', job.stage));
  jobMap.add(doc.createPair('image', job.image));

  if (job.services.length > 0) {
    const services = new YAMLSeq();
    for (const s of job.services) {
      const m = new YAMLMap();
      m.add(doc.createPair('name', s.name));
      m.add(doc.createPair('alias', s.alias));
      if (s.entrypoint !== undefined) {
        const ep = new YAMLSeq();
        for (const arg of s.entrypoint) ep.items.push(new Scalar(arg));
        const pair = doc.createPair('entrypoint', ep);
        pair.key = withComment(
          pair.key,
          ' Writes relais\'s CA to /etc/docker/certs.d/<host>/ca.crt for each intercepted host (dockerd\'s\n per-registry trust, added to the system roots), then starts dind as usual.',
        );
        m.add(pair);
      }
      if (s.variables !== undefined) {
        const vars = new YAMLMap();
        for (const [k, v] of Object.entries(s.variables)) vars.add(doc.createPair(k, v));
        const pair = doc.createPair('variables', vars);
        pair.key = withComment(
          pair.key,
          ' dind pulls every intercepted registry through relais\'s proxy door; NO_PROXY keeps the job\'s own\n connection to dind (docker) and relais\'s HTTP door direct.',
        );
        m.add(pair);
      }
      if (s.command !== undefined) {
        const cmd = new YAMLSeq();
        cmd.flow = true;
        for (const arg of s.command) {
          const a = new Scalar(arg);
          a.type = Scalar.QUOTE_DOUBLE;
          cmd.items.push(a);
        }
        m.add(doc.createPair('command', cmd));
      }
      services.items.push(m);
    }
    const servicesPair = doc.createPair('services', services);
    const first = services.items[0];
    if (isMap(first)) {
      first.commentBefore =
        job.services[0]?.command !== undefined
          ? ' alias: docker matches the name in dind\'s TLS certificate; --registry-mirror covers Docker Hub pulls.'
          : ' alias: docker matches the name in dind\'s TLS certificate.';
    }
    jobMap.add(servicesPair);
  }

  const vars = new YAMLMap();
  for (const [k, v] of Object.entries(job.variables)) {
    const value = new Scalar(v);
    if (v === '' || v === '1') value.type = Scalar.QUOTE_DOUBLE;
    vars.add(doc.createPair(k, value));
  }
  const hostVar = vars.items[0];
  if (hostVar !== undefined) {
    hostVar.key = withComment(
      hostVar.key,
      (options.tls ?? true)
        ? ' TLS on 2376: DOCKER_TLS_CERTDIR makes dind write certificates, the client reads them from DOCKER_CERT_PATH.'
        : ' TLS off: port 2375 needs DOCKER_TLS_CERTDIR "" or dind listens on 2376 only.',
    );
  }
  jobMap.add(doc.createPair('variables', vars));
  jobMap.add(doc.createPair('before_script', scriptSeq(job.beforeScript)));
  jobMap.add(doc.createPair('script', scriptSeq(job.script)));

  const jobKey = new Scalar(job.name);
  if (options.include !== true) jobKey.spaceBefore = true;
  root.add(doc.createPair(jobKey, jobMap));
  return doc;
}

/** The YAML text for the given options. */
export function generateGitlabCi(options: GitlabJobOptions): string {
  const job = buildGitlabJob(options);
  return gitlabJobDocument(job, options).toString({ lineWidth: 0, flowCollectionPadding: false });
}

function scriptSeq(lines: readonly ScriptLine[]): YAMLSeq {
  const seq = new YAMLSeq();
  for (const l of lines) {
    const s = new Scalar(l.run);
    if (l.comment !== undefined) s.commentBefore = l.comment;
    seq.items.push(s);
  }
  return seq;
}

function withComment(key: unknown, comment: string): Scalar {
  const s = key instanceof Scalar ? key : new Scalar(key);
  s.commentBefore = comment;
  return s;
}

/** Single-quotes a word for sh when it needs it. */
export function shQuote(word: string): string {
  if (/^[A-Za-z0-9_./:@%+=,-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
