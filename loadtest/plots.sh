#!/usr/bin/env bash
# Runs the benchmark series behind docs/img/*.png on one release node, then
# draws them with `chronos-loadtest plot`. Each run starts its own server on a
# fresh data directory (fsync `always`, 8 partitions, the defaults) and stops
# it after; every run is bounded (≤ ~15 s).
#
#   cargo build --release --workspace --bins
#   mkdir -p /tmp/plots-bin && cp $CARGO_TARGET_DIR/release/chronos{,-loadtest} /tmp/plots-bin/
#   loadtest/plots.sh                      # all three series, then the PNGs
#   SECTIONS="batch" loadtest/plots.sh     # one series (the others' JSON is reused)
#   SECTIONS="" loadtest/plots.sh          # redraw from the saved JSON only
#
# Summaries (one JSON object per line) go to $RUNS; the PNGs to $OUT.
set -euo pipefail

BIN=${BIN:-/tmp/plots-bin}
RUNS=${RUNS:-/tmp/chronos-plots}
OUT=${OUT:-docs/img}
GRPC_PORT=${GRPC_PORT:-19471}
HTTP_PORT=${HTTP_PORT:-19472}
SECTIONS=${SECTIONS-lateness batch load}
ADDR="http://127.0.0.1:$GRPC_PORT"

mkdir -p "$RUNS" "$OUT"
PID=""
DATA=""

start_server() {
  DATA=$(mktemp -d /tmp/chronos-plots-data.XXXXXX)
  "$BIN/chronos" serve --data-dir "$DATA" --grpc-addr "127.0.0.1:$GRPC_PORT" \
    --http-addr "127.0.0.1:$HTTP_PORT" --log-level warn >"$RUNS/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/ready" >/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$RUNS/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "server not ready after 10 s" >&2
  exit 1
}

stop_server() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  PID=""
  [ -n "$DATA" ] && rm -rf "$DATA"
  DATA=""
}
trap stop_server EXIT

for section in $SECTIONS; do
  case $section in
  lateness)
    # Events due over 10 s at 20 K/s, one group of two consumers connected.
    start_server
    "$BIN/chronos-loadtest" scheduled --addr "$ADDR" --rate 20000 --events 200000 --lead 3s \
      --server-pid "$PID" --json >"$RUNS/lateness.json"
    stop_server
    ;;
  batch)
    # Closed loop, 16 clients, 256 B, due in 1 h (the publish path alone);
    # three runs per batch size, each on a fresh node.
    : >"$RUNS/batch.json"
    for batch in 1 10 100 1000; do
      for _ in 1 2 3; do
        start_server
        "$BIN/chronos-loadtest" publish --addr "$ADDR" --clients 16 --batch "$batch" --payload 256 \
          --due-in 1h --warmup 1s --duration 8s --json >>"$RUNS/batch.json"
        stop_server
      done
    done
    ;;
  load)
    # Open loop, one event per RPC, 64 clients (the cap on RPCs in flight).
    : >"$RUNS/load.json"
    for rate in 2000 5000 8000 10000 12000 14000 16000 18000 20000 22000 25000; do
      start_server
      "$BIN/chronos-loadtest" publish --addr "$ADDR" --clients 64 --batch 1 --payload 256 \
        --due-in 1h --rate "$rate" --warmup 1s --duration 6s --json >>"$RUNS/load.json"
      stop_server
    done
    ;;
  *)
    echo "unknown section $section (lateness, batch, load)" >&2
    exit 2
    ;;
  esac
done

# Draws whatever series have summaries.
plot_args=()
[ -s "$RUNS/lateness.json" ] && plot_args+=(--lateness "$RUNS/lateness.json")
[ -s "$RUNS/batch.json" ] && plot_args+=(--batch "$RUNS/batch.json")
[ -s "$RUNS/load.json" ] && plot_args+=(--load "$RUNS/load.json")
"$BIN/chronos-loadtest" plot --out-dir "$OUT" "${plot_args[@]}"
