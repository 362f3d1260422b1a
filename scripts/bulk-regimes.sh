#!/usr/bin/env bash
# Which regime a tryst relay's bulk cells run in (docs/performance.md, "Who sets the bulk
# rate here"): runs `loadgen compare` (direct and tryst-splice-syscall, one workload) and,
# once a second while the relay's worker is busy, prints the worker's CPU ticks and
# io_uring_enter calls, the bytes that crossed loopback, and the kernel's socket-backlog
# merges (TCPBacklogCoalesce) per GB. Manual tool, not in CI; needs perf (linux-perf)
# and release builds of tryst and loadgen.
#
#   scripts/bulk-regimes.sh [WORKLOAD] [REPETITIONS] [-- extra loadgen compare arguments]
#   scripts/bulk-regimes.sh bulk16 8 -- --relay-arg=--pipe-size=1048576
set -euo pipefail
cd "$(dirname "$0")/.."
workload="${1:-bulk16}"
reps="${2:-8}"
shift $(($# < 2 ? $# : 2))
[[ "${1:-}" == "--" ]] && shift
out=$(mktemp -d /tmp/bulk-regimes.XXXXXX)
trap 'kill "$lg" 2>/dev/null || true; rm -rf "$out"' EXIT
./target/release/loadgen compare --targets direct,tryst-splice-syscall --workloads "$workload" \
    --repetitions "$reps" --duration 4s --json "$out/cells.json" "$@" >"$out/report" 2>"$out/log" &
lg=$!
worker=""
for _ in $(seq 1 300); do
    sup=$(pgrep -f "tryst serve --listen 127.0.0.1:0 --data-dir /tmp/loadgen-compare" | head -1 || true)
    [[ -n "$sup" ]] && worker=$(pgrep -P "$sup" | head -1 || true)
    [[ -n "$worker" ]] && break
    sleep 0.2
done
[[ -n "$worker" ]] || { echo "bulk-regimes: no tryst worker appeared" >&2; exit 1; }
backlog() { awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) n[i] = $i; h = 1 } else { for (i = 2; i <= NF; i++) if (n[i] == "TCPBacklogCoalesce") print $i } }' /proc/net/netstat; }
lo_bytes() { awk '/ lo:/ { print $2 }' /proc/net/dev; }
ticks() { awk '{ print $14 + $15 }' "/proc/$worker/stat" 2>/dev/null || echo 0; }
echo "worker_ticks_per_s io_uring_enter_per_s loopback_MB backlog_merges_per_GB"
while kill -0 "$lg" 2>/dev/null; do
    b0=$(backlog); l0=$(lo_bytes); t0=$(ticks)
    enters=$(perf stat -x, -e syscalls:sys_enter_io_uring_enter -p "$worker" -- sleep 1 2>&1 | cut -d, -f1)
    b1=$(backlog); l1=$(lo_bytes); t1=$(ticks)
    mb=$(((l1 - l0) / 1000000))
    # Only the seconds in which the relay was busy (the tryst cells).
    if ((t1 - t0 > 50 && mb > 0)); then
        echo "$((t1 - t0)) $enters $mb $(((b1 - b0) * 1000 / mb))"
    fi
done
wait "$lg" || true
python3 - "$out/cells.json" <<'EOF'
import json, sys
cells = json.load(open(sys.argv[1]))["cells"]
print("cells (Gbit/s, relay CPU-s/GB):",
      [(round(c["metrics"]["gbit_s"], 1), round(c["metrics"].get("cpu_s_per_gb", 0), 3))
       for c in cells if c["target"] != "direct"])
EOF
