// Reads the files `relais prefetch --gitlab-ci / --dockerfile` names and turns what the parsers find into
// prefetch targets. Local includes of a .gitlab-ci.yml are read relative to that file's directory (the
// repository root, where GitLab looks for them), never outside it.
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve, sep } from 'node:path';
import { errors, RelaisError } from '../errors.js';
import { dockerfileImages, type FoundImage, type UnresolvedImage } from './dockerfile-images.js';
import { gitlabCiImages } from './gitlab-ci-images.js';
import type { ImageResult, PrefetchSummary, PrefetchTarget } from './prefetch.js';

export interface PrefetchFiles {
  readonly gitlabCi: readonly string[];
  readonly dockerfiles: readonly string[];
  /** --build-arg NAME=VALUE for the Dockerfiles. */
  readonly buildArgs: Readonly<Record<string, string>>;
  /** --variable NAME=VALUE for the .gitlab-ci.yml files (predefined and project variables). */
  readonly variables: Readonly<Record<string, string>>;
}

export interface PrefetchSources {
  readonly found: readonly FoundImage[];
  readonly unresolved: readonly UnresolvedImage[];
  readonly skippedIncludes: readonly string[];
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw errors.prefetchFileUnreadable(what, path, (e as NodeJS.ErrnoException).code ?? String(e));
  }
}

/** The images the files name, what could not be resolved, and the includes not followed. */
export async function scanPrefetchFiles(files: PrefetchFiles): Promise<PrefetchSources> {
  const found: FoundImage[] = [];
  const unresolved: UnresolvedImage[] = [];
  const skippedIncludes: string[] = [];
  for (const f of files.gitlabCi) {
    const root = resolve(dirname(f));
    const readLocal = (p: string): string | undefined => {
      const full = resolve(root, p);
      if (!full.startsWith(root + sep)) return undefined;
      try {
        return readFileSync(full, 'utf8');
      } catch {
        return undefined;
      }
    };
    let scan;
    try {
      scan = gitlabCiImages(await readText(f, 'GitLab CI file'), { file: f, readLocal, variables: files.variables });
    } catch (e) {
      if (e instanceof RelaisError) throw e;
      throw errors.prefetchCiFileInvalid(f, e instanceof Error ? e.message : String(e));
    }
    found.push(...scan.images);
    unresolved.push(...scan.unresolved);
    skippedIncludes.push(...scan.skippedIncludes.map((s) => `${basename(f)}: ${s}`));
  }
  for (const f of files.dockerfiles) {
    const scan = dockerfileImages(await readText(f, 'Dockerfile'), { file: f, buildArgs: files.buildArgs });
    found.push(...scan.images);
    unresolved.push(...scan.unresolved);
  }
  return { found, unresolved, skippedIncludes };
}

/** Named images first, then what the files name; each image (and platform) once. */
export function prefetchTargets(images: readonly string[], found: readonly FoundImage[]): PrefetchTarget[] {
  const out: PrefetchTarget[] = [];
  const seen = new Set<string>();
  for (const image of images) {
    if (seen.has(`${image}\n`)) continue;
    seen.add(`${image}\n`);
    out.push({ image });
  }
  for (const f of found) {
    const key = `${f.image}\n${f.platform ?? ''}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(f.platform === undefined ? { image: f.image } : { image: f.image, platforms: [f.platform] });
  }
  return out;
}

/**
 * Images the files name on a registry this relais does not mirror (a project's own registry, $CI_REGISTRY_IMAGE…)
 * are no failure of the warm-up: they are set apart (and listed), the run fails only for the others. Images
 * named on the command line stay failures.
 */
export function setApartNotMirrored(summary: PrefetchSummary, named: readonly string[]): { summary: PrefetchSummary; notMirrored: ImageResult[] } {
  const explicit = new Set(named);
  const notMirrored = summary.images.filter((r) => !r.ok && !explicit.has(r.image) && /NAME_UNKNOWN: .*upstream "[^"]*" is not configured/.test(r.error ?? ''));
  if (notMirrored.length === 0) return { summary, notMirrored };
  const rest = summary.images.filter((r) => !notMirrored.includes(r));
  return { summary: { ...summary, images: rest, failed: rest.filter((r) => !r.ok).length }, notMirrored };
}
