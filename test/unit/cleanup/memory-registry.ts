// An in-memory registry implementing cleanup's RegistryBackend, with the tag-delete behaviours
// found in the wild and an optional referrers API, for unit tests of inspect and apply.
import { createHash } from 'node:crypto';
import type { DeleteOutcome, Descriptor, FetchedManifest, ManifestRef, RegistryBackend } from '../../../src/retention/registry-backend.js';

export type Mode = 'spec' | 'digest' | 'none' | '404';

export class MemoryRegistry implements RegistryBackend {
  readonly description = 'memory';
  readonly canReadManifests = true;
  readonly manifests = new Map<string, { mediaType: string; body: Buffer }>();
  readonly tags = new Map<string, string>();
  readonly calls: string[] = [];
  constructor(readonly mode: Mode) {}

  push(tag: string | null, body: string, mediaType = 'application/vnd.oci.image.manifest.v1+json'): string {
    const b = Buffer.from(body);
    const d = `sha256:${createHash('sha256').update(b).digest('hex')}`;
    this.manifests.set(d, { mediaType, body: b });
    if (tag !== null) this.tags.set(tag, d);
    return d;
  }
  private resolve(ref: string): string | undefined {
    return ref.includes(':') ? (this.manifests.has(ref) ? ref : undefined) : this.tags.get(ref);
  }
  listTags(): Promise<string[]> {
    return Promise.resolve([...this.tags.keys()]);
  }
  headManifest(_repo: string, ref: string): Promise<ManifestRef | null> {
    const d = this.resolve(ref);
    const m = d === undefined ? undefined : this.manifests.get(d);
    return Promise.resolve(d !== undefined && m ? { digest: d, mediaType: m.mediaType, size: m.body.length } : null);
  }
  getManifest(_repo: string, ref: string): Promise<FetchedManifest | null> {
    const d = this.resolve(ref);
    const m = d === undefined ? undefined : this.manifests.get(d);
    return Promise.resolve(d !== undefined && m ? { digest: d, mediaType: m.mediaType, size: m.body.length, body: m.body } : null);
  }
  getBlob(_repo: string, digest: string): Promise<Buffer | null> {
    return Promise.resolve(this.configs.get(digest) ?? null);
  }
  /** subject digest -> referrer descriptors; null: the API is not supported. */
  referrerIndex: Map<string, Descriptor[]> | null = null;
  readonly configs = new Map<string, Buffer>();
  referrers(_repo: string, digest: string): Promise<Descriptor[] | null> {
    this.calls.push(`REFERRERS ${digest}`);
    return Promise.resolve(this.referrerIndex === null ? null : (this.referrerIndex.get(digest) ?? []));
  }
  private deleteDigest(d: string): void {
    this.manifests.delete(d);
    for (const [t, x] of [...this.tags]) if (x === d) this.tags.delete(t);
  }
  deleteManifest(_repo: string, ref: string): Promise<DeleteOutcome> {
    this.calls.push(`DELETE ${ref}`);
    if (ref.includes(':')) {
      if (!this.manifests.has(ref)) return Promise.resolve('not-found');
      this.deleteDigest(ref);
      return Promise.resolve('deleted');
    }
    const d = this.tags.get(ref);
    if (this.mode === 'none') return Promise.resolve('unsupported');
    if (this.mode === '404') return Promise.resolve('not-found'); // answers 404 MANIFEST_UNKNOWN to any tag DELETE
    if (d === undefined) return Promise.resolve('not-found');
    if (this.mode === 'spec') this.tags.delete(ref);
    else this.deleteDigest(d);
    return Promise.resolve('deleted');
  }
  putManifest(_repo: string, ref: string, mediaType: string, body: Buffer): Promise<string> {
    this.calls.push(`PUT ${ref}`);
    return Promise.resolve(this.push(ref, body.toString('utf8'), mediaType));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
