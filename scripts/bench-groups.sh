#!/usr/bin/env bash
# Idle consumer groups (a topic per tenant, each with a group): a fresh node
# (8 partitions, fsync always), GROUP_COUNT groups created by a Subscribe each
# (topics tenant-0.., group "g", 32 at a time, each stream cancelled once the
# group exists), then the server's CPU over 10 idle seconds, and one-shot
# lateness at 20 K/s with publishing while firing on another topic.
# Needs Python's grpcio; BIN_DIR holds the release `chronos` and
# `chronos-loadtest`.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-server.sh
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=${BENCH_DIR:-/tmp/chronos-bench-groups}
groups=${GROUP_COUNT:-20000}
fresh_server "$bin" "$dir"
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
PYTHONPATH=clients/python python3 - "$groups" <<'PY'
import sys, threading, time
import grpc
from chronos_client._proto import events_pb2, events_pb2_grpc
n = int(sys.argv[1])
stub = events_pb2_grpc.EventServiceStub(grpc.insecure_channel("127.0.0.1:9000"))
lock, state = threading.Lock(), {"next": 0, "errors": 0}
def work():
    while True:
        with lock:
            i = state["next"]
            state["next"] += 1
        if i >= n:
            return
        req = events_pb2.SubscribeRequest(consumer_group="g", topic=f"tenant-{i}", max_inflight=10)
        call = stub.Subscribe(req, timeout=60)
        try:
            call.initial_metadata()  # sent once the group exists
        except grpc.RpcError:
            with lock:
                state["errors"] += 1
        call.cancel()
start = time.time()
threads = [threading.Thread(target=work) for _ in range(32)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"{n} groups created in {time.time() - start:.1f} s, {state['errors']} errors")
PY
from=$(ticks); sleep 10; to=$(ticks)
echo "idle: server CPU $(( (to - from) * 100 / $(getconf CLK_TCK) / 10 )) %, RSS $(awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' /proc/$server/status)"
from=$(ticks)
"$bin/chronos-loadtest" scheduled --consumers 4 --rate 20000 --events 200000 --paced --batch 100 \
  --lead 3s --json >"$dir/run.json"
to=$(ticks)
python3 - "$dir/run.json" "$((to - from))" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))
l, d = s["lateness_ms"], s.get("delivery", {})
print("20 K/s: lateness p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms; early %s missing %s; server %.1f CPU-s"
      % (l["p50"], l["p99"], l["p999"], l["max"], d.get("early"), d.get("missing"),
         int(sys.argv[2]) / os.sysconf("SC_CLK_TCK")))
PY
