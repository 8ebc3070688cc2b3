#!/usr/bin/env bash
# Times the README's two commands on a fresh clone with an empty target
# directory: `make run` until the node answers /ready (then it is stopped),
# then `make test`. Packages, crates and cargo-nextest already installed on
# the machine are reused (their download and install are not counted).
#
# Usage: scripts/fresh-clone-time.sh [WORKDIR]   (default: a new temp dir)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
rm -rf "$work/clone" "$work/target"
git clone -q "$src" "$work/clone"
export CARGO_TARGET_DIR="$work/target"
cd "$work/clone"

start=$(date +%s)
make run > "$work/run.log" 2>&1 &
runner=$!
until curl -sf http://127.0.0.1:8080/ready >/dev/null 2>&1; do
  if ! kill -0 "$runner" 2>/dev/null; then
    echo "make run exited before the node was ready; see $work/run.log" >&2
    exit 1
  fi
  if [ $(( $(date +%s) - start )) -gt 5400 ]; then
    echo "make run: not ready after 90 min" >&2
    kill -- -"$runner" 2>/dev/null || kill "$runner"
    exit 1
  fi
  sleep 2
done
ready=$(date +%s)
pkill -INT -f "target/release/chronos serve" || true
wait "$runner" || true

make test > "$work/test.log" 2>&1
done_at=$(date +%s)
echo "make run (ready):  $(( (ready - start) / 60 )) min $(( (ready - start) % 60 )) s"
echo "make test:         $(( (done_at - ready) / 60 )) min $(( (done_at - ready) % 60 )) s"
echo "total:             $(( (done_at - start) / 60 )) min $(( (done_at - start) % 60 )) s"
grep -E 'Summary' "$work/test.log" || true
