#!/usr/bin/env bash
# The whole test suite: what README.md names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Real peers the interop tests drive (oathtool, curl, python3), installed if missing.
./scripts/test-deps.sh
# Integration tests start the real binaries (`tryst`, `loadgen`), so build them first.
cargo build --workspace --bins --examples --locked
cargo test --workspace --locked
