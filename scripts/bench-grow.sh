#!/usr/bin/env bash
# Time to add a fourth node to a 3-node cluster (scripts/cluster.sh, 8
# partitions, RF 3) that holds EVENTS pending events of 256 bytes: node 4
# starts with cluster.join, `chronos cluster add-node` adds it, and the
# clock runs until `chronos status` shows no partition moving. Then the
# same for removing node 2. BIN_DIR holds the release `chronos` and
# `chronos-loadtest`.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${CLUSTER_DIR:-/tmp/chronos-bench-grow}
events=${EVENTS:-1000000}
rm -rf "$dir" && mkdir -p "$dir"
CLUSTER_BIN="$bin/chronos" CLUSTER_DIR="$dir" setsid bash scripts/cluster.sh >"$dir.log" 2>&1 &
cluster=$!
joiner=""
cleanup() {
  [ -n "$joiner" ] && kill -TERM "$joiner" 2>/dev/null
  kill -TERM -- "-$cluster" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM
deadline=$((SECONDS + 120))
until grep -q "cluster ready" "$dir.log" 2>/dev/null; do
  [ $SECONDS -ge $deadline ] && { echo "cluster did not start"; cat "$dir.log"; exit 1; }
  sleep 0.2
done
addrs=http://127.0.0.1:9001,http://127.0.0.1:9002,http://127.0.0.1:9003
if [ "$events" -gt 0 ]; then
  "$bin/chronos-loadtest" publish --addr "$addrs" --clients 12 --batch 1000 --payload 256 \
    --events "$events" --duration 600s --warmup 0s --due-in 1h --due-spread 1h --topic grow \
    | tail -3
fi

moving() {
  "$bin/chronos" status --addr http://127.0.0.1:9001 --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
want = set(int(x) for x in sys.argv[1].split(","))
nodes = set(n["id"] for n in s["nodes"])
parts = s["partitions"]
used = set(v for p in parts for v in p["voters"])
ok = all(len(p["voters"]) == 3 and not p["learners"] and p["leader"] for p in parts)
# every other voter holds the log (matched, and at most 256 entries behind)
ok = ok and all(len(p["replicas"]) == 2 and all(r["matched_index"] > 0 and r["lag"] <= 256 for r in p["replicas"]) for p in parts)
print("settled" if not s["moves"] and nodes == want and used == want and len(parts) == 8 and ok else "moving")' "$1"
}
wait_settled() {
  local want=$1 t0=$2 limit=$((SECONDS + 900))
  while [ "$(moving "$want")" != settled ]; do
    [ $SECONDS -ge $limit ] && { echo "not settled on $want after 900 s"; return 1; }
    sleep 0.2
  done
  python3 -c "import time,sys; print('%.1f s' % (time.time() - float(sys.argv[1])))" "$t0"
}

mkdir -p "$dir/node-4"
{
  echo "node_id = 4"
  echo "data_dir = \"$dir/node-4/data\""
  echo "http_addr = \"127.0.0.1:8084\""
  echo "partitions = 8"
  echo "[cluster]"
  echo "allow_plaintext = true"
  echo "join = true"
  for i in 1 2 3 4; do
    printf '[[cluster.nodes]]\nid = %s\nraft_addr = "127.0.0.1:%s"\napi_addr = "127.0.0.1:%s"\n' \
      "$i" $((9100 + i)) $((9000 + i))
  done
} >"$dir/node-4/chronos.toml"
"$bin/chronos" serve --config "$dir/node-4/chronos.toml" >"$dir/node-4/log" 2>&1 &
joiner=$!
until curl -sf http://127.0.0.1:8084/health >/dev/null; do sleep 0.2; done

t0=$(date +%s.%N)
"$bin/chronos" cluster add-node --addr http://127.0.0.1:9001 --id 4 \
  --raft-addr 127.0.0.1:9104 --api-addr 127.0.0.1:9004 >/dev/null || exit 1
echo "add node 4 ($events pending events): $(wait_settled 1,2,3,4 "$t0")"
du -sh "$dir/node-4/data" | awk '{print "node 4 data: " $1}'

t0=$(date +%s.%N)
"$bin/chronos" cluster remove-node --addr http://127.0.0.1:9001 --id 2 >/dev/null || exit 1
echo "remove node 2: $(wait_settled 1,3,4 "$t0")"
