#!/usr/bin/env bash
# Installs the real peers the interop tests drive (Debian/Ubuntu): oathtool (TOTP codes
# for node-rendezvous hidden servers), curl (Digest/Basic mobile clients), python3.
# Idempotent: installs only what is missing. Needs root or sudo for apt-get.
set -euo pipefail

missing=()
command -v oathtool >/dev/null 2>&1 || missing+=(oathtool)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)

if ((${#missing[@]} == 0)); then
    echo "test-deps: oathtool, curl and python3 present"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}"
