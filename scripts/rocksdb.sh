#!/usr/bin/env bash
# Builds RocksDB's static library once per target directory (and RocksDB
# version), so that the dev profile (`make test`) and the release profile
# (`make run`) link the same archive instead of each compiling RocksDB's C++
# (about ten minutes on two cores). librocksdb-sys links a prebuilt archive
# when ROCKSDB_LIB_DIR and ROCKSDB_STATIC are set; the Makefile sets both to
# the directory this script prints with --dir.
#
# The archive is made by librocksdb-sys's own build script (same sources,
# flags and features as a normal build) under the `rocksdb` profile, then
# moved out of that profile's directory.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/chronos/target}"
version=$(awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
# A change of the rocksdb crate's features (e.g. a compression added) must
# give a new archive.
features=$(grep -E '^rocksdb = ' Cargo.toml | sha256sum | cut -c1-8)
dir="$target/rocksdb-lib/$version-$features"
if [ "${1:-}" = "--dir" ]; then
  echo "$dir"
  exit 0
fi
[ -f "$dir/librocksdb.a" ] && exit 0

echo "building RocksDB $version once for every profile (about ten minutes on two cores)" >&2
unset ROCKSDB_LIB_DIR ROCKSDB_STATIC
CARGO_TARGET_DIR="$target" cargo build --locked --profile rocksdb -p librocksdb-sys
archive=$(ls -t "$target"/rocksdb/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)
mkdir -p "$dir.partial"
mv "$archive" "$dir.partial/librocksdb.a"
rm -rf "$dir" && mv "$dir.partial" "$dir"
rm -rf "$target/rocksdb"
