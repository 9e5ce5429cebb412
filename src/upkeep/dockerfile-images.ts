// The images a Dockerfile pulls, for `relais prefetch --dockerfile`: FROM lines (with `--platform`) and
// `COPY --from=<image>`, with ARG defaults declared before the first FROM and --build-arg overrides expanded,
// multi-stage names (`FROM build`, `COPY --from=0`) and `scratch` left out. A pure function of the text.
// Follows Dockerfile syntax: the `# escape=` directive, line continuations, comments, case-insensitive
// instructions, `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}`.

export interface FoundImage {
  readonly image: string;
  /** A literal --platform (os/arch[/variant]); undefined: the run's platforms. */
  readonly platform?: string | undefined;
  /** Where it was found, e.g. "Dockerfile:3" or ".gitlab-ci.yml: job test (services)". */
  readonly source: string;
}

export interface UnresolvedImage {
  /** The text as written, e.g. "node:${NODE_VERSION}". */
  readonly raw: string;
  readonly source: string;
  /** The variables nothing defines. */
  readonly missing: readonly string[];
}

export interface ImageScan {
  readonly images: readonly FoundImage[];
  readonly unresolved: readonly UnresolvedImage[];
}

/** Result of expanding `$VAR` references: the text, or the names nothing defines. */
export type Expansion = { readonly ok: true; readonly value: string } | { readonly ok: false; readonly missing: readonly string[] };

const VAR_RE = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/**
 * Expands `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}` (and the colon-less forms) with `lookup`;
 * `$$` is a literal `$` when `dollarEscape` is set (GitLab's rule).
 */
export function expandVariables(text: string, lookup: (name: string) => string | undefined, opts: { dollarEscape?: boolean } = {}): Expansion {
  const missing = new Set<string>();
  const parts = opts.dollarEscape === true ? text.split('$$') : [text];
  const out = parts.map((part) =>
    part.replace(VAR_RE, (_m, braced: string | undefined, op: string | undefined, word: string | undefined, bare: string | undefined) => {
      const name = braced ?? bare ?? '';
      const value = lookup(name);
      if (op === ':-' || op === '-') {
        const useDefault = value === undefined || (op === ':-' && value === '');
        return useDefault ? (word ?? '') : (value ?? '');
      }
      if (op === ':+' || op === '+') {
        const set = value !== undefined && (op === '+' || value !== '');
        return set ? (word ?? '') : '';
      }
      if (value === undefined) {
        missing.add(name);
        return '';
      }
      return value;
    }),
  );
  if (missing.size > 0) return { ok: false, missing: [...missing] };
  return { ok: true, value: out.join('$') };
}

/** Splits a line into words, honouring quotes ("..." and '...'); quotes are removed. */
function words(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | undefined;
  let has = false;
  for (const ch of line) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      has = true;
    } else if (/\s/.test(ch)) {
      if (has || cur !== '') out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += ch;
      has = true;
    }
  }
  if (has || cur !== '') out.push(cur);
  return out;
}

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

/** Logical instructions: directives read, comments dropped, continuation lines joined. */
export function dockerfileInstructions(text: string): Instruction[] {
  const lines = text.split(/\r?\n/);
  let escape = '\\';
  const out: Instruction[] = [];
  // Parser directives: `# key=value` lines at the very top. `# syntax=IMAGE` is an image BuildKit pulls.
  for (const [i, l] of lines.entries()) {
    const m = /^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(l);
    if (!m) break;
    const key = m[1]?.toLowerCase();
    if (key === 'escape' && (m[2] === '`' || m[2] === '\\')) escape = m[2];
    if (key === 'syntax' && m[2] !== undefined) out.push({ keyword: '#SYNTAX', args: m[2], line: i + 1 });
  }
  let buf = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? '';
    const trimmed = raw.trim();
    if (buf === '' && (trimmed === '' || trimmed.startsWith('#'))) continue;
    // Comment lines inside a continued instruction are dropped (Docker does the same).
    if (buf !== '' && trimmed.startsWith('#')) continue;
    if (buf === '') start = i + 1;
    const continued = trimmed.endsWith(escape);
    buf += `${continued ? trimmed.slice(0, -escape.length) : trimmed} `;
    if (continued && i < lines.length - 1) continue;
    const m = /^(\S+)\s*(.*)$/.exec(buf.trim());
    if (m?.[1] !== undefined) out.push({ keyword: m[1].toUpperCase(), args: (m[2] ?? '').trim(), line: start });
    buf = '';
  }
  return out;
}

/** ARG NAME[=value] [NAME2[=value]...] -> [name, default|undefined][] */
function argDeclarations(args: string): [string, string | undefined][] {
  return words(args).map((w) => {
    const eq = w.indexOf('=');
    return eq === -1 ? [w, undefined] : [w.slice(0, eq), w.slice(eq + 1)];
  });
}

/**
 * Images a Dockerfile pulls. `buildArgs` are --build-arg values: they override the defaults of ARGs declared
 * before the first FROM (the only ones FROM can use), as `docker build` does.
 */
export function dockerfileImages(text: string, opts: { file?: string; buildArgs?: Readonly<Record<string, string>> } = {}): ImageScan {
  const file = opts.file ?? 'Dockerfile';
  const buildArgs = opts.buildArgs ?? {};
  const globalArgs = new Map<string, string | undefined>();
  const stages = new Set<string>();
  let stageCount = 0;
  const images: FoundImage[] = [];
  const unresolved: UnresolvedImage[] = [];
  const lookup = (name: string): string | undefined => {
    if (!globalArgs.has(name)) return undefined;
    return Object.hasOwn(buildArgs, name) ? buildArgs[name] : globalArgs.get(name);
  };
  const add = (raw: string, platformRaw: string | undefined, source: string): void => {
    const e = expandVariables(raw, lookup);
    if (!e.ok) {
      unresolved.push({ raw, source, missing: e.missing });
      return;
    }
    const image = e.value.trim();
    if (image === '' || image.toLowerCase() === 'scratch' || stages.has(image.toLowerCase())) return;
    let platform: string | undefined;
    if (platformRaw !== undefined) {
      const p = expandVariables(platformRaw, lookup);
      // $BUILDPLATFORM / $TARGETPLATFORM are the builder's: the run's platforms apply.
      if (p.ok && /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(p.value)) platform = p.value;
    }
    images.push({ image, platform, source });
  };
  for (const ins of dockerfileInstructions(text)) {
    const source = `${file}:${ins.line}`;
    if (ins.keyword === '#SYNTAX') add(ins.args, undefined, `${source} (# syntax)`);
    if (ins.keyword === 'ARG' && stageCount === 0) {
      for (const [name, value] of argDeclarations(ins.args)) {
        const v = value === undefined ? undefined : expandVariables(value, lookup);
        globalArgs.set(name, v?.ok === true ? v.value : undefined);
      }
    } else if (ins.keyword === 'FROM') {
      const w = words(ins.args);
      let platformRaw: string | undefined;
      const rest: string[] = [];
      for (const x of w) {
        if (x.startsWith('--platform=')) platformRaw = x.slice('--platform='.length);
        else if (!x.startsWith('--')) rest.push(x);
      }
      const raw = rest[0];
      if (raw !== undefined) add(raw, platformRaw, source);
      if (rest[1]?.toLowerCase() === 'as' && rest[2] !== undefined) stages.add(rest[2].toLowerCase());
      stages.add(String(stageCount));
      stageCount++;
    } else if (ins.keyword === 'COPY' || ins.keyword === 'ADD') {
      for (const x of words(ins.args)) {
        if (!x.startsWith('--')) break;
        if (x.startsWith('--from=')) add(x.slice('--from='.length), undefined, source);
      }
    }
  }
  return { images, unresolved };
}
