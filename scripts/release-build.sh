#!/usr/bin/env bash
# The one release build CI makes: the relay's `tryst` binary (packaged by
# scripts/deb-build.sh) and the bench gate's `instr` and `parked_mem` (scripts/bench-gate.sh),
# in one cargo invocation. Built separately, the two packages resolve some shared
# dependencies (engine, relay, nix, io-uring, redis, ...) with different feature sets,
# so the second build recompiled them (77 s on this machine); together they are
# compiled once and whichever script runs second finds everything built.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --release --locked -p tryst-relay --bin tryst \
    -p tryst-benches --bin instr --bin parked_mem
