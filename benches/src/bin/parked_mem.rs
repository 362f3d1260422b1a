//! parked_mem: user-space bytes a worker's own tables hold per connection, counted by
//! a heap profiler's allocator (dhat), at 10k and 100k connections (and 1M with
//! `--million`).
//!
//! Each measurement runs in a child process (`parked_mem measure <stage> <n>`) so peaks
//! do not carry over. The child drives `tryst_engine::driver::footprint::simulate`: the
//! worker's real socket table, head reading and room, built by the same code the worker
//! runs, for `n` connections with distinct keys, with the worker's budget
//! (`max_sockets_per_worker`, `max_parked_per_worker`) set to `n`. Two stages:
//! - `parked`: the head arrived and the connection parked (what a million parked hidden
//!   servers hold);
//! - `awaiting-head`: accepted, nothing read yet (a connect burst before heads arrive).
//!
//! "live" is what stays allocated while the connections are held (reserved capacity
//! counts in full, resident or not), "peak" the high-water mark while getting there: a
//! hash table grown by doubling holds its old and new tables at once; a `Vec` grown by
//! `realloc` counts as resized in place, so a copying `realloc` is understated.
//! Allocation sizes are deterministic: the only randomness is std's hash seed, which
//! changes probe order, not table sizes.
//!
//! A third measurement (`measure-secrets <ids> <workers>`) loads a secrets file of `ids`
//! native ids the way each of `workers` worker processes does
//! (`FileSecrets::load_share`, its own share of the ids) and counts what all of them
//! keep together. A relay needs one worker per ~19,000 sockets, so with every worker
//! holding the whole file memory grew as ids x workers: about 300 B per id per worker,
//! 4.8 GB at 500,000 parked (docs/performance.md "Secrets per worker").
//!
//! `parked_mem --check` exits 1 when a connection (at either stage) costs more than
//! [`MAX_LIVE_PER_CONN`] live or [`MAX_PEAK_PER_CONN`] peak bytes at any size, when the
//! tables' own accounting does not add up to what the allocator counted, when
//! the live cost at 100k is more than [`MAX_GROWTH`] times that at 10k (flat from 10k up
//! is the goal), when the secrets all workers keep cost more than
//! [`MAX_SECRET_PER_ID`] bytes per id, or when they grow with the worker count (more than
//! [`MAX_GROWTH`] times from 1 to [`SECRETS_WORKERS`] workers); `scripts/bench-gate.sh`
//! runs it.

#![forbid(unsafe_code)]

use std::process::{Command, ExitCode};
use std::time::Instant;
use tryst_engine::auth::{Nonce, Proof, ReplayCache};
use tryst_engine::driver::EngineConfig;
use tryst_engine::driver::footprint::{Stage, simulate};
use tryst_engine::route::NativeRouterConfig;
use tryst_engine::target::RendezvousId;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Most live bytes a connection (parked, or awaiting its head) may cost in the
/// worker's tables. Measured: 209-238 B from 10k to 1M (docs/performance.md).
const MAX_LIVE_PER_CONN: f64 = 256.0;
/// Most high-water-mark bytes per connection while getting there.
const MAX_PEAK_PER_CONN: f64 = 320.0;
/// Most growth of the live cost per parked connection from 10k to 100k.
const MAX_GROWTH: f64 = 1.10;

/// Most live bytes per id of the secrets all workers keep together. Measured: 114.4 B at
/// 20,000 ids (a power-of-two `HashMap` of 20 B index entries at 61 % load, and the
/// id's 80 B keyed HMAC state in a `Vec`); 93.4 B when the map held the secret itself
/// (inline, 40 B) and each proof padded and hashed it; 100.2 B before secrets were
/// inline.
const MAX_SECRET_PER_ID: f64 = 120.0;
/// Ids in the secrets file of the secrets measurement.
const SECRETS_IDS: usize = 20_000;
/// Worker counts of the secrets measurement: one, and as many as ~300,000 sockets need.
const SECRETS_WORKERS: [usize; 2] = [1, 16];

const SIZES: [usize; 2] = [10_000, 100_000];
const MILLION: usize = 1_000_000;

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Parked => "parked",
        Stage::AwaitingHead => "awaiting-head",
    }
}

fn short(stage: Stage) -> &'static str {
    match stage {
        Stage::Parked => "parked",
        Stage::AwaitingHead => "await",
    }
}

/// In the child: simulates `n` connections at `stage`, prints `live peak` bytes.
fn measure(stage: Stage, n: usize) {
    let cfg = EngineConfig {
        max_sockets_per_worker: n,
        max_parked_per_worker: n,
        max_waiting_per_worker: n,
        ..EngineConfig::default()
    };
    let now = Instant::now();
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let held = simulate(&cfg, n, stage, now);
    let after = dhat::HeapStats::get();
    assert_eq!(held.sockets(), n, "every simulated connection is held");
    if stage == Stage::Parked {
        assert_eq!(held.parked(), n, "every simulated connection parked");
    }
    let live = after.curr_bytes - before.curr_bytes;
    let peak = after.max_bytes - before.curr_bytes;
    println!("{live} {peak}");
    for (table, bytes) in held.table_bytes() {
        println!("{table}\t{bytes}");
    }
    drop(held);
}

/// One measurement: live and peak bytes counted by the allocator, and the tables'
/// own accounting of what they hold.
struct Measured {
    live: usize,
    peak: usize,
    tables: Vec<(String, usize)>,
}

/// In the child: a native router's replay cache (default capacity and window) after
/// `n` parks with distinct 16-byte nonces (as loadgen sends) within one window, each
/// for its own id; prints `live peak` bytes. The nonces stay for the proof window
/// after their park, so this is what a park burst adds on top of the parked tables
/// for that long.
fn measure_replay(n: usize) {
    let config = NativeRouterConfig::default();
    let proofs: Vec<(RendezvousId, Proof)> = (0..n as u64)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let proof = Proof {
                ts: 1_700_000_000,
                ts_leading_zeros: 0,
                nonce: Nonce::new(&i.to_be_bytes().repeat(2)).expect("16 bytes"),
                mac: [0; 32],
            };
            (RendezvousId(id), proof)
        })
        .collect();
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let mut cache = ReplayCache::new(config.replay_capacity, config.proof_window_secs);
    let fresh = proofs
        .iter()
        .filter(|(id, p)| cache.check_and_insert(id, p, p.ts).is_ok())
        .count();
    let after = dhat::HeapStats::get();
    assert_eq!(fresh, n, "every nonce is fresh");
    let live = after.curr_bytes - before.curr_bytes;
    let peak = after.max_bytes - before.curr_bytes;
    println!("{live} {peak}");
    drop(cache);
}

/// In the child: writes a secrets file of `ids` native ids, then loads it as each of
/// `workers` workers does (its own share) and keeps every share loaded, as the worker
/// processes do; prints `live peak` bytes over all of them (the file text and the
/// parse are freed in between; the peak is the shares kept so far plus one parse).
fn measure_secrets(ids: usize, workers: usize) {
    use tryst_engine::driver::WorkerShare;
    use tryst_engine::target::Placement;
    use tryst_relay::secrets::{FileSecrets, encode_secret, render_entries};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secrets.toml");
    let entries: Vec<(String, String)> = (0..ids as u64)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            id[6] = 0x40 | (id[6] & 0x0f);
            id[8] = 0x80 | (id[8] & 0x3f);
            let secret: Vec<u8> = (0..32u8).map(|b| b ^ id[usize::from(b) % 8]).collect();
            (RendezvousId(id).to_string(), encode_secret(&secret))
        })
        .collect();
    let text = render_entries(entries.iter().map(|(i, s)| (i.as_str(), s.as_str())));
    std::fs::write(&path, text).expect("writing the secrets file");
    drop(entries);
    let placement = Placement::new(workers, [0x5a; 16]);
    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let shares: Vec<FileSecrets> = (0..workers)
        .map(|index| {
            FileSecrets::load_share(&path, WorkerShare::new(index, placement))
                .expect("loading the secrets file")
        })
        .collect();
    let after = dhat::HeapStats::get();
    let kept: usize = shares.iter().map(FileSecrets::len).sum();
    assert_eq!(kept, ids, "every id is kept by exactly one worker");
    let live = after.curr_bytes - before.curr_bytes;
    let peak = after.max_bytes - before.curr_bytes;
    println!("{live} {peak}");
    drop(shares);
}

/// Runs a `measure-*` child process with `args`: its `live peak` bytes.
fn child_pair(args: &[String]) -> Result<(usize, usize), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("running the measurement: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(str::parse::<usize>);
    match (out.status.success(), it.next(), it.next()) {
        (true, Some(Ok(live)), Some(Ok(peak))) => Ok((live, peak)),
        _ => Err(format!(
            "{} failed: {text:?} {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Runs the replay measurement in a child process: `(live, peak)` bytes.
fn child_replay(n: usize) -> Result<(usize, usize), String> {
    child_pair(&["measure-replay".to_string(), n.to_string()])
}

/// Runs one measurement in a child process.
fn child(stage: Stage, n: usize) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args(["measure", stage_name(stage), &n.to_string()])
        .output()
        .map_err(|e| format!("running the measurement: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "measure {} {n} failed: {}",
            stage_name(stage),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut it = first.split_whitespace().map(str::parse::<usize>);
    let (Some(Ok(live)), Some(Ok(peak))) = (it.next(), it.next()) else {
        return Err(format!("unexpected measurement output {text:?}"));
    };
    let mut tables = Vec::new();
    for line in lines {
        match line.split_once('\t').map(|(t, b)| (t, b.parse::<usize>())) {
            Some((table, Ok(bytes))) => tables.push((table.to_string(), bytes)),
            _ => return Err(format!("unexpected measurement line {line:?}")),
        }
    }
    Ok(Measured { live, peak, tables })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("measure") {
        let stage = match args.get(1).map(String::as_str) {
            Some("parked") => Stage::Parked,
            Some("awaiting-head") => Stage::AwaitingHead,
            _ => {
                eprintln!("parked_mem: measure <parked|awaiting-head> <n>");
                return ExitCode::from(2);
            }
        };
        let Some(Ok(n)) = args.get(2).map(|a| a.parse::<usize>()) else {
            eprintln!("parked_mem: measure <parked|awaiting-head> <n>");
            return ExitCode::from(2);
        };
        measure(stage, n);
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("measure-secrets") {
        let parse = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
        let (Some(ids), Some(workers)) = (parse(1), parse(2)) else {
            eprintln!("parked_mem: measure-secrets <ids> <workers>");
            return ExitCode::from(2);
        };
        measure_secrets(ids, workers);
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("measure-replay") {
        let Some(Ok(n)) = args.get(1).map(|a| a.parse::<usize>()) else {
            eprintln!("parked_mem: measure-replay <n>");
            return ExitCode::from(2);
        };
        measure_replay(n);
        return ExitCode::SUCCESS;
    }
    let mut check = false;
    let mut sizes = SIZES.to_vec();
    for a in &args {
        match a.as_str() {
            "--check" => check = true,
            "--million" => sizes.push(MILLION),
            "-h" | "--help" => {
                println!(
                    "parked_mem [--check] [--million]: bytes per connection in a worker's tables"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("parked_mem: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "{:<14} {:>9} {:>14} {:>14} {:>10}",
        "stage", "conns", "live B/conn", "peak B/conn", "peak/live"
    );
    let mut failures = Vec::new();
    let mut parked_live = Vec::new();
    let mut breakdowns = Vec::new();
    for stage in [Stage::Parked, Stage::AwaitingHead] {
        for &n in &sizes {
            let Measured { live, peak, tables } = match child(stage, n) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("parked_mem: {e}");
                    return ExitCode::FAILURE;
                }
            };
            breakdowns.push((stage, n, tables.clone()));
            let accounted: usize = tables.iter().map(|(_, b)| b).sum();
            if accounted != live {
                failures.push(format!(
                    "{} {n}: the tables account for {accounted} bytes, the allocator counted {live}",
                    stage_name(stage)
                ));
            }
            let (live_per, peak_per) = (live as f64 / n as f64, peak as f64 / n as f64);
            println!(
                "{:<14} {:>9} {:>14.1} {:>14.1} {:>10.2}",
                stage_name(stage),
                n,
                live_per,
                peak_per,
                if live > 0 {
                    peak as f64 / live as f64
                } else {
                    0.0
                }
            );
            if stage == Stage::Parked {
                parked_live.push(live_per);
            }
            if live_per > MAX_LIVE_PER_CONN {
                failures.push(format!(
                    "{n} {}: {live_per:.1} live B/conn > {MAX_LIVE_PER_CONN}",
                    stage_name(stage)
                ));
            }
            if peak_per > MAX_PEAK_PER_CONN {
                failures.push(format!(
                    "{n} {}: {peak_per:.1} peak B/conn > {MAX_PEAK_PER_CONN}",
                    stage_name(stage)
                ));
            }
        }
    }
    println!("\nbytes per connection by table (capacity x element size):");
    print!("{:<22}", "table");
    for (stage, n, _) in &breakdowns {
        print!(" {:>16}", format!("{} {}k", short(*stage), n / 1000));
    }
    println!();
    if let Some((_, _, first)) = breakdowns.first() {
        for (i, (table, _)) in first.iter().enumerate() {
            print!("{table:<22}");
            for (_, n, tables) in &breakdowns {
                let bytes = tables.get(i).map_or(0, |(_, b)| *b);
                print!(" {:>16.1}", bytes as f64 / *n as f64);
            }
            println!();
        }
    }
    println!(
        "\nreplay cache of the native router per park (kept for the proof window, not gated):"
    );
    for &n in &sizes {
        match child_replay(n) {
            Ok((live, peak)) => println!(
                "{:<14} {:>9} {:>14.1} {:>14.1} {:>10.2}",
                "replay",
                n,
                live as f64 / n as f64,
                peak as f64 / n as f64,
                if live > 0 {
                    peak as f64 / live as f64
                } else {
                    0.0
                }
            ),
            Err(e) => {
                eprintln!("parked_mem: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("\nsecrets file of {SECRETS_IDS} ids, all workers' shares together, per id (gated):");
    println!(
        "{:<14} {:>9} {:>14} {:>14}",
        "workers", "ids", "live B/id", "peak B/id"
    );
    let mut secrets_live = Vec::new();
    for workers in SECRETS_WORKERS {
        let args = [
            "measure-secrets".to_string(),
            SECRETS_IDS.to_string(),
            workers.to_string(),
        ];
        let (live, peak) = match child_pair(&args) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("parked_mem: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (live_per, peak_per) = (
            live as f64 / SECRETS_IDS as f64,
            peak as f64 / SECRETS_IDS as f64,
        );
        println!("{workers:<14} {SECRETS_IDS:>9} {live_per:>14.1} {peak_per:>14.1}");
        if live_per > MAX_SECRET_PER_ID {
            failures.push(format!(
                "secrets with {workers} workers: {live_per:.1} live B/id > {MAX_SECRET_PER_ID}"
            ));
        }
        secrets_live.push((workers, live_per));
    }
    if let (Some((w0, first)), Some((w1, last))) = (secrets_live.first(), secrets_live.last())
        && *last > first * MAX_GROWTH
    {
        failures.push(format!(
            "secrets: live B/id grew from {first:.1} with {w0} workers to {last:.1} with {w1} (> {MAX_GROWTH}x)"
        ));
    }
    if let (Some(first), Some(last)) = (parked_live.first(), parked_live.get(1))
        && *last > first * MAX_GROWTH
    {
        failures.push(format!(
            "live B/parked conn grew from {first:.1} at {} to {last:.1} at {} (> {MAX_GROWTH}x)",
            SIZES[0], SIZES[1]
        ));
    }
    if check {
        if failures.is_empty() {
            println!("parked_mem: ok");
        } else {
            for f in &failures {
                println!("parked_mem: FAILED: {f}");
            }
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
