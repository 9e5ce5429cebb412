#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway: a real S3 server for tests and benchmarks.
# One monitor, one OSD (memstore: data in RAM), one RGW, all on 127.0.0.1 with free ports, every file
# (config, keyrings, pid files, logs) inside DIR. No manager daemon, no kernel module, no root needed.
#
#   scripts/ceph-rgw.sh start DIR   -> prints S3_ENDPOINT=..., S3_ACCESS_KEY_ID=..., S3_SECRET_ACCESS_KEY=...,
#                                      S3_REGION=... (also written to DIR/env); takes about 3-5 s
#   scripts/ceph-rgw.sh stop DIR    -> stops the daemons by their pid files and deletes DIR
#   scripts/ceph-rgw.sh rgw-stop DIR  -> stops only the gateway (S3 down, the cluster and its data kept)
#   scripts/ceph-rgw.sh rgw-start DIR -> starts the gateway again on the same port; returns once it answers
#
# Environment: MON_PORT, RGW_PORT (default: free ports), MEMSTORE_BYTES (default 4 GiB, taken lazily).
# Needs the Debian packages ceph-mon ceph-osd radosgw (scripts/setup-peers.sh installs them).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2

free_port() {
  node -e "const s=require('node:net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# PIDs of our daemons, from their pid files.
daemon_pids() {
  local f
  for f in "$dir"/run/*.pid; do
    [[ -f "$f" ]] && cat "$f"
  done
  return 0
}

alive() {
  # A stopped daemon lingers as a zombie until reaped: kill -0 would say it is alive.
  local state
  state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]]
}

stop_cluster() {
  local pids=() p i
  [[ -d "$dir/run" ]] && mapfile -t pids < <(daemon_pids)
  for p in "${pids[@]}"; do
    [[ "$p" =~ ^[0-9]+$ ]] && ((p > 1)) && kill -TERM "$p" 2>/dev/null || true
  done
  for ((i = 0; i < 50; i++)); do
    local any=0
    for p in "${pids[@]}"; do
      [[ "$p" =~ ^[0-9]+$ ]] && ((p > 1)) && alive "$p" && any=1
    done
    ((any == 0)) && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    [[ "$p" =~ ^[0-9]+$ ]] && ((p > 1)) && alive "$p" && kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}

fail() {
  echo "ceph-rgw: $*" >&2
  for f in "$dir"/log/*.log; do
    [[ -f "$f" ]] && { echo "--- $f (tail)" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

wait_for() {
  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for $what"
}

start_cluster() {
  local bin
  for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool; do
    command -v "$bin" >/dev/null 2>&1 || {
      echo "ceph-rgw: program '$bin' is missing: run 'sudo bash scripts/setup-peers.sh' (installs ceph-mon ceph-osd radosgw)" >&2
      exit 1
    }
  done
  mkdir -p "$dir"/{run,log,mon.a,osd}
  dir=$(cd "$dir" && pwd)
  local mon_port=${MON_PORT:-$(free_port)}
  local rgw_port=${RGW_PORT:-$(free_port)}
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  local conf=$dir/ceph.conf
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/admin.keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $dir/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES:-4294967296}
osd data = $dir/osd/\$id
mon data = $dir/mon.\$id
[mon]
keyring = $dir/mon.a/keyring
paxos propose interval = 0.05
paxos min wait = 0.01
[osd]
keyring = $dir/osd/\$id/keyring
[client.rgw.a]
keyring = $dir/rgw.keyring
rgw data = $dir/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = 127.0.0.1
EOF
  export CEPH_CONF=$conf
  local c=(-c "$conf")

  # Monitor.
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-mon "${c[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" >/dev/null 2>"$dir/log/mkfs-mon.err" ||
    fail "ceph-mon --mkfs failed: $(cat "$dir/log/mkfs-mon.err")"
  ceph-mon "${c[@]}" -i a >/dev/null 2>>"$dir/log/mon.err" || fail "ceph-mon did not start"
  wait_for 30 "the monitor" ceph "${c[@]}" --connect-timeout 2 mon stat

  # One OSD on memstore.
  local uuid secret id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  secret=$(ceph-authtool --gen-print-key)
  id=$(echo "{\"cephx_secret\": \"$secret\"}" | ceph "${c[@]}" osd new "$uuid" -i -) || fail "ceph osd new failed"
  mkdir -p "$dir/osd/$id"
  ceph-authtool --create-keyring "$dir/osd/$id/keyring" --name "osd.$id" --add-key "$secret" >/dev/null
  ceph-osd "${c[@]}" -i "$id" --mkfs --osd-uuid "$uuid" >/dev/null 2>"$dir/log/mkfs-osd.err" ||
    fail "ceph-osd --mkfs failed: $(cat "$dir/log/mkfs-osd.err")"
  ceph-osd "${c[@]}" -i "$id" >/dev/null 2>>"$dir/log/osd.err" || fail "ceph-osd did not start"
  up() { ceph "${c[@]}" osd stat 2>/dev/null | grep -q ' 1 up'; }
  wait_for 60 "the OSD to be up" up

  # RGW's pools, made now: created lazily they cost about 2 s each on the first bucket and put.
  # In parallel: each ceph CLI call costs about 0.4 s of Python start-up.
  local pool jobs=()
  for pool in .rgw.root default.rgw.log default.rgw.control default.rgw.meta default.rgw.buckets.index \
    default.rgw.buckets.data default.rgw.buckets.non-ec; do
    (ceph "${c[@]}" osd pool create "$pool" 8 8 >/dev/null 2>&1 &&
      ceph "${c[@]}" osd pool application enable "$pool" rgw >/dev/null 2>&1) &
    jobs+=($!)
  done
  for pool in "${jobs[@]}"; do wait "$pool" || fail "cannot create RGW's pools"; done

  # The gateway and an S3 user.
  ceph "${c[@]}" auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' -o "$dir/rgw.keyring" >/dev/null 2>&1 ||
    fail "cannot create the RGW's key"
  mkdir -p "$dir/rgw"
  radosgw "${c[@]}" -n client.rgw.a >/dev/null 2>>"$dir/log/rgw.err" || fail "radosgw did not start"
  rgw_up() { curl -s -o /dev/null "http://127.0.0.1:$rgw_port/"; }
  wait_for 60 "the RGW to answer HTTP on port $rgw_port" rgw_up
  local access secret_key
  access=$(head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 20 | tr 'a-f' 'A-F')
  secret_key=$(head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 40)
  radosgw-admin "${c[@]}" -n client.admin user create --uid=relais --display-name=relais \
    --access-key="$access" --secret-key="$secret_key" >/dev/null 2>"$dir/log/user.err" ||
    fail "radosgw-admin user create failed: $(cat "$dir/log/user.err")"

  cat >"$dir/env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$rgw_port
S3_REGION=default
S3_ACCESS_KEY_ID=$access
S3_SECRET_ACCESS_KEY=$secret_key
EOF
  cat "$dir/env"
}

# The gateway alone: tests stop it to see what relais answers while S3 is down, then bring it back.
stop_rgw() {
  local f=$dir/run/client.rgw.a.pid p i
  [[ -f "$f" ]] || { echo "ceph-rgw: no gateway pid file in $dir/run" >&2; exit 1; }
  p=$(cat "$f")
  [[ "$p" =~ ^[0-9]+$ ]] && ((p > 1)) || { echo "ceph-rgw: bad pid in $f" >&2; exit 1; }
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$p" || return 0
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
}

start_rgw() {
  [[ -f "$dir/ceph.conf" ]] || { echo "ceph-rgw: no cluster in $dir" >&2; exit 1; }
  dir=$(cd "$dir" && pwd)
  local rgw_port
  rgw_port=$(sed -n 's/^rgw frontends = beast endpoint=127.0.0.1:\([0-9]*\)$/\1/p' "$dir/ceph.conf")
  export CEPH_CONF=$dir/ceph.conf
  radosgw -c "$dir/ceph.conf" -n client.rgw.a >/dev/null 2>>"$dir/log/rgw.err" || fail "radosgw did not start"
  rgw_up() { curl -s -o /dev/null "http://127.0.0.1:$rgw_port/"; }
  wait_for 60 "the RGW to answer HTTP on port $rgw_port" rgw_up
}

case "$cmd" in
  rgw-stop) stop_rgw ;;
  rgw-start) start_rgw ;;
  start)
    if [[ -e "$dir/ceph.conf" ]]; then
      echo "ceph-rgw: $dir already holds a cluster (stop it first)" >&2
      exit 1
    fi
    trap 'st=$?; if ((st != 0)); then stop_cluster; fi' EXIT
    start_cluster
    ;;
  stop) stop_cluster ;;
  *) usage ;;
esac
