#!/usr/bin/env bash
# Installs the real programs that relais's integration tests and benchmarks run against
# (CNCF distribution, skopeo, podman, dockerd/containerd, nginx, wrk, busybox, ...).
# Idempotent: when every package is already installed it does nothing (no apt-get update), so
# reruns take well under a second. Must run as root (CI does); uses sudo otherwise when present.
set -euo pipefail

start=$EPOCHREALTIME
packages=(
  docker-registry skopeo podman docker.io containerd rsync nginx-light wrk
  busybox-static apache2-utils openssl iproute2 curl postgresql chromium
)
# Installed without their recommends: a throwaway S3 server (Ceph RGW, scripts/ceph-rgw.sh) needs only these.
lean=(ceph-mon ceph-osd radosgw)
# npm ci builds better-sqlite3's native addon from source when no prebuilt binary can be fetched, and
# relais's own sendfile addon (native/sendfile, C).
command -v make >/dev/null 2>&1 || packages+=(make)
command -v gcc >/dev/null 2>&1 || packages+=(gcc)
command -v g++ >/dev/null 2>&1 || packages+=(g++)
command -v python3 >/dev/null 2>&1 || packages+=(python3)

missing=()
missing_lean=()
for p in "${packages[@]}" "${lean[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    if [[ " ${lean[*]} " == *" $p "* ]]; then missing_lean+=("$p"); else missing+=("$p"); fi
  fi
done

if ((${#missing[@]} + ${#missing_lean[@]} > 0)); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
      echo "setup-peers: must run as root to install: ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "setup-peers: installing ${missing[*]} ${missing_lean[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  ((${#missing[@]} == 0)) || "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  ((${#missing_lean[@]} == 0)) || "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing_lean[@]}" >/dev/null
fi

# Fail early and clearly when a program the tests run is still not there.
for bin in docker-registry skopeo podman dockerd containerd ctr runc nginx wrk busybox htpasswd openssl ip curl rsync ceph-mon ceph-osd radosgw radosgw-admin; do
  if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$bin" ]]; then
    echo "setup-peers: program '$bin' is missing after install" >&2
    exit 1
  fi
done

end=$EPOCHREALTIME
printf 'setup-peers: ok (%d packages checked, %d installed) in %.1fs\n' \
  "$((${#packages[@]} + ${#lean[@]}))" "$((${#missing[@]} + ${#missing_lean[@]}))" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
