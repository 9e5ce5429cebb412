// Parsing of WWW-Authenticate challenges (RFC 7235), as registries send them:
//   Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"
//   Basic realm="Registry Realm"

export interface Challenge {
  /** Lowercased auth scheme: 'bearer', 'basic', ... */
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/** Parses one or more challenges from a WWW-Authenticate header value (or several). */
export function parseChallenges(header: string | readonly string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = typeof header === 'string' ? [header] : header;
  const out: Challenge[] = [];
  for (const value of values) {
    let i = 0;
    const s = value;
    let current: { scheme: string; params: Record<string, string> } | undefined;
    while (i < s.length) {
      while (i < s.length && (s[i] === ' ' || s[i] === ',')) i++;
      const tokenMatch = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i));
      if (!tokenMatch) break;
      const token = tokenMatch[0];
      i += token.length;
      while (i < s.length && s[i] === ' ') i++;
      if (s[i] === '=') {
        // auth-param: token = token / quoted-string
        i++;
        while (i < s.length && s[i] === ' ') i++;
        let val = '';
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === '\\' && i + 1 < s.length) i++;
            val += s.charAt(i);
            i++;
          }
          i++;
        } else {
          const m = /^[^,\s]*/.exec(s.slice(i));
          val = m ? m[0] : '';
          i += val.length;
        }
        if (current) current.params[token.toLowerCase()] = val;
      } else {
        current = { scheme: token.toLowerCase(), params: {} };
        out.push(current);
      }
    }
  }
  return out;
}
