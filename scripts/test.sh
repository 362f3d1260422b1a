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
cleanup=()
trap 'for c in "${cleanup[@]}"; do eval "$c"; done' EXIT
if [[ -z "${TRYST_TEST_PG:-}" ]]; then
    pg_dir=$(mktemp -d /tmp/tryst-pg.XXXXXX)
    cleanup+=('./scripts/pg-test.sh stop "$pg_dir"; rm -rf "$pg_dir"')
    TRYST_TEST_PG=$(./scripts/pg-test.sh start "$pg_dir")
    export TRYST_TEST_PG
fi
# A throw-away redis-server (unix socket only, no persistence) for the cluster tests
# (the directory); they fail if TRYST_TEST_REDIS is set but unusable. An existing
# TRYST_TEST_REDIS (a socket path or redis:// URL) is used as it is.
if [[ -z "${TRYST_TEST_REDIS:-}" ]]; then
    redis_dir=$(mktemp -d /tmp/tryst-redis.XXXXXX)
    cleanup+=('./scripts/redis-test.sh stop "$redis_dir"; rm -rf "$redis_dir"')
    TRYST_TEST_REDIS=$(./scripts/redis-test.sh start "$redis_dir")
    export TRYST_TEST_REDIS
fi
# The cluster tests (relay/tests/it/cluster.rs) start a private redis-server each with
# scripts/redis-test.sh (unix socket in a temp dir, no persistence): they stop and
# restart it, and parallel tests must not share keys.
# Integration tests start the real binaries (`tryst`, `loadgen`), so build them first.
cargo build --workspace --bins --examples --locked
cargo test --workspace --locked
