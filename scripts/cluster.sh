#!/usr/bin/env bash
# Runs a local Chronos cluster on loopback until Ctrl-C (then stops every node).
#
#   node i (1..N): public gRPC 127.0.0.1:900i, node-to-node 127.0.0.1:910i,
#                  HTTP (/ready, /metrics) 127.0.0.1:808i,
#                  data and config in $CLUSTER_DIR/node-i (default ./cluster-data)
#
# Environment: CLUSTER_NODES (default 3), CLUSTER_PARTITIONS (default 8),
# CLUSTER_RF (default 0 = 3 when 3+ nodes), CLUSTER_BIN (default: build release),
# CLUSTER_SECURE=1: a secured cluster (`make cluster-secure`): a CA and a
# certificate per node (openssl) in $CLUSTER_DIR/certs, mutual TLS between
# nodes, TLS for clients, [auth] with one admin token (printed) and an audit
# log per node: the config files it writes are the documented example.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${CLUSTER_NODES:-3}
partitions=${CLUSTER_PARTITIONS:-8}
rf=${CLUSTER_RF:-0}
dir=${CLUSTER_DIR:-./cluster-data}
if [ -z "${CLUSTER_BIN:-}" ]; then
  cargo build --release -p chronos
  CLUSTER_BIN="${CARGO_TARGET_DIR:-target}/release/chronos"
fi
mkdir -p "$dir"
secure=${CLUSTER_SECURE:-0}
scheme=http
curl_tls=()
if [ "$secure" = 1 ]; then
  scheme=https
  certs="$(cd "$dir" && pwd)/certs"
  mkdir -p "$certs"
  curl_tls=(--cacert "$certs/ca.pem")
  if [ ! -f "$certs/ca.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
      -subj "/CN=chronos cluster CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
    for i in $(seq 1 "$nodes"); do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node-$i.chronos" \
        -keyout "$certs/node-$i.key" -out "$certs/node-$i.csr" 2>/dev/null
      printf 'subjectAltName=DNS:node-%s.chronos,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' "$i" >"$certs/node-$i.ext"
      openssl x509 -req -in "$certs/node-$i.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
        -CAcreateserial -days 365 -extfile "$certs/node-$i.ext" -out "$certs/node-$i.pem" 2>/dev/null
    done
  fi
  token=$("$CLUSTER_BIN" token new)
  admin_token=$(echo "$token" | awk '/^token:/ {print $2}')
  admin_hash=$(echo "$token" | awk '/^hash:/ {print $2}')
fi

list=""
for i in $(seq 1 "$nodes"); do
  list+="[[cluster.nodes]]
id = $i
raft_addr = \"127.0.0.1:$((9100 + i))\"
api_addr = \"127.0.0.1:$((9000 + i))\"
"
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping ${#pids[@]} node(s)"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in $(seq 1 "$nodes"); do
  mkdir -p "$dir/node-$i"
  cat > "$dir/node-$i/chronos.toml" <<TOML
node_id = $i
data_dir = "$dir/node-$i/data"
http_addr = "127.0.0.1:$((8080 + i))"
partitions = $partitions

[cluster]
allow_plaintext = $([ "$secure" = 1 ] && echo false || echo true)
replication_factor = $rf
$list
TOML
  if [ "$secure" = 1 ]; then
    cat >> "$dir/node-$i/chronos.toml" <<TOML
# Mutual TLS between nodes: this node's certificate names node-$i.chronos.
[cluster.tls]
ca = "$certs/ca.pem"
cert = "$certs/node-$i.pem"
key = "$certs/node-$i.key"

# TLS for clients (gRPC and HTTP); re-read on SIGHUP.
[tls]
cert = "$certs/node-$i.pem"
key = "$certs/node-$i.key"

# Clients need a token; this admin's was printed when the cluster started.
[auth]
enabled = true
[[auth.principals]]
name = "admin"
tokens = ["$admin_hash"]
[[auth.principals.grants]]
role = "admin"

[audit]
path = "$(cd "$dir" && pwd)/node-$i/audit.log"
TOML
  fi
  "$CLUSTER_BIN" serve --config "$dir/node-$i/chronos.toml" >"$dir/node-$i/log" 2>&1 &
  pids+=($!)
  echo "node $i: grpc 127.0.0.1:$((9000 + i))  http 127.0.0.1:$((8080 + i))  log $dir/node-$i/log"
done

deadline=$((SECONDS + 60))
for i in $(seq 1 "$nodes"); do
  until curl -sf "${curl_tls[@]}" "$scheme://localhost:$((8080 + i))/ready" >/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "node $i not ready within 60 s; last log lines:" >&2
      tail -20 "$dir/node-$i/log" >&2
      exit 1
    fi
    sleep 0.2
  done
done
if [ "$secure" = 1 ]; then
  export CHRONOS_TOKEN=$admin_token CHRONOS_TLS_CA=$certs/ca.pem
  echo "admin token: $admin_token"
  echo "cluster ready; e.g. CHRONOS_TOKEN=$admin_token $CLUSTER_BIN status --tls-ca $certs/ca.pem --addr https://localhost:9001   (Ctrl-C stops it)"
  "$CLUSTER_BIN" status --addr https://localhost:9001 || true
else
  echo "cluster ready; e.g. $CLUSTER_BIN status --addr http://127.0.0.1:9001   (Ctrl-C stops it)"
  "$CLUSTER_BIN" status --addr http://127.0.0.1:9001 || true
fi
wait "${pids[@]}"
