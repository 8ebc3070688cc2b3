#!/usr/bin/env bash
# Cluster benchmarks on one machine: 3 nodes (RF=3, fsync before ack on a
# quorum) started by scripts/cluster.sh, driven by chronos-loadtest.
#   1. batched publish (1000 x 256 B per RPC), connections spread over the nodes
#   2. one event per Publish, 64 clients
#   3. replication lag while (1) runs, sampled from `chronos status --json`
#   4. failover: kill -9 a leader during a one-event publish run through the
#      two other nodes; the longest publish is the time writes to its
#      partitions stopped (then the node is restarted)
# Leaders per node are printed at the start and after each failover.
# Results go to stdout; BIN_DIR holds the release `chronos` and `chronos-loadtest`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${CLUSTER_DIR:-/tmp/chronos-bench-cluster}
runs=${RUNS:-3}
rm -rf "$dir"
CLUSTER_BIN="$bin/chronos" CLUSTER_DIR="$dir" setsid bash scripts/cluster.sh >"$dir.log" 2>&1 &
cluster=$!
restarted=()
cleanup() {
  kill -TERM -- "-$cluster" "${restarted[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
until grep -q "cluster ready" "$dir.log" 2>/dev/null; do sleep 0.5; done
leaders() {
  "$bin/chronos" status --addr http://127.0.0.1:9001 --json | python3 -c '
import collections, json, sys
s = json.load(sys.stdin)
led = collections.Counter(p["leader"] for p in s["partitions"])
print("leaders per node:", ", ".join("node %s: %d" % (n, led[n]) for n in sorted(led, key=str)))'
}
leaders
all=http://127.0.0.1:9001,http://127.0.0.1:9002,http://127.0.0.1:9003
lt="$bin/chronos-loadtest publish --payload 256 --due-in 1h"
sections=${SECTIONS:-"batched single lag failover"}
want() { [[ " $sections " == *" $1 "* ]]; }

if want batched; then
  echo "== batched publish, 12 clients x 1000 events, over 3 nodes"
  for i in $(seq "$runs"); do $lt --duration 10s --addr $all --clients 12 --batch 1000 | tail -3; done
fi

if want single; then
  echo "== one event per Publish, 64 clients, over 3 nodes"
  for i in $(seq "$runs"); do $lt --duration 10s --addr $all --clients 64 --batch 1 | tail -3; done
fi

if want lag; then
echo "== replication lag (entries behind the leader) during batched publish"
$lt --duration 10s --addr $all --clients 12 --batch 1000 >/dev/null &
load=$!
sleep 2
for i in $(seq 8); do
  "$bin/chronos" status --addr http://127.0.0.1:9001 --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
lags = [r["lag"] for p in s["partitions"] for r in p["replicas"]]
print("lag max", max(lags), "mean %.2f" % (sum(lags) / len(lags)))'
  sleep 1
done
wait $load
fi

want failover || exit 0
echo "== failover: kill -9 a leader while publishing through the other nodes"
for i in $(seq "$runs"); do
  victim=$("$bin/chronos" status --addr http://127.0.0.1:9001 --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["partitions"][0]["leader"])')
  others=$(for n in 1 2 3; do if [ "$n" != "$victim" ]; then printf "http://127.0.0.1:900%s," "$n"; fi; done)
  $lt --addr "${others%,}" --clients 16 --batch 1 --duration 12s > "$dir.failover" &
  load=$!
  sleep 4
  pid=$(pgrep -f "config $dir/node-$victim/chronos.toml")
  kill -9 "$pid"
  echo "killed node $victim (leader of partition 0)"
  wait $load || true
  tail -3 "$dir.failover"
  "$bin/chronos" serve --config "$dir/node-$victim/chronos.toml" >>"$dir/node-$victim/log" 2>&1 &
  restarted+=($!)
  until curl -sf "http://127.0.0.1:808$victim/ready" >/dev/null; do sleep 0.2; done
  sleep 2
  leaders
done
