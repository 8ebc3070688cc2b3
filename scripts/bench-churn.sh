#!/usr/bin/env bash
# Consumer churn while events fire (scripts/churn.py): a fresh single node
# (fsync always), EVENTS events due at RATE per second, SLOTS members that
# each join for 50-400 ms, ack 90 % of what they get, and leave. Every event
# must end acked or dead-lettered, none early. Needs the Python SDK's
# generated code (clients/python/generate.sh) and grpcio.
# BIN_DIR holds the release `chronos`.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${BENCH_DIR:-/tmp/chronos-bench-churn}
rm -rf "$dir"
mkdir -p "$dir"
"$bin/chronos" serve --data-dir "$dir/data" --fsync-mode always >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 200); do
  curl -sf http://127.0.0.1:8080/ready >/dev/null && break
  sleep 0.1
done
timeout 600 python3 scripts/churn.py
