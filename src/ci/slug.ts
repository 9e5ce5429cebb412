// GitLab's CI_COMMIT_REF_SLUG rule (Gitlab::Utils.slugify): lower-case, everything but
// a-z and 0-9 becomes "-", cut to 63 bytes, no leading or trailing "-".

export function refSlug(ref: string): string {
  return ref
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '-')
    .slice(0, 63)
    .replace(/^-+|-+$/g, '');
}

/**
 * The same rule as a POSIX shell pipeline, for generated jobs that need the slug of a
 * variable GitLab does not slug for us (CI_DEFAULT_BRANCH).
 */
export function shellSlug(variable: string): string {
  return `$(printf '%s' "$${variable}" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9' '-' | cut -c1-63 | sed -e 's/^-*//' -e 's/-*$//')`;
}
