#!/usr/bin/env bash
# Runs a local Chronos cluster on loopback until Ctrl-C (then stops every node).
#
#   node i (1..N): public gRPC 127.0.0.1:900i, node-to-node 127.0.0.1:910i,
#                  HTTP (/ready, /metrics) 127.0.0.1:808i,
#                  data and config in $CLUSTER_DIR/node-i (default ./cluster-data)
#
# Environment: CLUSTER_NODES (default 3), CLUSTER_PARTITIONS (default 8),
# CLUSTER_RF (default 0 = 3 when 3+ nodes), CHRONOS_BIN (default: build release).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${CLUSTER_NODES:-3}
partitions=${CLUSTER_PARTITIONS:-8}
rf=${CLUSTER_RF:-0}
dir=${CLUSTER_DIR:-./cluster-data}
if [ -z "${CHRONOS_BIN:-}" ]; then
  cargo build --release -p chronos
  CHRONOS_BIN="${CARGO_TARGET_DIR:-target}/release/chronos"
fi
mkdir -p "$dir"

list=""
for i in $(seq 1 "$nodes"); do
  list+="[[cluster.nodes]]
id = $i
raft_addr = \"127.0.0.1:$((9100 + i))\"
api_addr = \"127.0.0.1:$((9000 + i))\"
"
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping ${#pids[@]} node(s)"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in $(seq 1 "$nodes"); do
  mkdir -p "$dir/node-$i"
  cat > "$dir/node-$i/chronos.toml" <<TOML
node_id = $i
data_dir = "$dir/node-$i/data"
http_addr = "127.0.0.1:$((8080 + i))"
partitions = $partitions

[cluster]
replication_factor = $rf
$list
TOML
  "$CHRONOS_BIN" serve --config "$dir/node-$i/chronos.toml" >"$dir/node-$i/log" 2>&1 &
  pids+=($!)
  echo "node $i: grpc 127.0.0.1:$((9000 + i))  http 127.0.0.1:$((8080 + i))  log $dir/node-$i/log"
done

deadline=$((SECONDS + 60))
for i in $(seq 1 "$nodes"); do
  until curl -sf "http://127.0.0.1:$((8080 + i))/ready" >/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "node $i not ready within 60 s; last log lines:" >&2
      tail -20 "$dir/node-$i/log" >&2
      exit 1
    fi
    sleep 0.2
  done
done
echo "cluster ready; e.g. $CHRONOS_BIN status --addr http://127.0.0.1:9001   (Ctrl-C stops it)"
"$CHRONOS_BIN" status --addr http://127.0.0.1:9001 || true
wait "${pids[@]}"
