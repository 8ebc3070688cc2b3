#!/usr/bin/env bash
# Fire lateness while replays read history: a single node (8 partitions,
# fsync always, 256-byte events) is given PREFILL (default 5s) of batched
# publishing due in an hour (1-1.4 M events here), then `chronos replay
# RTOPIC --due-from 0` runs in a loop (a due-time replay reads every retained
# record; for a topic with nothing in it, it sends nothing: all reading)
# while `chronos-loadtest scheduled` publishes at RATE and measures lateness.
# RUNS fresh-node runs; REPLAY=0 leaves the replays out. BIN_DIR holds the
# release `chronos` and `chronos-loadtest`.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${BENCH_DIR:-/tmp/chronos-bench-replay}
server=""
loop=""
stop() {
  [ -n "$loop" ] && kill "$loop" 2>/dev/null && wait "$loop" 2>/dev/null
  loop=""
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  server=""
}
trap stop EXIT INT TERM
. scripts/fresh-server.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for run in $(seq 1 "${RUNS:-3}"); do
  fresh_server "$bin" "$dir"
  "$bin/chronos-loadtest" publish --topic hist --clients 8 --batch 1000 --payload 256 \
    --duration "${PREFILL:-5s}" --due-in 1h --json >"$dir/prefill.json"
  rm -f "$dir/replays"
  if [ "${REPLAY:-1}" = 1 ]; then
    (
      n=0
      while "$bin/chronos" replay "${RTOPIC:-nosuch}" --due-from 0 >/dev/null; do
        n=$((n + 1))
        echo "$n" >"$dir/replays"
      done
    ) &
    loop=$!
  fi
  from=$(ticks "$server")
  "$bin/chronos-loadtest" scheduled --consumers 4 --payload 256 --rate "${RATE:-20000}" \
    --events "${EVENTS:-100000}" --lead 3s --paced --batch 100 --json >"$dir/run.json"
  to=$(ticks "$server")
  stop
  python3 - "$run" "$dir/prefill.json" "$dir/run.json" "$((to - from))" \
    "$(cat "$dir/replays" 2>/dev/null || echo 0)" <<'PY'
import json, os, sys
run, prefill, s = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
l, d = s["lateness_ms"], s.get("delivery", {})
print("run %s: history %s events; lateness p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms; early %s missing %s; server %.1f CPU-s; replays %s"
      % (run, prefill.get("events"), l["p50"], l["p99"], l.get("p999", float("nan")), l["max"],
         d.get("early"), d.get("missing"), int(sys.argv[4]) / os.sysconf("SC_CLK_TCK"), sys.argv[5]))
PY
done
