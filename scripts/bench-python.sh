#!/usr/bin/env bash
# One Python SDK member (clients/python, or SDK=dir holding another copy of
# `chronos_client`) on a single node (8 partitions, fsync always, 256-byte
# events), acking each delivery as it comes:
#   drain: EVENTS (20000) fired events taken as fast as the member can;
#   paced: RATE events/s (default "1000 3000 5000 7000") due over 5 s,
#          published 2 s ahead by `chronos-loadtest publish` in batches of
#          100; lateness is the member's receive time - due time;
#   publish: PUBLISH events (20000) published from THREADS (1 and 8)
#          threads, one `publish` per event, then through a `producer()`.
# RUNS fresh-node rounds. Prints deliveries/s, lateness and the member's CPU
# per delivery. BIN_DIR holds the release `chronos` and `chronos-loadtest`.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-server.sh
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
sdk=${SDK:-clients/python}
runs=${RUNS:-1}
events=${EVENTS:-20000}
dir=${BENCH_DIR:-/tmp/chronos-bench-python}
member=$(mktemp)
publisher=$(mktemp)
trap 'rm -f "$member" "$publisher"; [ -n "${server:-}" ] && kill "$server" 2>/dev/null' EXIT
cat >"$publisher" <<'PY'
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from chronos_client import Client
n, threads, how = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
payload = b"x" * 256
with Client("127.0.0.1:9000") as client:
    producer = client.producer() if how.startswith("producer") else None
    def work(t):
        each = n // threads
        if producer is None:
            for i in range(each):
                client.publish(f"pub-{how}", f"{t}-{i}", payload)
        else:
            futures = [producer.send(f"pub-{how}", f"{t}-{i}", payload) for i in range(each)]
            for f in futures:
                f.result()
    started, cpu0 = time.time(), time.process_time()
    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    took, cpu = time.time() - started, time.process_time() - cpu0
    if producer is not None:
        producer.close()
print(f"{n / took:.0f} events/s, client CPU {cpu * 1e6 / n:.0f} µs per event")
PY
cat >"$member" <<'PY'
import sys, time
sys.path.insert(0, sys.argv[1])
from chronos_client import Client
topic, n = sys.argv[2], int(sys.argv[3])
with Client("127.0.0.1:9000") as client:
    with client.subscribe("bench", topic, start="earliest") as sub:
        late, first = [], None
        for d in sub:
            now = time.time() * 1000
            if first is None:
                first, cpu0 = now, time.process_time()
            late.append(now - d.due_ts)
            sub.ack(d)
            if len(late) == n:
                break
        took = (time.time() * 1000 - first) / 1000
        cpu = time.process_time() - cpu0
late.sort()
q = lambda p: late[min(len(late) - 1, int(p * len(late)))]
print(f"{len(late) / took:.0f} deliveries/s, member CPU {cpu * 1e6 / n:.0f} µs per delivery; "
      f"lateness ms p50 {q(0.5):.1f} p99 {q(0.99):.1f} max {late[-1]:.1f}")
PY
for run in $(seq "$runs"); do
  fresh_server "$bin" "$dir"
  "$bin/chronos-loadtest" publish --clients 4 --batch 500 --events "$events" --topic drain \
    --warmup 0s --duration 60s >/dev/null
  echo -n "run $run drain $events: "
  timeout 120 python3 "$member" "$sdk" drain "$events" | sed 's/; lateness.*//'
  for rate in ${RATE:-1000 3000 5000 7000}; do
    n=$((rate * 5))
    timeout 120 python3 "$member" "$sdk" "paced$rate" "$n" >"$dir/member.out" &
    consumer=$!
    sleep 1.5
    "$bin/chronos-loadtest" publish --clients 1 --batch 100 --rate $((rate / 100)) --events "$n" \
      --due-in 2s --due-spread 100ms --topic "paced$rate" --warmup 0s --duration 60s >/dev/null
    wait "$consumer"
    echo "run $run paced $rate/s: $(cat "$dir/member.out")"
  done
  for threads in ${THREADS:-1 8}; do
    for how in publish producer; do
      n=${PUBLISH:-20000}
      [ "$how" = publish ] && n=$((n / 4))
      echo "run $run $how, $threads thread(s), $n events: $(timeout 120 python3 "$publisher" "$sdk" "$n" "$threads" "$how-$threads")"
    done
  done
  kill "$server"
  wait "$server" 2>/dev/null
  server=""
done
