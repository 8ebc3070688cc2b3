#!/usr/bin/env bash
# Leaders per node over time on a 3-node cluster (scripts/cluster.sh, 8
# partitions): formation, kill -9 of node 2 at ~10 s, its restart at ~14 s,
# and the handback (cluster.rebalance_after). One line every 2 s for ~44 s.
# BIN_DIR holds the release `chronos`.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${CLUSTER_DIR:-/tmp/chronos-bench-leaders}
rm -rf "$dir"
CLUSTER_BIN="$bin/chronos" CLUSTER_DIR="$dir" setsid bash scripts/cluster.sh >"$dir.log" 2>&1 &
cluster=$!
restarted=""
cleanup() {
  [ -n "$restarted" ] && kill "$restarted" 2>/dev/null
  kill -TERM -- "-$cluster" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT
until grep -q "cluster ready" "$dir.log" 2>/dev/null; do sleep 0.2; done
t0=$SECONDS
leaders() {
  "$bin/chronos" status --addr http://127.0.0.1:9001 --json 2>/dev/null | python3 -c '
import collections, json, sys
s = json.load(sys.stdin)
led = collections.Counter(p["leader"] for p in s["partitions"])
print(" ".join("n%s:%d" % (n, led[n]) for n in sorted(led, key=str)))'
}
for i in $(seq 0 2 44); do
  now=$((SECONDS - t0))
  if [ "$i" -eq 10 ]; then
    pkill -9 -f "$dir/node-2/chronos.toml"
    echo "t=$now kill -9 node 2"
  fi
  if [ "$i" -eq 14 ]; then
    "$bin/chronos" serve --config "$dir/node-2/chronos.toml" >>"$dir/node-2/log" 2>&1 &
    restarted=$!
    echo "t=$now restart node 2"
  fi
  echo "t=$now $(leaders)"
  sleep 2
done
