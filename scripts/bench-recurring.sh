#!/usr/bin/env bash
# Lateness of recurring-schedule occurrences on a single node (8 partitions,
# fsync always), RUNS fresh-node runs of `chronos-loadtest recurring`, with
# the server's CPU over the measured window per occurrence due in it.
# SCHEDULES (default 500000), PERIOD (30s: 16.7 K occurrences/s), MEASURE
# (seconds, 90), PAYLOAD (bytes, 256), ALIGNED=1 (every schedule on one
# phase: SCHEDULES occurrences due at one instant each PERIOD). BIN_DIR holds the release `chronos`
# and `chronos-loadtest`. One summary line per run.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-server.sh
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
runs=${RUNS:-3}
schedules=${SCHEDULES:-500000}
period=${PERIOD:-30s}
measure=${MEASURE:-90}
payload=${PAYLOAD:-256}
aligned=${ALIGNED:+--aligned}
dir=${BENCH_DIR:-/tmp/chronos-bench-recurring}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for run in $(seq "$runs"); do
  fresh_server "$bin" "$dir"
  timeout 1800 "$bin/chronos-loadtest" recurring --schedules "$schedules" --period "$period" \
    --lead 10s --measure "${measure}s" --payload "$payload" $aligned --server-pid "$server" \
    >"$dir/out.txt" 2>&1 &
  load=$!
  # The window starts when the creates are done.
  until grep -q created "$dir/out.txt" 2>/dev/null || ! kill -0 "$load" 2>/dev/null; do
    sleep 0.5
  done
  from=$(ticks "$server")
  curl -sf localhost:8080/metrics >"$dir/metrics-from.txt"
  sleep $((measure - 5))
  to=$(ticks "$server")
  curl -sf localhost:8080/metrics >"$dir/metrics-to.txt"
  wait "$load"
  rc=$?
  kill "$server"
  wait "$server" 2>/dev/null
  python3 - "$dir/out.txt" "$from" "$to" "$((measure - 5))" "$rc" "$run" "$dir" <<'PY'
import json, os, sys
out, frm, to, window, rc, run, d = sys.argv[1:]
sys.path.insert(0, "scripts")
from lateness_shares import shares as within
def shares(name):
    # The server's own view over the measured window: the share of
    # occurrences released by the wheel / first delivered within each bound.
    return within(open(f"{d}/metrics-to.txt").read(), name,
                  before=open(f"{d}/metrics-from.txt").read())
text = open(out).read()
# The summary is printed before a failed check's error.
r = json.JSONDecoder().raw_decode(text[text.index("{"):])[0] if "{" in text else {}
if not r:
    sys.exit(f"run {run}: no result (rc {rc}):\n{text[-2000:]}")
cpu_s = (int(to) - int(frm)) / os.sysconf("SC_CLK_TCK")
rate = r["schedules"] / r["period_s"]
l = r["lateness_ms"]
print(f"run {run}: rc {rc}, created in {r['create_s']:.0f} s; lateness p50 {l['p50']} p99 {l['p99']} "
      f"p99.9 {l['p999']} max {l['max']} ms; {r['occurrences_measured']} of {r['occurrences_expected']}, "
      f"{r['early']} early, {r['duplicates']} twice; server CPU {100 * cpu_s / int(window):.0f} % "
      f"({1e6 * cpu_s / (int(window) * rate):.0f} µs per occurrence); {r['rss_bytes_per_schedule']:.0f} B per schedule")
print("   released: " + shares("chronos_fire_lateness_seconds"))
print("   delivered: " + shares("chronos_delivery_lateness_seconds"))
PY
done
