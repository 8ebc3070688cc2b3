#!/usr/bin/env bash
# Fire lateness of a single node (8 partitions, fsync always, 256-byte
# events), RUNS fresh-node runs of `chronos-loadtest scheduled`, with the
# server's own view beside the consumers': the share of events the wheel
# released (`chronos_fire_lateness_seconds`) and first delivered
# (`chronos_delivery_lateness_seconds`) within each bucket, so a tail can be
# placed before or after the log.
# RATE, EVENTS, CONSUMERS, PAYLOAD (bytes, 256); PACED=1 publishes at RATE too (publishing runs
# while events fire; then BATCH, default 100). LEAD (default 3s) is how far
# ahead of the start the first event is due: beyond the wheel's 60 s window,
# events reach it by scans of `pending` rather than when their publish applies.
# ARGS adds flags of `chronos-loadtest scheduled` (e.g. "--max-inflight 10 --groups 4").
# SHUFFLE (e.g. 1s) makes due times out of publish order within windows that long.
# BIN_DIR holds the release `chronos` and `chronos-loadtest`.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
runs=${RUNS:-5}
rate=${RATE:-20000}
events=${EVENTS:-100000}
dir=${BENCH_DIR:-/tmp/chronos-bench-lateness}
extra=()
[ "${PACED:-0}" = 1 ] && extra=(--paced --batch "${BATCH:-100}")
[ -n "${SHUFFLE:-}" ] && extra+=(--shuffle "$SHUFFLE")
read -ra more <<<"${ARGS:-}"
extra+=("${more[@]}")
mkdir -p "$dir"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Bytes written to the data directory's disk (the whole device: on this
# quiet machine, the server). Not /proc/PID/io: with large page-cache folios
# it counts a whole folio each time a small append dirties it again.
disk=$(basename "$(df --output=source "$dir" | tail -1)")
disk_written() { awk -v d="$disk" '$3 == d {printf "%.0f\n", $10 * 512}' /proc/diskstats; }

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
  from=$(ticks "$server")
  wrote_from=$(disk_written)
  "$bin/chronos-loadtest" scheduled --consumers "${CONSUMERS:-4}" --payload "${PAYLOAD:-256}" --rate "$rate" \
    --events "$events" --lead "${LEAD:-3s}" "${extra[@]}" --json >"$dir/run.json"
  to=$(ticks "$server")
  wrote_to=$(disk_written)
  curl -sf http://127.0.0.1:8080/metrics >"$dir/metrics.txt"
  stop
  python3 - "$run" "$dir/run.json" "$dir/metrics.txt" "$((to - from))" "$events" \
    "$((wrote_to - wrote_from))" "${PAYLOAD:-256}" <<'PY'
import json, os, sys
sys.path.insert(0, "scripts")
from lateness_shares import shares as within
run, summary, metrics = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read()
def shares(name):
    return within(metrics, name)
l, d = summary["lateness_ms"], summary.get("delivery", {})
p = summary.get("publish", {})
print("run %s: lateness p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms; early %s missing %s"
      % (run, l["p50"], l["p99"], l.get("p999", float("nan")), l["max"], d.get("early"), d.get("missing")))
# Events published after their due time fire at once but count as late: at
# rates the two cores cannot publish, the publisher, not the firing, sets the tail.
# The server's CPU from the first publish to the last ack, per event: what
# an event costs end to end, comparable with bench-recurring's per occurrence.
cpu_us = 1e6 * int(sys.argv[4]) / os.sysconf("SC_CLK_TCK") / int(sys.argv[5])
# Bytes the disk took during the run, against the payload published: how
# many times each event is written.
wrote, payload = int(sys.argv[6]), int(sys.argv[5]) * int(sys.argv[7])
print("   published %.0f ev/s; %s published after their due time; server CPU %.0f µs per event; wrote %.0f MB (%.1f× the payload)"
      % (p.get("events_per_sec", 0), p.get("due_late", "?"), cpu_us, wrote / 1e6, wrote / payload))
print("   released: " + shares("chronos_fire_lateness_seconds"))
print("   delivered: " + shares("chronos_delivery_lateness_seconds"))
PY
done
