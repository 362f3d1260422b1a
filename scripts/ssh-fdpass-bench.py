#!/usr/bin/env python3
"""ssh through tryst, ProxyCommand (stdin/stdout) against ProxyUseFdpass, alternating.

Starts a one-worker relay, a throw-away sshd on 127.0.0.1 and `tryst expose` in front of
it, then runs `ssh ... 'head -c SIZE /dev/zero'` through `tryst connect` (stdin/stdout)
and through `tryst connect --fdpass` (ssh is handed the relay socket), REPS times each,
interleaved, and prints per-run and median (min..max) throughput and the relay's and
expose agent's CPU per GiB. With --baseline BIN, a third mode runs `BIN connect` on
stdin/stdout (another build of tryst, e.g. the commit before a change), in the same
rounds. Needs openssh-server and openssh-client. Not a test: a
benchmark for docs/performance.md.

    cargo build --release -p tryst-relay --bin tryst
    scripts/ssh-fdpass-bench.py [--tryst target/release/tryst] [--reps 5] [--mib 1024] \
        [--baseline OLD/tryst]
"""

import argparse
import getpass
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time

ID = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f"


def cpu_seconds(pid):
    """utime + stime of pid and, recursively, its children (the relay's workers)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except FileNotFoundError:
        kids = []
    return total + sum(cpu_seconds(int(k)) for k in kids)


def wait_port(port, within=10.0):
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tryst", default="target/release/tryst")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--baseline", help="another tryst binary whose `connect` runs as a third mode")
    args = ap.parse_args()
    tryst = os.path.abspath(args.tryst)
    size = args.mib << 20
    d = tempfile.mkdtemp(prefix="ssh-fdpass-")
    procs = []
    try:
        out = subprocess.run([tryst, "provision", "--data-dir", f"{d}/data", ID],
                             check=True, capture_output=True, text=True).stdout
        secret = re.search(r"secret: (\S+)", out).group(1)
        with open(f"{d}/secret", "w") as f:
            f.write(secret + "\n")
        relay = subprocess.Popen([tryst, "serve", "--listen", "127.0.0.1:0", "--workers", "1",
                                  "--data-dir", f"{d}/data"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(relay)
        addr = None
        for line in relay.stdout:
            m = re.search(r"listening on (\S+)", line)
            if m:
                addr = m.group(1)
                break
        for key in ["host_key", "user_key"]:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{key}"],
                           check=True)
        os.rename(f"{d}/user_key.pub", f"{d}/authorized_keys")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with open(f"{d}/sshd_config", "w") as f:
            f.write(f"ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n"
                    "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nLogLevel ERROR\n")
        os.makedirs("/run/sshd", exist_ok=True)
        # Its log (-e) would report the readiness probe below as a failed key exchange.
        procs.append(subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"],
                                      stderr=subprocess.DEVNULL))
        wait_port(port)
        expose = subprocess.Popen([tryst, "expose", "--relay", addr, "--id", ID, "--secret-file",
                                   f"{d}/secret", "--to", f"127.0.0.1:{port}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(expose)
        for line in expose.stdout:
            if "parked" in line:
                break
        user = getpass.getuser()

        modes = ["stdio", "fdpass"] + (["baseline"] if args.baseline else [])

        def ssh(mode):
            fdpass = mode == "fdpass"
            binary = os.path.abspath(args.baseline) if mode == "baseline" else tryst
            proxy = f"{binary} connect --relay {addr} --id %h" + (" --fdpass" if fdpass else "")
            return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR", "-c", "aes128-gcm@openssh.com",
                    "-i", f"{d}/user_key", "-o", f"ProxyUseFdpass={'yes' if fdpass else 'no'}",
                    "-o", f"ProxyCommand={proxy}", "-l", user, ID, f"head -c {size} /dev/zero"]

        runs = {mode: [] for mode in modes}
        for rep in range(args.reps):
            for mode in modes:
                before = cpu_seconds(relay.pid) + cpu_seconds(expose.pid)
                t0 = time.monotonic()
                got = subprocess.run(ssh(mode), stdout=subprocess.PIPE, check=True).stdout
                wall = time.monotonic() - t0
                assert len(got) == size, f"{len(got)} bytes, wanted {size}"
                cpu = cpu_seconds(relay.pid) + cpu_seconds(expose.pid) - before
                gbit = size * 8 / wall / 1e9
                runs[mode].append((gbit, cpu / (size / 2**30)))
                print(f"rep {rep} {mode:8} {gbit:.2f} Gbit/s, relay + expose "
                      f"{cpu / (size / 2**30):.3f} CPU-s/GiB", flush=True)
        medians = {}
        for mode in modes:
            g = [r[0] for r in runs[mode]]
            c = [r[1] for r in runs[mode]]
            medians[mode] = statistics.median(g)
            print(f"{mode:8} Gbit/s {medians[mode]:.2f} ({min(g):.2f}..{max(g):.2f}), "
                  f"relay + expose CPU-s/GiB {statistics.median(c):.3f} "
                  f"({min(c):.3f}..{max(c):.3f})")
        print(f"fdpass / stdio throughput: {medians['fdpass'] / medians['stdio']:.2f}x")
        if args.baseline:
            print(f"stdio / baseline stdio throughput: "
                  f"{medians['stdio'] / medians['baseline']:.2f}x")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
