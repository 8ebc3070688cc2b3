#!/usr/bin/env bash
# A throwaway Redis for the peer comparison, on 127.0.0.1 with its own temp dir.
#
#   redis.sh start [always|everysec] [PORT]   prints "port=<p> pid=<pid> dir=<d>"
#   redis.sh stop <dir>                        stops that instance and removes its dir
#
# Installs redis-server from Debian's packages when it is missing (apt-get, root).
# The AOF is on (`appendonly yes`) with the given `appendfsync`; RDB snapshots off.
# Every wait is bounded; a start that does not answer PING in 10 s is undone.
set -euo pipefail

die() { echo "redis.sh: $*" >&2; exit 1; }

install_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return
    [ "$(id -u)" = 0 ] || die "redis-server is not installed and this is not root"
    echo "redis.sh: installing redis-server (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get install -y -q redis-server >/dev/null 2>&1 ||
        { timeout 300 apt-get update -q >/dev/null && timeout 300 apt-get install -y -q redis-server >/dev/null; } ||
        die "apt-get install redis-server failed"
    # The package may start a system instance on 6379 where systemd runs; the
    # comparison never uses it (it has its own ports and dirs).
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    local fsync=${1:-always} port=${2:-}
    case $fsync in always|everysec) ;; *) die "appendfsync must be always or everysec, not $fsync" ;; esac
    install_redis
    [ -n "$port" ] || port=$(free_port)
    local dir
    dir=$(mktemp -d /tmp/chronos-peer-redis.XXXXXX)
    # --daemonize writes the pid file; the server runs from (and writes only into) $dir.
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --appendonly yes --appendfsync "$fsync" --save '' \
        --protected-mode yes --maxmemory 0 >/dev/null ||
        { rm -rf "$dir"; die "redis-server did not start"; }
    for _ in $(seq 100); do
        if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && [ -s "$dir/redis.pid" ]; then
            echo "port=$port pid=$(cat "$dir/redis.pid") dir=$dir"
            return
        fi
        sleep 0.1
    done
    stop "$dir"
    die "redis on port $port did not answer PING in 10 s"
}

stop() {
    local dir=${1:?usage: redis.sh stop <dir>}
    case $dir in /tmp/chronos-peer-redis.*) ;; *) die "not a dir redis.sh made: $dir" ;; esac
    [ -d "$dir" ] || return 0
    if [ -s "$dir/redis.pid" ]; then
        local pid
        pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -rf "$dir"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    install) install_redis ;;
    *) die "usage: redis.sh start [always|everysec] [PORT] | stop <dir> | install" ;;
esac
