#!/usr/bin/env bash
# Long fuzzing runs for local and scheduled use: every target in fuzz/Cargo.toml (or the
# ones named) for SECONDS each, FUZZ_JOBS at a time (default: one per CPU).
#
# Usage: fuzz/run-all.sh SECONDS [TARGET...]
# Env:   FUZZ_SCRATCH=DIR (default fuzz/target/long-runs) keeps the grown corpus per target
#        across runs, with logs and artifacts; the committed fuzz/corpus is only read.
#        Minimise before committing anything from it: cargo +nightly fuzz cmin.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR="$PWD"
# shellcheck source=lib.sh
. "$FUZZ_DIR/lib.sh"

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run-all.sh SECONDS [TARGET...]" >&2
    exit 2
fi
seconds="$1"
shift
scratch="${FUZZ_SCRATCH:-$FUZZ_DIR/target/long-runs}"

check_arbitrary_versions
check_fuzz_lock
ensure_cargo_fuzz
build_fuzz_targets
run_fuzz_targets "$seconds" "$scratch" "$@"
echo "== done; grown corpus, logs and artifacts under $scratch"
