#!/usr/bin/env bash
# Builds the Debian package target/debian/tryst_<version>_amd64.deb (metadata:
# [package.metadata.deb] in relay/Cargo.toml). Installs cargo-deb when missing
# (`cargo install cargo-deb --locked`). Prints the package's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked
fi
# Man pages, completions and the packaged /etc/tryst/tryst.toml, from the clap
# definitions and deploy/tryst.toml (relay/examples/dist_assets.rs).
rm -rf target/dist
cargo run --quiet --locked -p tryst-relay --example dist_assets -- target/dist
# The release binary (shared with the bench gate's build), then the .deb: cargo-deb
# strips the binary and writes the package without building anything itself.
./scripts/release-build.sh
cargo deb --no-build --locked -p tryst-relay --strip --no-dbgsym --output target/debian 2>&1 | tail -n 1
