#!/usr/bin/env bash
# Publish throughput of a single node (8 partitions, fsync always, 256-byte
# events) with the CPU each side used: RUNS fresh-node runs of
# `chronos-loadtest publish --clients CLIENTS --batch BATCH` for DURATION.
# Prints events/s, latency, and server and load-generator CPU per event
# (µs), so a change's cost is seen even when the two cores are the limit.
# DUE_IN (e.g. 1h) schedules the events ahead; CANCEL=1 cancels each batch
# after its publish (per-event figures are then per publish + cancel pair).
# BIN_DIR holds the release `chronos` and `chronos-loadtest`; PERF=1 records
# a call-graph profile of the server into $dir/perf.data (last run).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
runs=${RUNS:-3}
clients=${CLIENTS:-64}
batch=${BATCH:-1}
duration=${DURATION:-5s}
dir=${BENCH_DIR:-/tmp/chronos-bench-publish}
mkdir -p "$dir"
tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{print ($14 + $15) / t}' "/proc/$1/stat"; }

server=""
stop() { [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=""; }
trap stop EXIT INT TERM
. scripts/fresh-server.sh
for run in $(seq 1 "$runs"); do
  rm -rf "$dir/data"
  ports_free
  "$bin/chronos" serve --data-dir "$dir/data" --fsync-mode always >"$dir/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 200); do
    curl -sf http://127.0.0.1:8080/ready >/dev/null && break
    sleep 0.1
  done
  own_server "$server"
  before=$(cpu "$server")
  perf_pid=""
  if [ "${PERF:-0}" = 1 ] && [ "$run" = "$runs" ]; then
    perf record -F 999 --call-graph dwarf,16384 -o "$dir/perf.data" -p "$server" -- sleep 4 \
      >/dev/null 2>&1 &
    perf_pid=$!
  fi
  /usr/bin/time -f "%U %S" -o "$dir/loadgen.time" "$bin/chronos-loadtest" publish \
    --clients "$clients" --batch "$batch" --payload 256 --duration "$duration" \
    ${DUE_IN:+--due-in "$DUE_IN"} ${CANCEL:+--cancel} --json \
    >"$dir/run.json"
  after=$(cpu "$server")
  [ -n "$perf_pid" ] && wait "$perf_pid"
  stop
  python3 - "$run" "$dir/run.json" "$dir/loadgen.time" "$before" "$after" <<'PY'
import json, sys
run, summary = sys.argv[1], json.load(open(sys.argv[2]))
user, system = map(float, open(sys.argv[3]).read().split()[-2:])
server = float(sys.argv[5]) - float(sys.argv[4])
n = summary.get("events") or summary.get("published") or 0
rate = summary.get("events_per_sec", 0)
lat = summary.get("latency_ms", {})
print("run %s: %.0f ev/s, p50 %.2f p99 %.2f ms; server %.1f µs/ev, load generator %.1f µs/ev"
      % (run, rate, lat.get("p50", float("nan")), lat.get("p99", float("nan")),
         server / n * 1e6 if n else float("nan"), (user + system) / n * 1e6 if n else float("nan")))
PY
done
