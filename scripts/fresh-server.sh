# Sourced by the bench scripts: `fresh_server BIN DIR` empties DIR, starts
# `chronos serve` on it (fsync always, 8 partitions, logs in DIR/server.log),
# sets `server` to its pid and returns once its HTTP port answers.
fresh_server() {
  rm -rf "$2" && mkdir -p "$2"
  "$1/chronos" serve --data-dir "$2/data" --fsync-mode always --log-level warn \
    >"$2/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf localhost:8080/metrics >/dev/null && break; sleep 0.2; done
}
