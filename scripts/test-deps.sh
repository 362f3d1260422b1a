#!/usr/bin/env bash
# Installs the real peers the interop tests drive (Debian/Ubuntu): oathtool (TOTP codes
# for node-rendezvous hidden servers), curl (Digest/Basic mobile clients), python3,
# openssh-server and openssh-client (sshd behind `tryst expose`), and a
# real STUN client: stuntman-client's `stunclient` where Debian still ships it, else
# coturn's `turnutils_stunclient` (bookworm dropped stuntman); promtool (Debian's
# `prometheus`, for the alert-rule tests), lintian (scripts/deb-test.sh) and PostgreSQL
# (the dead-drop's PostgreSQL store; scripts/pg-test.sh starts throw-away clusters) and
# redis-server (the cluster directory; scripts/redis-test.sh starts throw-away servers)
# and haproxy (the side-by-side TLS target of `loadgen compare`).
# Idempotent: installs only what is missing. Needs root or sudo for apt-get.
set -euo pipefail

missing=()
command -v oathtool >/dev/null 2>&1 || missing+=(oathtool)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
tools=()
command -v promtool >/dev/null 2>&1 || tools+=(prometheus)
command -v lintian >/dev/null 2>&1 || tools+=(lintian)
command -v redis-server >/dev/null 2>&1 || tools+=(redis-server)
# HAProxy for loadgen compare's haproxy-tls target test (TLS terminated and re-encrypted).
command -v haproxy >/dev/null 2>&1 || tools+=(haproxy)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    missing+=(postgresql)
fi
# A real sshd and ssh for the agents' end-to-end test (tryst expose / tryst connect).
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
stun_client=()
if ! command -v stunclient >/dev/null 2>&1 && ! command -v turnutils_stunclient >/dev/null 2>&1; then
    stun_client=(stuntman-client)
fi

if ((${#missing[@]} == 0 && ${#tools[@]} == 0 && ${#stun_client[@]} == 0)); then
    echo "test-deps: oathtool, curl, python3, sshd, ssh, PostgreSQL, promtool, lintian, redis-server, haproxy and a STUN client present"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "test-deps: installing ${missing[*]} ${tools[*]} ${stun_client[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
if [[ " ${missing[*]} " == *" postgresql "* && ! -e /etc/postgresql-common/createcluster.conf ]]; then
    # The tests start their own clusters: no need for Debian's default `main` cluster.
    "${sudo[@]}" mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
if ((${#missing[@]} > 0)); then
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi
if ((${#tools[@]} > 0)); then
    # Only promtool is wanted from `prometheus` (not its exporters); the server it ships
    # is never started by CI. About 40 s for both packages; redis-server (the tests
    # start their own on unix sockets) a few seconds more.
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${tools[@]}"
fi
if ((${#stun_client[@]} > 0)); then
    # The STUN interop test skips (loudly) only if neither package installs.
    "${sudo[@]}" apt-get install -y -qq stuntman-client 2>/dev/null ||
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends coturn ||
        echo "test-deps: WARNING: no STUN client package could be installed"
fi
