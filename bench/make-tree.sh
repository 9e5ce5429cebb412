#!/bin/sh
# bench/make-tree.sh COMMIT DIR: a built copy of relais at COMMIT in DIR, for bench/compare.ts (before/after).
# The tree is `git archive` of the commit (the checkout and its worktree list are left alone), with this
# checkout's node_modules symlinked in (a commit whose dependencies differ needs its own `npm ci` there)
# and this checkout's native addon copied (rebuild it with `node scripts/build-native.mjs` in DIR if
# native/ differs), then compiled with tsc.
set -eu
[ $# -eq 2 ] || { echo "usage: bench/make-tree.sh COMMIT DIR" >&2; exit 2; }
commit=$1
dir=$2
root=$(git rev-parse --show-toplevel)
[ ! -e "$dir" ] || { echo "make-tree: $dir exists; remove it first" >&2; exit 2; }
mkdir -p "$dir"
git -C "$root" archive "$commit" | tar -x -C "$dir"
ln -s "$root/node_modules" "$dir/node_modules"
addon=native/sendfile/build/Release/relais_sendfile.node
if [ -f "$root/$addon" ]; then
  mkdir -p "$dir/$(dirname "$addon")"
  cp "$root/$addon" "$dir/$addon"
fi
if ! git -C "$root" diff --quiet "$commit" HEAD -- native package.json; then
  echo "make-tree: native/ or package.json differ between $commit and HEAD: check the addon and the dependencies" >&2
fi
(cd "$dir" && "$root/node_modules/.bin/tsc" -p tsconfig.json)
echo "built $commit in $dir"
