//! `tryst expose` and `tryst connect` end to end: real relays (the launcher in
//! `tunnel.rs`), real agents, and real peers (python3's http.server and curl, OpenSSH).
//!
//! Waiting is on events (a line printed, a process exiting, a read returning) or on
//! counters polled under a deadline; ports are ephemeral (a relay restarted "on the same
//! port" reuses the port its first run was given by the kernel).

use crate::relay::{Relay, reach_at};
use crate::tunnel::{ID, OK, SECRET, b64url, metric_sum, read_exact_n, read_to_close};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TRYST: &str = env!("CARGO_BIN_EXE_tryst");

/// A `tryst expose` process, killed on drop; its stderr is kept in a file.
struct Agent {
    child: Option<Child>,
    metrics: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `tryst` command with no `TRYST_*` variables from the test's environment.
fn tryst() -> Command {
    let mut cmd = Command::new(TRYST);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRYST_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TRYST_LOG", "info");
    cmd
}

impl Agent {
    /// `tryst expose --relay relay --id ID --secret-file <SECRET> --to to` plus `extra`,
    /// with metrics on an ephemeral port and a 200 ms back-off cap.
    fn start(relay: SocketAddr, to: &str, extra: &[&str]) -> Self {
        Self::start_with_secret(relay, to, &SECRET, extra)
    }

    fn start_with_secret(relay: SocketAddr, to: &str, secret: &[u8], extra: &[&str]) -> Self {
        Self::start_with_backoff(relay, to, secret, "200ms", extra)
    }

    /// [`Agent::start_with_secret`] with `--backoff-max backoff_max`.
    fn start_with_backoff(
        relay: SocketAddr,
        to: &str,
        secret: &[u8],
        backoff_max: &str,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        write_secret_file(&secret_file, secret, 0o600);
        let mut cmd = tryst();
        cmd.arg("expose")
            .args(["--relay", &relay.to_string(), "--id", ID, "--to", to])
            .arg("--secret-file")
            .arg(&secret_file)
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--backoff-max",
                backoff_max,
            ])
            .args(extra);
        Self::spawn(cmd, dir)
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let metrics = line
            .strip_prefix("tryst: metrics on http://")
            .and_then(|l| l.trim_end().strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first line {line:?}; log: {}", log_of(dir.path())));
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self {
            child: Some(child),
            metrics,
            dir,
        }
    }

    fn log(&self) -> String {
        log_of(self.dir.path())
    }

    /// Polls the log (deadline 20 s) until it contains `needle`: the agent writes an
    /// event's line after the sockets it names are closed, so a client can see the close
    /// first.
    fn await_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        metric_sum(&read_to_close(&mut s), name)
    }

    /// Waits (bounded) until the agent's `name` reaches at least `want`.
    fn await_metric_at_least(&self, name: &str, want: u64) -> u64 {
        await_at_least(want, || self.metric(name))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the agent to exit (bounded).
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        wait_exit(self.child.take().unwrap(), within)
            .unwrap_or_else(|| panic!("the agent did not exit; log: {}", self.log()))
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

/// Polls `read` until it is at least `want` (deadline 20 s); returns the last value.
fn await_at_least(want: u64, read: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = read();
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit, at most `within`; `None` (and the child killed) if not.
fn wait_exit(mut child: Child, within: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(status) => Some(status.unwrap()),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            None
        }
    }
}

/// An echo server on an ephemeral port; each connection echoes until EOF.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || serve_echo(listener));
    addr
}

fn serve_echo(listener: TcpListener) {
    for s in listener.incoming() {
        let Ok(mut s) = s else { return };
        std::thread::spawn(move || {
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
            let _ = s.shutdown(Shutdown::Write);
        });
    }
}

/// One echo round trip through a fresh reach.
fn echo_once(relay: SocketAddr, msg: &[u8]) {
    let mut s = reach_at(relay, b"");
    s.write_all(msg).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut s), String::from_utf8_lossy(msg));
}

/// Writes `data` to `s` (from a thread) and half-closes it, while reading what comes
/// back until the far end closes; returns that.
fn echo_round_trip(mut s: TcpStream, data: &[u8]) -> Vec<u8> {
    let writer = {
        let mut s = s.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            s.write_all(&data).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

#[test]
fn expose_carries_bytes_both_ways_and_reparks_after_each_pairing() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let agent = Agent::start(relay.addr, &echo.to_string(), &["--pool", "2"]);
    assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
    let big = pattern(4 << 20, 9);
    let s = reach_at(relay.addr, b"");
    assert!(echo_round_trip(s, &big) == big, "echoed bytes differ");
    // The pool is refilled at once after the pairing.
    assert_eq!(relay.await_metric("tryst_parked", 2), 2);
    assert_eq!(agent.metric("tryst_agent_paired_total"), 1);
    assert_eq!(
        agent.await_metric_at_least("tryst_agent_bytes_to_local_total", 4 << 20),
        4 << 20
    );
    assert_eq!(agent.metric("tryst_agent_bytes_from_local_total"), 4 << 20);
    let log = agent.log();
    assert!(log.contains("parked") && log.contains("paired"), "{log}");
    assert!(
        !log.contains(&b64url(&SECRET)),
        "the secret was logged: {log}"
    );
}

#[test]
fn a_pool_of_four_serves_twenty_sequential_reaches_without_any_client_wait() {
    // With no client wait at all, a reach that finds nobody parked is refused at once:
    // twenty successes mean a parked connection was always ready.
    let relay = Relay::start(&["--client-wait", "0s"]);
    let echo = echo_server();
    let agent = Agent::start(relay.addr, &echo.to_string(), &["--pool", "4"]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4, "{}", agent.log());
    for i in 0..20 {
        echo_once(relay.addr, format!("reach {i}").as_bytes());
    }
    let metrics = relay.metrics();
    assert_eq!(
        crate::tunnel::series_value(&metrics, "tryst_rejections_total{reason=\"not_parked\"}"),
        0
    );
    assert_eq!(metric_sum(&metrics, "tryst_paired_total"), 20);
    assert_eq!(agent.metric("tryst_agent_paired_total"), 20);
    assert_eq!(agent.metric("tryst_agent_reconnects_total"), 0);
}

/// A secret file group or others may read is warned about (as the relay's secrets file
/// is), not refused: the agent parks.
#[test]
fn a_secret_file_readable_by_others_is_warned_about_not_refused() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("open.secret");
    write_secret_file(&secret_file, &SECRET, 0o644);
    let mut cmd = tryst();
    cmd.arg("expose")
        .args(["--relay", &relay.addr.to_string(), "--id", ID])
        .args(["--to", &echo.to_string(), "--pool", "1"])
        .arg("--secret-file")
        .arg(&secret_file)
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let agent = Agent::spawn(cmd, dir);
    assert_eq!(relay.await_metric("tryst_parked", 1), 1, "{}", agent.log());
    let warning = format!(
        "{} is accessible by group or others (mode 0644); run `chmod 600 {}`",
        secret_file.display(),
        secret_file.display()
    );
    assert!(agent.await_log(&warning), "{}", agent.log());
}

/// Writes `secret` as `tryst provision` prints it into `path`, with `mode`.
fn write_secret_file(path: &Path, secret: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{}\n", b64url(secret))).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_wrong_secret_or_unknown_id_exits_non_zero_with_the_relay_code_after_one_attempt() {
    let relay = Relay::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, b64url(&[9; 32])).unwrap();
    let right = dir.path().join("right");
    std::fs::write(&right, b64url(&SECRET)).unwrap();
    let unknown = "11111111-2222-4333-8444-555555555555";
    for (round, (id, secret_file)) in [(ID, &wrong), (unknown, &right)].into_iter().enumerate() {
        let child = tryst()
            .arg("expose")
            .args(["--relay", &relay.addr.to_string(), "--id", id])
            .args(["--to", "127.0.0.1:9", "--pool", "1"])
            .arg("--secret-file")
            .arg(secret_file)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        assert!(stderr.contains("403 bad_proof"), "{stderr}");
        assert!(stderr.contains("relay error code: bad_proof"), "{stderr}");
        assert!(!stderr.contains(&b64url(&[9; 32])), "the secret was logged");
        assert!(!stderr.contains(&b64url(&SECRET)), "the secret was logged");
        let rejected = crate::tunnel::series_value(
            &relay.metrics(),
            "tryst_rejections_total{reason=\"bad_proof\"}",
        );
        assert_eq!(rejected, round as u64 + 1, "more than one attempt");
    }
}

#[test]
fn the_secret_comes_from_tryst_secret_and_bad_input_is_refused_before_connecting() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tryst();
    cmd.arg("expose")
        .args(["--relay", &relay.addr.to_string(), "--id", ID])
        .args(["--to", &echo.to_string(), "--metrics-listen", "127.0.0.1:0"])
        .env("TRYST_SECRET", format!("  {}\n", b64url(&SECRET)));
    let agent = Agent::spawn(cmd, dir);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4, "{}", agent.log());
    echo_once(relay.addr, b"from the environment");
    // No secret at all, and a secret that is not what provision prints: exit 1 at once.
    for env in [None, Some("not base64url!")] {
        let mut cmd = tryst();
        cmd.arg("expose")
            .args(["--relay", &relay.addr.to_string(), "--id", ID])
            .args(["--to", "127.0.0.1:9"]);
        if let Some(v) = env {
            cmd.env("TRYST_SECRET", v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("TRYST_SECRET"), "{stderr}");
        assert!(!stderr.contains("base64url!"), "{stderr}");
    }
}

#[test]
fn a_local_target_down_closes_the_client_cleanly_and_the_agent_keeps_serving() {
    let relay = Relay::start(&[]);
    // A port nobody listens on (for now).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = format!("127.0.0.1:{port}");
    let agent = Agent::start(relay.addr, &to, &["--pool", "2"]);
    assert_eq!(relay.await_metric("tryst_parked", 2), 2);
    let mut s = reach_at(relay.addr, b"");
    s.write_all(b"anyone there?").unwrap();
    let mut rest = Vec::new();
    // A clean close (EOF), not a reset and not a hang.
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    assert_eq!(
        await_at_least(1, || agent.metric("tryst_agent_local_failures_total")),
        1
    );
    assert!(
        agent.await_log("local target unavailable"),
        "{}",
        agent.log()
    );
    // The service comes up: the same agent serves it.
    let listener = TcpListener::bind(&to).unwrap();
    std::thread::spawn(move || serve_echo(listener));
    assert_eq!(relay.await_metric("tryst_parked", 2), 2);
    echo_once(relay.addr, b"now it is");
    assert_eq!(agent.metric("tryst_agent_reconnects_total"), 0);
}

#[test]
fn the_agent_reconnects_after_the_relay_is_killed_idle_and_mid_tunnel() {
    let mut relay = Relay::start(&[]);
    let addr = relay.addr;
    let listen = addr.to_string();
    let echo = echo_server();
    let agent = Agent::start(addr, &echo.to_string(), &["--pool", "2"]);
    assert_eq!(relay.await_metric("tryst_parked", 2), 2);
    for round in 0..2 {
        let tunnel = (round == 1).then(|| {
            let mut s = reach_at(addr, b"");
            s.write_all(b"mid").unwrap();
            assert_eq!(read_exact_n(&mut s, 3), b"mid");
            s
        });
        let reconnects = agent.metric("tryst_agent_reconnects_total");
        // kill -9 the relay (its workers die with it) and start a new one on the port.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(relay.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        relay.wait_exit();
        if let Some(mut s) = tunnel {
            // The open tunnel ends (EOF or reset), it does not hang.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        }
        assert!(
            agent.await_metric_at_least("tryst_agent_reconnects_total", reconnects + 1)
                > reconnects
        );
        relay = start_on(&listen);
        assert_eq!(relay.addr, addr);
        assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
        echo_once(addr, format!("after restart {round}").as_bytes());
    }
}

/// A relay on a given address; the old one's workers may still be dying, so a bind
/// failure is retried (bounded).
fn start_on(listen: &str) -> Relay {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::panic::catch_unwind(|| Relay::start(&["--listen", listen])) {
            Ok(r) => return r,
            Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn sigterm_stops_parking_drains_open_tunnels_and_exits_zero() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let mut agent = Agent::start(relay.addr, &echo.to_string(), &["--drain-timeout", "10s"]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4);
    let mut s = reach_at(relay.addr, b"");
    s.write_all(b"before").unwrap();
    assert_eq!(read_exact_n(&mut s, 6), b"before");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Parked connections go; the open tunnel keeps working until it ends.
    assert_eq!(relay.await_metric("tryst_parked", 0), 0);
    s.write_all(b"during").unwrap();
    assert_eq!(read_exact_n(&mut s, 6), b"during");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut s), "");
    assert!(agent.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn connect_exit_codes_name_the_failure_class() {
    let relay = Relay::start(&["--client-wait", "0s"]);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (addr, code, text) in [
        (relay.addr, 3, "relay error code: not_parked"),
        (closed, 5, "unreachable"),
    ] {
        let out = tryst()
            .args(["connect", "--relay", &addr.to_string(), "--id", ID])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(text), "{stderr}");
    }
    let out = tryst()
        .args(["connect", "--relay", &relay.addr.to_string()])
        .args(["--id", "{not-a-uuid}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Waits for `child` to exit, at most `within`, and collects its output; panics (with
/// the child killed) if it does not exit.
fn output_within(child: Child, within: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("pid {pid} did not exit within {within:?}");
        }
    }
}

/// Exit 4, "refused", with the relay's code in the message. A real relay refuses a
/// well-formed reach with a code other than `not_parked`/`unknown_tag` only when it
/// cannot take it (the reach carries no proof, and `connect` checks the id's syntax
/// itself): here a SIGTERM drain, held open by a tunnel, answers `503 shutting_down`
/// both to a reach already waiting when the drain starts and to a fresh one during it.
#[test]
fn connect_exits_4_naming_the_relay_code_when_a_draining_relay_refuses_the_reach() {
    let mut relay = Relay::start(&[
        "--workers",
        "1",
        "--drain-timeout",
        "30s",
        "--client-wait",
        "30s",
    ]);
    let addr = relay.addr.to_string();
    // The tunnel that keeps the relay draining until the test ends it.
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    // A reach of an id nobody parked: it waits (up to the 30 s client wait).
    let nobody = "11111111-2222-4333-8444-555555555555";
    let waiting = tryst()
        .args(["connect", "--relay", &addr, "--id", nobody])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(relay.await_metric("tryst_waiting", 1), 1);
    relay.signal(nix::sys::signal::Signal::SIGTERM);
    let refused = |out: std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        let line = format!(
            "tryst connect: {addr} refused the reach: 503 shutting_down (relay shutting down) \
             (relay error code: shutting_down)\n"
        );
        assert!(stderr.contains(&line), "{stderr}");
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    };
    // Far below the 30 s client wait: the drain refuses the waiting reach at once.
    refused(output_within(waiting, Duration::from_secs(20)));
    // A fresh reach while the tunnel still holds the drain open.
    let fresh = tryst()
        .args(["connect", "--relay", &addr, "--id", ID])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    refused(output_within(fresh, Duration::from_secs(20)));
    // The tunnel was never disturbed; its end ends the relay.
    client.write_all(b"still here").unwrap();
    assert_eq!(read_exact_n(&mut server, 10), b"still here");
    client.shutdown(Shutdown::Write).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), "");
    assert!(relay.wait_exit().success());
}

#[test]
fn connect_joins_stdin_and_stdout_to_the_hidden_server() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let _agent = Agent::start(relay.addr, &echo.to_string(), &[]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4);
    let input = pattern(1 << 20, 4);
    let mut child = tryst()
        .args(["connect", "--relay", &relay.addr.to_string(), "--id", ID])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == input, "stdout differs from stdin");
}

#[test]
fn connect_joins_files_on_stdin_and_stdout_by_copying() {
    // Pipes on both (the test above) are spliced; anything else is copied.
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let _agent = Agent::start(relay.addr, &echo.to_string(), &[]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4);
    let dir = tempfile::tempdir().unwrap();
    let input = pattern(1 << 20, 5);
    std::fs::write(dir.path().join("in"), &input).unwrap();
    let status = tryst()
        .args(["connect", "--relay", &relay.addr.to_string(), "--id", ID])
        .stdin(std::fs::File::open(dir.path().join("in")).unwrap())
        .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read(dir.path().join("out")).unwrap() == input,
        "the output differs"
    );
}

/// A server that greets every connection with `banner` at once (as sshd does), then
/// echoes until EOF.
fn banner_echo_server(banner: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                s.write_all(banner).unwrap();
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// `tryst connect --fdpass` with `args`, its stdout one end of a unix socket pair: the
/// descriptor it passed (if any), its exit status and its stderr.
fn connect_fdpass(args: &[&str]) -> (Option<std::os::fd::OwnedFd>, ExitStatus, String) {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    use std::mem::MaybeUninit;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = tryst()
        .args(["connect", "--fdpass"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, Duration::from_secs(20));
    // The child has exited: whatever it sent is queued, and nothing more will come.
    ours.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut passed = None;
    if let Ok(msg) = recvmsg(
        &ours,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    ) {
        // 0: the child closed its end without sending anything.
        assert!(msg.bytes <= 1, "one data byte with the descriptor");
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message {
                passed = fds.next();
            }
        }
    }
    (
        passed,
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_service_that_speaks_first_greets_a_client_that_waits_for_it() {
    // SMTP, MySQL, VNC and the like: the client sends nothing until greeted. The agent
    // parks asking for a pairing notice, so it opens the service as soon as a client is
    // paired, not when the client's first bytes arrive.
    let relay = Relay::start(&[]);
    let service = banner_echo_server(b"220 ready\r\n");
    let agent = Agent::start(relay.addr, &service.to_string(), &[]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4, "{}", agent.log());
    assert!(agent.await_log("notice=true"), "{}", agent.log());
    for round in 0..3u8 {
        let mut client = reach_at(relay.addr, b"");
        assert_eq!(
            read_exact_n(&mut client, 11),
            b"220 ready\r\n",
            "round {round}"
        );
        client.write_all(b"QUIT\r\n").unwrap();
        assert_eq!(read_exact_n(&mut client, 6), b"QUIT\r\n");
    }
    assert_eq!(
        agent.await_metric_at_least("tryst_agent_paired_total", 3),
        3
    );
}

#[test]
fn connect_fdpass_hands_the_relay_socket_over_stdout_and_exits() {
    let relay = Relay::start(&[]);
    let banner: &[u8] = b"SSH-2.0-greeting\r\n";
    let service = banner_echo_server(b"SSH-2.0-greeting\r\n");
    let agent = Agent::start(relay.addr, &service.to_string(), &[]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4, "{}", agent.log());
    for round in 0..5u8 {
        let (fd, status, stderr) =
            connect_fdpass(&["--relay", &relay.addr.to_string(), "--id", ID]);
        assert!(status.success(), "{stderr}");
        // The relay connection itself, blocking, with nothing of the tunnel read from it:
        // the expose agent opens the service on the client's first bytes, and the
        // service greets before it echoes.
        let socket = TcpStream::from(fd.expect("a descriptor on stdout"));
        assert_eq!(socket.peer_addr().unwrap(), relay.addr);
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let data = pattern(256 << 10, round);
        let back = echo_round_trip(socket, &data);
        assert_eq!(&back[..banner.len()], banner, "round {round}");
        assert!(
            back[banner.len()..] == data,
            "round {round}: the echo differs"
        );
    }
    assert_eq!(agent.metric("tryst_agent_paired_total"), 5);
}

#[test]
fn connect_fdpass_refuses_a_stdout_that_is_not_a_unix_socket_before_reaching() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let agent = Agent::start(relay.addr, &echo.to_string(), &[]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4);
    let child = tryst()
        .args([
            "connect",
            "--fdpass",
            "--relay",
            &relay.addr.to_string(),
            "--id",
            ID,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--fdpass: stdout is not a socket; it is for ssh -o ProxyUseFdpass=yes"),
        "{stderr}"
    );
    // No parked connection was used up.
    assert_eq!(agent.metric("tryst_agent_paired_total"), 0);
    // A refused reach: the relay's code and exit 3, and nothing on the socket.
    let (fd, status, stderr) = connect_fdpass(&[
        "--relay",
        &relay.addr.to_string(),
        "--id",
        "00000000-0000-4000-8000-000000000000",
    ]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("relay error code: not_parked"), "{stderr}");
    assert!(fd.is_none());
    // --fdpass with --listen or --tls is a usage error.
    let pin = format!("sha256:{}", "00".repeat(32));
    for extra in [
        &["--listen", "127.0.0.1:0"][..],
        &["--tls", "--pin", &pin][..],
    ] {
        let out = tryst()
            .args(["connect", "--fdpass", "--relay", "127.0.0.1:9", "--id", ID])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
            "{extra:?}"
        );
    }
}

/// A process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tryst connect --listen 127.0.0.1:0` plus `extra`; returns it, its address and the
/// file its log goes to.
fn connect_listen(
    relay: SocketAddr,
    extra: &[&str],
) -> (Killed, SocketAddr, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = tryst()
        .args(["connect", "--relay", &relay.to_string(), "--id", ID])
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("tryst: listening on ")
        .and_then(|a| a.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("first line {line:?}"));
    (Killed(child), addr, log)
}

/// Polls `read` (deadline 20 s) until it contains `needle`.
fn await_text(needle: &str, read: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `read` (deadline 20 s) until `needle` occurs `count` times.
fn await_count(needle: &str, count: usize, read: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read();
        if text.matches(needle).count() >= count || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connect_listen_carries_bytes_and_an_early_half_close_sent_while_the_reach_waits() {
    // `connect --listen` sends a client's bytes right after the reach head, before the
    // relay's 200; the client's EOF must still wait for the pairing.
    let relay = Relay::start(&["--client-wait", "10s"]);
    let (_connect, local, log) = connect_listen(relay.addr, &[]);
    let mut client = TcpStream::connect(local).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = pattern(100_000, 3);
    client.write_all(&request).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(relay.await_metric("tryst_waiting", 1), 1);
    // Only now a hidden server parks.
    let echo = echo_server();
    let agent = Agent::start(relay.addr, &echo.to_string(), &["--pool", "1"]);
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    assert!(
        back == request,
        "echo differs ({} of {} bytes)\nagent: {}\nconnect: {}",
        back.len(),
        request.len(),
        agent.log(),
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
    let text = await_text("tunnel closed", || {
        std::fs::read_to_string(log.path()).unwrap_or_default()
    });
    assert!(text.contains("up=100000 down=100000"), "{text}");
}

#[test]
fn connect_listen_closes_a_refused_connection_without_passing_the_refusal_on() {
    let relay = Relay::start(&["--client-wait", "0s"]);
    let (_connect, local, log) = connect_listen(relay.addr, &[]);
    let mut client = TcpStream::connect(local).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    // A FIN, or a reset if the agent closed before reading all the client sent: never a
    // byte of the refusal.
    let mut got = Vec::new();
    if let Err(e) = client.read_to_end(&mut got) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(
        got.is_empty(),
        "the client got {:?}",
        String::from_utf8_lossy(&got)
    );
    let text = await_text("not_parked", || {
        std::fs::read_to_string(log.path()).unwrap_or_default()
    });
    assert!(text.contains("reach failed"), "{text}");
}

/// Accepts one connection on `listener` within `within`, or `None`.
fn accept_within(listener: &TcpListener, within: Duration) -> Option<TcpStream> {
    let listener = listener.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(s, _)| s));
    });
    rx.recv_timeout(within).ok().map(Result::unwrap)
}

/// Reads from `s` until `bytes` bytes past the end of a request head arrived.
fn read_head_and(s: &mut TcpStream, bytes: usize) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= end + 4 + bytes
        {
            let rest = got.split_off(end + 4);
            return (String::from_utf8(got).unwrap(), rest);
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn connect_listen_reaches_on_a_spare_opened_before_the_client_arrived() {
    // A stand-in relay: the connection it accepts while no local client exists yet is
    // the spare; the client's reach head and first bytes must arrive on it, and a
    // replacement follows.
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_connect, local, log) = connect_listen(relay.local_addr().unwrap(), &["--spares", "1"]);
    let read_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let mut spare = accept_within(&relay, Duration::from_secs(20))
        .expect("no spare connection before any client");
    let text = await_text("spare relay connections ready", read_log);
    assert!(text.contains("spare relay connections ready"), "{text}");
    spare
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut client = TcpStream::connect(local).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(b"hello").unwrap();
    let (head, early) = read_head_and(&mut spare, 5);
    assert_eq!(head, format!("CONNECT uuid:{ID} HTTP/1.1\r\n\r\n"));
    assert_eq!(early, b"hello");
    spare.write_all(b"HTTP/1.1 200 OK\r\n\r\nworld").unwrap();
    assert_eq!(read_exact_n(&mut client, 5), b"world");
    // The used spare is replaced while its tunnel is still open.
    let replacement = accept_within(&relay, Duration::from_secs(20));
    assert!(replacement.is_some(), "no replacement spare");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    spare.read_to_end(&mut rest).unwrap();
    spare.shutdown(Shutdown::Write).unwrap();
    let text = await_text("tunnel closed", read_log);
    assert!(text.contains("up=5 down=5 spare=true"), "{text}");
}

#[test]
fn connect_listen_with_no_spares_opens_a_connection_per_client() {
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_connect, local, log) = connect_listen(relay.local_addr().unwrap(), &["--spares", "0"]);
    let mut client = TcpStream::connect(local).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(b"ping").unwrap();
    let mut reach = accept_within(&relay, Duration::from_secs(20)).expect("a reach");
    reach
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_head_and(&mut reach, 4).1, b"ping");
    reach.write_all(b"HTTP/1.1 200 OK\r\n\r\npong").unwrap();
    reach.shutdown(Shutdown::Write).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"pong");
    let text = await_text("tunnel closed", || {
        std::fs::read_to_string(log.path()).unwrap_or_default()
    });
    assert!(text.contains("spare=false"), "{text}");
    assert!(!text.contains("spare relay connections"), "{text}");
}

#[test]
fn connect_listen_keeps_tls_spares_ready_and_reaches_on_them() {
    let relay = Relay::start(&["--tls-listen", "127.0.0.1:0", "--client-wait", "10s"]);
    let tls = relay.tls_addr.unwrap();
    let pin = format!("sha256:{}", relay.tls_fingerprint.as_deref().unwrap());
    let echo = echo_server();
    let agent = Agent::start(
        tls,
        &echo.to_string(),
        &["--pool", "2", "--tls", "--pin", &pin],
    );
    assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
    // Spares that do not age during the test: the session tickets a TLS 1.3 server
    // sends after the handshake must not make a spare look used.
    let (_connect, local, log) = connect_listen(
        tls,
        &[
            "--tls",
            "--pin",
            &pin,
            "--spares",
            "2",
            "--spare-max-age",
            "1h",
        ],
    );
    let read_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let text = await_text("spare relay connections ready", read_log);
    assert!(text.contains("spare relay connections ready"), "{text}");
    // Both spares are at the relay: the agent's two parked sessions and two more.
    assert_eq!(relay.await_metric("tryst_tls_sessions", 4), 4);
    // Two reaches, one after the other, each on one of the two ready spares.
    for i in 0..2u8 {
        let s = TcpStream::connect(local).unwrap();
        let data = pattern(64 << 10, i);
        assert!(echo_round_trip(s, &data) == data, "echo {i} differs");
    }
    let text = await_count("tunnel closed", 2, read_log);
    assert_eq!(text.matches("tunnel closed").count(), 2, "{text}");
    assert_eq!(text.matches("spare=true").count(), 4, "{text}");
    assert!(!text.contains("spare=false"), "{text}");
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn python_http_server_behind_expose_serves_fifty_concurrent_curls_byte_identically() {
    let relay = Relay::start(&["--client-wait", "10s"]);
    let site = tempfile::tempdir().unwrap();
    let body = pattern(256 * 1024, 7);
    std::fs::write(site.path().join("file.bin"), &body).unwrap();
    let mut http = Killed(
        Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(site.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
    );
    let mut line = String::new();
    BufReader::new(http.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 45678 (http://127.0.0.1:45678/) ..."
    let port: u16 = line
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("http.server said {line:?}"));
    let agent = Agent::start(relay.addr, &format!("127.0.0.1:{port}"), &["--pool", "8"]);
    let (_connect, local, connect_log) = connect_listen(relay.addr, &[]);
    let logs = || {
        format!(
            "agent: {}\nconnect: {}",
            agent.log(),
            std::fs::read_to_string(connect_log.path()).unwrap_or_default()
        )
    };
    let url = format!("http://{local}/file.bin");
    let fetch = |url: &str| {
        Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "60", url])
            .output()
            .expect("curl")
    };
    let first = fetch(&url);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(first.stdout == body, "the file differs");
    let curls: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || fetch(&url))
        })
        .collect();
    let want = sha256(&body);
    for c in curls {
        let out = c.join().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
        assert_eq!(sha256(&out.stdout), want);
    }
    assert_eq!(agent.metric("tryst_agent_paired_total"), 51);
    assert_eq!(agent.metric("tryst_agent_local_failures_total"), 0);
}

/// A throwaway sshd on 127.0.0.1 (ephemeral port), accepting one key for the current
/// user, killed on drop.
struct Sshd {
    _child: Killed,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (key, kind) in [("host_key", "ed25519"), ("user_key", "ed25519")] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen (openssh-client)");
            assert!(ok.success());
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        // The kernel picks the port; sshd binds it right after (nothing else here
        // binds ephemeral ports explicitly).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd (openssh-server)");
        // Ready when it accepts a TCP connection (bounded).
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            _child: Killed(child),
            port,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn openssh_through_expose_and_connect_runs_a_command_and_copies_ten_mebibytes_each_way() {
    let relay = Relay::start(&["--client-wait", "10s"]);
    let sshd = Sshd::start();
    let agent = Agent::start(relay.addr, &format!("127.0.0.1:{}", sshd.port), &[]);
    assert_eq!(relay.await_metric("tryst_parked", 4), 4, "{}", agent.log());
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let ssh_with = |fdpass: bool, remote: &str| {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-i"])
            .arg(sshd.path("user_key"))
            .args([
                "-o",
                if fdpass {
                    "ProxyUseFdpass=yes"
                } else {
                    "ProxyUseFdpass=no"
                },
            ])
            .arg("-o")
            .arg(format!(
                "ProxyCommand={TRYST} connect --relay {} --id %h{}",
                relay.addr,
                if fdpass { " --fdpass" } else { "" }
            ))
            .args(["-l", &user, ID, remote]);
        cmd
    };
    let ssh = |remote: &str| ssh_with(false, remote);
    // A remote command.
    let out = ssh("echo hello from $(hostname)").output().unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(sshd.path("sshd.log")).unwrap_or_default()
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello from "));
    // 10 MiB up, checksummed remotely.
    let up = pattern(10 << 20, 1);
    let up_path = sshd.path("up.bin");
    let mut child = ssh(&format!(
        "cat > {} && sha256sum {}",
        up_path.display(),
        up_path.display()
    ))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = up.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let remote_sum = String::from_utf8_lossy(&out.stdout);
    assert!(remote_sum.starts_with(&sha256(&up)), "{remote_sum}");
    // 10 MiB down.
    let down = pattern(10 << 20, 2);
    let down_path = sshd.path("down.bin");
    std::fs::write(&down_path, &down).unwrap();
    let out = ssh(&format!("cat {}", down_path.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sha256(&out.stdout), sha256(&down));
    assert!(agent.metric("tryst_agent_bytes_to_local_total") >= 10 << 20);
    assert!(agent.metric("tryst_agent_bytes_from_local_total") >= 10 << 20);
    // ProxyUseFdpass: `tryst connect --fdpass` hands ssh the relay connection and exits,
    // so ssh talks to the relay itself. A command, then 10 MiB down.
    let out = ssh_with(true, "echo hello over a passed descriptor")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello over a passed descriptor\n");
    let out = ssh_with(true, &format!("cat {}", down_path.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sha256(&out.stdout), sha256(&down));
}

#[test]
fn tls_with_a_pinned_certificate_for_expose_and_connect_and_a_wrong_pin_is_refused() {
    let relay = Relay::start(&["--tls-listen", "127.0.0.1:0", "--client-wait", "10s"]);
    let tls = relay.tls_addr.unwrap();
    let pin = format!("sha256:{}", relay.tls_fingerprint.as_deref().unwrap());
    let echo = echo_server();
    let agent = Agent::start(
        tls,
        &echo.to_string(),
        &["--pool", "2", "--tls", "--pin", &pin],
    );
    assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
    let (_connect, local, _log) = connect_listen(tls, &["--tls", "--pin", &pin]);
    let s = TcpStream::connect(local).unwrap();
    let data = pattern(1 << 20, 5);
    assert!(echo_round_trip(s, &data) == data, "echo over TLS differs");
    // A different pin: the handshake fails, reported as unreachable (5).
    let wrong = format!("sha256:{}", "00".repeat(32));
    let out = tryst()
        .args(["connect", "--relay", &tls.to_string(), "--id", ID])
        .args(["--tls", "--pin", &wrong])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the relay's certificate is {}, not the pinned {wrong} (--pin)",
            tryst_client::tls::Pin::parse(&pin).unwrap()
        )),
        "{stderr}"
    );
}

#[test]
fn a_config_file_exposes_several_services_in_one_process() {
    let relay = Relay::start(&[]);
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.secret"), b64url(&SECRET)).unwrap();
    let config = format!(
        "relay = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\nbackoff_max = \"200ms\"\n\
         [[service]]\nname = \"echo-a\"\nid = \"{ID}\"\nsecret_file = \"a.secret\"\nto = \"{echo}\"\npool = 2\n\
         [[service]]\nname = \"echo-b\"\nid = \"{ID}\"\nsecret_file = \"a.secret\"\nto = \"{echo}\"\npool = 3\n",
        relay.addr
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = tryst();
    cmd.arg("expose").arg("--config").arg(&path);
    let agent = Agent::spawn(cmd, tempfile::tempdir().unwrap());
    assert_eq!(relay.await_metric("tryst_parked", 5), 5, "{}", agent.log());
    echo_once(relay.addr, b"either service");
    // An unknown key is refused with its name.
    std::fs::write(&path, "relay = \"r:1\"\ncolour = \"blue\"\n").unwrap();
    let out = tryst()
        .arg("expose")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}

#[test]
fn a_node_rendezvous_hidden_server_parks_over_tls_with_a_totp_code() {
    // A step so long that no test straddles a boundary.
    const STEP: &str = "1000000000";
    let key = tryst_engine::totp::encode_base32(b"PKMLogv7SFLJubPIvgiRB7q6l7UmxmAmt6NNGWCy");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("node-secrets.toml");
    std::fs::write(
        &secrets,
        format!("[totp]\n\"{ID}\" = {{ base32 = \"{key}\", step = {STEP} }}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let relay = Relay::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
        "--client-wait",
        "10s",
    ]);
    let tls = relay.tls_addr.unwrap().to_string();
    let pin = format!("sha256:{}", relay.tls_fingerprint.as_deref().unwrap());
    let echo = echo_server();
    let node_agent = |key_text: &str| {
        let agent_dir = tempfile::tempdir().unwrap();
        let key_file = agent_dir.path().join("key.base32");
        std::fs::write(&key_file, format!("{key_text}\n")).unwrap();
        let mut cmd = tryst();
        cmd.args(["expose", "--relay", &tls, "--id", ID, "--family", "node"])
            .arg("--totp-secret-file")
            .arg(&key_file)
            .args(["--totp-step", STEP, "--tls", "--pin", &pin])
            .args(["--to", &echo.to_string(), "--backoff-max", "200ms"]);
        (cmd, agent_dir)
    };
    let (mut cmd, agent_dir) = node_agent(&key);
    cmd.args(["--metrics-listen", "127.0.0.1:0"]);
    let agent = Agent::spawn(cmd, agent_dir);
    assert_eq!(relay.await_metric("tryst_parked", 1), 1, "{}", agent.log());
    // The relay counts a park when it sends the 200; the agent when it has read it.
    assert_eq!(agent.await_metric_at_least("tryst_agent_parked", 1), 1);
    let (_connect, local, _log) =
        connect_listen(relay.tls_addr.unwrap(), &["--tls", "--pin", &pin]);
    for round in 0..2 {
        let mut s = TcpStream::connect(local).unwrap();
        let msg = format!("node round {round}");
        s.write_all(msg.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_close(&mut s), msg);
    }
    assert_eq!(agent.metric("tryst_agent_paired_total"), 2);
    // Another key: the relay's 401 is permanent.
    let (mut cmd, _dir) = node_agent(&tryst_engine::totp::encode_base32(&[1; 20]));
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("invalid request"), "{stderr}");
    // node-rendezvous refuses without a code: the message says so instead of an empty one.
    assert!(
        stderr.contains("not retrying (relay error code: none (HTTP 401))"),
        "{stderr}"
    );
}

/// A `tryst expose --family tag` publisher of an authenticated tag
/// (`printer@<identity key>`), its tag and identity key in files of its own.
struct TagPublisher;

impl TagPublisher {
    /// The identity key whose public half the tag names.
    fn identity() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[42; 32])
    }

    /// Starts the agent with a pool of `pool` towards `to`, waits until all are parked;
    /// returns it, the tag and the tag file's path.
    fn start(relay: &Relay, to: SocketAddr, pool: u64) -> (Agent, String, String) {
        Self::start_at(relay, relay.addr, &[], to, pool)
    }

    /// [`TagPublisher::start`] parking at `at` (one of `relay`'s listeners) with `extra`
    /// flags (e.g. `--tls --pin ...`).
    fn start_at(
        relay: &Relay,
        at: SocketAddr,
        extra: &[&str],
        to: SocketAddr,
        pool: u64,
    ) -> (Agent, String, String) {
        let tag = format!(
            "printer@{}",
            hex::encode(Self::identity().verifying_key().as_bytes())
        );
        let dir = tempfile::tempdir().unwrap();
        let tag_file = dir.path().join("tag.txt");
        std::fs::write(&tag_file, format!("{tag}\n")).unwrap();
        std::fs::write(dir.path().join("id.hex"), hex::encode([42u8; 32])).unwrap();
        let mut cmd = tryst();
        cmd.args(["expose", "--relay", &at.to_string()])
            .args(extra)
            .args(["--family", "tag", "--tag-file"])
            .arg(&tag_file)
            .arg("--identity-key-file")
            .arg(dir.path().join("id.hex"))
            .args(["--to", &to.to_string(), "--pool", &pool.to_string()])
            .args(["--metrics-listen", "127.0.0.1:0", "--backoff-max", "200ms"]);
        let tag_path = tag_file.to_str().unwrap().to_owned();
        let agent = Agent::spawn(cmd, dir);
        assert_eq!(
            relay.await_metric("tryst_parked", pool),
            pool,
            "{}",
            agent.log()
        );
        (agent, tag, tag_path)
    }
}

#[test]
fn a_tag_publisher_serves_responders_and_answers_their_challenge() {
    let relay = Relay::start(&["--client-wait", "10s"]);
    let echo = echo_server();
    let (agent, tag, _tag_file) = TagPublisher::start(&relay, echo, 2);
    let hashed = tryst_client::tag::hashed_tag("", &tag);
    // A responder without a challenge: its bytes reach the service and come back.
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("CONNECT {} HTTP/1.1\r\n\r\nplain", hashed.target()).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut s), "plain");
    // A responder with a challenge gets the identity key's answer first, then the tunnel.
    let challenge = [7u8; 32];
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!(
            "CONNECT {} HTTP/1.1\r\nTag-Challenge: {}\r\n\r\n",
            hashed.target(),
            hex::encode(challenge)
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    let answer = read_exact_n(&mut s, tryst_client::tag::ANSWER_LEN);
    let key = tryst_relay::tag::wire::tag_identity_key(&tag).unwrap();
    assert!(tryst_relay::tag::wire::verify_answer(
        &key, &hashed, &challenge, &answer
    ));
    s.write_all(b"challenged").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut s), "challenged");
    assert_eq!(agent.metric("tryst_agent_paired_total"), 2);
}

/// The text of a Hive device key file (`tryst expose --hive-key-file`) for device
/// `[n; 16]` in workspace `[0x7e; 16]` with seed `[n; 32]`.
fn hive_key_file(n: u8) -> String {
    let uuid = |b: u8| tryst_relay::hive::record::format_uuid(&[b; 16]);
    format!(
        "workspace = \"{}\"\ndevice = \"{}\"\naccount = \"{}\"\nsigning_key = \"{}\"\nttl = 90\n",
        uuid(0x7e),
        uuid(n),
        uuid(0x11),
        hex::encode([n; 32])
    )
}

/// `WS/DEVICE` of [`hive_key_file`]'s device `n`.
fn hive_device(n: u8) -> String {
    let uuid = |b: u8| tryst_relay::hive::record::format_uuid(&[b; 16]);
    format!("{}/{}", uuid(0x7e), uuid(n))
}

/// `tryst connect` with `args`, `input` on stdin; returns its status, stdout and stderr.
fn connect_with(args: &[&str], input: Vec<u8>) -> (Option<i32>, Vec<u8>, String) {
    let mut child = tryst()
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hive_device_behind_expose_is_reached_natively_and_through_connect() {
    let relay = Relay::start(&["--client-wait", "10s"]);
    let echo = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    std::fs::write(&key, hive_key_file(5)).unwrap();
    let mut cmd = tryst();
    cmd.args(["expose", "--relay", &relay.addr.to_string()])
        .args(["--family", "hive", "--hive-key-file"])
        .arg(&key)
        .args(["--to", &echo.to_string(), "--pool", "2"])
        .args(["--metrics-listen", "127.0.0.1:0", "--backoff-max", "200ms"]);
    let agent = Agent::spawn(cmd, dir);
    assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
    // A native Hive reach (as a Hive client does it): 1 MiB both ways.
    let target = format!("hive:{}", hive_device(5));
    let big = pattern(1 << 20, 3);
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    assert!(echo_round_trip(s, &big) == big, "echoed bytes differ");
    // `tryst connect --hive` joins stdin/stdout to the device's service.
    assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
    let input = pattern(256 << 10, 8);
    let (code, out, stderr) = connect_with(
        &[
            "--relay",
            &relay.addr.to_string(),
            "--hive",
            &hive_device(5),
        ],
        input.clone(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out == input, "stdout differs from stdin");
    assert_eq!(agent.metric("tryst_agent_paired_total"), 2);
    let log = agent.log();
    assert!(log.contains("re-signed every 45s"), "{log}");
    assert!(
        !log.contains(&hex::encode([5u8; 32])),
        "the key was logged: {log}"
    );
    // The same device from a config file's [[service]] table. The killed agent's
    // parked connections must be gone first, or the reach below may pair with one the
    // relay has not yet seen closed (an empty tunnel, exit 0).
    drop(agent);
    assert_eq!(relay.await_metric("tryst_parked", 0), 0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("device.key"), hive_key_file(5)).unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "relay = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n[[service]]\nfamily = \"hive\"\n\
             hive_key_file = \"device.key\"\nto = \"{echo}\"\npool = 1\n",
            relay.addr
        ),
    )
    .unwrap();
    let mut cmd = tryst();
    cmd.arg("expose").arg("--config").arg(&path);
    let agent = Agent::spawn(cmd, dir);
    let (code, out, stderr) = connect_with(
        &[
            "--relay",
            &relay.addr.to_string(),
            "--hive",
            &hive_device(5),
        ],
        b"from the config".to_vec(),
    );
    assert_eq!(code, Some(0), "{stderr}; {}", agent.log());
    assert_eq!(out, b"from the config");
}

#[test]
fn bad_hive_key_files_and_targets_are_refused_before_connecting() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("device.key");
    let seed = hex::encode([5u8; 32]);
    let bad_seed = format!("{}zz", &seed[..62]);
    for (text, want) in [
        (
            hive_key_file(5).replace(&seed, &bad_seed),
            "signing_key is not 64 hex digits",
        ),
        // Quoted words from the file other than its field names are never repeated (a
        // seed pasted under a wrong name must not reach a log): the position says where.
        (
            hive_key_file(5) + "colour = 1\n",
            "unknown field `…`, expected one of `workspace`",
        ),
    ] {
        std::fs::write(&key, text).unwrap();
        let out = tryst()
            .args(["expose", "--relay", &closed, "--to", "127.0.0.1:9"])
            .args(["--family", "hive", "--hive-key-file"])
            .arg(&key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains(&bad_seed[..60]), "{stderr}");
    }
    for (args, want) in [
        (vec!["--hive", "not/a-device"], "--hive: `not/a-device`"),
        (
            vec!["--id", ID, "--hive", &hive_device(5)],
            "cannot be used with",
        ),
        (vec!["--tag", ""], "the tag is empty"),
    ] {
        let (code, _, stderr) = connect_with(&[&["--relay", &closed][..], &args].concat(), vec![]);
        assert!(matches!(code, Some(1 | 2)), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // Nobody parked for a device: exit 3 with the relay's code.
    let relay = Relay::start(&["--client-wait", "0s"]);
    let (code, _, stderr) = connect_with(
        &[
            "--relay",
            &relay.addr.to_string(),
            "--hive",
            &hive_device(6),
        ],
        vec![],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("relay error code: not_parked"), "{stderr}");
}

#[test]
fn tryst_connect_reaches_a_tag_publisher_and_checks_its_challenge_answer() {
    let relay = Relay::start(&["--client-wait", "10s"]);
    let echo = echo_server();
    let (agent, tag, tag_path) = TagPublisher::start(&relay, echo, 1);
    // Authenticated tag: connect challenges, the agent answers, then the bytes flow.
    let input = pattern(128 << 10, 1);
    let (code, out, stderr) = connect_with(
        &["--relay", &relay.addr.to_string(), "--tag-file", &tag_path],
        input.clone(),
    );
    assert_eq!(code, Some(0), "{stderr}; {}", agent.log());
    assert!(out == input, "stdout differs from stdin");
    drop(agent);
    // A publisher of the same tag without its identity key: the answer does not verify,
    // connect exits 6 and passes nothing on.
    let hashed = tryst_client::tag::hashed_tag("", &tag);
    let mut park = TcpStream::connect(relay.addr).unwrap();
    park.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = tryst_client::tag::park_request(
        &hashed,
        &hashed.derived_signing_key(),
        tryst_client::heads::now_unix(),
        &[9; 16],
        &tryst_client::tag::CreateOptions::default(),
    );
    park.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut park, OK.len()), OK);
    let impostor = std::thread::spawn(move || {
        // The hello frame carries the 32-byte challenge: magic 8, version, length, bytes.
        let hello = read_exact_n(&mut park, 10 + 32);
        assert_eq!(&hello[..8], tryst_client::tag::HELLO_MAGIC);
        let mut forged = tryst_client::tag::ANSWER_MAGIC.to_vec();
        forged.extend([0u8; 64]);
        forged.extend(b"not for the client");
        let _ = park.write_all(&forged);
        let _ = park.shutdown(Shutdown::Write);
        park
    });
    let (code, out, stderr) =
        connect_with(&["--relay", &relay.addr.to_string(), "--tag", &tag], vec![]);
    assert_eq!(code, Some(6), "{stderr}");
    assert!(
        stderr.contains("not signed by the key in the tag"),
        "{stderr}"
    );
    assert!(out.is_empty(), "{out:?}");
    drop(impostor.join().unwrap());
    // No publisher of a tag (`404 unknown_tag`): exit 3, as for an id nobody parked.
    let relay = Relay::start(&["--client-wait", "0s"]);
    let (code, _, stderr) = connect_with(
        &[
            "--relay",
            &relay.addr.to_string(),
            "--tag",
            "no-such-tag",
            "--app-id",
            "app",
        ],
        vec![],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("relay error code: unknown_tag"), "{stderr}");
}

/// TLS to the relay for every family: a tag publisher (authenticated tag, so the
/// challenge and its answer cross TLS too) and a Hive device park with `tryst expose
/// --tls --pin` at the relay's TLS listener, and `tryst connect --tls --pin` reaches each
/// through that listener; the bytes come back unchanged.
#[test]
fn tag_and_hive_hidden_servers_park_over_tls_and_are_reached_through_the_tls_listener() {
    let relay = Relay::start(&["--tls-listen", "127.0.0.1:0", "--client-wait", "10s"]);
    let tls = relay.tls_addr.unwrap();
    let pin = format!("sha256:{}", relay.tls_fingerprint.as_deref().unwrap());
    let tls_flags = ["--tls", "--pin", pin.as_str()];
    let echo = echo_server();
    for (round, family) in ["tag", "hive"].into_iter().enumerate() {
        let (agent, reach) = match family {
            "tag" => {
                let (agent, _tag, tag_file) =
                    TagPublisher::start_at(&relay, tls, &tls_flags, echo, 2);
                (agent, vec!["--tag-file".to_owned(), tag_file])
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let key = dir.path().join("device.key");
                std::fs::write(&key, hive_key_file(7)).unwrap();
                let mut cmd = tryst();
                cmd.args(["expose", "--relay", &tls.to_string()])
                    .args(tls_flags)
                    .args(["--family", "hive", "--hive-key-file"])
                    .arg(&key)
                    .args(["--to", &echo.to_string(), "--pool", "2"])
                    .args(["--metrics-listen", "127.0.0.1:0", "--backoff-max", "200ms"]);
                let agent = Agent::spawn(cmd, dir);
                assert_eq!(relay.await_metric("tryst_parked", 2), 2, "{}", agent.log());
                (agent, vec!["--hive".to_owned(), hive_device(7)])
            }
        };
        // Both parked connections are TLS sessions (none went to the plain port).
        assert_eq!(
            relay.await_metric("tryst_tls_sessions", 2),
            2,
            "{family}: {}",
            agent.log()
        );
        let input = pattern(256 << 10, round as u8);
        let tls_addr = tls.to_string();
        let args: Vec<&str> = ["--relay", tls_addr.as_str()]
            .into_iter()
            .chain(tls_flags)
            .chain(reach.iter().map(String::as_str))
            .collect();
        let (code, out, stderr) = connect_with(&args, input.clone());
        assert_eq!(code, Some(0), "{family}: {stderr}; {}", agent.log());
        assert!(out == input, "{family}: stdout differs from stdin");
        assert_eq!(agent.metric("tryst_agent_paired_total"), 1, "{family}");
        assert_eq!(
            agent.await_metric_at_least("tryst_agent_bytes_to_local_total", 256 << 10),
            256 << 10,
            "{family}"
        );
        assert_eq!(
            agent.metric("tryst_agent_bytes_from_local_total"),
            256 << 10,
            "{family}"
        );
        assert_eq!(agent.metric("tryst_agent_reconnects_total"), 0, "{family}");
        // The next family starts from an empty relay.
        drop(agent);
        assert_eq!(relay.await_metric("tryst_parked", 0), 0, "{family}");
        assert_eq!(relay.await_metric("tryst_tls_sessions", 0), 0, "{family}");
    }
}

/// A stand-in relay that answers every request head with `503 overloaded`, byte for
/// byte what a real relay at its socket budget sends (`Rejection::Overloaded.response()`,
/// with `Retry-After: 1`), or with other bytes ([`Overloaded::answering`]), and records
/// when each answered attempt arrived and its head. (A real relay reaches its budget
/// only under a flood of thousands of connections and a lowered descriptor limit, see
/// hardening.rs; what the agent sees is the same.)
struct Overloaded {
    addr: SocketAddr,
    attempts: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Overloaded {
    fn start() -> Self {
        Self::answering(tryst_engine::reject::Rejection::Overloaded.response())
    }

    /// Answers every request head with `answer`.
    fn answering(answer: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts = std::sync::Arc::<std::sync::Mutex<Vec<_>>>::default();
        let stop = std::sync::Arc::<std::sync::atomic::AtomicBool>::default();
        let (record, stopped) = (attempts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                let at = Instant::now();
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                if !head.ends_with(b"\r\n\r\n") || s.write_all(&answer).is_err() {
                    continue;
                }
                let _ = s.shutdown(Shutdown::Write);
                // Until the agent closes: it has read the whole answer.
                let _ = s.read_to_end(&mut Vec::new());
                let head = String::from_utf8_lossy(&head).into_owned();
                record.lock().unwrap().push((at, head));
            }
        });
        Self {
            addr,
            attempts,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops answering and closes the listener (its port is free for a real relay);
    /// returns the answered attempts.
    fn stop(mut self) -> Vec<(Instant, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept; the thread then returns and drops the listener.
        let _ = TcpStream::connect(self.addr);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.attempts.lock().unwrap())
    }
}

/// A transient refusal end to end: `tryst expose` answered `503 overloaded` backs off
/// and retries (each wait at least half of `min(250 ms * 2^n, --backoff-max)`, and at
/// least the answer's `Retry-After: 1`, so a bounded number of attempts in any window,
/// never a tight loop), keeps running, and parks as soon as a relay can take it; a
/// client then reaches the service.
#[test]
fn expose_backs_off_on_503_and_parks_once_the_relay_can_take_it() {
    const ATTEMPTS: u64 = 6;
    let fake = Overloaded::start();
    let addr = fake.addr;
    let echo = echo_server();
    let mut agent =
        Agent::start_with_backoff(addr, &echo.to_string(), &SECRET, "1s", &["--pool", "1"]);
    // Each refusal is a reconnect in the agent's counters.
    let reconnects = agent.await_metric_at_least("tryst_agent_reconnects_total", ATTEMPTS);
    assert!(reconnects >= ATTEMPTS, "{reconnects}; {}", agent.log());
    assert_eq!(agent.metric("tryst_agent_parked"), 0);
    assert!(
        agent.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent stopped on a transient refusal: {}",
        agent.log()
    );
    let attempts = fake.stop();
    let n = attempts.len();
    assert!(n as u64 >= ATTEMPTS, "{n} answered attempts");
    // Every attempt is a park with a fresh proof.
    let heads: std::collections::HashSet<&str> =
        attempts.iter().map(|(_, head)| head.as_str()).collect();
    assert_eq!(heads.len(), n, "a proof was sent twice");
    for head in &heads {
        assert!(
            head.starts_with(&format!("CONNECT uuid:{ID} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(head.contains("Proxy-Authorization: Tryst "), "{head}");
    }
    // The n-th consecutive failure waits at least half of min(250 ms * 2^n, 1 s): the
    // gaps between attempts (seen from the relay's side, so they include the agent's
    // reading of each answer) are no shorter.
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .collect();
    for (k, gap) in gaps.iter().enumerate() {
        let least = (Duration::from_millis(125) * (1 << k.min(8))).min(Duration::from_millis(500));
        assert!(
            *gap >= least,
            "attempt {}: {gap:?} < {least:?}; gaps {gaps:?}",
            k + 1
        );
    }
    // The answer carries `Retry-After: 1` (under the 1 s --backoff-max): no attempt came
    // sooner than the second the relay asked for (less a little scheduling slack).
    for (k, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= Duration::from_millis(900),
            "attempt {}: {gap:?} < Retry-After: 1; gaps {gaps:?}",
            k + 1
        );
    }
    // Each answered attempt is one warning with the relay's code, and none was taken
    // for a permanent refusal.
    let refused = "relay refused: 503 overloaded (relay overloaded); retrying";
    let log = await_count(refused, n, || agent.log());
    assert_eq!(log.matches(refused).count(), n, "{log}");
    assert!(!log.contains("park refused"), "{log}");
    // The relay can take parks again (a real one, on the same port): the agent parks
    // and a client reaches the service.
    let relay = start_on(&addr.to_string());
    assert_eq!(relay.addr, addr);
    assert_eq!(relay.await_metric("tryst_parked", 1), 1, "{}", agent.log());
    echo_once(addr, b"after the 503s");
    assert_eq!(agent.metric("tryst_agent_paired_total"), 1);
    let log = agent.log();
    let last_refusal = log.rfind(refused).unwrap();
    assert!(log[last_refusal..].contains("parked"), "{log}");
}

/// The relay's `Retry-After` on a transient refusal sets the least wait of `tryst
/// expose`, capped at `--backoff-max`; without one the jittered back-off alone decides.
/// Three stand-in relays at once, each with its own agent (pool 1):
/// - `503 overloaded` as a real relay sends it (`Retry-After: 1`), `--backoff-max 30s`:
///   every gap between attempts is at least ~1 s, although the back-off alone would
///   retry after 125-250 ms, then 250-500 ms; the first three waits are exactly 1 s;
/// - the same with `Retry-After: 3600`, `--backoff-max 1s`: the agent keeps retrying
///   about once a second (every wait exactly the 1 s cap), not once an hour;
/// - `503 shutting_down` as a real relay sends it (no `Retry-After`), `--backoff-max
///   30s`: the exponential back-off, with a first gap well under a second.
#[test]
fn expose_waits_the_relays_retry_after_capped_at_backoff_max() {
    use tryst_engine::reject::Rejection;
    const ATTEMPTS: u64 = 4;
    let overloaded = Rejection::Overloaded.response();
    let hour = String::from_utf8(overloaded.clone()).unwrap().replacen(
        "Retry-After: 1\r\n",
        "Retry-After: 3600\r\n",
        1,
    );
    assert!(hour.contains("Retry-After: 3600\r\n"), "{hour}");
    let shutting_down = Rejection::ShuttingDown.response();
    assert!(!String::from_utf8_lossy(&shutting_down).contains("Retry-After"));
    let echo = echo_server().to_string();
    let cases = [
        ("retry-after 1", overloaded, "30s"),
        ("retry-after 3600", hour.into_bytes(), "1s"),
        ("no retry-after", shutting_down, "30s"),
    ]
    .map(|(name, answer, backoff_max)| {
        let fake = Overloaded::answering(answer);
        let agent =
            Agent::start_with_backoff(fake.addr, &echo, &SECRET, backoff_max, &["--pool", "1"]);
        (name, fake, agent)
    });
    let mut gaps_of = std::collections::HashMap::new();
    for (name, fake, mut agent) in cases {
        let reconnects = agent.await_metric_at_least("tryst_agent_reconnects_total", ATTEMPTS);
        assert!(
            reconnects >= ATTEMPTS,
            "{name}: {reconnects}; {}",
            agent.log()
        );
        assert!(
            agent.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "{name}: the agent stopped on a transient refusal: {}",
            agent.log()
        );
        let attempts = fake.stop();
        assert!(
            attempts.len() as u64 >= ATTEMPTS,
            "{name}: {} attempts",
            attempts.len()
        );
        let gaps: Vec<Duration> = attempts
            .windows(2)
            .map(|w| w[1].0.duration_since(w[0].0))
            .collect();
        // The back-off's own floor holds in every case: half of min(250 ms * 2^n, max).
        for (k, gap) in gaps.iter().enumerate() {
            let least = (Duration::from_millis(125) * (1 << k.min(8))).min(Duration::from_secs(15));
            assert!(
                *gap >= least,
                "{name}: attempt {}: {gap:?}; gaps {gaps:?}",
                k + 1
            );
        }
        let log = await_count("; retrying", attempts.len(), || agent.log());
        assert!(!log.contains("park refused"), "{name}: {log}");
        gaps_of.insert(name, (gaps, log));
    }
    // Retry-After: 1 under a 30 s cap: never sooner than the relay asked, and the first
    // three waits (the back-off alone: at most 250 ms, 500 ms, 1 s) are exactly 1 s.
    let (gaps, log) = &gaps_of["retry-after 1"];
    for (k, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= Duration::from_millis(900),
            "attempt {}: {gap:?} < Retry-After: 1; gaps {gaps:?}",
            k + 1
        );
    }
    let refused = "relay refused: 503 overloaded (relay overloaded); retrying";
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(refused)).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines[..3] {
        assert!(line.contains("retry_in=1s"), "{line}");
    }
    // Retry-After: 3600 under a 1 s cap: every wait is the cap, so attempts keep coming
    // about once a second (the agent reached its reconnects within the 20 s wait above).
    let (gaps, log) = &gaps_of["retry-after 3600"];
    for (k, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= Duration::from_millis(900) && *gap < Duration::from_secs(5),
            "attempt {}: {gap:?} not the 1 s cap; gaps {gaps:?}",
            k + 1
        );
    }
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(refused)).collect();
    assert!(lines.len() as u64 >= ATTEMPTS, "{log}");
    for line in lines {
        assert!(line.contains("retry_in=1s"), "{line}");
    }
    // No Retry-After: the back-off alone, whose first wait is 125-250 ms.
    let (gaps, log) = &gaps_of["no retry-after"];
    let shortest = gaps.iter().min().unwrap();
    assert!(
        *shortest < Duration::from_millis(900),
        "waited as if told to: gaps {gaps:?}"
    );
    assert!(
        log.contains("relay refused: 503 shutting_down (relay shutting down); retrying"),
        "{log}"
    );
}
