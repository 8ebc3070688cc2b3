#!/usr/bin/env bash
# Publish throughput and latency of a single node (8 partitions, fsync
# always, 256-byte events) in plaintext against TLS with a bearer token and
# [auth] on, interleaved, RUNS pairs, a fresh data directory per run.
# BIN_DIR holds the release `chronos` and `chronos-loadtest`; certificates
# come from openssl.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
runs=${RUNS:-2}
dir=${BENCH_DIR:-/tmp/chronos-bench-tls}
rm -rf "$dir" && mkdir -p "$dir/certs"
(
  cd "$dir/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.pem 2>/dev/null
)
token=$("$bin/chronos" token new | awk '/^token:/ {print $2}')
hash=$(printf '%s\n' "$token" | "$bin/chronos" token hash)
cat >"$dir/secure.toml" <<TOML
[tls]
cert = "$dir/certs/server.pem"
key = "$dir/certs/server.key"
[auth]
enabled = true
[[auth.principals]]
name = "bench"
tokens = ["$hash"]
[[auth.principals.grants]]
role = "producer"
topics = ["bench"]
TOML

server=""
stop() { [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=""; }
trap stop EXIT INT TERM
start() {  # $1 = plain | tls
  rm -rf "$dir/data"
  local extra=()
  [ "$1" = tls ] && extra=(--config "$dir/secure.toml")
  "$bin/chronos" serve --data-dir "$dir/data" --fsync-mode always "${extra[@]}" >"$dir/$1.log" 2>&1 &
  server=$!
  for _ in $(seq 1 200); do
    if [ "$1" = tls ]; then
      curl -sf --cacert "$dir/certs/ca.pem" https://localhost:8080/ready >/dev/null && return
    else
      curl -sf http://127.0.0.1:8080/ready >/dev/null && return
    fi
    sleep 0.1
  done
  echo "server did not get ready"; cat "$dir/$1.log"; exit 1
}
load() {  # $1 = plain | tls, then publish flags
  local mode=$1; shift
  local conn=(--addr http://127.0.0.1:9000)
  [ "$mode" = tls ] && conn=(--addr https://127.0.0.1:9000 --tls-ca "$dir/certs/ca.pem" --tls-domain localhost --token "$token")
  "$bin/chronos-loadtest" publish "${conn[@]}" --payload 256 --duration 10s "$@" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%9.0f ev/s  p50 %6.2f ms  p99 %7.2f ms" % (r["events_per_sec"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))'
}
for run in $(seq 1 "$runs"); do
  for mode in plain tls; do
    start "$mode"
    echo "run $run $mode batched (8 clients x 1000): $(load "$mode" --clients 8 --batch 1000)"
    stop; start "$mode"
    echo "run $run $mode single (64 clients):       $(load "$mode" --clients 64 --batch 1)"
    stop
  done
done
