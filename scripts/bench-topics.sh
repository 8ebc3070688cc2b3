#!/usr/bin/env bash
# Server memory against the number of topics: a fresh node (8 partitions,
# fsync always), then STEPS steps of 100 000 new topics with one event each
# (due 2 s later, posted to /v1/events/batch 500 at a time, no consumers);
# prints the server's RSS 5 s after each step. BIN_DIR holds the release
# `chronos`.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-server.sh
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${BENCH_DIR:-/tmp/chronos-bench-topics}
steps=${STEPS:-6}
fresh_server "$bin" "$dir"
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$server/status"; }
echo "start: $(rss)"
for step in $(seq 0 $((steps - 1))); do
  python3 - "$step" <<'PY'
import json, sys, time, urllib.request
step = int(sys.argv[1])
due = int(time.time() * 1000) + 2000
for base in range(0, 100_000, 500):
    events = [{"topic": f"t{step}-{i}", "message_id": "x", "schedule_ts": str(due), "payload": "eHh4"}
              for i in range(base, base + 500)]
    req = urllib.request.Request("http://127.0.0.1:8080/v1/events/batch",
                                 data=json.dumps({"events": events}).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
  sleep 5
  echo "$(((step + 1) * 100)) K topics: $(rss)"
done
