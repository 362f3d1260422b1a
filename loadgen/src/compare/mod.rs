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
//!   to `tryst connect --listen --spares 16`, which reaches through the relay to `tryst
//!   expose --to <sink> --pool 16`. Its "relay" CPU is the sum of the relay and both
//!   agents (each also in the JSON: `relay`, `expose`, `connect`);
//!   "pairing" is the time to the first byte of a new reach.
//! - tryst-expose: the same relay and `tryst expose` as tryst-agents, but the generator
//!   connects to the relay's port for the id (`--id-listen`) with no agent of its own:
//!   bore's topology (a relay and one agent, the client connecting straight to the
//!   relay's public port). Its "relay" CPU is the relay and the agent (`relay`,
//!   `expose`); "pairing" is the time to the first byte of a new connection.
//! - tryst-cluster-local / tryst-cluster-cross: two clustered tryst nodes (A and B, one
//!   worker each) sharing a private `redis-server` this run starts (unix socket in a temp
//!   dir, `--save ''`); the sink parks on A, the generator reaches via A (local) or via B
//!   (cross: B's lookup in Redis, then the mesh hop to A). Each target starts its own
//!   pair of nodes and Redis; its "relay" CPU is both nodes (supervisor and workers) plus
//!   redis-server.
//! - direct-tls / tryst-tls / haproxy-tls: TLS 1.3 on both legs. The sink also listens
//!   for TLS with a self-signed certificate for 127.0.0.1 made for the run (rustls,
//!   ring); direct-tls is the generator's TLS straight to it; tryst-tls parks the sink
//!   over TLS at tryst's TLS listener and reaches it over TLS (tryst decrypts and
//!   re-encrypts every byte); haproxy-tls is HAProxy (one thread) terminating the
//!   generator's TLS with the same certificate and re-encrypting to the sink's TLS
//!   listener. Their ratios are against direct-tls and haproxy-tls.
//!
//! The parts: [`targets`] starts and stops each target (tryst, HAProxy, bore, the
//! agents) and names its route; [`sink`] is the far end every target forwards to
//! ([`tls`] its certificate for the `-tls` targets);
//! [`workloads`] drives bulk, ping-pong and pairing through a target; [`report`] turns
//! the cells into medians, spreads and ratios and renders them. Generic statistics live
//! in `crate::stats`, process start-up and pinning helpers in `crate::relay`.

mod discard;
mod report;
mod sink;
pub(crate) mod targets;
mod tls;
mod workloads;

use crate::cli::{CompareArgs, CompareTarget};
use crate::relay::have;
use anyhow::{Context, Result, bail};
use report::{Cell, CompareReport, render, summarize};
use sink::SinkThreads;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use targets::start_target;
use tokio::sync::watch;
use workloads::{Generators, Metrics, run_workload};

/// How long one step of a workload (a connect, a handshake, an echo) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
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
    (Some("1".into()), "relays on CPU 1 (taskset -c 1); bulk/ping-pong generator (this process) on CPU 0 (sched_setaffinity)".into())
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
        bulk_sink: args.bulk_sink,
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
    let node_b = match (&pin, &args.node_b_cpus) {
        (Some(_), Some(cpus)) => format!("; cluster node B on CPU {cpus} (taskset -c {cpus})"),
        _ => String::new(),
    };
    let sink_io = match args.bulk_sink {
        crate::cli::BulkSink::Splice => "bulk bytes spliced into /dev/null (--bulk-sink splice)",
        crate::cli::BulkSink::Copy => "bulk bytes read into a buffer (--bulk-sink copy)",
    };
    let pin_text = format!(
        "{pin_text}{node_b}; {}; the sink on as many threads of its own, on the same CPUs, {sink_io}",
        describe_generators(&gens)
    );
    eprintln!("loadgen compare: pinning: {pin_text}");
    let errors = Rc::new(std::cell::RefCell::new(crate::stats::Errors::default()));
    // The sink runs on threads of its own, as many as the generators and on their CPUs.
    let sinks = SinkThreads::start(gens.count, &gens.cpus)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sink = listener.local_addr()?;
    sinks.listen(&listener, None)?;
    drop(listener);
    // The sink's TLS listener, for the `-tls` targets only.
    let tls_targets = [
        CompareTarget::DirectTls,
        CompareTarget::TrystTls,
        CompareTarget::HaproxyTls,
    ];
    let sink_tls = if args.targets.iter().any(|t| tls_targets.contains(t)) {
        let mut tls = tls::SinkTls::generate()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        tls.addr = Some(listener.local_addr()?);
        sinks.listen(&listener, Some(&tls.acceptor))?;
        Some(tls)
    } else {
        None
    };
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut targets = Vec::new();
    let mut skipped = BTreeMap::new();
    for &name in &args.targets {
        let missing = match name {
            CompareTarget::HaproxySplice
            | CompareTarget::HaproxyCopy
            | CompareTarget::HaproxyTls
                if !have(&args.haproxy) =>
            {
                Some(format!(
                    "{} not found (run loadgen/scripts/install-peers.sh)",
                    args.haproxy
                ))
            }
            CompareTarget::Bore if !have(&args.bore) => Some(format!(
                "{} not found (run loadgen/scripts/install-peers.sh)",
                args.bore
            )),
            CompareTarget::TrystClusterLocal | CompareTarget::TrystClusterCross
                if !have(&args.redis_server) =>
            {
                Some(format!(
                    "{} not found: the cluster targets need a redis-server (run scripts/test-deps.sh)",
                    args.redis_server
                ))
            }
            _ => None,
        };
        if let Some(why) = missing {
            eprintln!("loadgen compare: SKIPPING {name}: {why}");
            skipped.insert(name.to_string(), why);
            continue;
        }
        match start_target(
            name,
            args,
            sink,
            sink_tls.as_ref(),
            pin.as_deref(),
            &stop_rx,
            &sinks,
        )
        .await
        {
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
    for t in targets {
        t.stop().await;
    }
    let mut errors = errors.borrow().clone();
    errors.merge(&sinks.finish());
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
