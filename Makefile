# Chronos. Two commands matter: `make run` (a single node) and `make test`.
# Builds share one target directory outside the clone, so RocksDB's C++ (about
# ten minutes on two cores) is compiled once per machine, not once per checkout
# nor once per profile.
CARGO_TARGET_DIR ?= $(HOME)/.cache/chronos/target
export CARGO_TARGET_DIR
# RocksDB's C++ is compiled once into a static archive (scripts/rocksdb.sh)
# that the dev and release profiles both link.
ROCKSDB_LIB_DIR := $(shell CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) bash scripts/rocksdb.sh --dir)
ROCKSDB_STATIC := 1
export ROCKSDB_LIB_DIR ROCKSDB_STATIC
PATH := $(HOME)/.local/bin:$(PATH)
export PATH

.PHONY: run cluster cluster-secure test lint deps rocksdb bench loadtest

## Run one node with zero configuration: ./data, gRPC :9000, HTTP :8080.
run: deps
	cargo run --release -p chronos -- serve

## A local 3-node cluster on loopback (gRPC 127.0.0.1:9001-9003) until Ctrl-C.
cluster: deps
	bash scripts/cluster.sh

## The same with mutual TLS between nodes, TLS and a token for clients, audit.
cluster-secure: deps
	CLUSTER_SECURE=1 bash scripts/cluster.sh

## Unit, property, gRPC-over-loopback, crash and grpcurl tests.
test: deps
	cargo build --workspace --all-targets
	cargo nextest run --workspace --no-fail-fast

## Formatting and lints, as CI checks them.
lint: rocksdb
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Install what the build and tests need (idempotent; needs root for apt-get).
deps:
	@bash scripts/install-deps.sh
	@bash scripts/rocksdb.sh

## RocksDB's static archive, built once for every profile.
rocksdb:
	@bash scripts/rocksdb.sh

## Criterion micro-benchmarks (WAL append).
bench: deps
	cargo bench -p chronos-wal

## Publish throughput against a running node (see docs/benchmarks.md).
loadtest: deps
	cargo run --release -p chronos-loadtest -- --help
