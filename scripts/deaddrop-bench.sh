#!/usr/bin/env bash
# The dead-drop benchmark of docs/performance.md, RUNS times: tryst on redb, tryst on
# PostgreSQL and upstream hivemind-rendezvous 0.1.2a2 in one deaddrop_bench invocation
# per run, each run on fresh stores (a new redb file, a new database, a new upstream
# JSON store). A benchmark, not a test: run it on a quiet machine.
#
#   scripts/deaddrop-bench.sh [RUNS] [deaddrop_bench flags...]
#
# Needs the release build (cargo build --release -p tryst-relay --bin tryst --example
# deaddrop_bench), PostgreSQL (scripts/test-deps.sh) and the venv of
# scripts/hivemind-venv.sh. Everything listens on ephemeral ports or private sockets
# and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
bench=target/release/examples/deaddrop_bench
[[ -x "$bench" && -x target/release/tryst ]] || {
    echo "deaddrop-bench: build first: cargo build --release -p tryst-relay --bin tryst --example deaddrop_bench" >&2
    exit 1
}
python=$(scripts/hivemind-venv.sh)
work=$(mktemp -d /tmp/deaddrop-bench.XXXXXX)
chmod 755 "$work"
upstream_pid=
cleanup() {
    [[ -n "$upstream_pid" ]] && kill "$upstream_pid" 2>/dev/null || true
    scripts/pg-test.sh stop "$work/pg" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
sock=$(scripts/pg-test.sh start "$work/pg")
psql=$(command -v psql || ls -d /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
for run in $(seq 1 "$runs"); do
    db="bench_${run}_$$"
    "$psql" -q -h "$sock" -U postgres -d postgres -c "CREATE DATABASE $db"
    # Upstream on an ephemeral port with a fresh store (XDG dirs under $work).
    home="$work/upstream-$run"
    mkdir -p "$home"
    HOME="$home" XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config" \
        "$python" -u -c '
import sys
from http.server import HTTPServer
from hivemind_rendezvous.server import make_handler
from hivemind_rendezvous.storage import RendezvousStore
pem = open(sys.argv[1]).read()
handler = make_handler(RendezvousStore(), pem, deposit_rate_limit=10**9)
server = HTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
' relay/tests/fixtures/deaddrop/other-pub.pem >"$home/port" 2>"$home/log" &
    upstream_pid=$!
    for _ in $(seq 1 100); do
        [[ -s "$home/port" ]] && break
        kill -0 "$upstream_pid" 2>/dev/null || { cat "$home/log" >&2; exit 1; }
        sleep 0.1
    done
    port=$(head -n 1 "$home/port")
    echo "=== run $run of $runs ($(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    "$bench" "$@" redb "postgres=postgresql:///$db?host=$sock&user=postgres" \
        "upstream=127.0.0.1:$port"
    kill "$upstream_pid"
    wait "$upstream_pid" 2>/dev/null || true
    upstream_pid=
done
