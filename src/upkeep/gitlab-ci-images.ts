// The images a .gitlab-ci.yml runs, for `relais prefetch --gitlab-ci`: `image:` and `services:` of every job
// (after `extends:`, falling back to `default:` and the old top-level keys), `parallel: matrix:` expanded,
// local `include:` files followed (through `readLocal`, so this stays a pure function of the files' text).
// Variables come from the global and job `variables:` blocks (and any the caller gives, e.g. --variable);
// what cannot be resolved (predefined CI_* variables, project settings) is listed, never guessed.
import { parseAllDocuments, type Tags } from 'yaml';
import { expandVariables, type FoundImage, type ImageScan, type UnresolvedImage } from './dockerfile-images.js';

export interface GitlabCiOptions {
  /** The file's name for messages (default .gitlab-ci.yml). */
  readonly file?: string;
  /** Text of a local include (a path from the repository root, without leading slash); undefined when absent. */
  readonly readLocal?: (path: string) => string | undefined;
  /** Values for variables the files do not define (predefined or project variables). */
  readonly variables?: Readonly<Record<string, string>>;
}

export interface GitlabCiScan extends ImageScan {
  /** Includes that were not followed (remote, template, project, component, wildcards, missing files). */
  readonly skippedIncludes: readonly string[];
}

/** Top-level keys that are not jobs. */
const RESERVED = new Set(['image', 'services', 'default', 'include', 'variables', 'stages', 'workflow', 'before_script', 'after_script', 'cache', 'spec', 'types']);

type Yaml = Record<string, unknown>;

/** `!reference [.job, key]`: resolved after all files are merged. */
class Reference {
  constructor(readonly path: readonly string[]) {}
}

const customTags: Tags = [
  {
    tag: '!reference',
    collection: 'seq',
    resolve: (seq: unknown) => {
      const items = (seq as { items?: { value?: unknown }[] }).items ?? [];
      return new Reference(items.map((i) => String(i.value ?? (i as unknown))));
    },
  },
];

const isMap = (x: unknown): x is Yaml => x !== null && typeof x === 'object' && !Array.isArray(x) && !(x instanceof Reference);

function parseFile(text: string, file: string): Yaml {
  // A file with a `spec:` header (CI/CD inputs) has two documents: the header, then the configuration.
  const docs = parseAllDocuments(text, { customTags, merge: true, logLevel: 'error' });
  const last = Array.isArray(docs) ? docs[docs.length - 1] : docs;
  const error = last?.errors[0];
  if (error !== undefined) throw new Error(`${file}: ${error.message}`);
  const doc: unknown = last?.toJS();
  if (doc === null || doc === undefined) return {};
  if (!isMap(doc)) throw new Error(`${file}: not a mapping at the top level`);
  return doc;
}

function includeEntries(inc: unknown): unknown[] {
  if (inc === undefined || inc === null) return [];
  return Array.isArray(inc) ? inc : [inc];
}

/** Reads the file and its local includes, merged as GitLab does: included files first, the including file wins. */
function loadMerged(text: string, file: string, opts: GitlabCiOptions, skipped: string[], seen: Set<string>, depth: number): Yaml {
  const doc = parseFile(text, file);
  const merged: Yaml = {};
  for (const entry of includeEntries(doc.include)) {
    let local: string | undefined;
    if (typeof entry === 'string') {
      if (/^https?:\/\//.test(entry)) skipped.push(`remote: ${entry}`);
      else local = entry;
    } else if (isMap(entry)) {
      if (typeof entry.local === 'string') local = entry.local;
      else skipped.push(Object.entries(entry).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', '));
    }
    if (local === undefined) continue;
    const path = local.replace(/^\/+/, '');
    if (path.includes('*')) {
      skipped.push(`local: ${local} (wildcards are not followed; name the files)`);
      continue;
    }
    if (seen.has(path) || depth >= 100) continue;
    const inc = opts.readLocal?.(path);
    if (inc === undefined) {
      skipped.push(`local: ${local} (not found)`);
      continue;
    }
    seen.add(path);
    deepMerge(merged, loadMerged(inc, path, opts, skipped, seen, depth + 1));
  }
  const own = { ...doc };
  delete own.include;
  deepMerge(merged, own);
  return merged;
}

/** GitLab's merge of includes and `extends`: maps merge key by key, anything else is replaced. */
function deepMerge(target: Yaml, source: Yaml): Yaml {
  for (const [k, v] of Object.entries(source)) {
    const t = target[k];
    if (isMap(t) && isMap(v)) target[k] = deepMerge({ ...t }, v);
    else target[k] = v;
  }
  return target;
}

function resolveReference(root: Yaml, ref: Reference): unknown {
  let cur: unknown = root;
  for (const key of ref.path) {
    if (Array.isArray(cur) && /^\d+$/.test(key)) cur = (cur as unknown[])[Number(key)];
    else if (isMap(cur)) cur = cur[key];
    else return undefined;
  }
  return cur;
}

/** The job with its `extends:` chain applied (parents first, the job wins). */
function withExtends(root: Yaml, job: Yaml, depth = 0): Yaml {
  const ext = job.extends;
  const parents = ext === undefined ? [] : Array.isArray(ext) ? ext : [ext];
  const out: Yaml = {};
  for (const p of parents) {
    const parent = typeof p === 'string' ? root[p] : undefined;
    if (isMap(parent) && depth < 11) deepMerge(out, withExtends(root, parent, depth + 1));
  }
  const own = { ...job };
  delete own.extends;
  return deepMerge(out, own);
}

function variablesOf(block: unknown, root: Yaml): Record<string, string> {
  const v = block instanceof Reference ? resolveReference(root, block) : block;
  const out: Record<string, string> = {};
  if (!isMap(v)) return out;
  for (const [k, raw] of Object.entries(v)) {
    const val = isMap(raw) ? raw.value : raw;
    if (typeof val === 'string' || typeof val === 'number' || typeof val === 'boolean') out[k] = String(val);
  }
  return out;
}

/** image: "x" | {name: "x", docker: {platform}} -> name and platform. */
function imageSpec(x: unknown, root: Yaml): { name: string; platform?: string } | undefined {
  const v = x instanceof Reference ? resolveReference(root, x) : x;
  if (typeof v === 'string') return { name: v };
  if (isMap(v) && typeof v.name === 'string') {
    const docker = v.docker;
    const platform = isMap(docker) && typeof docker.platform === 'string' ? docker.platform : undefined;
    return platform === undefined ? { name: v.name } : { name: v.name, platform };
  }
  return undefined;
}

function servicesOf(x: unknown, root: Yaml): { name: string; platform?: string }[] {
  const v = x instanceof Reference ? resolveReference(root, x) : x;
  if (!Array.isArray(v)) return [];
  return v.flatMap((s: unknown) => {
    if (s instanceof Reference) return servicesOf([resolveReference(root, s)].flat(), root);
    const spec = imageSpec(s, root);
    return spec ? [spec] : [];
  });
}

/** `parallel: matrix:` -> one variable set per job instance (one empty set without a matrix). */
function matrixOf(parallel: unknown): Record<string, string>[] {
  if (!isMap(parallel) || !Array.isArray(parallel.matrix)) return [{}];
  const out: Record<string, string>[] = [];
  for (const entry of parallel.matrix as unknown[]) {
    if (!isMap(entry)) continue;
    let combos: Record<string, string>[] = [{}];
    for (const [k, v] of Object.entries(entry)) {
      const values = (Array.isArray(v) ? v : [v]).filter((x) => typeof x === 'string' || typeof x === 'number').map(String);
      combos = combos.flatMap((c) => values.map((val) => ({ ...c, [k]: val })));
    }
    out.push(...combos);
  }
  return out.length === 0 ? [{}] : out;
}

export function gitlabCiImages(text: string, opts: GitlabCiOptions = {}): GitlabCiScan {
  const file = opts.file ?? '.gitlab-ci.yml';
  const skippedIncludes: string[] = [];
  const root = loadMerged(text, file, opts, skippedIncludes, new Set(), 0);
  const globalVars = variablesOf(root.variables, root);
  const defaults = isMap(root.default) ? root.default : {};
  const defaultImage = imageSpec(defaults.image ?? root.image, root);
  const defaultServices = servicesOf(defaults.services ?? root.services, root);
  const images: FoundImage[] = [];
  const unresolved: UnresolvedImage[] = [];
  const seen = new Set<string>();
  const add = (spec: { name: string; platform?: string }, vars: Record<string, string>, source: string): void => {
    // Job variables win over global ones; the caller's values stand in for predefined and project variables.
    // A variable's value may name other variables (GitLab expands them): expanded here, a few levels deep.
    const innerMissing = new Set<string>();
    const lookup = (name: string, depth = 0): string | undefined => {
      const raw = vars[name] ?? globalVars[name] ?? opts.variables?.[name];
      if (raw === undefined || !raw.includes('$') || depth >= 5) return raw;
      const e = expandVariables(raw, (n) => lookup(n, depth + 1), { dollarEscape: true });
      if (e.ok) return e.value;
      for (const m of e.missing) innerMissing.add(m);
      return '';
    };
    const e = expandVariables(spec.name, lookup, { dollarEscape: true });
    // CI/CD inputs ($[[ inputs.x ]]) are given where the file is included: nothing here to resolve them with.
    const inputs = [...spec.name.matchAll(/\$\[\[\s*([^\]]+?)\s*\]\]/g)].map((m) => m[1] ?? '');
    const missing = [...(e.ok ? [] : e.missing), ...innerMissing, ...inputs];
    if (!e.ok || missing.length > 0) {
      const key = `${spec.name}\n${source}`;
      if (!seen.has(key)) unresolved.push({ raw: spec.name, source, missing: [...new Set(missing)] });
      seen.add(key);
      return;
    }
    const value = e.value;
    const image = value.trim();
    if (image === '') return;
    const key = `${image}\n${spec.platform ?? ''}`;
    if (seen.has(key)) return;
    seen.add(key);
    images.push({ image, platform: spec.platform, source });
  };
  for (const [name, raw] of Object.entries(root)) {
    if (RESERVED.has(name) || name.startsWith('.') || !isMap(raw)) continue;
    const job = withExtends(root, raw);
    if (job.trigger !== undefined) continue; // a trigger job runs no image
    const jobVars = variablesOf(job.variables, root);
    const image = job.image === undefined ? defaultImage : imageSpec(job.image, root);
    const services = job.services === undefined ? defaultServices : servicesOf(job.services, root);
    for (const matrixVars of matrixOf(job.parallel)) {
      const vars = { ...jobVars, ...matrixVars };
      if (image) add(image, vars, `${file}: job ${name} (image)`);
      for (const s of services) add(s, vars, `${file}: job ${name} (services)`);
    }
  }
  return { images, unresolved, skippedIncludes };
}
