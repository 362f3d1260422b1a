# Shared by scripts/fuzz-smoke.sh and fuzz/run-all.sh; sourced, not run.
# Requires: FUZZ_DIR (absolute path of fuzz/).

# Every [[bin]] name in fuzz/Cargo.toml, one per line: the target list.
fuzz_targets() {
    awk '
        /^\[/ { in_bin = ($0 ~ /^\[\[bin\]\][[:space:]]*$/) }
        in_bin && /^[[:space:]]*name[[:space:]]*=/ {
            sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print
        }
    ' "$FUZZ_DIR/Cargo.toml"
}

# Installs cargo-fuzz when `cargo fuzz` is missing.
ensure_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked)"
        cargo install cargo-fuzz --locked
    fi
}

# The harnesses are decoded by `arbitrary` in two builds (fuzz/ and the engine's corpus
# replay test); a version skew between the two lock files would make the replay test
# decode seeds differently from the fuzzer.
check_arbitrary_versions() {
    local root main fuzz
    root="$(dirname "$FUZZ_DIR")"
    main="$(grep -A1 '^name = "arbitrary"$' "$root/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')"
    fuzz="$(grep -A1 '^name = "arbitrary"$' "$FUZZ_DIR/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')"
    if [ "$main" != "$fuzz" ]; then
        echo "error: arbitrary is $main in Cargo.lock but $fuzz in fuzz/Cargo.lock;" \
            "align them (cargo update -p arbitrary --precise ...)" >&2
        return 1
    fi
}

# fuzz/Cargo.lock is committed and must match the manifests (engine dependencies
# included): cargo fuzz has no --locked, so check it here.
check_fuzz_lock() {
    if ! cargo metadata --manifest-path "$FUZZ_DIR/Cargo.toml" --locked --format-version 1 \
        >/dev/null; then
        echo "error: fuzz/Cargo.lock is out of date; run 'cd fuzz && cargo +nightly fuzz build'" \
            "and commit fuzz/Cargo.lock" >&2
        return 1
    fi
}

# Builds every target (release, debug assertions on: what `cargo fuzz run` uses).
build_fuzz_targets() {
    (cd "$FUZZ_DIR" && cargo +nightly fuzz build)
}

# run_fuzz_targets SECONDS SCRATCH [TARGET...]
# Runs each target for SECONDS on a scratch copy of its committed corpus (new inputs land
# in SCRATCH, never in fuzz/corpus), with fuzz/dict/<target>.dict when it exists. Crashes are written to
# SCRATCH/artifacts/<target>/. FUZZ_JOBS targets run at once (default: the number of
# CPUs; each libFuzzer process uses one), so every target still gets SECONDS of a core.
# Returns non-zero if any target failed, after running all.
run_fuzz_targets() {
    local seconds="$1" scratch="$2"
    shift 2
    local targets=("$@") failed=() t jobs running=0
    if [ ${#targets[@]} -eq 0 ]; then
        mapfile -t targets < <(fuzz_targets)
    fi
    jobs="${FUZZ_JOBS:-$(nproc)}"
    if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: FUZZ_JOBS must be a positive integer, not '$jobs'" >&2
        return 2
    fi
    mkdir -p "$scratch/status"
    rm -f "$scratch/status/"*
    echo "== fuzzing ${#targets[@]} targets, ${jobs} at a time"
    for t in "${targets[@]}"; do
        if [ "$running" -ge "$jobs" ]; then
            wait -n || true
            running=$((running - 1))
        fi
        fuzz_one_target "$t" "$seconds" "$scratch" &
        running=$((running + 1))
    done
    wait || true
    for t in "${targets[@]}"; do
        # A missing status file means the job died before writing it: a failure too.
        if [ "$(cat "$scratch/status/$t" 2>/dev/null)" != ok ]; then
            failed+=("$t")
        fi
    done
    if [ ${#failed[@]} -ne 0 ]; then
        echo "FAIL: fuzz targets with findings: ${failed[*]}" >&2
        echo "Triage: fuzz/README.md (reproduce, minimise, keep as corpus/<target>/crash-*)." >&2
        return 1
    fi
}

# fuzz_one_target TARGET SECONDS SCRATCH: one target's run (see run_fuzz_targets). Writes
# "ok" or "fail" to SCRATCH/status/TARGET and prints its report as one block, so reports
# of targets running at the same time do not interleave.
fuzz_one_target() {
    local t="$1" seconds="$2" scratch="$3" corpus artifacts dict log status report
    corpus="$scratch/corpus/$t"
    artifacts="$scratch/artifacts/$t"
    log="$scratch/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    if [ -d "$FUZZ_DIR/corpus/$t" ]; then
        find "$FUZZ_DIR/corpus/$t" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$corpus/" \;
    fi
    local args=(-max_total_time="$seconds" -artifact_prefix="$artifacts/")
    dict="$(dict_for "$t")"
    if [ -n "$dict" ]; then
        args+=(-dict="$dict")
    fi
    report="== fuzz $t for ${seconds}s (seeds: $(find "$corpus" -type f | wc -l)${dict:+, dict: ${dict#"$FUZZ_DIR"/}})"
    local before new
    before="$(LC_ALL=C ls -A "$artifacts")"
    status=0
    (cd "$FUZZ_DIR" && cargo +nightly fuzz run "$t" "$corpus" -- "${args[@]}") \
        >"$log" 2>&1 || status=$?
    report+=$'\n'"$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)"
    # Artifacts this run wrote (a kept scratch directory may hold older ones).
    new="$(comm -13 <(echo "$before") <(LC_ALL=C ls -A "$artifacts"))"
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        echo "$report"
        {
            echo "FAIL: fuzz target $t (exit $status); log: $log"
            grep -E 'panicked at|^SUMMARY|^ERROR|Test unit written|^Error' "$log" || tail -n 20 "$log"
            local a
            while IFS= read -r a; do
                [ -n "$a" ] && echo "FAIL: $t artifact: $artifacts/$a"
            done <<<"$new"
        } >&2
        echo fail >"$scratch/status/$t"
        return 1
    fi
    echo "$report"
    echo ok >"$scratch/status/$t"
}

# The dictionary for a target: fuzz/dict/<target>.dict (a symlink where targets share one).
dict_for() {
    if [ -e "$FUZZ_DIR/dict/$1.dict" ]; then
        echo "$FUZZ_DIR/dict/$1.dict"
    fi
}
