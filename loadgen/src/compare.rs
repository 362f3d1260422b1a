//! `loadgen compare`: the same workloads, interleaved A/B/A/B, against direct loopback,
//! tryst (each data path), HAProxy in TCP mode (splice and copy) and bore.
//!
//! One sink serves every target, in this process (pinned to CPU 0 when possible); every
//! relay runs pinned to CPU 1. The bulk and ping-pong generators run on this process's
//! thread too; the pairing workloads run on `--pairing-generators` threads, each with
//! its own event loop, pinned to CPUs 2, 3, ... (CPU 0 when there are only two), so
//! that connection setup, which costs the generator more than the relay, does not
//! saturate the generator first. `pairing` is closed loop (pairings/s at saturation);
//! `pairing-open` offers `--rate` pairings/s open loop (latency at a fixed load). The
//! sink reads one mode byte per
//! connection (not echoed): `E` echoes everything after it, `B` discards and, at end of stream, answers
//! with the number of bytes it counted (u64, little-endian) so that bulk transfers are
//! checked end to end.
//!
//! How each target forwards:
//! - direct: generator -> sink.
//! - tryst: the sink parks connections as hidden servers (re-parking after each
//!   pairing); the generator connects as clients (`CONNECT uuid:<id>`). "Pairing" is
//!   the full rendezvous.
//! - HAProxy: a `listen` section forwarding to the sink; "pairing" is a proxied connect.
//! - bore: `bore server` plus `bore local <sink port> --to 127.0.0.1`; the generator
//!   connects to bore's public port. Each new connection makes bore's server ask its
//!   local agent (over the control connection) to open a fresh connection back and then
//!   to the sink, so there are two proxy hops (server and agent, both copying in user
//!   space) and pairing is on demand, not from a parked pool. Its "relay" CPU is the sum
//!   of both bore processes.
//! - tryst-agents: tryst's own agents, the counterpart of bore's: the generator connects
//!   to `tryst connect --listen`, which reaches through the relay to `tryst expose
//!   --to <sink> --pool 16`. Its "relay" CPU is the sum of the relay and both agents;
//!   "pairing" is the time to the first byte of a new reach.

use crate::cli::{CompareArgs, CompareTarget, Workload};
use crate::net::{self, Failure};
use crate::pattern::Pattern;
use crate::procfs;
use crate::proto::{self, ParkAuth};
use crate::relay::{LocalRelay, RelayOptions, tryst_binary};
use crate::stats::Latency;
use crate::transport::Conn;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tryst_engine::auth::Secret;
use uuid::Uuid;

/// Median of `values` (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// (min, max) of `values`; `None` when empty.
pub(crate) fn spread(values: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let min = v.iter().copied().reduce(f64::min)?;
    let max = v.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

/// `value / baseline`, or `None` when the baseline is missing or zero.
pub(crate) fn ratio(value: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (value, baseline) {
        (Some(v), Some(b)) if b != 0.0 && b.is_finite() => Some(v / b),
        _ => None,
    }
}

/// One metric a workload produces.
#[derive(Debug, Clone, Copy)]
struct MetricDef {
    workload: &'static str,
    key: &'static str,
    label: &'static str,
    /// The target ratios are taken against.
    baseline: &'static str,
    higher_is_better: bool,
}

const METRICS: &[MetricDef] = &[
    MetricDef {
        workload: "bulk1",
        key: "gbit_s",
        label: "bulk, 1 pair: Gbit/s",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "bulk1",
        key: "cpu_s_per_gb",
        label: "bulk, 1 pair: relay CPU-s/GB",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "bulk16",
        key: "gbit_s",
        label: "bulk, 16 pairs: Gbit/s",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "bulk16",
        key: "cpu_s_per_gb",
        label: "bulk, 16 pairs: relay CPU-s/GB",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "bulk256",
        key: "gbit_s",
        label: "bulk, 256 pairs: Gbit/s",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "bulk256",
        key: "cpu_s_per_gb",
        label: "bulk, 256 pairs: relay CPU-s/GB",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pingpong",
        key: "p50_us",
        label: "64 B ping-pong RTT p50 (µs)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pingpong",
        key: "p99_us",
        label: "64 B ping-pong RTT p99 (µs)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "per_s",
        label: "pairings (connection setups) per second",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "pairing",
        key: "p50_us",
        label: "pairing latency p50 (µs): connect -> 1st echoed byte",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "p99_us",
        label: "pairing latency p99 (µs)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "relay_cpu_us",
        label: "pairing: relay CPU µs per pairing",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing",
        key: "generator_cpu_us",
        label: "pairing: generator+sink CPU µs per pairing (this process; tryst's sink also re-parks)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "per_s",
        label: "open-loop pairing at --rate: pairings per second achieved",
        baseline: "direct",
        higher_is_better: true,
    },
    MetricDef {
        workload: "pairing-open",
        key: "p50_us",
        label: "open-loop pairing latency p50 (µs) from scheduled arrival",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "p99_us",
        label: "open-loop pairing latency p99 (µs) from scheduled arrival",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "dropped",
        label: "open-loop arrivals not started (too many in progress)",
        baseline: "direct",
        higher_is_better: false,
    },
    MetricDef {
        workload: "pairing-open",
        key: "relay_cpu_us",
        label: "open-loop pairing: relay CPU µs per pairing",
        baseline: "haproxy-splice",
        higher_is_better: false,
    },
];

/// Ids and parked connections per id of a tryst target's sink.
const TRYST_IDS: usize = 64;
const TRYST_PARKED: usize = 4;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- sink

/// Serves one sink connection whose first bytes (`first`, possibly empty) were read
/// already.
async fn sink_conn(mut s: TcpStream, first: Vec<u8>) -> Result<(), Failure> {
    let mut first = first;
    if first.is_empty() {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            // A readiness probe (closed or reset through a proxy before any byte): every
            // workload connection sends its mode byte first, and its failures are
            // counted on the generator's side.
            Ok(0) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Ok(_) => first.push(b[0]),
            Err(e) => return Err(Failure::io("sink/read", &e)),
        }
    }
    match first[0] {
        b'E' => net::echo_serve(&mut s, &first[1..], "sink")
            .await
            .map(|_| ()),
        b'B' => {
            let mut count = (first.len() - 1) as u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = s
                    .read(&mut buf)
                    .await
                    .map_err(|e| Failure::io("sink/read", &e))?;
                if n == 0 {
                    break;
                }
                count += n as u64;
            }
            s.write_all(&count.to_le_bytes())
                .await
                .map_err(|e| Failure::io("sink/ack", &e))?;
            s.shutdown()
                .await
                .map_err(|e| Failure::io("sink/shutdown", &e))
        }
        other => Err(Failure(format!("sink: unknown mode byte {other}"))),
    }
}

async fn run_sink_listener(
    listener: TcpListener,
    errors: Rc<std::cell::RefCell<crate::stats::Errors>>,
) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let errors = errors.clone();
        tokio::task::spawn_local(async move {
            if let Err(f) = sink_conn(s, Vec::new()).await {
                errors.borrow_mut().add(f.0);
            }
        });
    }
}

/// The sink as hidden servers parked at a tryst relay.
fn spawn_tryst_sink(
    relay: SocketAddr,
    ids: &[(Uuid, Vec<u8>)],
    stop: watch::Receiver<bool>,
    errors: Rc<std::cell::RefCell<crate::stats::Errors>>,
) {
    for (id, secret) in ids {
        for _ in 0..TRYST_PARKED {
            let id = *id;
            let auth = ParkAuth::Native(Secret::new(secret.clone()));
            let mut stop = stop.clone();
            let errors = errors.clone();
            tokio::task::spawn_local(async move {
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    let parked = net::park(relay, None, &id, &auth, None, STEP_TIMEOUT).await;
                    let mut s = match parked {
                        Ok(Conn::Plain(s)) => s,
                        Ok(Conn::Tls(_)) => {
                            errors
                                .borrow_mut()
                                .add("hidden/park: TLS where plain TCP was asked");
                            break;
                        }
                        Err(f) => {
                            errors.borrow_mut().add(f.0);
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                                _ = stop.changed() => break,
                            }
                        }
                    };
                    let mut b = [0u8; 1];
                    let got = tokio::select! {
                        r = s.read(&mut b) => r,
                        _ = stop.changed() => break,
                    };
                    match got {
                        // A relay being stopped at the end closes its parked connections.
                        Ok(0) if *stop.borrow() => break,
                        Ok(0) => errors
                            .borrow_mut()
                            .add("hidden/parked: closed by the relay"),
                        Err(e) => errors
                            .borrow_mut()
                            .add(Failure::io("hidden/parked read", &e).0),
                        Ok(_) => {
                            let errors = errors.clone();
                            tokio::task::spawn_local(async move {
                                if let Err(f) = sink_conn(s, vec![b[0]]).await {
                                    errors.borrow_mut().add(f.0);
                                }
                            });
                        }
                    }
                }
            });
        }
    }
}

// ---------------------------------------------------------------- targets

/// How the generator reaches the sink through a target.
#[derive(Clone)]
enum Route {
    /// A plain TCP connect (direct, HAProxy, bore).
    Plain(SocketAddr),
    /// A tryst client handshake to one of `ids` (round robin). Shared by the pairing
    /// generator threads, hence `Arc` and an atomic cursor.
    Tryst(SocketAddr, Arc<Vec<Uuid>>, Arc<AtomicUsize>),
}

impl Route {
    async fn open(&self) -> Result<TcpStream, Failure> {
        match self {
            Self::Plain(addr) => {
                net::within(STEP_TIMEOUT, "client/connect", async {
                    net::dial(*addr, None)
                        .await
                        .map_err(|e| Failure::io("client/connect", &e))
                })
                .await
            }
            Self::Tryst(addr, ids, next) => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let id = ids[i % ids.len()];
                net::within(STEP_TIMEOUT, "client/handshake", async {
                    let mut s = net::dial(*addr, None)
                        .await
                        .map_err(|e| Failure::io("client/connect", &e))?;
                    s.write_all(&proto::connect_head(&id))
                        .await
                        .map_err(|e| Failure::io("client/head write", &e))?;
                    net::read_answer(&mut s, "client").await?;
                    Ok(s)
                })
                .await
            }
        }
    }
}

struct Target {
    name: CompareTarget,
    route: Route,
    /// Processes whose CPU counts as the relay's.
    pids: Vec<u32>,
    command: String,
    children: Vec<Child>,
    relay: Option<LocalRelay>,
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> Result<u16> {
    // Racy by nature (the port is released before the peer binds it); good enough for
    // a benchmark harness, never used in tests.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> Result<()> {
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

fn pinned(pin: Option<&str>, program: &str, args: &[String]) -> (String, Vec<String>) {
    match pin {
        Some(cpus) => {
            let mut a = vec!["-c".to_string(), cpus.to_string(), program.to_string()];
            a.extend(args.iter().cloned());
            ("taskset".to_string(), a)
        }
        None => (program.to_string(), args.to_vec()),
    }
}

fn spawn(program: &str, args: &[String], log: &std::path::Path) -> Result<Child> {
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

fn haproxy_config(listen: SocketAddr, sink: SocketAddr, splice: bool) -> String {
    let splice_opts = if splice {
        "    option splice-request\n    option splice-response\n"
    } else {
        "    no option splice-auto\n    no option splice-request\n    no option splice-response\n"
    };
    format!(
        "# generated by loadgen compare\nglobal\n    nbthread 1\n    maxconn 4000\n    tune.pipesize 262144\n\n\
         defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 1h\n    timeout server 1h\n\n\
         listen fwd\n    bind {listen}\n{splice_opts}    server sink {sink}\n"
    )
}

async fn start_target(
    name: CompareTarget,
    args: &CompareArgs,
    sink: SocketAddr,
    pin: Option<&str>,
    stop: &watch::Receiver<bool>,
    errors: &Rc<std::cell::RefCell<crate::stats::Errors>>,
) -> Result<Target> {
    let dir = tempfile::Builder::new()
        .prefix("loadgen-compare-")
        .tempdir()?;
    match name {
        CompareTarget::Direct => Ok(Target {
            name,
            route: Route::Plain(sink),
            pids: Vec::new(),
            command: format!("(none: generator -> sink at {sink})"),
            children: Vec::new(),
            relay: None,
            _dir: None,
        }),
        CompareTarget::TrystSpliceSyscall | CompareTarget::TrystSpliceUring => {
            let data_path = if name == CompareTarget::TrystSpliceSyscall {
                "splice-syscall"
            } else {
                "splice-uring"
            }
            .to_string();
            let ids = proto::generate_ids(TRYST_IDS);
            proto::write_private_atomic(
                &dir.path().join("secrets.toml"),
                &proto::render_secrets(&ids),
            )?;
            let opts = RelayOptions {
                binary: tryst_binary(args.tryst.as_deref())?,
                data_dir: dir.path().to_path_buf(),
                data_path: Some(data_path),
                workers: Some(1),
                extra: Vec::new(),
                pin_cpus: pin.map(str::to_string),
                tls: false,
            };
            let relay = LocalRelay::start(&opts, Duration::from_secs(30)).await?;
            spawn_tryst_sink(relay.addr, &ids, stop.clone(), errors.clone());
            let ids: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
            Ok(Target {
                name,
                route: Route::Tryst(relay.addr, Arc::new(ids), Arc::new(AtomicUsize::new(0))),
                pids: vec![relay.pid],
                command: relay.command.clone(),
                children: Vec::new(),
                relay: Some(relay),
                _dir: Some(dir),
            })
        }
        CompareTarget::HaproxySplice | CompareTarget::HaproxyCopy => {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(
                &cfg,
                haproxy_config(listen, sink, name == CompareTarget::HaproxySplice),
            )?;
            let (prog, a) = pinned(
                pin,
                &args.haproxy,
                &["-db".into(), "-f".into(), cfg.display().to_string()],
            );
            let mut child = spawn(&prog, &a, &dir.path().join("haproxy.log"))?;
            let pid = child.id().context("haproxy exited at once")?;
            wait_listening(listen, &mut child, "haproxy")
                .await
                .with_context(|| crate::relay::tail(&dir.path().join("haproxy.log"), 10))?;
            Ok(Target {
                name,
                route: Route::Plain(listen),
                pids: vec![pid],
                command: format!("{prog} {} (config {})", a.join(" "), cfg.display()),
                children: vec![child],
                relay: None,
                _dir: Some(dir),
            })
        }
        CompareTarget::Bore => {
            // bore's control port is fixed at 7835; tunnels get a port from the range.
            if std::net::TcpListener::bind("127.0.0.1:7835").is_err() {
                bail!("port 7835 (bore's fixed control port) is in use");
            }
            let port = free_port()?;
            let (prog, a) = pinned(
                pin,
                &args.bore,
                &[
                    "server".into(),
                    "--bind-addr".into(),
                    "127.0.0.1".into(),
                    "--min-port".into(),
                    port.to_string(),
                    "--max-port".into(),
                    port.to_string(),
                ],
            );
            let mut server = spawn(&prog, &a, &dir.path().join("bore-server.log"))?;
            let server_pid = server.id().context("bore server exited at once")?;
            wait_listening("127.0.0.1:7835".parse()?, &mut server, "bore server").await?;
            let (prog2, a2) = pinned(
                pin,
                &args.bore,
                &[
                    "local".into(),
                    sink.port().to_string(),
                    "--local-host".into(),
                    "127.0.0.1".into(),
                    "--to".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                ],
            );
            let mut local = spawn(&prog2, &a2, &dir.path().join("bore-local.log"))?;
            let local_pid = local.id().context("bore local exited at once")?;
            let public: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            wait_listening(public, &mut local, "bore local").await?;
            Ok(Target {
                name,
                route: Route::Plain(public),
                pids: vec![server_pid, local_pid],
                command: format!("{prog} {}; {prog2} {}", a.join(" "), a2.join(" ")),
                children: vec![server, local],
                relay: None,
                _dir: Some(dir),
            })
        }
        CompareTarget::TrystAgents => {
            let ids = proto::generate_ids(1);
            proto::write_private_atomic(
                &dir.path().join("secrets.toml"),
                &proto::render_secrets(&ids),
            )?;
            let binary = tryst_binary(args.tryst.as_deref())?;
            let opts = RelayOptions {
                binary: binary.clone(),
                data_dir: dir.path().to_path_buf(),
                data_path: None,
                workers: Some(1),
                extra: Vec::new(),
                pin_cpus: pin.map(str::to_string),
                tls: false,
            };
            let relay = LocalRelay::start(&opts, Duration::from_secs(30)).await?;
            let (id, secret) = &ids[0];
            let secret_file = dir.path().join("agent.secret");
            {
                use base64::Engine as _;
                let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
                proto::write_private_atomic(&secret_file, &text)?;
            }
            let tryst = binary.display().to_string();
            let (prog, a) = pinned(
                pin,
                &tryst,
                &[
                    "expose".into(),
                    "--relay".into(),
                    relay.addr.to_string(),
                    "--id".into(),
                    id.hyphenated().to_string(),
                    "--secret-file".into(),
                    secret_file.display().to_string(),
                    "--to".into(),
                    sink.to_string(),
                    "--pool".into(),
                    "16".into(),
                ],
            );
            let expose = spawn_quiet(&prog, &a, &dir.path().join("expose.log"))?;
            let expose_pid = expose.id().context("tryst expose exited at once")?;
            let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let (prog2, a2) = pinned(
                pin,
                &tryst,
                &[
                    "connect".into(),
                    "--relay".into(),
                    relay.addr.to_string(),
                    "--id".into(),
                    id.hyphenated().to_string(),
                    "--listen".into(),
                    listen.to_string(),
                ],
            );
            let mut connect = spawn_quiet(&prog2, &a2, &dir.path().join("connect.log"))?;
            let connect_pid = connect.id().context("tryst connect exited at once")?;
            wait_listening(listen, &mut connect, "tryst connect")
                .await
                .with_context(|| crate::relay::tail(&dir.path().join("connect.log"), 10))?;
            Ok(Target {
                name,
                route: Route::Plain(listen),
                pids: vec![relay.pid, expose_pid, connect_pid],
                command: format!(
                    "{}; {prog} {}; {prog2} {}",
                    relay.command,
                    a.join(" "),
                    a2.join(" ")
                ),
                children: vec![expose, connect],
                relay: Some(relay),
                _dir: Some(dir),
            })
        }
    }
}

/// Like [`spawn`], for tryst's agents: warnings only (no line per pairing in the log).
fn spawn_quiet(program: &str, args: &[String], log: &std::path::Path) -> Result<Child> {
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

fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| procfs::sample(*p, false).cpu_seconds)
        .sum()
}

// ---------------------------------------------------------------- workloads

type Metrics = BTreeMap<String, f64>;

async fn bulk(target: &Target, pairs: usize, duration: Duration) -> Result<Metrics, Failure> {
    let mut conns = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let mut s = target.route.open().await?;
        s.write_all(b"B")
            .await
            .map_err(|e| Failure::io("client/mode", &e))?;
        conns.push(s);
    }
    let mut buf = vec![0u8; 256 * 1024];
    Pattern::new(0, 0).fill(0, &mut buf);
    let buf = Rc::new(buf);
    let cpu0 = cpu_seconds(&target.pids);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(pairs);
    for mut s in conns {
        let buf = buf.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                match tokio::time::timeout_at(deadline, s.write(&buf)).await {
                    Ok(Ok(n)) => sent += n as u64,
                    Ok(Err(e)) => return Err(Failure::io("client/bulk write", &e)),
                    Err(_) => break,
                }
            }
            s.shutdown()
                .await
                .map_err(|e| Failure::io("client/shutdown", &e))?;
            let mut ack = [0u8; 8];
            net::within(STEP_TIMEOUT, "client/bulk ack", async {
                s.read_exact(&mut ack)
                    .await
                    .map_err(|e| Failure::io("client/bulk ack", &e))
            })
            .await?;
            let counted = u64::from_le_bytes(ack);
            if counted != sent {
                return Err(Failure(format!(
                    "client/bulk: sink counted {counted} of {sent} bytes"
                )));
            }
            Ok(sent)
        }));
    }
    let mut total = 0u64;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => total += n,
            Ok(Err(f)) => {
                first_err.get_or_insert(f);
            }
            Err(_) => {
                first_err.get_or_insert_with(|| Failure("client/bulk: task failed".into()));
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&target.pids) - cpu0;
    if let Some(f) = first_err {
        return Err(f);
    }
    let mut m = Metrics::new();
    m.insert("gbit_s".into(), total as f64 * 8.0 / elapsed / 1e9);
    m.insert("bytes".into(), total as f64);
    if !target.pids.is_empty() && total > 0 {
        m.insert("cpu_s_per_gb".into(), cpu / (total as f64 / 1e9));
    }
    Ok(m)
}

async fn pingpong(target: &Target, duration: Duration) -> Result<Metrics, Failure> {
    let mut s = target.route.open().await?;
    s.write_all(b"E")
        .await
        .map_err(|e| Failure::io("client/mode", &e))?;
    let p = Pattern::new(1, 1);
    let mut offset = 0u64;
    // Warm-up, not recorded.
    for _ in 0..100 {
        net::within(
            STEP_TIMEOUT,
            "client/echo",
            net::echo_round(&mut s, &p, offset, 64, "client"),
        )
        .await?;
        offset += 64;
    }
    let mut h = Latency::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let t = Instant::now();
        let e = net::within(
            STEP_TIMEOUT,
            "client/echo",
            net::echo_round(&mut s, &p, offset, 64, "client"),
        )
        .await?;
        h.record(e.done - t);
        offset += 64;
    }
    net::within(
        STEP_TIMEOUT,
        "client/close",
        net::close_clean(&mut s, "client"),
    )
    .await?;
    let mut m = Metrics::new();
    m.insert("p50_us".into(), h.quantile_ns(0.5) as f64 / 1e3);
    m.insert("p99_us".into(), h.quantile_ns(0.99) as f64 / 1e3);
    m.insert("round_trips".into(), h.count() as f64);
    Ok(m)
}

/// Where the pairing workloads' generator threads run.
#[derive(Debug, Clone)]
struct Generators {
    /// Generator threads.
    count: usize,
    /// CPUs to pin them to, round robin (empty: not pinned).
    cpus: Vec<usize>,
    /// Concurrent loops per thread in the closed-loop workload.
    loops: usize,
    /// Offered pairings per second in the open-loop workload (all threads together).
    rate: f64,
}

/// Most arrivals of one open-loop generator thread still in progress; an arrival
/// beyond it is not started and counted as `dropped` (the offered rate is more than
/// the target sustains).
const MAX_OUTSTANDING_PER_GENERATOR: usize = 4096;

/// One pairing: open a route, send the mode byte and one pattern byte, read the echo,
/// close. Returns when the echoed byte has been checked.
async fn pair_once(route: &Route, seed: u64) -> Result<TcpStream, Failure> {
    let mut s = route.open().await?;
    let p = Pattern::new(2, seed);
    let mut msg = [b'E', 0];
    p.fill(0, &mut msg[1..]);
    s.write_all(&msg)
        .await
        .map_err(|e| Failure::io("client/mode", &e))?;
    let mut back = [0u8; 1];
    net::within(STEP_TIMEOUT, "client/echo", async {
        s.read_exact(&mut back)
            .await
            .map_err(|e| Failure::io("client/echo read", &e))
    })
    .await?;
    if back[0] != msg[1] {
        return Err(Failure("client/echo: corrupt bytes".into()));
    }
    Ok(s)
}

/// What one generator thread reports.
#[derive(Debug)]
struct GeneratorResult {
    pairings: u64,
    latency: Latency,
    /// Open loop: arrivals not started because too many were in progress.
    dropped: u64,
}

/// Runs `work` on `gens.count` threads, each with its own current-thread runtime and
/// pinned to its CPU, and collects their results without blocking this thread (which
/// also serves the sink).
async fn on_generators<F, Fut>(gens: &Generators, work: F) -> Result<Vec<GeneratorResult>, Failure>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<GeneratorResult, Failure>> + 'static,
{
    let work = Arc::new(work);
    let mut results = Vec::new();
    for g in 0..gens.count {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cpu = (!gens.cpus.is_empty()).then(|| gens.cpus[g % gens.cpus.len()]);
        let work = work.clone();
        std::thread::Builder::new()
            .name(format!("pairing-gen-{g}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    let mut set = nix::sched::CpuSet::new();
                    // Best effort: an unpinned generator still measures correctly.
                    if set.set(cpu).is_ok() {
                        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                    }
                }
                let r = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Failure::io("generator/runtime", &e))
                    .and_then(|rt| {
                        let local = tokio::task::LocalSet::new();
                        local.block_on(&rt, work(g))
                    });
                let _ = tx.send(r);
            })
            .map_err(|e| Failure::io("generator/thread", &e))?;
        results.push(rx);
    }
    let mut out = Vec::new();
    let mut first_err = None;
    for rx in results {
        match rx.await {
            Ok(Ok(r)) => out.push(r),
            Ok(Err(f)) => {
                first_err.get_or_insert(f);
            }
            Err(_) => {
                first_err.get_or_insert_with(|| Failure("generator: thread died".into()));
            }
        }
    }
    match first_err {
        Some(f) => Err(f),
        None => Ok(out),
    }
}

/// Relay CPU and this process's CPU, for per-pairing costs.
fn pairing_cpu(target: &Target) -> (f64, f64) {
    (
        cpu_seconds(&target.pids),
        cpu_seconds(&[std::process::id()]),
    )
}

/// Adds count, rate, latency and CPU-per-pairing metrics.
fn pairing_metrics(
    target: &Target,
    results: &[GeneratorResult],
    elapsed: f64,
    cpu0: (f64, f64),
) -> Metrics {
    let (relay_cpu, own_cpu) = pairing_cpu(target);
    let (relay_cpu, own_cpu) = (relay_cpu - cpu0.0, own_cpu - cpu0.1);
    let total: u64 = results.iter().map(|r| r.pairings).sum();
    let mut h = Latency::new();
    for r in results {
        h.merge(&r.latency);
    }
    let mut m = Metrics::new();
    m.insert("per_s".into(), total as f64 / elapsed);
    if total > 0 {
        if !target.pids.is_empty() {
            m.insert("relay_cpu_us".into(), relay_cpu * 1e6 / total as f64);
        }
        // This process's tree includes the relay it started; count only the generator.
        let generator = (own_cpu - relay_cpu).max(0.0);
        m.insert("generator_cpu_us".into(), generator * 1e6 / total as f64);
    }
    m.insert("p50_us".into(), h.quantile_ns(0.5) as f64 / 1e3);
    m.insert("p99_us".into(), h.quantile_ns(0.99) as f64 / 1e3);
    m.insert("count".into(), total as f64);
    m.insert("generators".into(), results.len() as f64);
    m
}

/// Closed loop: `gens.loops` loops on each generator thread, each pairing as fast as
/// the target answers, for `duration`: pairings/s at saturation.
async fn pairing(
    target: &Target,
    duration: Duration,
    gens: &Generators,
) -> Result<Metrics, Failure> {
    let cpu0 = pairing_cpu(target);
    let start = std::time::Instant::now();
    let deadline = start + duration;
    let (route, loops) = (target.route.clone(), gens.loops);
    let results = on_generators(gens, move |g| {
        let route = route.clone();
        async move {
            let mut tasks = Vec::new();
            for l in 0..loops {
                let route = route.clone();
                let stream = ((g * loops + l) as u64) << 32;
                tasks.push(tokio::task::spawn_local(async move {
                    let mut h = Latency::new();
                    let mut n = 0u64;
                    while std::time::Instant::now() < deadline {
                        let t = std::time::Instant::now();
                        let mut s = pair_once(&route, stream | n).await?;
                        h.record(t.elapsed());
                        net::within(
                            STEP_TIMEOUT,
                            "client/close",
                            net::close_clean(&mut s, "client"),
                        )
                        .await?;
                        n += 1;
                    }
                    Ok::<_, Failure>((n, h))
                }));
            }
            let mut r = GeneratorResult {
                pairings: 0,
                latency: Latency::new(),
                dropped: 0,
            };
            for t in tasks {
                let (n, h) = t
                    .await
                    .map_err(|_| Failure("client/pairing: task failed".into()))??;
                r.pairings += n;
                r.latency.merge(&h);
            }
            Ok(r)
        }
    })
    .await?;
    Ok(pairing_metrics(
        target,
        &results,
        start.elapsed().as_secs_f64(),
        cpu0,
    ))
}

/// Open loop: arrivals at fixed intervals adding up to `gens.rate` per second over all
/// generator threads, each started whether or not earlier ones finished, for
/// `duration`. Latency runs from each arrival's scheduled time, so a target that falls
/// behind shows it (no coordinated omission). Gaps under 2 ms are paced by yielding
/// rather than by the runtime's millisecond timer, which would bunch arrivals.
async fn pairing_open(
    target: &Target,
    duration: Duration,
    gens: &Generators,
) -> Result<Metrics, Failure> {
    let cpu0 = pairing_cpu(target);
    let start = std::time::Instant::now();
    let deadline = start + duration;
    let route = target.route.clone();
    let (count, rate) = (gens.count, gens.rate);
    let results = on_generators(gens, move |g| {
        let route = route.clone();
        async move {
            let interval = Duration::from_secs_f64(count as f64 / rate);
            // Thread g's arrivals are offset by g/rate, interleaving the threads.
            let mut next = start + Duration::from_secs_f64(g as f64 / rate);
            let outstanding = Rc::new(std::cell::Cell::new(0usize));
            let mut tasks = Vec::new();
            let mut dropped = 0u64;
            let mut n = 0u64;
            while next < deadline {
                let now = std::time::Instant::now();
                if next > now {
                    let gap = next - now;
                    if gap > Duration::from_millis(2) {
                        tokio::time::sleep(gap - Duration::from_millis(1)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                let scheduled = next;
                next += interval;
                if outstanding.get() >= MAX_OUTSTANDING_PER_GENERATOR {
                    dropped += 1;
                    continue;
                }
                outstanding.set(outstanding.get() + 1);
                let (route, outstanding) = (route.clone(), outstanding.clone());
                let seed = ((g as u64) << 40) | n;
                n += 1;
                tasks.push(tokio::task::spawn_local(async move {
                    let r = pair_once(&route, seed).await;
                    let latency = scheduled.elapsed();
                    outstanding.set(outstanding.get() - 1);
                    let mut s = r?;
                    net::within(
                        STEP_TIMEOUT,
                        "client/close",
                        net::close_clean(&mut s, "client"),
                    )
                    .await?;
                    Ok::<_, Failure>(latency)
                }));
            }
            let mut r = GeneratorResult {
                pairings: 0,
                latency: Latency::new(),
                dropped,
            };
            for t in tasks {
                let latency = t
                    .await
                    .map_err(|_| Failure("client/pairing: task failed".into()))??;
                r.latency.record(latency);
                r.pairings += 1;
            }
            Ok(r)
        }
    })
    .await?;
    let mut m = pairing_metrics(target, &results, start.elapsed().as_secs_f64(), cpu0);
    m.insert("offered_per_s".into(), rate);
    m.insert(
        "dropped".into(),
        results.iter().map(|r| r.dropped).sum::<u64>() as f64,
    );
    Ok(m)
}

async fn run_workload(
    target: &Target,
    workload: Workload,
    duration: Duration,
    gens: &Generators,
) -> Result<Metrics, Failure> {
    match workload {
        Workload::Bulk1 => bulk(target, 1, duration).await,
        Workload::Bulk16 => bulk(target, 16, duration).await,
        Workload::Bulk256 => bulk(target, 256, duration).await,
        Workload::Pingpong => pingpong(target, duration).await,
        Workload::Pairing => pairing(target, duration, gens).await,
        Workload::PairingOpen => pairing_open(target, duration, gens).await,
    }
}

// ---------------------------------------------------------------- report

/// One measurement.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    repetition: usize,
    workload: String,
    target: String,
    metrics: Metrics,
    error: Option<String>,
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
struct SummaryRow {
    workload: String,
    metric: String,
    label: String,
    target: String,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    samples: usize,
    baseline: String,
    ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
struct CompareReport {
    command: String,
    kernel: String,
    cpus: usize,
    pinning: String,
    repetitions: usize,
    duration_s: f64,
    targets: BTreeMap<String, String>,
    skipped: BTreeMap<String, String>,
    cells: Vec<Cell>,
    summary: Vec<SummaryRow>,
    errors: BTreeMap<String, u64>,
}

fn summarize(cells: &[Cell], targets: &[String]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for def in METRICS {
        let values = |t: &str| -> Vec<f64> {
            cells
                .iter()
                .filter(|c| c.workload == def.workload && c.target == t && c.error.is_none())
                .filter_map(|c| c.metrics.get(def.key).copied())
                .collect()
        };
        if !cells.iter().any(|c| c.workload == def.workload) {
            continue;
        }
        let base = median(&values(def.baseline));
        for t in targets {
            let v = values(t);
            if v.is_empty()
                && cells
                    .iter()
                    .all(|c| c.target != *t || c.workload != def.workload || c.error.is_none())
            {
                // No samples and no failures: the metric does not apply (e.g. relay CPU
                // for direct).
                continue;
            }
            let med = median(&v);
            let sp = spread(&v);
            rows.push(SummaryRow {
                workload: def.workload.into(),
                metric: def.key.into(),
                label: def.label.into(),
                target: t.clone(),
                median: med,
                min: sp.map(|s| s.0),
                max: sp.map(|s| s.1),
                samples: v.len(),
                baseline: def.baseline.into(),
                ratio: ratio(med, base),
            });
        }
    }
    rows
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn render(report: &CompareReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "\n== loadgen compare ==");
    let _ = writeln!(o, "command    {}", report.command);
    let _ = writeln!(
        o,
        "machine    kernel {}, {} CPUs",
        report.kernel, report.cpus
    );
    let _ = writeln!(o, "pinning    {}", report.pinning);
    let _ = writeln!(
        o,
        "method     {} repetitions, interleaved (for each repetition, each workload, every target in turn), {:.1}s per measurement; medians with [min-max]",
        report.repetitions, report.duration_s
    );
    for (t, cmd) in &report.targets {
        let _ = writeln!(o, "target     {t}: {cmd}");
    }
    for (t, why) in &report.skipped {
        let _ = writeln!(o, "SKIPPED    {t}: {why}");
    }
    let mut last = String::new();
    for r in &report.summary {
        let key = format!("{}/{}", r.workload, r.metric);
        if key != last {
            let def = METRICS
                .iter()
                .find(|d| d.workload == r.workload && d.key == r.metric);
            let better = def
                .map(|d| {
                    if d.higher_is_better {
                        "higher is better"
                    } else {
                        "lower is better"
                    }
                })
                .unwrap_or("");
            let _ = writeln!(o, "\n{} ({better}; ratio vs {})", r.label, r.baseline);
            let _ = writeln!(
                o,
                "  {:<22} {:>10} {:>23} {:>8}",
                "target", "median", "min-max", "ratio"
            );
            last = key;
        }
        let range = format!("{}-{}", fmt_num(r.min), fmt_num(r.max));
        let failed = if r.samples < report.repetitions {
            format!("  ({} of {} runs ok)", r.samples, report.repetitions)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  {:<22} {:>10} {:>23} {:>8}{failed}",
            r.target,
            fmt_num(r.median),
            range,
            r.ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    if report.errors.is_empty() {
        let _ = writeln!(o, "\nerrors     none");
    } else {
        let _ = writeln!(o, "\nerrors:");
        for (k, v) in &report.errors {
            let _ = writeln!(o, "  {v:>7}  {k}");
        }
    }
    o
}

// ---------------------------------------------------------------- main

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn have(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Most generator threads `--pairing-generators` picks by default.
const AUTO_GENERATORS_MAX: usize = 8;

/// Pins this process to CPU 0 and returns the CPU list for relays, or why not.
fn pinning(args: &CompareArgs) -> (Option<String>, String) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if args.no_pin {
        return (None, "none (--no-pin)".into());
    }
    if cpus < 2 {
        return (None, format!("none: only {cpus} CPU available"));
    }
    if !have("taskset") {
        return (None, "none: taskset not found".into());
    }
    let mut set = nix::sched::CpuSet::new();
    if set.set(0).is_err()
        || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err()
    {
        return (None, "none: could not pin the generator to CPU 0".into());
    }
    (Some("1".into()), "relays on CPU 1 (taskset -c 1); generator and sink (this process) on CPU 0 (sched_setaffinity)".into())
}

/// The pairing generator threads for `cpus` CPUs: pinned (when the relays are) to the
/// CPUs other than the relays' CPU 1, those other than the sink's CPU 0 first, so the
/// generators compete with neither where there are enough CPUs.
fn generators(args: &CompareArgs, cpus: usize, pinned: bool) -> Generators {
    let others: Vec<usize> = (2..cpus).collect();
    let count = args
        .pairing_generators
        .unwrap_or_else(|| others.len().clamp(1, AUTO_GENERATORS_MAX));
    let cpus = if !pinned {
        Vec::new()
    } else if others.is_empty() {
        vec![0]
    } else {
        others
    };
    Generators {
        count,
        cpus,
        loops: args.pairing_loops,
        rate: args.rate,
    }
}

fn describe_generators(g: &Generators) -> String {
    let cpus = if g.cpus.is_empty() {
        "not pinned".to_string()
    } else {
        let list: Vec<String> = g.cpus.iter().map(usize::to_string).collect();
        format!("pinned round robin to CPU {}", list.join(","))
    };
    format!(
        "{} pairing generator thread(s), {cpus}; {} loops each (pairing), {} pairings/s offered (pairing-open)",
        g.count, g.loops, g.rate
    )
}

/// Entry point of `loadgen compare`. `Ok(false)` when any measurement failed.
pub(crate) fn main(args: &CompareArgs) -> Result<bool> {
    args.validate()?;
    crate::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let r = local.block_on(&rt, run(args));
    drop(local);
    rt.shutdown_background();
    r
}

async fn run(args: &CompareArgs) -> Result<bool> {
    // Count CPUs before pinning narrows what this process may use.
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (pin, pin_text) = pinning(args);
    let gens = generators(args, cpus, pin.is_some());
    let pin_text = format!("{pin_text}; {}", describe_generators(&gens));
    eprintln!("loadgen compare: pinning: {pin_text}");
    let errors = Rc::new(std::cell::RefCell::new(crate::stats::Errors::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let sink = listener.local_addr()?;
    tokio::task::spawn_local(run_sink_listener(listener, errors.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut targets = Vec::new();
    let mut skipped = BTreeMap::new();
    for &name in &args.targets {
        let missing = match name {
            CompareTarget::HaproxySplice | CompareTarget::HaproxyCopy if !have(&args.haproxy) => {
                Some(format!(
                    "{} not found (run loadgen/scripts/install-peers.sh)",
                    args.haproxy
                ))
            }
            CompareTarget::Bore if !have(&args.bore) => Some(format!(
                "{} not found (run loadgen/scripts/install-peers.sh)",
                args.bore
            )),
            _ => None,
        };
        if let Some(why) = missing {
            eprintln!("loadgen compare: SKIPPING {name}: {why}");
            skipped.insert(name.to_string(), why);
            continue;
        }
        match start_target(name, args, sink, pin.as_deref(), &stop_rx, &errors).await {
            Ok(t) => {
                eprintln!("loadgen compare: started {name}: {}", t.command);
                targets.push(t);
            }
            Err(e) => {
                let why = format!("{e:#}");
                eprintln!("loadgen compare: SKIPPING {name}: could not start: {why}");
                skipped.insert(name.to_string(), why);
            }
        }
    }
    if !targets.iter().any(|t| t.name == CompareTarget::Direct) {
        bail!("the direct baseline could not run");
    }

    let mut cells = Vec::new();
    for rep in 0..args.repetitions {
        for &w in &args.workloads {
            for t in &targets {
                eprintln!(
                    "loadgen compare: repetition {}/{} {w} {}",
                    rep + 1,
                    args.repetitions,
                    t.name
                );
                let result = run_workload(t, w, args.duration, &gens).await;
                let (metrics, error) = match result {
                    Ok(m) => (m, None),
                    Err(f) => {
                        eprintln!("loadgen compare: {w} {} failed: {}", t.name, f.0);
                        errors.borrow_mut().add(format!("{}/{w}: {}", t.name, f.0));
                        (Metrics::new(), Some(f.0))
                    }
                };
                cells.push(Cell {
                    repetition: rep,
                    workload: w.to_string(),
                    target: t.name.to_string(),
                    metrics,
                    error,
                });
            }
        }
    }

    let _ = stop_tx.send(true);
    // Let the parked sink tasks see the stop before their relays close them.
    tokio::task::yield_now().await;
    let mut target_cmds = BTreeMap::new();
    for t in targets.iter() {
        target_cmds.insert(t.name.to_string(), t.command.clone());
    }
    let names: Vec<String> = targets.iter().map(|t| t.name.to_string()).collect();
    for mut t in targets {
        if let Some(r) = t.relay.take() {
            let _ = r.stop(Duration::from_secs(10)).await;
        }
        for mut c in t.children.drain(..) {
            if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
    let errors = errors.borrow().clone();
    let report = CompareReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        kernel: kernel_release(),
        cpus,
        pinning: pin_text,
        repetitions: args.repetitions,
        duration_s: args.duration.as_secs_f64(),
        targets: target_cmds,
        skipped,
        summary: summarize(&cells, &names),
        cells,
        errors: errors.0.clone(),
    };
    println!("{}", render(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(errors.total() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn spread_and_ratio() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(spread(&[]), None);
        assert_eq!(ratio(Some(15.0), Some(30.0)), Some(0.5));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }

    fn cell(rep: usize, w: &str, t: &str, key: &str, v: f64) -> Cell {
        Cell {
            repetition: rep,
            workload: w.into(),
            target: t.into(),
            metrics: [(key.to_string(), v)].into(),
            error: None,
        }
    }

    #[test]
    fn summary_takes_medians_spreads_and_ratios_to_the_baseline() {
        let mut cells = vec![
            cell(0, "bulk1", "direct", "gbit_s", 30.0),
            cell(1, "bulk1", "direct", "gbit_s", 20.0),
            cell(2, "bulk1", "direct", "gbit_s", 25.0),
            cell(0, "bulk1", "tryst", "gbit_s", 10.0),
            cell(1, "bulk1", "tryst", "gbit_s", 15.0),
            cell(2, "bulk1", "tryst", "gbit_s", 12.5),
            cell(0, "bulk1", "tryst", "cpu_s_per_gb", 0.2),
        ];
        cells.push(Cell {
            repetition: 2,
            workload: "bulk1".into(),
            target: "bore".into(),
            metrics: Metrics::new(),
            error: Some("x".into()),
        });
        let rows = summarize(&cells, &["direct".into(), "tryst".into(), "bore".into()]);
        let find = |t: &str, m: &str| {
            rows.iter()
                .find(|r| r.target == t && r.metric == m)
                .cloned()
        };
        let d = find("direct", "gbit_s").unwrap();
        assert_eq!(
            (d.median, d.min, d.max, d.ratio),
            (Some(25.0), Some(20.0), Some(30.0), Some(1.0))
        );
        let t = find("tryst", "gbit_s").unwrap();
        assert_eq!(t.median, Some(12.5));
        assert_eq!(t.ratio, Some(0.5));
        // A failed target still gets a row (no median), so the failure is visible.
        let b = find("bore", "gbit_s").unwrap();
        assert_eq!((b.median, b.samples), (None, 0));
        // CPU per GB: no baseline (haproxy-splice absent) -> no ratio; direct has no row.
        assert_eq!(find("tryst", "cpu_s_per_gb").unwrap().ratio, None);
        assert!(find("direct", "cpu_s_per_gb").is_none());
        let text = render(&CompareReport {
            command: "x".into(),
            kernel: "k".into(),
            cpus: 2,
            pinning: "p".into(),
            repetitions: 3,
            duration_s: 1.0,
            targets: BTreeMap::new(),
            skipped: [("bore".to_string(), "not installed".to_string())].into(),
            cells: Vec::new(),
            summary: rows,
            errors: BTreeMap::new(),
        });
        assert!(text.contains("SKIPPED    bore: not installed"));
        assert!(text.contains("(0 of 3 runs ok)"));
    }

    #[test]
    fn haproxy_config_switches_splice() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let on = haproxy_config(a, b, true);
        assert!(on.contains("option splice-request") && on.contains("option splice-response"));
        assert!(!on.contains("no option splice"));
        assert!(
            on.contains("tune.pipesize 262144")
                && on.contains("bind 127.0.0.1:1000")
                && on.contains("server sink 127.0.0.1:2000")
        );
        let off = haproxy_config(a, b, false);
        assert!(off.contains("no option splice-request"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sink_counts_bulk_and_echoes() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let errors = Rc::new(std::cell::RefCell::new(crate::stats::Errors::default()));
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::task::spawn_local(run_sink_listener(l, errors.clone()));
                let t = Target {
                    name: CompareTarget::Direct,
                    route: Route::Plain(addr),
                    pids: Vec::new(),
                    command: String::new(),
                    children: Vec::new(),
                    relay: None,
                    _dir: None,
                };
                let m = bulk(&t, 2, Duration::from_millis(100)).await.unwrap();
                assert!(m["bytes"] > 0.0 && !m.contains_key("cpu_s_per_gb"));
                let m = pingpong(&t, Duration::from_millis(50)).await.unwrap();
                assert!(m["round_trips"] > 0.0);
                let gens = Generators {
                    count: 2,
                    cpus: Vec::new(),
                    loops: 2,
                    rate: 2000.0,
                };
                let m = pairing(&t, Duration::from_millis(50), &gens).await.unwrap();
                assert!(m["count"] > 0.0);
                assert_eq!(m["generators"], 2.0);
                let m = pairing_open(&t, Duration::from_millis(50), &gens)
                    .await
                    .unwrap();
                assert!(m["count"] > 0.0 && m["offered_per_s"] == 2000.0);
                assert!(m["count"] + m["dropped"] <= 2000.0 * 0.05 + 2.0);
                assert_eq!(errors.borrow().total(), 0);
            })
            .await;
    }
}
