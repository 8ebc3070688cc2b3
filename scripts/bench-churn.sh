#!/usr/bin/env bash
# Consumer churn while events fire (scripts/churn.py): a fresh node (8
# partitions, fsync always), EVENTS events due at RATE per second, SLOTS
# members that each join for 50-400 ms, ack 90 % of what they get, and
# leave. Every event must end acked or dead-lettered, none early. Needs the
# Python SDK's generated code (clients/python/generate.sh) and grpcio.
# BIN_DIR holds the release `chronos`.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/fresh-server.sh
fresh_server "${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}" "${BENCH_DIR:-/tmp/chronos-bench-churn}"
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
timeout 600 python3 scripts/churn.py
