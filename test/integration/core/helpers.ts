// Shared by the core integration tests: a real client (skopeo) pulling through relais, and raw HTTP.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { runOk, tempDir, removeDir } from '../../peers/proc.js';

/** `skopeo copy docker://HOST/NAME dir:` through relais (plain HTTP); returns the digests of the files it wrote. */
export async function skopeoPull(host: string, ref: string, extraArgs: string[] = []): Promise<{ files: Map<string, number>; dir: string }> {
  const dir = await tempDir('skopeo-pull');
  try {
    await runOk('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', ...extraArgs, `docker://${host}/${ref}`, `dir:${dir}`], { timeoutMs: 120_000 });
    const files = new Map<string, number>();
    for (const f of await readdir(dir)) {
      if (f === 'version' || f === 'manifest.json') continue;
      const data = await readFile(join(dir, f));
      // skopeo's dir: transport names blobs by their hex digest and verifies them while copying.
      files.set(`sha256:${createHash('sha256').update(data).digest('hex')}`, data.byteLength);
      if (`sha256:${f}` !== `sha256:${createHash('sha256').update(data).digest('hex')}`) throw new Error(`skopeo wrote ${f} with other content`);
    }
    return { files, dir };
  } finally {
    await removeDir(dir);
  }
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export async function http(url: string, opts: { method?: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE' | 'PATCH'; headers?: Record<string, string> } = {}): Promise<HttpResult> {
  const res = await request(url, { method: opts.method ?? 'GET', headers: opts.headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

export function errorCode(r: HttpResult): string | undefined {
  try {
    return (JSON.parse(r.body.toString('utf8')) as { errors: { code: string }[] }).errors[0]?.code;
  } catch {
    return undefined;
  }
}

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export const ACCEPT_ALL =
  'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
