#!/usr/bin/env bash
# Supply-chain check (CI): cargo deny on the main workspace and on the fuzz workspace,
# with the policy in deny.toml: licenses, bans, sources and RustSec advisories, all
# offline. Installs cargo-deny if missing (about 3 minutes on 2 cores).
#
# Advisories: the RustSec database is a git clone from GitHub, which CI cannot reach.
# A snapshot ships as a git bundle next to the repository (../shared/rustsec/
# advisory-db.bundle; override with TRYST_ADVISORY_BUNDLE=FILE). When the database
# cargo-deny would use ($CARGO_HOME/advisory-dbs/advisory-db-<hash>) is missing or older
# than the bundle, it is replaced by a clone of the bundle; a newer local copy (e.g. one
# `cargo deny fetch db` fetched where GitHub is reachable) is kept. The date of the
# database used is printed. With no database at all the script fails: advisories are
# checked on every run. docs/TESTING.md ("Supply chain") has the details.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo deny --version >/dev/null 2>&1; then
    echo "== installing cargo-deny (cargo install cargo-deny --locked)"
    cargo install cargo-deny --locked
fi

# cargo deny runs --offline, so every crate of both lock files must be in the local
# registry first (on a fresh machine nothing has fetched the fuzz workspace's crates).
for manifest in Cargo.toml fuzz/Cargo.toml; do
    echo "== cargo fetch --locked ($manifest)"
    cargo fetch --locked --manifest-path "$manifest" --quiet
done

# --- The advisory database -------------------------------------------------------------

# The snapshot bundle: explicit, else next to this checkout, else next to the main
# checkout of this repository (when this is a `git worktree` elsewhere).
find_bundle() {
    if [ -n "${TRYST_ADVISORY_BUNDLE:-}" ]; then
        echo "$TRYST_ADVISORY_BUNDLE"
        return
    fi
    local rel=shared/rustsec/advisory-db.bundle common
    if [ -f "../$rel" ]; then
        echo "$(cd .. && pwd)/$rel"
        return
    fi
    common="$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
    if [ -n "$common" ] && [ -f "$(dirname "$common")/../$rel" ]; then
        echo "$(cd "$(dirname "$common")/.." && pwd)/$rel"
    fi
}

# The directory cargo-deny reads the default database from. It is named after a hash of
# the database URL, which cargo-deny prints when the directory is missing; ask it.
db_dir() {
    local existing probe
    existing=$(compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-*/crates" || true)
    if [ "$(printf '%s\n' "$existing" | grep -c .)" = 1 ]; then
        dirname "$existing"
        return
    fi
    probe=$(cargo deny --manifest-path Cargo.toml --config deny.toml --locked --offline \
        check advisories 2>&1 || true)
    printf '%s\n' "$probe" | grep -o "/[^ '\"]*/advisory-dbs/advisory-db-[0-9a-f]*" | head -n 1
}

commit_time() { git -C "$1" log -1 --format=%ct HEAD 2>/dev/null || echo 0; }

db=$(db_dir)
if [ -z "$db" ]; then
    echo "deny.sh: cannot tell where cargo-deny keeps its advisory database" >&2
    exit 1
fi
bundle=$(find_bundle)
if [ -n "$bundle" ]; then
    if [ ! -f "$bundle" ]; then
        echo "deny.sh: TRYST_ADVISORY_BUNDLE=$bundle does not exist" >&2
        exit 1
    fi
    tmp="$db.bundle-tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$db")"
    git -c init.defaultBranch=main clone --quiet "$bundle" "$tmp"
    if [ "$(commit_time "$tmp")" -gt "$(commit_time "$db")" ]; then
        echo "== advisory database: installing the snapshot $bundle"
        rm -rf "$db"
        mv "$tmp" "$db"
    else
        echo "== advisory database: the local copy is as new as the snapshot or newer; kept"
        rm -rf "$tmp"
    fi
elif [ ! -d "$db/crates" ]; then
    echo "deny.sh: no RustSec advisory database at $db and no snapshot bundle" \
        "(../shared/rustsec/advisory-db.bundle or TRYST_ADVISORY_BUNDLE); advisories" \
        "must be checked" >&2
    exit 1
fi
echo "== advisory database $db: $(git -C "$db" log -1 --format='commit %h of %cs (%s)' HEAD)"

# --- The checks ------------------------------------------------------------------------

for manifest in Cargo.toml fuzz/Cargo.toml; do
    extra=()
    if [ "$manifest" = Cargo.toml ]; then
        # deny.toml's libfuzzer-sys licence exception applies to the fuzz workspace only.
        extra=(--allow license-exception-not-encountered)
    fi
    echo "== cargo deny ($manifest): licenses bans sources advisories"
    cargo deny --manifest-path "$manifest" --config deny.toml --locked --offline \
        check --hide-inclusion-graph "${extra[@]}" licenses bans sources advisories
done
