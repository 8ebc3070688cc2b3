#!/usr/bin/env bash
# Publish throughput over HTTP/JSON (wrk with loadtest/http/publish.lua)
# beside gRPC (chronos-loadtest publish), each on a fresh single node
# (8 partitions, fsync always), 256-byte payloads: batches of 100 from 8
# connections, and one event per request from 64. BIN_DIR holds the release
# `chronos` and `chronos-loadtest`; DURATION (default 10s); RUNS (default 1).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
duration=${DURATION:-10s}
dir=${BENCH_DIR:-/tmp/chronos-bench-http}
mkdir -p "$dir"
server=""
stop() { [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=""; }
trap stop EXIT INT TERM
fresh() {
  stop
  rm -rf "$dir/data"
  "$bin/chronos" serve --data-dir "$dir/data" --fsync-mode always >"$dir/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 200); do
    curl -sf http://127.0.0.1:8080/ready >/dev/null && return
    sleep 0.1
  done
  echo "server not ready" >&2; exit 1
}
for run in $(seq 1 "${RUNS:-1}"); do
  for shape in "100 8" "1 64"; do
    set -- $shape
    batch=$1 conns=$2
    fresh
    grpc=$("$bin/chronos-loadtest" publish --clients "$conns" --batch "$batch" --payload 256 \
      --duration "$duration" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["events_per_sec"]))')
    fresh
    http=$(BATCH=$batch wrk -t2 -c"$conns" -d"$duration" --latency -s loadtest/http/publish.lua \
      http://127.0.0.1:8080 2>"$dir/wrk.err" | awk -v b="$batch" '/Requests\/sec/ {printf "%d", $2 * b}')
    errors=$(wc -l <"$dir/wrk.err")
    echo "run $run batch $batch conns $conns: gRPC $grpc ev/s, HTTP $http ev/s (HTTP non-200: $errors)"
  done
done
