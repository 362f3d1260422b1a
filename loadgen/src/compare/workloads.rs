//! The workloads: bulk transfers, 64 B ping-pong, closed- and open-loop pairing.

use super::STEP_TIMEOUT;
use super::targets::{Route, Target};
use crate::cli::{BulkSink, Workload};
use crate::net::{self, Failure};
use crate::pattern::Pattern;
use crate::procfs::cpu_seconds;
use crate::stats::Latency;
use crate::transport::Conn;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A workload's measurements by name (`gbit_s`, `cpu_s_per_gb`, `p99_us`, ...).
pub(super) type Metrics = BTreeMap<String, f64>;

async fn bulk(
    target: &Target,
    pairs: usize,
    duration: Duration,
    sink: BulkSink,
) -> Result<Metrics, Failure> {
    // The mode byte tells the sink how to take the bytes in.
    let mode = match sink {
        BulkSink::Splice => b"Z",
        BulkSink::Copy => b"B",
    };
    let mut conns = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let mut s = target.route.open().await?;
        s.write_all(mode)
            .await
            .map_err(|e| Failure::io("client/mode", &e))?;
        conns.push(s);
    }
    let mut buf = vec![0u8; 256 * 1024];
    Pattern::new(0, 0).fill(0, &mut buf);
    let buf = Rc::new(buf);
    let cpu0 = cpu_seconds(&target.pids);
    let parts0 = part_cpu(target);
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
        insert_parts(&mut m, target, &parts0, "cpu_s_per_gb", 1e9 / total as f64);
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
pub(super) struct Generators {
    /// Generator threads.
    pub(super) count: usize,
    /// CPUs to pin them to, round robin (empty: not pinned).
    pub(super) cpus: Vec<usize>,
    /// Concurrent loops per thread in the closed-loop workload.
    pub(super) loops: usize,
    /// How the sink takes in the bulk workloads' bytes.
    pub(super) bulk_sink: BulkSink,
    /// Offered pairings per second in the open-loop workload (all threads together).
    pub(super) rate: f64,
}

/// Most arrivals of one open-loop generator thread still in progress; an arrival
/// beyond it is not started and counted as `dropped` (the offered rate is more than
/// the target sustains).
const MAX_OUTSTANDING_PER_GENERATOR: usize = 4096;

/// One pairing: open a route, send the mode byte and one pattern byte, read the echo,
/// close. Returns when the echoed byte has been checked.
async fn pair_once(route: &Route, seed: u64) -> Result<Conn, Failure> {
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

/// Pins the calling thread to `cpu`. Best effort: an unpinned generator or sink thread
/// still measures correctly.
pub(super) fn pin_current_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
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
                    pin_current_thread(cpu);
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

/// Relay CPU and this process's CPU, for per-pairing costs, and the relay CPU of each
/// named part (the cluster targets: node A, node B, redis-server).
fn pairing_cpu(target: &Target) -> (f64, f64, Vec<f64>) {
    (
        cpu_seconds(&target.pids),
        cpu_seconds(&[std::process::id()]),
        part_cpu(target),
    )
}

/// CPU seconds of each of the target's named parts (in `pids` order).
fn part_cpu(target: &Target) -> Vec<f64> {
    target
        .part_names
        .iter()
        .zip(&target.pids)
        .map(|(_, pid)| cpu_seconds(&[*pid]))
        .collect()
}

/// Adds `<prefix>_<part>` = CPU used by each named part since `cpu0`, times `scale`.
fn insert_parts(m: &mut Metrics, target: &Target, cpu0: &[f64], prefix: &str, scale: f64) {
    for ((name, before), after) in target.part_names.iter().zip(cpu0).zip(part_cpu(target)) {
        m.insert(format!("{prefix}_{name}"), (after - before) * scale);
    }
}

/// The directory round trips the target's tryst nodes have made so far, by purpose
/// (`tryst_cluster_directory_round_trips_total{what}` summed over every node's
/// `/metrics`); `None` for a target that is not a cluster or a node that does not
/// answer.
async fn directory_round_trips(target: &Target) -> Option<BTreeMap<String, f64>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if !target.part_names.contains(&"redis") {
        return None;
    }
    let mut total = BTreeMap::new();
    for relay in &target.relays {
        let scrape = async {
            let mut s = TcpStream::connect(relay.addr).await.ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut text = Vec::new();
            s.read_to_end(&mut text).await.ok()?;
            Some(String::from_utf8_lossy(&text).into_owned())
        };
        let text = tokio::time::timeout(STEP_TIMEOUT, scrape).await.ok()??;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("tryst_cluster_directory_round_trips_total{what=\"")
            else {
                continue;
            };
            let Some((what, value)) = rest.split_once("\"} ") else {
                continue;
            };
            if let Ok(n) = value.parse::<f64>() {
                *total.entry(what.replace(' ', "_")).or_insert(0.0) += n;
            }
        }
    }
    Some(total)
}

/// Adds count, rate, latency and CPU-per-pairing metrics, and for a cluster target the
/// directory round trips per pairing (both nodes; `trips`: the counts before and after).
fn pairing_metrics(
    target: &Target,
    results: &[GeneratorResult],
    elapsed: f64,
    cpu0: (f64, f64, Vec<f64>),
    trips: Option<(BTreeMap<String, f64>, BTreeMap<String, f64>)>,
) -> Metrics {
    let (relay_cpu, own_cpu, _) = pairing_cpu(target);
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
            insert_parts(&mut m, target, &cpu0.2, "relay_cpu_us", 1e6 / total as f64);
        }
        // This process's tree includes the relay it started; count only the generator.
        let generator = (own_cpu - relay_cpu).max(0.0);
        m.insert("generator_cpu_us".into(), generator * 1e6 / total as f64);
        if let Some((before, after)) = trips {
            // The total, and each purpose's share (`engine_round_trips_<what>`).
            let mut sum = 0.0;
            for (what, n) in &after {
                let grew = (n - before.get(what).copied().unwrap_or(0.0)).max(0.0);
                sum += grew;
                m.insert(format!("engine_round_trips_{what}"), grew / total as f64);
            }
            m.insert("engine_round_trips".into(), sum / total as f64);
        }
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
    let trips0 = directory_round_trips(target).await;
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
    let trips = trips0.zip(directory_round_trips(target).await);
    Ok(pairing_metrics(
        target,
        &results,
        start.elapsed().as_secs_f64(),
        cpu0,
        trips,
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
    let trips0 = directory_round_trips(target).await;
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
    let trips = trips0.zip(directory_round_trips(target).await);
    let mut m = pairing_metrics(target, &results, start.elapsed().as_secs_f64(), cpu0, trips);
    m.insert("offered_per_s".into(), rate);
    m.insert(
        "dropped".into(),
        results.iter().map(|r| r.dropped).sum::<u64>() as f64,
    );
    Ok(m)
}

/// Runs one workload through a target.
pub(super) async fn run_workload(
    target: &Target,
    workload: Workload,
    duration: Duration,
    gens: &Generators,
) -> Result<Metrics, Failure> {
    match workload {
        Workload::Bulk1 => bulk(target, 1, duration, gens.bulk_sink).await,
        Workload::Bulk16 => bulk(target, 16, duration, gens.bulk_sink).await,
        Workload::Bulk256 => bulk(target, 256, duration, gens.bulk_sink).await,
        Workload::Pingpong => pingpong(target, duration).await,
        Workload::Pairing => pairing(target, duration, gens).await,
        Workload::PairingOpen => pairing_open(target, duration, gens).await,
    }
}

#[cfg(test)]
mod tests {
    use super::super::sink::run_sink_listener;
    use super::*;
    use crate::cli::CompareTarget;
    use tokio::net::TcpListener;

    #[tokio::test(flavor = "current_thread")]
    async fn sink_counts_bulk_and_echoes() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let errors = Rc::new(std::cell::RefCell::new(crate::stats::Errors::default()));
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::task::spawn_local(run_sink_listener(l, None, errors.clone()));
                let t = Target {
                    name: CompareTarget::Direct,
                    route: Route::Plain(addr, None),
                    pids: Vec::new(),
                    command: String::new(),
                    children: Vec::new(),
                    relays: Vec::new(),
                    part_names: Vec::new(),
                    _dir: None,
                };
                for sink in [BulkSink::Copy, BulkSink::Splice] {
                    let m = bulk(&t, 2, Duration::from_millis(100), sink).await.unwrap();
                    assert!(m["bytes"] > 0.0 && !m.contains_key("cpu_s_per_gb"));
                }
                let m = pingpong(&t, Duration::from_millis(50)).await.unwrap();
                assert!(m["round_trips"] > 0.0);
                let gens = Generators {
                    count: 2,
                    cpus: Vec::new(),
                    loops: 2,
                    bulk_sink: BulkSink::Splice,
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
