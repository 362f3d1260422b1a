#!/usr/bin/env bash
# Fuzz smoke run (CI): build every target in fuzz/Cargo.toml and run each for SECONDS
# (default 15; FUZZ_JOBS targets at a time, default one per CPU) on a scratch copy of
# its committed corpus. A crash, leak, timeout or OOM fails the script, naming the target
# and the artifact. Needs the nightly toolchain; installs cargo-fuzz if missing.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS]
# Env:   FUZZ_SCRATCH=DIR keeps the scratch corpus, logs and artifacts there (default: a
#        temporary directory, removed on success and kept on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_DIR="$PWD/fuzz"
# shellcheck source=../fuzz/lib.sh
. "$FUZZ_DIR/lib.sh"

seconds="${1:-15}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

check_arbitrary_versions
check_fuzz_lock
ensure_cargo_fuzz
mapfile -t targets < <(fuzz_targets)
echo "== fuzz targets (${#targets[@]}): ${targets[*]}"
echo "== cargo +nightly fuzz build"
build_fuzz_targets

scratch="${FUZZ_SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/tryst-fuzz.XXXXXX")}"
if run_fuzz_targets "$seconds" "$scratch" "${targets[@]}"; then
    [ -n "${FUZZ_SCRATCH:-}" ] || rm -rf "$scratch"
    echo "== fuzz smoke: ${#targets[@]} targets, ${seconds}s each, no findings"
else
    echo "== fuzz smoke FAILED; scratch kept at $scratch" >&2
    exit 1
fi
