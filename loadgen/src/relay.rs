//! Starting and stopping a local `tryst serve`, and finding its binary; starting the other
//! programs `loadgen compare` runs (HAProxy, bore, the agents), pinned to CPUs with
//! `taskset`, and waiting for them to listen.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Where the `tryst` binary is: `explicit` if given, else `$TRYST_BIN`, else next to this
/// executable (`target/<profile>/`), also when this executable is a test harness in
/// `target/<profile>/deps/`.
pub(crate) fn tryst_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--tryst {}: no such file", p.display());
    }
    if let Some(p) = std::env::var_os("TRYST_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("TRYST_BIN={}: no such file", p.display());
    }
    let exe = std::env::current_exe().context("locating the loadgen executable")?;
    let candidates = binary_candidates(&exe, "tryst");
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "the tryst binary was not found (looked at {}); build it first with `cargo build --bins` \
         (same profile as loadgen), or pass --tryst PATH / set TRYST_BIN",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Paths where a sibling binary `name` of `exe` may live.
pub(crate) fn binary_candidates(exe: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.parent() {
        out.push(dir.join(name));
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            out.push(up.join(name));
        }
    }
    out
}

/// Parses `tryst: listening on <addr>`.
pub(crate) fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("tryst: listening on ")?
        .trim()
        .parse()
        .ok()
}

/// Parses `tryst: tls listening on <addr>`.
pub(crate) fn parse_tls_listening(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("tryst: tls listening on ")?
        .trim()
        .parse()
        .ok()
}

/// A `tryst serve` this process started; stopped with SIGTERM on [`LocalRelay::stop`].
pub(crate) struct LocalRelay {
    child: Child,
    /// The bound address it printed.
    pub(crate) addr: SocketAddr,
    /// The TLS listener's bound address, when started with [`RelayOptions::tls`].
    pub(crate) tls_addr: Option<SocketAddr>,
    /// Its process id.
    pub(crate) pid: u32,
    /// The relay's stderr log.
    pub(crate) log: PathBuf,
    /// The command line, for the report.
    pub(crate) command: String,
}

/// How to start a local relay.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayOptions {
    /// The binary.
    pub(crate) binary: PathBuf,
    /// The data directory (holds secrets.toml).
    pub(crate) data_dir: PathBuf,
    /// `--data-path`, if set.
    pub(crate) data_path: Option<String>,
    /// `--workers`, if set.
    pub(crate) workers: Option<usize>,
    /// Extra arguments.
    pub(crate) extra: Vec<String>,
    /// CPU list for `taskset -c`, if pinning.
    pub(crate) pin_cpus: Option<String>,
    /// Also listen for TLS (`--tls-listen 127.0.0.1:0`, generated certificate
    /// `<data-dir>/tls-cert.pem`).
    pub(crate) tls: bool,
}

impl LocalRelay {
    /// Starts `tryst serve --listen 127.0.0.1:0 --data-dir <dir>` (and
    /// `--tls-listen 127.0.0.1:0` with [`RelayOptions::tls`]) and waits for its
    /// `listening on` lines (bounded by `startup`).
    pub(crate) async fn start(opts: &RelayOptions, startup: Duration) -> Result<Self> {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            opts.data_dir.display().to_string(),
        ];
        if let Some(dp) = &opts.data_path {
            args.push("--data-path".into());
            args.push(dp.clone());
        }
        if let Some(w) = opts.workers {
            args.push("--workers".into());
            args.push(w.to_string());
        }
        if opts.tls {
            args.push("--tls-listen".into());
            args.push("127.0.0.1:0".into());
        }
        args.extend(opts.extra.iter().cloned());
        let (program, full): (PathBuf, Vec<String>) = match &opts.pin_cpus {
            Some(cpus) => {
                let mut a = vec![
                    "-c".to_string(),
                    cpus.clone(),
                    opts.binary.display().to_string(),
                ];
                a.extend(args);
                (PathBuf::from("taskset"), a)
            }
            None => (opts.binary.clone(), args),
        };
        let command = format!("{} {}", program.display(), full.join(" "));
        let log = opts.data_dir.join("relay.log");
        let logf =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&program)
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command}"))?;
        let pid = child.id().context("relay exited at once")?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(startup, lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => match parse_listening(&line) {
                Some(a) => a,
                None => bail!(
                    "relay's first stdout line is not `tryst: listening on <addr>`: {line:?} (log: {})",
                    log.display()
                ),
            },
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                bail!(
                    "relay exited before listening ({status:?}); its log:\n{}",
                    tail(&log, 20)
                )
            }
            Ok(Err(e)) => bail!("reading relay stdout: {e}"),
            Err(_) => bail!(
                "relay did not print its address within {startup:?}; its log:\n{}",
                tail(&log, 20)
            ),
        };
        // With TLS: the second line is the data directory, the third the TLS listener.
        let mut tls_addr = None;
        if opts.tls {
            let deadline = Instant::now() + startup;
            for _ in 0..2 {
                let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
                    Ok(Ok(Some(line))) => line,
                    Ok(Ok(None)) => bail!(
                        "relay closed stdout before its TLS listener line; its log:\n{}",
                        tail(&log, 20)
                    ),
                    Ok(Err(e)) => bail!("reading relay stdout: {e}"),
                    Err(_) => bail!(
                        "relay did not print its TLS address within {startup:?}; its log:\n{}",
                        tail(&log, 20)
                    ),
                };
                tls_addr = parse_tls_listening(&line);
            }
            if tls_addr.is_none() {
                bail!(
                    "relay's third stdout line is not `tryst: tls listening on <addr>` (log: {})",
                    log.display()
                );
            }
        }
        // Keep draining stdout so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // With taskset the child is taskset, which execs the relay: same pid.
        Ok(Self {
            child,
            addr,
            tls_addr,
            pid,
            log,
            command,
        })
    }

    /// Whether it is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (up to `grace`, then SIGKILL).
    pub(crate) async fn stop(mut self, grace: Duration) -> Result<std::process::ExitStatus> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(i32::try_from(self.pid).context("pid out of range")?);
        if self.is_running() {
            let _ = kill(pid, Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                self.child.start_kill()?;
                Ok(self.child.wait().await?)
            }
        }
    }
}

/// The last `n` lines of a file, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ----- other processes (HAProxy, bore, the agents) for `loadgen compare`

/// A free loopback port to give a program that cannot bind port 0 itself.
pub(crate) fn free_port() -> Result<u16> {
    // Racy by nature (the port is released before the peer binds it); good enough for
    // a benchmark harness, never used in tests.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits (up to 15 s) until `addr` accepts a connection, or fails if `child` exits first.
pub(crate) async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited at start ({status})");
        }
        if let Ok(s) = TcpStream::connect(addr).await {
            drop(s);
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what} did not listen on {addr} within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `program args` run under `taskset -c <pin>` when `pin` is given.
pub(crate) fn pinned(pin: Option<&str>, program: &str, args: &[String]) -> (String, Vec<String>) {
    match pin {
        Some(cpus) => {
            let mut a = vec!["-c".to_string(), cpus.to_string(), program.to_string()];
            a.extend(args.iter().cloned());
            ("taskset".to_string(), a)
        }
        None => (program.to_string(), args.to_vec()),
    }
}

/// Starts `program args` with its output in `log`; killed when the handle is dropped.
pub(crate) fn spawn(program: &str, args: &[String], log: &Path) -> Result<Child> {
    let logf = std::fs::File::create(log)?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone()?))
        .stderr(Stdio::from(logf))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Like [`spawn`], for tryst's agents: warnings only (no line per pairing in the log).
pub(crate) fn spawn_quiet(program: &str, args: &[String], log: &Path) -> Result<Child> {
    let logf = std::fs::File::create(log)?;
    Command::new(program)
        .args(args)
        .env("TRYST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone()?))
        .stderr(Stdio::from(logf))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Whether `program` is a file (given a path) or found on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        assert_eq!(
            parse_listening("tryst: listening on 127.0.0.1:4321\n"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            parse_listening("tryst: listening on [::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listening("tryst: data directory /x"), None);
        assert_eq!(parse_listening("tryst: listening on nowhere"), None);
        assert_eq!(parse_listening("tryst: tls listening on 127.0.0.1:1"), None);
    }

    #[test]
    fn parses_the_tls_listening_line() {
        assert_eq!(
            parse_tls_listening("tryst: tls listening on 127.0.0.1:4433\n"),
            Some("127.0.0.1:4433".parse().unwrap())
        );
        assert_eq!(parse_tls_listening("tryst: listening on 127.0.0.1:1"), None);
        assert_eq!(parse_tls_listening("tryst: data directory /x"), None);
        assert_eq!(
            parse_tls_listening("tryst: tls certificate /x/tls-cert.pem sha256 AB"),
            None
        );
    }

    #[test]
    fn candidates_cover_test_harness_dirs() {
        let c = binary_candidates(Path::new("/t/target/debug/deps/it-abc"), "tryst");
        assert_eq!(
            c,
            vec![
                PathBuf::from("/t/target/debug/deps/tryst"),
                PathBuf::from("/t/target/debug/tryst")
            ]
        );
        let c = binary_candidates(Path::new("/t/target/release/loadgen"), "tryst");
        assert_eq!(c, vec![PathBuf::from("/t/target/release/tryst")]);
    }

    #[test]
    fn explicit_missing_binary_is_a_clear_error() {
        let err = tryst_binary(Some(Path::new("/nonexistent/tryst"))).unwrap_err();
        assert!(err.to_string().contains("no such file"));
    }
}
