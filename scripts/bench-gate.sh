#!/usr/bin/env bash
# Instruction-count regression gate (the CI half of benchmark tracking; see
# docs/performance.md "How regressions are gated"), and the bytes-per-connection check
# of benches/src/bin/parked_mem.rs.
#
#   scripts/bench-gate.sh                compare every scenario with the baseline; exit 1
#                                        if any regressed by more than THRESHOLD_PERCENT
#   scripts/bench-gate.sh --update       rewrite benches/baseline/instructions.json
#   scripts/bench-gate.sh --repeat N     run each scenario N times and print the spread
#                                        (how the threshold was justified); compares too
#
# Each scenario of benches/src/bin/instr.rs runs once under callgrind with collection
# switched on only inside its `measured` function, so setup and process start-up are
# not counted. The count is the total instructions executed (Ir); it does not depend
# on machine load, so one run is enough.
set -euo pipefail
cd "$(dirname "$0")/.."

# A regression beyond this fails the gate. Run-to-run spread on the same binary is 0 for
# the pure parsers and below 0.03 % for the HashMap-backed room and replay cache (std's
# hasher is randomly seeded per process), so 3 % is far above noise; it is there to
# ignore incidental inlining and code-generation shifts while catching real extra work.
THRESHOLD_PERCENT=3
BASELINE=benches/baseline/instructions.json

mode=compare
repeat=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --update) mode=update ;;
        --repeat)
            repeat="${2:?--repeat needs a count}"
            shift
            ;;
        -h | --help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench-gate: unknown argument $1" >&2
            exit 2
            ;;
    esac
    shift
done

for tool in valgrind jq; do
    if ! command -v "$tool" >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "bench-gate: installing $tool" >&2
        apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null || true
    fi
    command -v "$tool" >/dev/null || {
        echo "bench-gate: $tool is required (apt-get install $tool)" >&2
        exit 2
    }
done

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
./scripts/release-build.sh
bin=target/release/instr
rustc_version=$(rustc --version)
valgrind_version=$(valgrind --version)

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

# Prints the Ir count of run $2 of scenario $1.
count() {
    local file="$out_dir/$1.$2.callgrind"
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*instr::measured*' \
        --callgrind-out-file="$file" "$bin" "$1" >/dev/null 2>"$out_dir/$1.$2.log" || {
        echo "bench-gate: scenario $1 failed under valgrind:" >&2
        cat "$out_dir/$1.$2.log" >&2
        exit 1
    }
    local ir
    ir=$(sed -n 's/^summary: //p' "$file")
    if [[ -z "$ir" || "$ir" == 0 ]]; then
        echo "bench-gate: no instructions counted for $1 (is instr::measured inlined?)" >&2
        exit 1
    fi
    echo "$ir"
}

mapfile -t scenarios < <("$bin" list)
# Counts do not depend on load, so runs go one per CPU at a time; each writes its count
# to a file and a failed run leaves none (count has printed why).
# The parked_mem check (below) runs beside them.
(
    status=0
    target/release/parked_mem --check >"$out_dir/parked_mem.log" 2>&1 || status=$?
    echo "$status" >"$out_dir/parked_mem.status"
) &
jobs=$(nproc)
running=1
for s in "${scenarios[@]}"; do
    for ((r = 0; r < repeat; r++)); do
        if ((running >= jobs)); then
            wait -n || true
            running=$((running - 1))
        fi
        (count "$s" "$r" >"$out_dir/$s.$r.ir") &
        running=$((running + 1))
    done
done
wait || true
declare -A current spread
for s in "${scenarios[@]}"; do
    lo= hi=
    for ((r = 0; r < repeat; r++)); do
        ir=$(cat "$out_dir/$s.$r.ir" 2>/dev/null || true)
        if [[ -z "$ir" ]]; then
            echo "bench-gate: FAILED: scenario $s run $r gave no count" >&2
            exit 1
        fi
        [[ -z "$lo" || $ir -lt $lo ]] && lo=$ir
        [[ -z "$hi" || $ir -gt $hi ]] && hi=$ir
    done
    current[$s]=$hi
    spread[$s]=$(awk -v lo="$lo" -v hi="$hi" 'BEGIN { printf "%.4f", (hi - lo) * 100 / lo }')
done

if [[ $mode == update ]]; then
    mkdir -p "$(dirname "$BASELINE")"
    {
        for s in "${scenarios[@]}"; do
            jq -n --arg s "$s" --argjson ir "${current[$s]}" '{($s): $ir}'
        done
    } | jq -s --arg rustc "$rustc_version" --arg valgrind "$valgrind_version" \
        --argjson threshold "$THRESHOLD_PERCENT" \
        '{comment: "Instructions (callgrind Ir) per scenario of benches/src/bin/instr.rs; written by scripts/bench-gate.sh --update", rustc: $rustc, valgrind: $valgrind, threshold_percent: $threshold, scenarios: add}' \
        >"$BASELINE"
    echo "bench-gate: wrote $BASELINE"
fi

[[ -f "$BASELINE" ]] || {
    echo "bench-gate: no baseline at $BASELINE; run scripts/bench-gate.sh --update" >&2
    exit 1
}
base_rustc=$(jq -r .rustc "$BASELINE")
if [[ "$base_rustc" != "$rustc_version" ]]; then
    echo "bench-gate: note: baseline was taken with $base_rustc, this is $rustc_version;"
    echo "            a compiler change alone can move counts (update the baseline with it)"
fi

failed=0
printf '%-22s %15s %15s %9s  %s\n' scenario "baseline Ir" "current Ir" change verdict
for s in "${scenarios[@]}"; do
    base=$(jq -r --arg s "$s" '.scenarios[$s] // empty' "$BASELINE")
    cur=${current[$s]}
    if [[ -z "$base" ]]; then
        printf '%-22s %15s %15s %9s  %s\n' "$s" - "$cur" - "NO BASELINE (run --update)"
        failed=1
        continue
    fi
    change=$(awk -v b="$base" -v c="$cur" 'BEGIN { printf "%+.2f%%", (c - b) * 100 / b }')
    verdict=ok
    if awk -v b="$base" -v c="$cur" -v t="$THRESHOLD_PERCENT" 'BEGIN { exit !((c - b) * 100 > t * b) }'; then
        verdict="REGRESSION (> ${THRESHOLD_PERCENT}%)"
        failed=1
    elif awk -v b="$base" -v c="$cur" -v t="$THRESHOLD_PERCENT" 'BEGIN { exit !((b - c) * 100 > t * b) }'; then
        verdict="improved (consider --update)"
    fi
    if ((repeat > 1)); then
        verdict="$verdict; spread over $repeat runs ${spread[$s]}%"
    fi
    printf '%-22s %15s %15s %9s  %s\n' "$s" "$base" "$cur" "$change" "$verdict"
done
for s in $(jq -r '.scenarios | keys[]' "$BASELINE"); do
    [[ -v "current[$s]" ]] || echo "bench-gate: note: baseline scenario $s no longer exists (run --update)"
done

# Memory per connection in a worker's own tables (docs/performance.md "Memory per
# parked connection"): counted by an allocator, so as deterministic as the counts above.
cat "$out_dir/parked_mem.log"
if [[ "$(cat "$out_dir/parked_mem.status" 2>/dev/null)" != 0 ]]; then
    echo "bench-gate: FAILED: parked_mem: bytes per connection over the limit or not flat"
    failed=1
fi

if ((failed)); then
    echo "bench-gate: FAILED: instruction counts regressed beyond ${THRESHOLD_PERCENT}% (or a scenario has no baseline)"
    exit 1
fi
echo "bench-gate: ok (threshold ${THRESHOLD_PERCENT}%)"
