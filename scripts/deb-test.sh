#!/usr/bin/env bash
# CI: builds the Debian package (scripts/deb-build.sh), lints it with lintian (no
# errors allowed), installs it with dpkg, checks every file and its owner, the `tryst`
# system user and /var/lib/tryst, runs `tryst serve --check-config` as that user with
# the packaged config, starts `tryst serve` as that user and reaches /healthz, then
# `dpkg -r` (data directory and config kept) and `dpkg -P` (nothing left).
#
# Installs a package system-wide, so it runs in CI (.ci/run), not in `cargo test`.
# Needs root. Safe to run twice: a tryst package left installed by an earlier run is
# purged first, and the package is purged on exit whatever happens. Refuses to run if
# /usr/bin/tryst exists but belongs to no tryst package (a hand-installed relay).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if [ "$(id -u)" != 0 ]; then
    echo "deb-test: needs root (dpkg -i, runuser)" >&2
    exit 1
fi
./scripts/test-deps.sh # lintian (and the test suite's other tools)

fail() {
    echo "deb-test: FAIL: $*" >&2
    exit 1
}
installed() { dpkg-query -W -f='${Status}' tryst 2>/dev/null | grep -q 'install ok installed'; }
known() { dpkg-query -W tryst >/dev/null 2>&1; }

relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
        kill "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
    if known; then
        dpkg -P tryst >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

if known; then
    echo "== deb-test: purging the tryst package left by an earlier run"
    dpkg -P tryst >/dev/null
elif [ -e /usr/bin/tryst ]; then
    fail "/usr/bin/tryst exists and is not from the tryst package; not overwriting it"
fi

echo "== deb-test: building"
deb=$(./scripts/deb-build.sh | tail -n 1)
version=$(cargo metadata --locked --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tryst-relay"))')
[ "$deb" = "target/debian/tryst_${version}_amd64.deb" ] || fail "built $deb, expected tryst_${version}_amd64.deb"
head -n 1 deploy/debian/changelog | grep -q "^tryst ($version) " ||
    fail "deploy/debian/changelog does not start with version $version"

echo "== deb-test: lintian"
# Exits non-zero on any error tag (or if lintian itself fails); warnings are printed.
lintian --fail-on error --info "$deb" || fail "lintian reports errors"

echo "== deb-test: dpkg -i"
dpkg -i "$deb"
installed || fail "package not installed"

# Every regular file the package ships (symlinks and directories excluded), exactly.
expected_files="/etc/tryst/tryst.toml
/usr/bin/tryst
/usr/lib/sysctl.d/99-tryst.conf
/usr/lib/systemd/system/tryst-expose@.service
/usr/lib/systemd/system/tryst.service
/usr/lib/sysusers.d/tryst.conf
/usr/lib/tmpfiles.d/tryst.conf
/usr/share/bash-completion/completions/tryst
/usr/share/doc/tryst/README.md
/usr/share/doc/tryst/agents.md
/usr/share/doc/tryst/changelog.Debian.gz
/usr/share/doc/tryst/configuration.md
/usr/share/doc/tryst/copyright
/usr/share/doc/tryst/deploy.md
/usr/share/fish/vendor_completions.d/tryst.fish
/usr/share/man/man1/tryst-connect.1.gz
/usr/share/man/man1/tryst-expose.1.gz
/usr/share/man/man1/tryst-provision.1.gz
/usr/share/man/man1/tryst-serve.1.gz
/usr/share/man/man1/tryst-tag.1.gz
/usr/share/man/man1/tryst.1.gz
/usr/share/tryst/prometheus/tryst.rules.yml
/usr/share/zsh/vendor-completions/_tryst"
shipped=$(dpkg -L tryst | while read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && echo "$f"; done | sort)
if [ "$shipped" != "$expected_files" ]; then
    diff <(echo "$expected_files") <(echo "$shipped") || true
    fail "the package's files differ from the expected list (< expected, > shipped)"
fi
while read -r f; do
    want=644
    [ "$f" = /usr/bin/tryst ] && want=755
    got=$(stat -c '%U:%G %a' "$f")
    [ "$got" = "root:root $want" ] || fail "$f is $got, expected root:root $want"
done <<<"$expected_files"
grep -qx /etc/tryst/tryst.toml /var/lib/dpkg/info/tryst.conffiles ||
    fail "/etc/tryst/tryst.toml is not a conffile"
/usr/bin/tryst --version | grep -qx "tryst $version" || fail "tryst --version: $(/usr/bin/tryst --version)"
zcat /usr/share/man/man1/tryst-serve.1.gz | grep -q -- 'check\\-config' ||
    fail "tryst-serve(1) does not document --check-config"
# The packaged config keeps the sample's keys but leaves the optional listeners off.
grep -q '^listen = ' /etc/tryst/tryst.toml || fail "packaged config has no listen key"
if grep -Eq '^(tls-listen|stun-listen|tls-name) = ' /etc/tryst/tryst.toml; then
    fail "packaged config turns on an optional listener"
fi

# The user and the data directory.
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd tryst) || fail "no tryst user"
[ "$uid" -lt 1000 ] || fail "tryst is not a system user (uid $uid)"
[ "$home" = /var/lib/tryst ] || fail "tryst's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "tryst's shell is $shell"
[ "$(getent group tryst | cut -d: -f3)" = "$gid" ] || fail "tryst's primary group is not tryst"
[ "$(stat -c '%U:%G %a' /var/lib/tryst)" = "tryst:tryst 700" ] ||
    fail "/var/lib/tryst is $(stat -c '%U:%G %a' /var/lib/tryst)"

echo "== deb-test: tryst serve --check-config as tryst, packaged config"
check=$(runuser -u tryst -- /usr/bin/tryst serve --config /etc/tryst/tryst.toml --check-config) ||
    fail "--check-config failed: $check"
printf '%s\n' "$check"
printf '%s\n' "$check" | grep -q '^tryst: configuration ok$' || fail "no 'configuration ok'"
printf '%s\n' "$check" | grep -q '^data directory  /var/lib/tryst (exists)$' ||
    fail "check-config does not see /var/lib/tryst"

echo "== deb-test: tryst serve as tryst on a free port, /healthz"
# The packaged config listens on 0.0.0.0:7400; the test overrides it with port 0 and
# reads the address the relay prints. setpriv execs, so the pid is the relay's own.
coproc RELAY {
    exec setpriv --reuid=tryst --regid=tryst --init-groups --reset-env -- \
        /usr/bin/tryst serve --config /etc/tryst/tryst.toml --listen 127.0.0.1:0 2>&1
}
relay_pid=$RELAY_PID
addr=""
while IFS= read -r -t 60 line <&"${RELAY[0]}"; do
    echo "relay: $line"
    case "$line" in
    "tryst: listening on "*)
        addr=${line#tryst: listening on }
        break
        ;;
    esac
done
[ -n "$addr" ] || fail "the relay printed no listening address within 60 s"
# Keep draining its output so it never blocks on a full pipe (through a copy of the
# descriptor: bash does not pass coproc descriptors to subshells).
exec {relay_out}<&"${RELAY[0]}"
cat <&"$relay_out" >/dev/null &
exec {relay_out}<&-
health=$(curl -fsS --max-time 10 "http://$addr/healthz") || fail "/healthz on $addr did not answer 200"
echo "healthz: $health"
[ "$(stat -c '%U' /proc/"$relay_pid")" = tryst ] || fail "the relay does not run as tryst"
# It wrote its state (dead-drop key, TLS-less store...) into the data directory as tryst.
[ -n "$(find /var/lib/tryst -mindepth 1 -user tryst -print -quit)" ] ||
    fail "the relay wrote nothing into /var/lib/tryst"
kill -TERM "$relay_pid"
status=0
wait "$relay_pid" || status=$?
relay_pid=""
[ "$status" = 0 ] || fail "the relay exited $status on SIGTERM"

echo "== deb-test: dpkg -r keeps the data directory and the config"
dpkg -r tryst
while read -r f; do
    case "$f" in
    /etc/tryst/tryst.toml) [ -f "$f" ] || fail "conffile $f removed by dpkg -r" ;;
    *) [ ! -e "$f" ] || fail "$f left after dpkg -r" ;;
    esac
done <<<"$expected_files"
[ -d /var/lib/tryst ] && [ -n "$(ls -A /var/lib/tryst)" ] || fail "dpkg -r removed /var/lib/tryst"

echo "== deb-test: dpkg -P removes everything"
dpkg -P tryst
while read -r f; do
    [ ! -e "$f" ] || fail "$f left after dpkg -P"
done <<<"$expected_files"
for d in /var/lib/tryst /etc/tryst /usr/share/doc/tryst /usr/share/tryst; do
    [ ! -e "$d" ] || fail "$d left after dpkg -P"
done
! known || fail "dpkg still knows the package after dpkg -P"
echo "== deb-test: ok ($deb)"
