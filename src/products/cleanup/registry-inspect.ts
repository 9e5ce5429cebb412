// Builds what the planner needs for one repository: tag -> digest (HEAD with the full Accept list),
// the digest graph (index children, referrers by API and by tag schema) and each image's age from
// its config blob, all fetched with bounded concurrency.
import type { FetchedManifest, RegistryBackend } from '../../retention/registry-backend.js';
import { ATTACHMENT_TAG } from '../../retention/families.js';
import { mapLimit } from '../../retention/limit.js';
import { annotationCreated, buildkitCreated, configCreated, kindOf, parseManifest, readCreated, wantsConfig, type CreatedReading, type ParsedManifest } from '../../retention/manifest-refs.js';
import type { CreatedFlag, CreatedSource, DigestGraph, DigestNode, ImageKind, TagInfo } from '../../retention/retention-types.js';

export interface InspectOptions {
  readonly concurrency: number;
  readonly kanikoCacheRepos: readonly RegExp[];
  /** Called as work is done: phase, done, total. */
  readonly onProgress?: (phase: string, done: number, total: number) => void;
}

export interface Inspection {
  readonly repo: string;
  readonly tags: TagInfo[];
  readonly graph: DigestGraph;
  readonly warnings: string[];
}

interface Age {
  readonly created: Date | null;
  readonly source: CreatedSource;
  readonly flag: CreatedFlag;
}

const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
const KANIKO_KEY = /^[0-9a-f]{64}$/;

interface NodeData {
  readonly manifest: ParsedManifest;
  readonly fetched: FetchedManifest;
  age?: Age;
}

export async function inspectRepository(backend: RegistryBackend, repo: string, opts: InspectOptions): Promise<Inspection> {
  const warnings: string[] = [];
  const progress = opts.onProgress ?? (() => undefined);
  const tagNames = (await backend.listTags(repo)).sort();
  if (!backend.canReadManifests) return inspectByTagDetails(backend, repo, tagNames, opts, warnings);

  // 1. tag -> digest
  let done = 0;
  const heads = await mapLimit(tagNames, opts.concurrency, async (tag) => {
    const r = await backend.headManifest(repo, tag);
    progress('resolving tags', ++done, tagNames.length);
    return r;
  });
  const resolved: { tag: string; digest: string; mediaType: string }[] = [];
  tagNames.forEach((tag, i) => {
    const r = heads[i];
    if (r === null || r === undefined) warnings.push(`tag ${tag} disappeared while listing (skipped)`);
    else resolved.push({ tag, digest: r.digest, mediaType: r.mediaType });
  });

  // 2. manifests: the tagged ones, then index children, level by level.
  const nodes = new Map<string, NodeData>();
  const fetchAll = async (digests: string[], phase: string): Promise<void> => {
    let n = 0;
    await mapLimit(digests, opts.concurrency, async (d) => {
      const m = await backend.getManifest(repo, d);
      if (m !== null) nodes.set(d, { fetched: m, manifest: parseManifest(m.body, m.mediaType) });
      progress(phase, ++n, digests.length);
    });
  };
  let frontier = [...new Set(resolved.map((r) => r.digest))];
  await fetchAll(frontier, 'reading manifests');
  for (let depth = 0; depth < 4 && frontier.length > 0; depth++) {
    const next = new Set<string>();
    for (const d of frontier) for (const c of nodes.get(d)?.manifest.children ?? []) if (!nodes.has(c.digest)) next.add(c.digest);
    frontier = [...next];
    if (frontier.length > 0) await fetchAll(frontier, 'reading index children');
  }

  // 3. referrers (API, when the registry has it), attached to their subject.
  const referrers = new Map<string, Set<string>>();
  const addReferrer = (subject: string, d: string): void => {
    const s = referrers.get(subject);
    if (s) s.add(d);
    else referrers.set(subject, new Set([d]));
  };
  const subjects = [...nodes.keys()];
  if (subjects.length > 0 && (await backend.referrers(repo, subjects[0] ?? '')) !== null) {
    let n = 0;
    const found = await mapLimit(subjects, opts.concurrency, async (d) => {
      const r = await backend.referrers(repo, d);
      progress('listing referrers', ++n, subjects.length);
      return r ?? [];
    });
    subjects.forEach((d, i) => {
      for (const ref of found[i] ?? []) addReferrer(d, ref.digest);
    });
    const missing = [...new Set([...referrers.values()].flatMap((s) => [...s]))].filter((d) => !nodes.has(d));
    await fetchAll(missing, 'reading referrers');
  }
  // Manifests with a `subject` (OCI 1.1) are referrers of it, whatever tag they carry.
  for (const [d, n] of nodes) if (n.manifest.subject !== undefined) addReferrer(n.manifest.subject, d);
  // Referrers tag schema / cosign: sha256-<hex>[.sig] points to sha256:<hex>.
  const subjectOfTag = new Map<string, string>();
  for (const r of resolved) {
    const m = ATTACHMENT_TAG.exec(r.tag);
    if (m?.[1] !== undefined && m[2] !== undefined) {
      const subject = `${m[1]}:${m[2]}`;
      subjectOfTag.set(r.tag, subject);
      addReferrer(subject, r.digest);
    }
  }

  // 4. ages: config blobs of images (bounded), BuildKit layer annotations, newest child for indexes.
  const configs = [...nodes.entries()].filter(([, n]) => wantsConfig(n.manifest));
  let c = 0;
  await mapLimit(configs, opts.concurrency, async ([, n]) => {
    const cfg = n.manifest.config;
    let reading: CreatedReading = { date: null, flag: 'missing' };
    if (cfg) {
      const blob = await backend.getBlob(repo, cfg.digest, MAX_CONFIG_BYTES);
      reading = blob === null ? { date: null, flag: 'missing' } : configCreated(blob);
    }
    n.age = ageFrom(reading, n.manifest);
    progress('reading image configs', ++c, configs.length);
  });
  const ageOf = (d: string, depth = 0): Age => {
    const n = nodes.get(d);
    if (!n) return { created: null, source: 'none', flag: 'missing' };
    if (n.age) return n.age;
    let age: Age;
    const kind = kindOf(n.manifest);
    if (kind === 'buildkit-cache') {
      const b = buildkitCreated(n.manifest) ?? annotationCreated(n.manifest);
      age = { created: b, source: b ? 'buildkit-layers' : 'none', flag: 'not-applicable' };
    } else if (n.manifest.isIndex && depth < 4) {
      const kids = n.manifest.children.map((ch) => ageOf(ch.digest, depth + 1));
      const dated = kids.filter((k) => k.created !== null).map((k) => k.created as Date);
      const ann = annotationCreated(n.manifest);
      if (dated.length > 0) age = { created: new Date(Math.max(...dated.map((x) => x.getTime()))), source: 'children', flag: 'ok' };
      else age = { created: ann, source: ann ? 'annotation' : 'none', flag: kids[0]?.flag ?? 'missing' };
    } else if (n.manifest.schema1Created !== undefined) {
      const r = readCreated(n.manifest.schema1Created);
      age = { created: r.date, source: r.date ? 'config' : 'none', flag: r.flag };
    } else {
      const ann = annotationCreated(n.manifest);
      age = { created: ann, source: ann ? 'annotation' : 'none', flag: 'not-applicable' };
    }
    n.age = age;
    return age;
  };

  // 5. the graph and the tags.
  const graph = new Map<string, DigestNode>();
  for (const [d, n] of nodes)
    graph.set(d, {
      digest: d,
      mediaType: n.manifest.mediaType,
      children: n.manifest.children.map((ch) => ch.digest),
      referrers: [...(referrers.get(d) ?? [])],
    });
  const kaniko = opts.kanikoCacheRepos.some((re) => re.test(repo));
  const tags: TagInfo[] = resolved.map((r) => {
    const n = nodes.get(r.digest);
    const subject = subjectOfTag.get(r.tag) ?? n?.manifest.subject;
    let kind: ImageKind = n ? kindOf(n.manifest) : 'unknown';
    if (subjectOfTag.has(r.tag)) kind = 'attachment';
    else if (kaniko && KANIKO_KEY.test(r.tag) && kind === 'image') kind = 'kaniko-cache';
    const age = ageOf(r.digest);
    return {
      repo,
      tag: r.tag,
      digest: r.digest,
      mediaType: n?.manifest.mediaType ?? r.mediaType,
      kind,
      created: age.created,
      createdSource: age.source,
      createdFlag: age.flag,
      ...(subject !== undefined ? { subject } : {}),
    };
  });
  return { repo, tags, graph, warnings };
}

function ageFrom(reading: CreatedReading, m: ParsedManifest): Age {
  if (reading.date) return { created: reading.date, source: 'config', flag: 'ok' };
  // The config's `created` is missing or a placeholder: an explicit annotation is the next best witness.
  const ann = annotationCreated(m);
  return { created: ann, source: ann ? 'annotation' : 'none', flag: reading.flag };
}

/** GitLab's API gives tag -> digest and a creation time, but no manifests: a flat graph. */
async function inspectByTagDetails(backend: RegistryBackend, repo: string, tagNames: string[], opts: InspectOptions, warnings: string[]): Promise<Inspection> {
  const details = backend.tagDetails?.bind(backend);
  if (!details) throw new Error('backend can neither read manifests nor give tag details');
  let done = 0;
  const got = await mapLimit(tagNames, opts.concurrency, async (t) => {
    const d = await details(repo, t);
    opts.onProgress?.('reading tag details', ++done, tagNames.length);
    return d;
  });
  const tags: TagInfo[] = [];
  const graph = new Map<string, DigestNode>();
  const kaniko = opts.kanikoCacheRepos.some((re) => re.test(repo));
  tagNames.forEach((tag, i) => {
    const d = got[i];
    if (!d) {
      warnings.push(`tag ${tag} disappeared while listing (skipped)`);
      return;
    }
    const reading = d.created ? readCreated(d.created.toISOString()) : { date: null, flag: 'missing' as const };
    const att = ATTACHMENT_TAG.exec(tag);
    const subject = att?.[1] !== undefined && att[2] !== undefined ? `${att[1]}:${att[2]}` : undefined;
    tags.push({
      repo,
      tag,
      digest: d.digest,
      mediaType: '',
      kind: subject !== undefined ? 'attachment' : kaniko && KANIKO_KEY.test(tag) ? 'kaniko-cache' : 'unknown',
      created: reading.date,
      createdSource: reading.date ? 'registry' : 'none',
      createdFlag: reading.flag,
      ...(subject !== undefined ? { subject } : {}),
    });
    if (!graph.has(d.digest)) graph.set(d.digest, { digest: d.digest, mediaType: '', children: [], referrers: [] });
  });
  return { repo, tags, graph, warnings };
}
