# Sourced by the bench scripts. A server of an earlier run still stopping (a
# SIGTERM'd node flushes first) would answer in a new one's place, and the
# run would measure it: `ports_free` waits until nothing answers on :8080,
# `own_server PID` checks that the server that answers is PID.
ports_free() {
  for _ in $(seq 150); do curl -sf localhost:8080/metrics >/dev/null || return 0; sleep 0.2; done
  echo "bench: another server still answers on :8080" >&2
  exit 1
}

own_server() {
  if ! kill -0 "$1" 2>/dev/null; then
    echo "bench: chronos serve (pid $1) exited; see its log" >&2
    exit 1
  fi
}

# `fresh_server BIN DIR` empties DIR, starts `chronos serve` on it (fsync
# always, 8 partitions, logs in DIR/server.log), sets `server` to its pid and
# returns once its HTTP port answers.
fresh_server() {
  rm -rf "$2" && mkdir -p "$2"
  ports_free
  "$1/chronos" serve --data-dir "$2/data" --fsync-mode always --log-level warn \
    >"$2/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf localhost:8080/metrics >/dev/null && break; sleep 0.2; done
  own_server "$server"
}
