#!/usr/bin/env bash
# Chronos beside a Redis sorted-set delay queue, same workloads, same machine,
# one run: prints a markdown table (and keeps every JSON summary in $OUT).
#
#   loadtest/peers/compare.sh                 # small defaults, about two minutes
#   PUB_DURATION=10s SCHED_EVENTS=200000 loadtest/peers/compare.sh
#
# Systems: Redis `appendfsync always`, Redis `everysec` (both `appendonly yes`),
# Chronos `--fsync-mode always` (fsync before ack) and `periodic`. Each gets a
# fresh server (temp dir, loopback port) that is stopped after its runs.
# Workloads (env overrides in brackets):
#   publish one event per round trip  [PUB_CLIENTS=16 PUB_DURATION=3s]
#   publish batched                   [BATCH_CLIENTS=8 BATCH=100]
#   schedule at a rate                [SCHED_RATE=5000 SCHED_EVENTS=20000]
#   burst: all due at one instant     [BURST_EVENTS=50000]
#   consumers for both                [CONSUMERS=4; Redis takes FETCH=100 jobs a round trip]
# Needs release binaries: cargo build --release --workspace --bin chronos --bin chronos-loadtest
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/chronos/target}/release
CHRONOS=${CHRONOS:-$TARGET/chronos}
LOADTEST=${LOADTEST:-$TARGET/chronos-loadtest}
PUB_CLIENTS=${PUB_CLIENTS:-16}
PUB_DURATION=${PUB_DURATION:-3s}
BATCH_CLIENTS=${BATCH_CLIENTS:-8}
BATCH=${BATCH:-100}
SCHED_RATE=${SCHED_RATE:-5000}
SCHED_EVENTS=${SCHED_EVENTS:-20000}
BURST_EVENTS=${BURST_EVENTS:-50000}
CONSUMERS=${CONSUMERS:-4}
FETCH=${FETCH:-100}
LEAD=${LEAD:-2s}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
OUT=${OUT:-$(mktemp -d /tmp/chronos-compare.XXXXXX)}
SYSTEMS=${SYSTEMS:-"redis-always redis-everysec chronos-always chronos-periodic"}

for bin in "$CHRONOS" "$LOADTEST"; do
    [ -x "$bin" ] || { echo "compare.sh: $bin missing; build the release binaries first" >&2; exit 1; }
done
"$HERE/redis.sh" install

REDIS_DIR="" CHRONOS_PID="" CHRONOS_DIR=""
cleanup() {
    [ -z "$REDIS_DIR" ] || "$HERE/redis.sh" stop "$REDIS_DIR" || true
    if [ -n "$CHRONOS_PID" ]; then
        kill "$CHRONOS_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$CHRONOS_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$CHRONOS_PID" 2>/dev/null; then kill -9 "$CHRONOS_PID" 2>/dev/null || true; fi
        wait "$CHRONOS_PID" 2>/dev/null || true
    fi
    [ -z "$CHRONOS_DIR" ] || rm -rf "$CHRONOS_DIR"
    REDIS_DIR="" CHRONOS_PID="" CHRONOS_DIR=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two distinct free ports: both bound before either is released, so the
# kernel cannot hand out the same one twice.
free_ports() {
    python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'
}

# Sets ADDR, PID and the mode prefix ("redis-" or "") for one system.
start_system() {
    case $1 in
        redis-*)
            local port pid dir started
            started=$("$HERE/redis.sh" start "${1#redis-}")
            eval "$started"
            REDIS_DIR=$dir ADDR=redis://127.0.0.1:$port PID=$pid PREFIX=redis-
            ;;
        chronos-*)
            local grpc http
            read -r grpc http < <(free_ports)
            CHRONOS_DIR=$(mktemp -d /tmp/chronos-compare-data.XXXXXX)
            "$CHRONOS" serve --data-dir "$CHRONOS_DIR" --grpc-addr "127.0.0.1:$grpc" \
                --http-addr "127.0.0.1:$http" --fsync-mode "${1#chronos-}" --log-level warn \
                >"$OUT/$1.log" 2>&1 &
            CHRONOS_PID=$! ADDR=http://127.0.0.1:$grpc PID=$CHRONOS_PID PREFIX=
            for _ in $(seq 300); do
                curl -sf "http://127.0.0.1:$http/ready" >/dev/null && return
                kill -0 "$CHRONOS_PID" 2>/dev/null || { cat "$OUT/$1.log" >&2; exit 1; }
                sleep 0.1
            done
            echo "compare.sh: chronos not ready in 30 s" >&2
            exit 1
            ;;
    esac
}

# run <system> <workload> <loadtest args...>: keeps the JSON summary (the
# scheduled modes exit non-zero on a missing or early event; the JSON says which).
run() {
    local system=$1 workload=$2
    shift 2
    echo "== $system $workload" >&2
    timeout "$RUN_TIMEOUT" "$LOADTEST" "$@" --json >"$OUT/$system.$workload.json" 2>"$OUT/$system.$workload.err" ||
        echo "   (exit $?; see $OUT/$system.$workload.err)" >&2
}

for system in $SYSTEMS; do
    start_system "$system"
    run "$system" publish1 "${PREFIX}publish" --addr "$ADDR" --clients "$PUB_CLIENTS" --batch 1 \
        --duration "$PUB_DURATION" --warmup 1s --due-in 1h
    run "$system" publishN "${PREFIX}publish" --addr "$ADDR" --clients "$BATCH_CLIENTS" --batch "$BATCH" \
        --duration "$PUB_DURATION" --warmup 1s --due-in 1h
    if [ "$PREFIX" = redis- ]; then
        sched=(redis-schedule --fetch "$FETCH")
    else
        sched=(scheduled)
    fi
    run "$system" schedule "${sched[@]}" --addr "$ADDR" --consumers "$CONSUMERS" --events "$SCHED_EVENTS" \
        --rate "$SCHED_RATE" --lead "$LEAD" --server-pid "$PID"
    run "$system" burst "${sched[@]}" --addr "$ADDR" --consumers "$CONSUMERS" --events "$BURST_EVENTS" \
        --burst --lead "$LEAD" --server-pid "$PID"
    cleanup
done

python3 "$HERE/table.py" "$OUT" $SYSTEMS \
    "publish1=publish, $PUB_CLIENTS clients, 1 event per round trip" \
    "publishN=publish, $BATCH_CLIENTS clients, $BATCH events per round trip" \
    "schedule=schedule, $SCHED_EVENTS events due at $SCHED_RATE/s, $CONSUMERS consumers" \
    "burst=burst, $BURST_EVENTS events due at one instant, $CONSUMERS consumers"
echo "JSON summaries: $OUT" >&2
