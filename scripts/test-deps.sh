#!/usr/bin/env bash
# Installs the real peers the interop tests drive (Debian/Ubuntu): oathtool (TOTP codes
# for node-rendezvous hidden servers), curl (Digest/Basic mobile clients), python3,
# openssh-server and openssh-client (sshd behind `tryst expose`), and a
# real STUN client: stuntman-client's `stunclient` where Debian still ships it, else
# coturn's `turnutils_stunclient` (bookworm dropped stuntman).
# Idempotent: installs only what is missing. Needs root or sudo for apt-get.
set -euo pipefail

missing=()
command -v oathtool >/dev/null 2>&1 || missing+=(oathtool)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# A real sshd and ssh for the agents' end-to-end test (tryst expose / tryst connect).
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
stun_client=()
if ! command -v stunclient >/dev/null 2>&1 && ! command -v turnutils_stunclient >/dev/null 2>&1; then
    stun_client=(stuntman-client)
fi

if ((${#missing[@]} == 0 && ${#stun_client[@]} == 0)); then
    echo "test-deps: oathtool, curl, python3, sshd, ssh and a STUN client present"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "test-deps: installing ${missing[*]} ${stun_client[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
if ((${#missing[@]} > 0)); then
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi
if ((${#stun_client[@]} > 0)); then
    # The STUN interop test skips (loudly) only if neither package installs.
    "${sudo[@]}" apt-get install -y -qq stuntman-client 2>/dev/null ||
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends coturn ||
        echo "test-deps: WARNING: no STUN client package could be installed"
fi
