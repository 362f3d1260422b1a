#!/usr/bin/env bash
# Installs the peers `loadgen compare` measures against: HAProxy (apt) and bore (cargo).
# Each install that fails is skipped with a clear line; `loadgen compare` then skips that
# target and says so.
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && have sudo; then SUDO="sudo"; fi

if have haproxy; then
    echo "install-peers: haproxy already installed: $(haproxy -v 2>/dev/null | head -n1)"
else
    echo "install-peers: installing haproxy with apt-get"
    if $SUDO apt-get update && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy; then
        echo "install-peers: haproxy installed: $(haproxy -v 2>/dev/null | head -n1)"
    else
        echo "install-peers: SKIPPED haproxy: apt-get install failed (loadgen compare will skip the haproxy targets)"
    fi
fi

if have bore; then
    echo "install-peers: bore already installed: $(bore --version 2>/dev/null)"
else
    echo "install-peers: installing bore-cli with cargo install"
    if CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo install --locked bore-cli; then
        echo "install-peers: bore installed: $(bore --version 2>/dev/null)"
    else
        echo "install-peers: SKIPPED bore: cargo install bore-cli failed (loadgen compare will skip the bore target)"
    fi
fi

if have taskset; then
    echo "install-peers: taskset available (compare pins the relay to CPU 1 and the load to CPU 0)"
else
    echo "install-peers: taskset not found (util-linux); compare runs unpinned and says so"
fi
