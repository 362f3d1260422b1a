#!/usr/bin/env bash
# Supply-chain check (CI): cargo deny on the main workspace and on the fuzz workspace,
# with the policy in deny.toml. Installs cargo-deny if missing (about 3 minutes on
# 2 cores).
#
# licenses, bans and sources need nothing but the lock files and run offline. The RustSec
# advisory database is a git clone from GitHub, which this build machine cannot reach:
# advisories are checked only when a local copy exists (fetch one where there is network
# with `cargo deny fetch db` and copy $CARGO_HOME/advisory-dbs over), and otherwise the script says plainly that they were not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo deny --version >/dev/null 2>&1; then
    echo "== installing cargo-deny (cargo install cargo-deny --locked)"
    cargo install cargo-deny --locked
fi

# cargo-deny's default database location (deny.toml sets no db-path).
db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
have_db=false
# A usable clone has the per-crate advisory tree.
if compgen -G "$db_root/*/crates" >/dev/null; then
    have_db=true
fi

for manifest in Cargo.toml fuzz/Cargo.toml; do
    extra=()
    if [ "$manifest" = Cargo.toml ]; then
        # deny.toml's libfuzzer-sys licence exception applies to the fuzz workspace only.
        extra=(--allow license-exception-not-encountered)
    fi
    echo "== cargo deny ($manifest): licenses bans sources"
    cargo deny --manifest-path "$manifest" --config deny.toml --locked --offline \
        check --hide-inclusion-graph "${extra[@]}" licenses bans sources
    if $have_db; then
        echo "== cargo deny ($manifest): advisories (local database $db_root, not refreshed)"
        cargo deny --manifest-path "$manifest" --config deny.toml --locked --offline \
            check --hide-inclusion-graph advisories
    fi
done
if ! $have_db; then
    echo "== cargo deny: ADVISORIES NOT CHECKED: no RustSec database under $db_root and" \
        "none can be fetched here (no network beyond package registries);" \
        "run 'cargo deny fetch db' where GitHub is reachable"
fi
