#!/usr/bin/env bash
# Throw-away Redis servers for the cluster tests (scripts/test.sh starts one for the
# whole run; a test that stops and restarts Redis starts its own through the test
# helpers, which run the same command line).
#
#   redis-test.sh start DIR   redis-server on the unix socket DIR/redis.sock only (no TCP
#                             port), no persistence (--save '', --appendonly no),
#                             daemonised with its pid in DIR/redis.pid; waits until it
#                             answers PING; prints the socket path
#   redis-test.sh stop DIR    stops it (no error if it is not running)
#
# Needs Debian's `redis-server` (scripts/test-deps.sh installs it).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
(($# == 2)) || usage
cmd=$1
dir=$(realpath -m "$2")

case "$cmd" in
start)
    command -v redis-server >/dev/null 2>&1 ||
        { echo "redis-test: redis-server is not installed (run scripts/test-deps.sh)" >&2; exit 1; }
    mkdir -p "$dir"
    redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
        --save '' --appendonly no --daemonize yes --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" --dir "$dir"
    for _ in $(seq 300); do
        if [[ "$(redis-cli -s "$dir/redis.sock" ping 2>/dev/null)" == PONG ]]; then
            echo "$dir/redis.sock"
            exit 0
        fi
        sleep 0.1
    done
    echo "redis-test: redis-server did not answer within 30 s" >&2
    cat "$dir/redis.log" >&2 || true
    exit 1
    ;;
stop)
    if [[ -f "$dir/redis.pid" ]]; then
        pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || exit 0
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
*) usage ;;
esac
