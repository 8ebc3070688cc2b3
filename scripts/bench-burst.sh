#!/usr/bin/env bash
# A burst on a single node (8 partitions, fsync always): EVENTS (default
# 1000000) events of PAYLOAD bytes (256) all due at one instant LEAD (8s)
# after publishing starts, consumed by 4 members with 5000 credits each.
# RUNS fresh-node runs of `chronos-loadtest scheduled --burst`; prints the
# drain rate (due → last ack), exactness and the server's CPU over the run
# (publishing included). BIN_DIR holds the release `chronos` and
# `chronos-loadtest`.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-server.sh
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
runs=${RUNS:-3}
events=${EVENTS:-1000000}
dir=${BENCH_DIR:-/tmp/chronos-bench-burst}
tck=$(getconf CLK_TCK)
for run in $(seq "$runs"); do
  fresh_server "$bin" "$dir"
  timeout 600 "$bin/chronos-loadtest" scheduled --burst --events "$events" --lead "${LEAD:-8s}" \
    --max-inflight 5000 --payload "${PAYLOAD:-256}" --json >"$dir/out.json" 2>"$dir/err.txt"
  rc=$?
  cpu=$(awk -v t="$tck" '{print ($14 + $15) / t}' "/proc/$server/stat")
  kill "$server"
  wait "$server" 2>/dev/null
  python3 - "$dir/out.json" "$rc" "$run" "$cpu" "$events" <<'PY'
import json, sys
out, rc, run, cpu, events = sys.argv[1:]
text = open(out).read()
if "{" not in text:
    sys.exit(f"run {run}: no result (rc {rc})")
d = json.loads(text[text.index("{"):])["delivery"]
print(f"run {run}: rc {rc}, drained {d['drain_unique_per_sec'] / 1000:.0f} K events/s; "
      f"{d['deliveries']} delivered, {d['missing']} missing, {d['duplicates']} twice, "
      f"{d['early']} early; server CPU {float(cpu):.1f} s ({1e6 * float(cpu) / int(events):.1f} µs per event)")
PY
done
