//! A capacity run: the parent process. Starts (or targets) the relay, spreads hidden
//! servers and clients over worker processes, drives the phases (park, go, hold, finish,
//! stop), prints progress every second and the final report.

use crate::cli::CapacityArgs;
use crate::net;
use crate::procfs::{self, TreeSample};
use crate::proto::{self, Auth, Credential};
use crate::relay::{LocalRelay, RelayOptions, tryst_binary};
use crate::report::{self, CapacityReport, RelayResources};
use crate::stats::Stats;
use crate::transport::{self, TlsSpec};
use crate::worker::{FromWorker, Progress, WorkerSpec};
use anyhow::{Context, Result, bail};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Entry point of a capacity run. `Ok(false)` when any error occurred.
pub(crate) fn main(args: &CapacityArgs) -> Result<bool> {
    args.validate()?;
    crate::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Splits `total` into `parts` near-equal shares (the first ones get the remainder).
pub(crate) fn split_even(total: u64, parts: usize) -> Vec<u64> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    progress: Progress,
    parked: bool,
    held: bool,
    clients_done: bool,
    stats: Option<Stats>,
}

async fn send_all(workers: &mut [Worker], line: &str) -> Result<()> {
    for (i, w) in workers.iter_mut().enumerate() {
        w.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .with_context(|| format!("worker {i} is gone"))?;
        w.stdin.flush().await?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Parking,
    Pairing,
    Holding,
    Finishing,
    Stopping,
}

async fn run(args: &CapacityArgs) -> Result<bool> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!(
        "loadgen: seed {seed} (pass --seed {seed} to repeat the client patterns and targets)"
    );

    // Ids, secrets and the relay.
    let mut _data_dir = None;
    let mut local: Option<LocalRelay> = None;
    let (relay_addr, ids, tls) = match args.relay {
        Some(addr) => {
            let path = args.secrets.as_ref().context("--relay needs --secrets")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut ids = match args.auth {
                Auth::Native => proto::parse_secrets(&text)?
                    .into_iter()
                    .map(|(id, s)| (id, Credential::Native(s)))
                    .collect(),
                Auth::Totp => proto::parse_totp_secrets(&text)?,
            };
            if ids.len() < args.hidden {
                bail!(
                    "{} holds {} {} but --hidden is {}",
                    path.display(),
                    ids.len(),
                    match args.auth {
                        Auth::Native => "ids in [secrets]",
                        Auth::Totp => "[totp] records",
                    },
                    args.hidden
                );
            }
            ids.truncate(args.hidden);
            let replacing = ids
                .iter()
                .filter(|(_, c)| matches!(c, Credential::Totp { queue: false, .. }))
                .count();
            if args.parked > 1 && replacing > 0 {
                eprintln!(
                    "loadgen: warning: {replacing} of the [totp] records used lack `parking = \"queue\"`: \
                     the relay keeps one parked connection per such id (a newer park replaces the \
                     older), so --parked {} will show as `hidden/parked: closed by the relay` errors",
                    args.parked
                );
            }
            let tls = if args.tls {
                let ca = match &args.tls_ca {
                    Some(p) => p.clone(),
                    None => transport::system_ca_bundle().with_context(|| {
                        format!(
                            "--tls without --tls-ca needs the system bundle {}; pass --tls-ca FILE \
                             (a relay's generated certificate is <data-dir>/tls-cert.pem)",
                            transport::SYSTEM_CA_BUNDLE
                        )
                    })?,
                };
                Some(TlsSpec {
                    ca,
                    name: args
                        .tls_name
                        .clone()
                        .unwrap_or_else(|| addr.ip().to_string()),
                })
            } else {
                None
            };
            (addr, ids, tls)
        }
        None => {
            let binary = tryst_binary(args.tryst.as_deref())?;
            let dir = tempfile::Builder::new()
                .prefix("loadgen-relay-")
                .tempdir()?;
            let (ids, text) = match args.auth {
                Auth::Native => {
                    let ids = proto::generate_ids(args.hidden);
                    let text = proto::render_secrets(&ids);
                    let ids = ids
                        .into_iter()
                        .map(|(id, s)| (id, Credential::Native(s)))
                        .collect::<Vec<_>>();
                    (ids, text)
                }
                Auth::Totp => {
                    let ids = proto::generate_totp_ids(args.hidden);
                    let text = proto::render_totp_secrets(&ids);
                    (ids, text)
                }
            };
            proto::write_private_atomic(&dir.path().join("secrets.toml"), &text)?;
            let opts = RelayOptions {
                binary,
                data_dir: dir.path().to_path_buf(),
                data_path: args.data_path.clone(),
                workers: args.relay_workers,
                extra: args.relay_args.clone(),
                pin_cpus: None,
                tls: args.tls,
            };
            let relay = LocalRelay::start(&opts, Duration::from_secs(30)).await?;
            let (addr, tls) = match relay.tls_addr {
                Some(tls_addr) => (
                    tls_addr,
                    Some(TlsSpec {
                        ca: dir.path().join("tls-cert.pem"),
                        name: tls_addr.ip().to_string(),
                    }),
                ),
                None => (relay.addr, None),
            };
            eprintln!(
                "loadgen: started relay pid {} on {}{}: {}",
                relay.pid,
                addr,
                if tls.is_some() { " (TLS)" } else { "" },
                relay.command
            );
            local = Some(relay);
            _data_dir = Some(dir);
            (addr, ids, tls)
        }
    };
    if let Some(t) = &tls {
        // Fail before starting workers when the trust anchors are unusable.
        transport::TlsClient::load(t)?;
    }
    let baseline = local.as_ref().map(|r| procfs::sample(r.pid, true));
    let kernel_baseline = procfs::kernel();
    let mut kernel_after_park = kernel_baseline;

    // Workers.
    let nworkers = args.worker_count();
    let concurrency = args.concurrent_clients();
    let barrier = concurrency >= args.clients;
    let client_shares = split_even(args.clients, nworkers);
    let conc_shares = split_even(concurrency, nworkers);
    let targets: Vec<uuid::Uuid> = ids.iter().map(|(id, _)| *id).collect();
    let source_ips = net::source_ips(relay_addr, args.source_ips);
    eprintln!(
        "loadgen: {} hidden x {} parked, {} clients ({} at once), {} worker processes, {} source addresses",
        args.hidden,
        args.parked,
        args.clients,
        concurrency,
        nworkers,
        source_ips.len().max(1)
    );
    let exe = std::env::current_exe()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Option<FromWorker>)>();
    let mut workers = Vec::with_capacity(nworkers);
    let mut first_client = 0u64;
    for i in 0..nworkers {
        let spec = WorkerSpec {
            index: i,
            relay: relay_addr,
            hidden: ids.iter().skip(i).step_by(nworkers).cloned().collect(),
            tls: tls.clone(),
            parked: args.parked,
            targets: targets.clone(),
            clients: client_shares[i],
            first_client,
            rounds: args.rounds,
            size: args.size,
            seed,
            rate: args.rate.map(|r| r / nworkers as f64),
            concurrency: conc_shares[i].max(1),
            hold_ms: if barrier {
                None
            } else {
                Some(u64::try_from(args.hold.as_millis()).unwrap_or(u64::MAX))
            },
            source_ips: source_ips.clone(),
            max_inflight: args.max_inflight.div_ceil(2 * nworkers).max(1),
            timeout_ms: u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        first_client += client_shares[i];
        let mut child = Command::new(&exe)
            .arg("__worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdin
            .write_all(format!("{}\n", serde_json::to_string(&spec)?).as_bytes())
            .await?;
        stdin.flush().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<FromWorker>(&line) {
                    Ok(msg) => {
                        let _ = tx.send((i, Some(msg)));
                    }
                    Err(e) => {
                        eprintln!("loadgen: worker {i} sent an unreadable line ({e}): {line}")
                    }
                }
            }
            let _ = tx.send((i, None));
        });
        workers.push(Worker {
            child,
            stdin,
            progress: Progress::default(),
            parked: false,
            held: false,
            clients_done: false,
            stats: None,
        });
    }
    drop(tx);

    // Phases.
    let mut phase = Phase::Parking;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut go_at = None;
    let mut hold_until: Option<Instant> = None;
    let mut last_paired = 0u64;
    let mut after_park = None;
    let mut at_peak: Option<TreeSample> = None;
    let mut last_fd_sample = Instant::now();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((i, msg)) = msg else { break };
                let w = &mut workers[i];
                match msg {
                    None => {
                        if w.stats.is_none() {
                            let status = w.child.wait().await.ok();
                            bail!("worker {i} ended without its results ({status:?})");
                        }
                    }
                    Some(FromWorker::Progress(p)) => w.progress = p,
                    Some(FromWorker::Parked) => w.parked = true,
                    Some(FromWorker::Held) => w.held = true,
                    Some(FromWorker::ClientsDone) => w.clients_done = true,
                    Some(FromWorker::Done(wire)) => w.stats = Some(Stats::from_wire(&wire)?),
                }
            }
            _ = ticker.tick() => {
                let sum = sum_progress(&workers);
                let rate = sum.paired.saturating_sub(last_paired);
                last_paired = sum.paired;
                eprintln!(
                    "[{:>5.0}s] {:<9} parked {:>6}  connected {:>6}  paired {:>7}  errors {:>5}  rate {:>6}/s",
                    started.elapsed().as_secs_f64(),
                    format!("{phase:?}").to_lowercase(),
                    sum.parked, sum.connected, sum.paired, sum.errors, rate
                );
                if let Some(r) = local.as_mut() {
                    if !r.is_running() {
                        bail!("the relay exited during the run; its log:\n{}", crate::relay::tail(&r.log, 20));
                    }
                    // Without a global hold, sample fds now and then and keep the busiest.
                    if !barrier && phase == Phase::Pairing && last_fd_sample.elapsed() >= Duration::from_secs(5) {
                        last_fd_sample = Instant::now();
                        let s = procfs::sample(r.pid, true);
                        if at_peak.is_none_or(|p| s.sockets > p.sockets) {
                            at_peak = Some(s);
                        }
                    }
                }
            }
        }
        match phase {
            Phase::Parking if workers.iter().all(|w| w.parked) => {
                after_park = local.as_ref().map(|r| procfs::sample(r.pid, true));
                kernel_after_park = procfs::kernel();
                eprintln!(
                    "loadgen: parking done in {:.1}s; starting clients",
                    started.elapsed().as_secs_f64()
                );
                send_all(&mut workers, "go").await?;
                go_at = Some(Instant::now());
                phase = Phase::Pairing;
            }
            Phase::Pairing if barrier && workers.iter().all(|w| w.held) => {
                if let Some(r) = local.as_ref() {
                    at_peak = Some(procfs::sample(r.pid, true));
                }
                eprintln!(
                    "loadgen: every client is paired or failed; holding for {:?}",
                    args.hold
                );
                hold_until = Some(Instant::now() + args.hold);
                phase = Phase::Holding;
            }
            Phase::Holding if hold_until.is_some_and(|t| Instant::now() >= t) => {
                send_all(&mut workers, "finish").await?;
                phase = Phase::Finishing;
            }
            Phase::Pairing | Phase::Finishing if workers.iter().all(|w| w.clients_done) => {
                send_all(&mut workers, "stop").await?;
                phase = Phase::Stopping;
            }
            Phase::Stopping if workers.iter().all(|w| w.stats.is_some()) => break,
            _ => {}
        }
        if phase == Phase::Holding
            && let Some(t) = hold_until
        {
            // Wake exactly at the end of the hold rather than on the next tick.
            let now = Instant::now();
            if t > now && t - now < Duration::from_secs(1) {
                tokio::time::sleep_until(t).await;
            }
        }
    }
    let pairing_phase = go_at.map(|g| g.elapsed()).unwrap_or_default();
    let mut stats = Stats::default();
    for w in workers {
        let Worker {
            mut child,
            stdin,
            stats: ws,
            ..
        } = w;
        drop(stdin);
        let _ = child.wait().await;
        if let Some(s) = &ws {
            stats.merge(s);
        }
    }
    let expected_bytes = args.clients * u64::from(args.rounds + 1) * args.size as u64;
    if stats.errors.total() == 0
        && (stats.clients_ok != args.clients || stats.bytes_verified != expected_bytes)
    {
        stats.errors.add(format!(
            "run: only {} of {} clients and {} of {} bytes verified",
            stats.clients_ok, args.clients, stats.bytes_verified, expected_bytes
        ));
    }

    let resources = match local {
        Some(relay) => {
            let end = procfs::sample(relay.pid, false);
            let command = relay.command.clone();
            let status = relay.stop(Duration::from_secs(30)).await?;
            let base = baseline.unwrap_or_default();
            let peak = at_peak.or(after_park).unwrap_or_default();
            let parked = after_park.unwrap_or_default();
            Some(RelayResources {
                kernel_baseline,
                kernel_after_park,
                user_bytes_per_parked: if parked.sockets > 0 {
                    parked.rss_anon as f64 / parked.sockets as f64
                } else {
                    0.0
                },
                kernel_bytes_per_parked: report::per_parked(
                    &base,
                    &parked,
                    kernel_after_park
                        .total()
                        .saturating_sub(kernel_baseline.total()),
                ),
                command,
                exit_status: status.to_string(),
                baseline: base,
                after_park: after_park.unwrap_or_default(),
                at_peak: peak,
                end,
                bytes_per_socket: report::marginal_bytes_per_socket(
                    &after_park.unwrap_or_default(),
                    &peak,
                ),
                bytes_per_socket_overall: if peak.sockets > 0 {
                    peak.rss as f64 / peak.sockets as f64
                } else {
                    0.0
                },
            })
        }
        None => None,
    };
    let report = CapacityReport::build(
        args,
        seed,
        relay_addr,
        nworkers,
        &stats,
        pairing_phase,
        started.elapsed(),
        resources,
    );
    println!("{}", report::render_capacity(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let svg = report::svg_plot(
            "tryst capacity run: latency by percentile",
            &[
                ("park", stats.park.curve()),
                ("pairing", stats.pairing.curve()),
                ("rtt", stats.rtt.curve()),
                ("last echo after hold", stats.last_echo.curve()),
            ],
        );
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.errors_total == 0)
}

fn sum_progress(workers: &[Worker]) -> Progress {
    workers.iter().fold(Progress::default(), |mut a, w| {
        a.parked += w.progress.parked;
        a.connected += w.progress.connected;
        a.paired += w.progress.paired;
        a.errors += w.progress.errors;
        a.tunnels += w.progress.tunnels;
        a
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_sums_and_balances() {
        assert_eq!(split_even(10, 3), vec![4, 3, 3]);
        assert_eq!(split_even(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split_even(0, 2), vec![0, 0]);
        let s = split_even(50_000, 8);
        assert_eq!(s.iter().sum::<u64>(), 50_000);
        assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
    }
}
