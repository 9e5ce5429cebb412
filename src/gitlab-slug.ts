// GitLab's CI_COMMIT_REF_SLUG, exactly as GitLab computes it (Gitlab::Utils.slugify):
//   str.downcase.gsub(/[^a-z0-9]/, '-')[0..62].gsub(/(\A-+|-+\z)/, '')
// Lower-case first, then every character that is not a-z or 0-9 becomes one "-" (runs are NOT
// collapsed), then cut to 63 characters (all ASCII by now, so 63 bytes), then strip leading and
// trailing "-". Ruby works per code point, so the regex needs the `u` flag: without it an emoji
// (two UTF-16 code units) would become two dashes instead of GitLab's one.

const NON_SLUG = /[^a-z0-9]/gu;

export const SLUG_MAX_BYTES = 63;

export function refSlug(ref: string): string {
  return ref
    .toLowerCase()
    .replace(NON_SLUG, '-')
    .slice(0, SLUG_MAX_BYTES)
    .replace(/^-+|-+$/g, '');
}

/** Strips `refs/heads/` from a full ref name (git ls-remote output); other names pass through. */
export function branchName(ref: string): string {
  return ref.startsWith('refs/heads/') ? ref.slice('refs/heads/'.length) : ref;
}

/**
 * The same rule as a POSIX shell pipeline, for generated jobs that need the slug of a
 * variable GitLab does not slug for us (CI_DEFAULT_BRANCH).
 */
export function shellSlug(variable: string): string {
  return `$(printf '%s' "$${variable}" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9' '-' | cut -c1-63 | sed -e 's/^-*//' -e 's/-*$//')`;
}
