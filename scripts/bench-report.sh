#!/usr/bin/env bash
# Wall-clock benchmark report (criterion). Reported, never gated: this machine is shared
# and noisy, so the gate is scripts/bench-gate.sh (instruction counts) instead.
#
#   scripts/bench-report.sh --save [NAME]   run the benches, save them as baseline NAME
#                                           (default: main) under target/criterion
#   scripts/bench-report.sh [NAME]          run the benches, compare with baseline NAME
#                                           and print a table of median changes
#
# Options: --bench B (repeatable) limits the run to some of benches/benches/*.rs;
# --full drops criterion's --quick (slower, tighter intervals).
# Typical use: `--save` on the commit before a change, then a plain run after it.
set -euo pipefail
cd "$(dirname "$0")/.."

name=main
save=0
quick=(--quick)
benches=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --save) save=1 ;;
        --full) quick=() ;;
        --bench)
            benches+=(--bench "${2:?--bench needs a name}")
            shift
            ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "bench-report: unknown option $1" >&2
            exit 2
            ;;
        *) name="$1" ;;
    esac
    shift
done
((${#benches[@]})) || benches=(--benches)
command -v jq >/dev/null || {
    echo "bench-report: jq is required" >&2
    exit 2
}

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
root=target/criterion
if ((save)); then
    cargo bench --locked -p tryst-benches "${benches[@]}" -- "${quick[@]}" --save-baseline "$name"
    echo "bench-report: saved criterion baseline '$name' under $root"
    exit 0
fi

if ! find "$root" -path "*/$name/estimates.json" -print -quit 2>/dev/null | grep -q .; then
    echo "bench-report: no criterion baseline '$name'; run scripts/bench-report.sh --save $name first" >&2
    exit 2
fi
# Each bench's result of this run is written to `new/` and compared with `<name>/`.
# Results from earlier runs are left in place, so only benches whose `new/` is newer
# than this marker are reported.
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
cargo bench --locked -p tryst-benches "${benches[@]}" -- "${quick[@]}" --baseline "$name"

fmt_ns() {
    awk -v ns="$1" 'BEGIN {
        if (ns >= 1e9) printf "%.3f s", ns / 1e9
        else if (ns >= 1e6) printf "%.3f ms", ns / 1e6
        else if (ns >= 1e3) printf "%.3f us", ns / 1e3
        else printf "%.1f ns", ns }'
}

echo
echo "Wall-clock medians vs criterion baseline '$name' (reported, not gated; on this shared machine --quick medians move by tens of percent between identical runs):"
printf '%-58s %13s %13s %9s\n' benchmark baseline current change
while IFS= read -r new; do
    dir=$(dirname "$(dirname "$new")")
    base="$dir/$name/estimates.json"
    [[ -f "$base" ]] || continue
    id=$(jq -r '.full_id // .title // empty' "$dir/new/benchmark.json" 2>/dev/null || true)
    [[ -n "$id" ]] || id=${dir#"$root"/}
    b=$(jq '.median.point_estimate' "$base")
    c=$(jq '.median.point_estimate' "$new")
    change=$(awk -v b="$b" -v c="$c" 'BEGIN { printf "%+.1f%%", (c - b) * 100 / b }')
    printf '%-58s %13s %13s %9s\n' "$id" "$(fmt_ns "$b")" "$(fmt_ns "$c")" "$change"
done < <(find "$root" -path '*/new/estimates.json' -newer "$marker" | sort)
