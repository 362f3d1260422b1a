//! The one way these tests start `tryst serve`: [`Relay::builder`] (flags, environment,
//! data directory, log), and the [`Relay`] it returns, killed on drop.
//!
//! The start-up lines are found by name (`tryst: listening on`, `tryst: tls listening
//! on`, `tryst: stun listening on`, `tryst: metrics listening on`, ...), never by
//! position or count: the relay prints them in one write, so once the first line is in
//! the pipe the others are too ([`read_startup_lines`]). Nothing sleeps: the relay is
//! ready when its lines are printed. Several relays (a cluster test's three nodes) are
//! several builders, each with its own listen address (`127.0.0.2:0`, ...) and data
//! directory.

use crate::tunnel::{
    ID, OK, exchange_at, metric_sum, nonce, now_unix, park_head, read_exact_n, read_to_close,
    write_secrets,
};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tryst_client::heads::reach_head;

/// Where a relay keeps its data.
enum DataDir {
    /// A fresh directory owned by the relay (and removed with it).
    Owned(tempfile::TempDir),
    /// The test's directory.
    Given(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            Self::Owned(d) => d.path(),
            Self::Given(p) => p,
        }
    }
}

/// How to start one relay; see [`Relay::builder`].
pub(crate) struct RelayBuilder {
    args: Vec<OsString>,
    listen: Option<String>,
    workers: Option<String>,
    client_wait: Option<String>,
    data_dir: Option<DataDir>,
    secrets: bool,
    home: Option<PathBuf>,
    log: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    wrap: Option<Box<dyn FnOnce(Command) -> Command>>,
}

impl RelayBuilder {
    /// Extra flags, after the builder's own (a `--listen`, `--workers` or
    /// `--client-wait` among them replaces the builder's default).
    pub(crate) fn args<S: AsRef<std::ffi::OsStr>>(
        mut self,
        args: impl IntoIterator<Item = S>,
    ) -> Self {
        for a in args {
            let a = a.as_ref();
            if a == "--listen" {
                self.listen = None;
            } else if a == "--workers" {
                self.workers = None;
            } else if a == "--client-wait" {
                self.client_wait = None;
            }
            self.args.push(a.to_owned());
        }
        self
    }

    /// `--listen` (default `127.0.0.1:0`; e.g. `127.0.0.2:0` for a second node).
    pub(crate) fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_owned());
        self
    }

    /// `--workers` (default 2).
    pub(crate) fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.to_string());
        self
    }

    /// No `--client-wait` unless given in [`Self::args`] (the relay's default, 2 s);
    /// the builder's default is 500 ms.
    pub(crate) fn default_client_wait(mut self) -> Self {
        self.client_wait = None;
        self
    }

    /// The data directory (default: a fresh one, removed with the relay).
    pub(crate) fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(DataDir::Given(dir.into()));
        self
    }

    /// Does not write the test secrets file (with [`ID`] and [`crate::tunnel::SECRET`])
    /// into the data directory.
    pub(crate) fn no_secrets(mut self) -> Self {
        self.secrets = false;
        self
    }

    /// Runs with `HOME` set to `home` and no `XDG_DATA_HOME` (every `TRYST_*`
    /// variable is always removed), so only the flags given configure the relay.
    pub(crate) fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// Writes the relay's log (stderr, default level) to `path`; by default it goes to
    /// the test's stderr at `warn`.
    pub(crate) fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// An environment variable for the relay.
    pub(crate) fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Changes the command before it is spawned (e.g. to wrap it in `prlimit`).
    pub(crate) fn wrap(mut self, wrap: impl FnOnce(Command) -> Command + 'static) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Starts the relay and waits for its start-up lines.
    pub(crate) fn start(self) -> Relay {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| DataDir::Owned(tempfile::tempdir().unwrap()));
        if self.secrets {
            std::fs::create_dir_all(data_dir.path()).unwrap();
            write_secrets(data_dir.path());
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tryst"));
        // Only the flags given here configure the relay, whatever the test's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRYST_")
                || (self.home.is_some() && key == "XDG_DATA_HOME")
            {
                cmd.env_remove(key);
            }
        }
        if let Some(home) = &self.home {
            cmd.env("HOME", home);
        }
        cmd.arg("serve");
        if let Some(listen) = &self.listen {
            cmd.args(["--listen", listen]);
        }
        if let Some(workers) = &self.workers {
            cmd.args(["--workers", workers]);
        }
        cmd.arg("--data-dir").arg(data_dir.path()).args(&self.args);
        if let Some(wait) = &self.client_wait {
            cmd.args(["--client-wait", wait]);
        }
        match &self.log {
            Some(path) => cmd.stderr(File::create(path).unwrap()),
            None => cmd.env("TRYST_LOG", "warn").stderr(Stdio::inherit()),
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut cmd = match self.wrap {
            Some(wrap) => wrap(cmd),
            None => cmd,
        };
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let lines = read_startup_lines(&mut out);
        // Keep draining stdout so the relay never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let log = self.log;
        let named = |prefix: &str| {
            lines.iter().find_map(|l| l.strip_prefix(prefix)).map(|a| {
                a.parse::<SocketAddr>()
                    .unwrap_or_else(|e| panic!("{prefix:?}{a:?}: {e}"))
            })
        };
        let Some(addr) = named("tryst: listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = log
                .as_ref()
                .map(|p| std::fs::read_to_string(p).unwrap_or_default());
            panic!("no listening line in {lines:?}; log: {log:?}");
        };
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("tryst: data directory ")),
            "{lines:?}"
        );
        // `tryst: tls certificate <path> sha256 <AA:BB:...>[ (generated now)]`
        let tls_fingerprint = lines
            .iter()
            .find_map(|l| l.strip_prefix("tryst: tls certificate "))
            .map(|certificate| {
                certificate
                    .split(" sha256 ")
                    .nth(1)
                    .and_then(|f| f.split(' ').next())
                    .unwrap_or_else(|| panic!("certificate line {certificate:?}"))
                    .to_owned()
            });
        Relay {
            child,
            addr,
            tls_addr: named("tryst: tls listening on "),
            tls_fingerprint,
            stun_addr: named("tryst: stun listening on "),
            metrics_addr: named("tryst: metrics listening on "),
            mesh_addr: named("tryst: mesh listening on "),
            lines,
            log,
            dir: data_dir,
            home: None,
        }
    }
}

/// The start-up lines: everything up to the end of the first read that ends a line.
/// The relay writes them all in one `write` of well under `PIPE_BUF` bytes, which a pipe
/// delivers whole; reading stops at a line end, so nothing later is awaited. An empty
/// list if the relay exits first.
pub(crate) fn read_startup_lines(out: &mut impl Read) -> Vec<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    while !text.ends_with(b"\n") {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A relay process for one test; killed on drop.
pub(crate) struct Relay {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The TLS listener's address, when started with `--tls-listen`.
    pub(crate) tls_addr: Option<SocketAddr>,
    /// The TLS certificate's SHA-256 fingerprint as printed (`AA:BB:...`), with `--tls-listen`.
    pub(crate) tls_fingerprint: Option<String>,
    /// The STUN responder's address, when started with `--stun-listen`.
    pub(crate) stun_addr: Option<SocketAddr>,
    /// The operators' address, when started with `--metrics-listen`.
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// The mesh listener's address, when started with `--cluster-redis`.
    pub(crate) mesh_addr: Option<SocketAddr>,
    /// Every start-up line, as printed.
    pub(crate) lines: Vec<String>,
    log: Option<PathBuf>,
    dir: DataDir,
    /// The `HOME` of [`Relay::http`], removed with the relay.
    home: Option<tempfile::TempDir>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    /// A relay on `127.0.0.1:0` with two workers, a 500 ms client wait, the test
    /// secrets in a fresh data directory, and its log on the test's stderr.
    pub(crate) fn builder() -> RelayBuilder {
        RelayBuilder {
            args: Vec::new(),
            listen: Some("127.0.0.1:0".into()),
            workers: Some("2".into()),
            client_wait: Some("500ms".into()),
            data_dir: None,
            secrets: true,
            home: None,
            log: None,
            env: Vec::new(),
            wrap: None,
        }
    }

    /// [`Relay::builder`] with `extra` flags.
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::builder().args(extra).start()
    }

    /// [`Relay::builder`] with `extra` flags and the command changed by `wrap`.
    pub(crate) fn start_with(
        extra: &[&str],
        wrap: impl FnOnce(Command) -> Command + 'static,
    ) -> Self {
        Self::builder().args(extra).wrap(wrap).start()
    }

    /// A one-worker relay for the HTTP API families (the relay's own client wait, no
    /// secrets file), with a fresh `HOME` and its log kept in a file ([`Relay::log`]).
    pub(crate) fn http(extra: &[&str]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut relay = Self::builder()
            .workers(1)
            .default_client_wait()
            .no_secrets()
            .home(home.path())
            .data_dir(home.path().join("data"))
            .log_file(home.path().join("log"))
            .args(extra)
            .start();
        relay.home = Some(home);
        relay
    }

    /// Kills this relay (SIGKILL, as a crash would) and starts another with `extra` on
    /// the same data directory (its secrets, keys and stores).
    pub(crate) fn restart(mut self, extra: &[&str]) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, DataDir::Given(PathBuf::new()));
        drop(self);
        // (`--listen` in `extra` lets a test restart on the same port.)
        let mut builder = Self::builder().no_secrets().args(extra);
        builder.data_dir = Some(dir);
        builder.start()
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://<addr>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the relay has logged so far (with [`RelayBuilder::log_file`]; else empty).
    pub(crate) fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Sends `signal` to the supervisor.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM, then waits for the exit; asserts it was clean.
    pub(crate) fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}; log:\n{}", self.log());
    }

    /// SIGKILL, as a crash would, and waits for the exit.
    pub(crate) fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Parks a hidden server with a fresh proof and reads its 200.
    pub(crate) fn park(&self) -> TcpStream {
        let mut s = self.connect();
        s.write_all(park_head(now_unix(), &nonce()).as_bytes())
            .unwrap();
        assert_eq!(read_exact_n(&mut s, OK.len()), OK);
        s
    }

    /// Connects a client (with `early` bytes after its head) and reads its 200.
    pub(crate) fn reach(&self, early: &[u8]) -> TcpStream {
        reach_at(self.addr, early)
    }

    /// Sends raw bytes and returns everything the relay answers until it closes.
    pub(crate) fn exchange(&self, request: &[u8]) -> String {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        read_to_close(&mut s)
    }

    /// The `/metrics` text (from the operators' listener when there is one).
    pub(crate) fn metrics(&self) -> String {
        let request = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        match self.metrics_addr {
            Some(addr) => exchange_at(addr, request),
            None => self.exchange(request),
        }
    }

    /// Sums a metric's samples (all label sets).
    pub(crate) fn metric(&self, name: &str) -> u64 {
        metric_sum(&self.metrics(), name)
    }

    /// Waits (bounded) until `metric` equals `want`; returns the last value seen.
    pub(crate) fn await_metric(&self, name: &str, want: u64) -> u64 {
        self.await_value(want, |text| metric_sum(text, name))
    }

    /// Waits (bounded) until `metric` is at least `want`; returns the last value seen.
    pub(crate) fn await_metric_at_least(&self, name: &str, want: u64) -> u64 {
        self.await_where(|v| v >= want, |text| metric_sum(text, name))
    }

    /// Waits (bounded) until `read` of the `/metrics` text equals `want`; returns the
    /// last value seen.
    pub(crate) fn await_value(&self, want: u64, read: impl Fn(&str) -> u64) -> u64 {
        self.await_where(|v| v == want, read)
    }

    /// Waits (10 s at most) until `read` of the `/metrics` text satisfies `done`;
    /// returns the last value seen.
    fn await_where(&self, done: impl Fn(u64) -> bool, read: impl Fn(&str) -> u64) -> u64 {
        let mut v = 0;
        self.poll_until(|| {
            v = read(&self.metrics());
            done(v)
        });
        v
    }

    /// Waits (bounded, as the metric waits) until the log ([`RelayBuilder::log_file`])
    /// holds `needle`; whether it does.
    pub(crate) fn await_log(&self, needle: &str) -> bool {
        self.poll_until(|| self.log().contains(needle))
    }

    /// Checks `done` until it holds or 10 s have passed (pacing the polls of another
    /// process's progress at 20 ms); whether it held.
    fn poll_until(&self, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if done() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

/// Connects a client of [`ID`] to the relay at `addr` (with `early` bytes after its
/// head) and reads its 200.
pub(crate) fn reach_at(addr: SocketAddr, early: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = reach_head(ID).into_bytes();
    req.extend_from_slice(early);
    s.write_all(&req).unwrap();
    let got = read_exact_n(&mut s, OK.len());
    assert_eq!(got, OK, "{}", String::from_utf8_lossy(&got));
    s
}

#[test]
fn startup_lines_are_read_by_name_from_one_write() {
    let text = b"tryst: listening on 127.0.0.1:1\ntryst: data directory /d\ntryst: stun listening on 127.0.0.1:2\n";
    let lines = read_startup_lines(&mut &text[..]);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2], "tryst: stun listening on 127.0.0.1:2");
    assert!(read_startup_lines(&mut &b""[..]).is_empty());
}

#[test]
fn several_relays_start_on_their_own_addresses_and_directories() {
    let a = Relay::builder().listen("127.0.0.1:0").workers(1).start();
    let b = Relay::builder()
        .listen("127.0.0.2:0")
        .workers(1)
        .args([
            "--stun-listen",
            "127.0.0.2:0",
            "--metrics-listen",
            "127.0.0.2:0",
        ])
        .start();
    assert_eq!(a.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(b.addr.ip().to_string(), "127.0.0.2");
    assert_eq!(b.stun_addr.unwrap().ip().to_string(), "127.0.0.2");
    assert!(b.metrics_addr.is_some());
    assert_ne!(a.data_dir(), b.data_dir());
    assert!(b.metrics().contains("tryst_"), "{}", b.metrics());
}
