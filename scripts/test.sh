#!/usr/bin/env bash
# The whole test suite: what README.md names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Real peers the interop tests drive (oathtool, curl, python3), installed if missing.
./scripts/test-deps.sh
# A throw-away PostgreSQL cluster (unix socket only, fsync on) for the dead-drop's
# PostgreSQL variants; they fail if TRYST_TEST_PG is set but unusable, so here they run.
# An existing TRYST_TEST_PG (a developer's own cluster) is used as it is.
if [[ -z "${TRYST_TEST_PG:-}" ]]; then
    pg_dir=$(mktemp -d /tmp/tryst-pg.XXXXXX)
    trap './scripts/pg-test.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
    TRYST_TEST_PG=$(./scripts/pg-test.sh start "$pg_dir")
    export TRYST_TEST_PG
fi
# The cluster tests (relay/tests/it/cluster.rs) and the alert scrape start a private
# redis-server each with scripts/redis-test.sh (unix socket in a temp dir, no
# persistence; redis-server from test-deps.sh): they stop and restart it, and parallel
# tests must not share keys, so there is no run-wide server as for PostgreSQL.
# Integration tests start the real binaries (`tryst`, `loadgen`), so build them first.
cargo build --workspace --bins --examples --locked
# Most integration tests wait on relays, timeouts and child processes rather than
# compute, so three tests per CPU run at once (the relay's 208 took 270 s two at a time
# and 94 s six at a time on this 2-CPU machine). RUST_TEST_THREADS overrides it.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(($(nproc) * 3))}"
cargo test --workspace --locked
