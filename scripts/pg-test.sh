#!/usr/bin/env bash
# Throw-away PostgreSQL clusters for the dead-drop tests (scripts/test.sh starts one for
# the whole run; a test that stops and restarts PostgreSQL starts its own).
#
#   pg-test.sh start DIR     initdb into DIR/data (as the `postgres` user when run as
#                            root), start it with a unix socket in DIR/sock only
#                            (listen_addresses=''), fsync on; prints the socket directory
#   pg-test.sh stop DIR      pg_ctl stop -m fast (no error if it is not running)
#   pg-test.sh start-again DIR   start a stopped cluster again
#   pg-test.sh crash DIR     pg_ctl stop -m immediate (as a crash: no checkpoint)
#   pg-test.sh standby PRIMARY DIR   pg_basebackup -R of the running cluster PRIMARY into
#                            DIR, started, and made PRIMARY's synchronous standby
#                            (synchronous_standby_names = '*'; waits until it is in
#                            sync); prints the standby's socket directory
#   pg-test.sh promote DIR   promote a standby (pg_ctl promote, waits)
#
# The superuser is `postgres` (trust authentication on the socket: the directory is
# private to the tests). Needs Debian's `postgresql` (scripts/test-deps.sh installs it).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|start-again|crash|promote DIR, or $0 standby PRIMARY DIR" >&2
    exit 2
}
(($# >= 2)) || usage
cmd=$1
if [[ "$cmd" == standby ]]; then
    (($# == 3)) || usage
    primary=$(realpath -m "$2")
    dir=$(realpath -m "$3")
else
    (($# == 2)) || usage
    dir=$(realpath -m "$2")
fi

bindir() {
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$found" ]]; then
        echo "pg-test: PostgreSQL is not installed (run scripts/test-deps.sh)" >&2
        exit 1
    fi
    echo "$found"
}
bin=$(bindir)

# PostgreSQL refuses to run as root: run its programs as `postgres` then.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

ctl_start() {
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 120 \
        -o "-k $dir/sock -c listen_addresses='' -c fsync=on -c max_connections=300" \
        start >/dev/null
}

case "$cmd" in
start)
    mkdir -p "$dir/sock"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$dir"
        # The server runs as postgres: every directory above DIR must let it through
        # (a `mktemp -d` parent is 0700 root).
        if ! as_pg test -x "$dir" -a -w "$dir" 2>/dev/null; then
            echo "pg-test: the postgres user cannot reach $dir: a directory above it is" \
                "not searchable by others (chmod o+x it)" >&2
            exit 1
        fi
    fi
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-instructions \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    ctl_start || { cat "$dir/log" >&2; exit 1; }
    echo "$dir/sock"
    ;;
stop)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
start-again)
    ctl_start || { cat "$dir/log" >&2; exit 1; }
    ;;
crash)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
promote)
    as_pg "$bin/pg_ctl" -D "$dir/data" -w promote >/dev/null
    ;;
standby)
    mkdir -p "$dir/sock"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$dir"
    fi
    as_pg "$bin/pg_basebackup" -h "$primary/sock" -U postgres -D "$dir/data" -R \
        -X stream -c fast >"$dir/basebackup.log" 2>&1 ||
        { cat "$dir/basebackup.log" >&2; exit 1; }
    ctl_start || { cat "$dir/log" >&2; exit 1; }
    psql=("$bin/psql" -h "$primary/sock" -U postgres -d postgres -Atq)
    "${psql[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 600); do
        if [[ "$("${psql[@]}" -c "SELECT sync_state FROM pg_stat_replication")" == sync ]]; then
            echo "$dir/sock"
            exit 0
        fi
        sleep 0.1
    done
    echo "pg-test: the standby did not become synchronous within 60 s" >&2
    exit 1
    ;;
*) usage ;;
esac
