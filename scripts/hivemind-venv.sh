#!/usr/bin/env bash
# Builds (once) the Python venv with the real hivemind-rendezvous 0.1.2a2 client, used by
# the dead-drop interop test (relay/tests/it/deaddrop.rs) and the benchmark.
# Prints the venv's python path on success. Needs python3 with venv and PyPI access.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HIVEMIND_VENV:-$PWD/target/hivemind-venv}"
marker="$venv/.hivemind-rendezvous-0.1.2a2"
if [[ ! -f "$marker" ]]; then
    python3 -m venv "$venv" >&2
    # --pre is required: the stable json-database and poorman-handshake are too old.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --pre \
        'hivemind-rendezvous==0.1.2a2' >&2
    "$venv/bin/python" -c 'import hivemind_rendezvous.auth, hivemind_rendezvous.client, hivemind_bus_client.message' >&2
    touch "$marker"
fi
echo "$venv/bin/python"
