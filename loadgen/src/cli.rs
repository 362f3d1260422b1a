//! Command-line arguments and their validation.

use crate::proto::Auth;
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Capacity testing and side-by-side benchmarks for the tryst relay.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// A subcommand; without one, loadgen runs a capacity test.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Capacity test options.
    #[command(flatten)]
    pub(crate) capacity: CapacityArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Side-by-side benchmarks: direct, tryst (each data path), HAProxy, bore.
    Compare(Box<CompareArgs>),
    /// Qredo's `/services` RPC: `Rendezvous` creates and responds per second over HTTP
    /// and WebSocket, against a local relay or `--relay`.
    Qredo(Box<QredoArgs>),
    /// Recovery times of a two-node cluster (a private redis-server): Valkey restarted
    /// empty, and a node killed with kill -9. A benchmark: run it on a quiet machine.
    #[command(name = "cluster-recovery")]
    ClusterRecovery(Box<RecoveryArgs>),
    /// Internal: a worker process of a capacity run (spec on stdin).
    #[command(name = "__worker", hide = true)]
    Worker,
}

/// Parses `500ms`, `2s`, `1m`, `1h`, `1.5s` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 2s, 1m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Options of a capacity run.
#[derive(Debug, Clone, Args)]
pub(crate) struct CapacityArgs {
    /// Simulated hidden servers (ids).
    #[arg(long, default_value_t = 100)]
    pub(crate) hidden: usize,
    /// Clients, each connecting to a random hidden server id.
    #[arg(long, default_value_t = 1000)]
    pub(crate) clients: u64,
    /// Parked connections each hidden server keeps (it re-parks after every pairing).
    #[arg(long, default_value_t = 1)]
    pub(crate) parked: usize,
    /// Clients running at once (default: all of them, held together).
    #[arg(long)]
    pub(crate) concurrency: Option<u64>,
    /// Client arrivals per second, open loop; latency is then measured from each
    /// client's intended start (no coordinated omission).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Echo round trips per client before the hold.
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: u32,
    /// Bytes per echo round trip.
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// How long every tunnel is held open before the last verified echo.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) hold: Duration,
    /// Drive this relay instead of starting one (needs --secrets). With --tls, the
    /// relay's TLS listener.
    #[arg(long)]
    pub(crate) relay: Option<SocketAddr>,
    /// The relay's secrets file (agreed TOML format) with at least --hidden ids
    /// (`[secrets]` entries, or `[totp]` records with --auth totp).
    #[arg(long)]
    pub(crate) secrets: Option<PathBuf>,
    /// Hidden servers and clients connect over TLS (a local relay is started with
    /// `--tls-listen 127.0.0.1:0` and its generated certificate is trusted).
    #[arg(long)]
    pub(crate) tls: bool,
    /// With --relay --tls: PEM file of the certificates to trust (for a relay's generated
    /// self-signed certificate, `<data-dir>/tls-cert.pem`). Default: the system bundle
    /// /etc/ssl/certs/ca-certificates.crt.
    #[arg(long)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// With --relay --tls: the name the relay's certificate must carry (default: the
    /// --relay address's IP).
    #[arg(long)]
    pub(crate) tls_name: Option<String>,
    /// How hidden servers park: `native` (Tryst proof over `[secrets]`) or `totp`
    /// (`?response=<6-digit code>` over `[totp]` records).
    #[arg(long, value_enum, default_value_t = Auth::Native)]
    pub(crate) auth: Auth,
    /// The tryst binary for a local relay (default: next to loadgen, or $TRYST_BIN).
    #[arg(long)]
    pub(crate) tryst: Option<PathBuf>,
    /// Local relay: `--data-path` to pass (splice-syscall | splice-uring).
    #[arg(long)]
    pub(crate) data_path: Option<String>,
    /// Local relay: `--workers` to pass.
    #[arg(long)]
    pub(crate) relay_workers: Option<usize>,
    /// Local relay: one more argument to pass (repeatable).
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    pub(crate) relay_args: Vec<String>,
    /// Load generator worker processes (default: enough for --sockets-per-worker).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// Sockets per worker process when sizing the worker count (the fd limit is 20,000).
    #[arg(long, default_value_t = 15_000)]
    pub(crate) sockets_per_worker: u64,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, default_value_t = 32)]
    pub(crate) source_ips: u8,
    /// Connection handshakes in flight across all workers (half for parks, half for
    /// clients); paces bursts so the relay's listen backlog (4096) does not overflow.
    #[arg(long, default_value_t = 2048)]
    pub(crate) max_inflight: usize,
    /// Limit for each step (connect, handshake, echo).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Seed for client patterns and target choice (default: random, printed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Write the results as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Draw latency percentile curves as SVG.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

impl CapacityArgs {
    /// Checks the combination of options.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.hidden == 0 {
            bail!("--hidden must be at least 1");
        }
        if self.parked == 0 {
            bail!("--parked must be at least 1");
        }
        if self.rounds == 0 {
            bail!(
                "--rounds must be at least 1 (the pairing latency is measured on the first echo)"
            );
        }
        if self.size == 0 || self.size > 64 << 20 {
            bail!("--size must be between 1 byte and 64 MiB");
        }
        if self.concurrency == Some(0) {
            bail!("--concurrency must be at least 1");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("--rate must be a positive number of clients per second");
        }
        match (&self.relay, &self.secrets) {
            (Some(_), None) => {
                bail!("--relay needs --secrets FILE (the ids and secrets of the hidden servers)")
            }
            (None, Some(_)) => {
                bail!("--secrets is only used with --relay (a local relay gets generated secrets)")
            }
            _ => {}
        }
        if self.relay.is_some()
            && (self.data_path.is_some()
                || self.relay_workers.is_some()
                || !self.relay_args.is_empty())
        {
            bail!(
                "--data-path, --relay-workers and --relay-arg apply only to a local relay (no --relay)"
            );
        }
        if !self.tls && (self.tls_ca.is_some() || self.tls_name.is_some()) {
            bail!("--tls-ca and --tls-name need --tls");
        }
        if self.relay.is_none() && (self.tls_ca.is_some() || self.tls_name.is_some()) {
            bail!(
                "--tls-ca and --tls-name apply only with --relay (a local relay's generated certificate is trusted)"
            );
        }
        if let Some(name) = &self.tls_name {
            crate::transport::check_server_name(name)?;
        }
        if self.workers == Some(0) {
            bail!("--workers must be at least 1");
        }
        if !(100..=18_000).contains(&self.sockets_per_worker) {
            bail!(
                "--sockets-per-worker must be between 100 and 18000 (the per-process fd limit is 20000)"
            );
        }
        if self.source_ips == 0 || self.source_ips == 255 {
            bail!("--source-ips must be between 1 and 254");
        }
        if self.max_inflight == 0 {
            bail!("--max-inflight must be at least 1");
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be positive");
        }
        Ok(())
    }

    /// Clients that run at the same time.
    pub(crate) fn concurrent_clients(&self) -> u64 {
        self.concurrency.unwrap_or(self.clients).min(self.clients)
    }

    /// Sockets the load generator holds at the peak: parked connections, clients and (for
    /// a relay on this machine, always) the hidden side of every tunnel.
    pub(crate) fn peak_sockets(&self) -> u64 {
        (self.hidden * self.parked) as u64 + 2 * self.concurrent_clients()
    }

    /// Worker processes to use.
    pub(crate) fn worker_count(&self) -> usize {
        if let Some(w) = self.workers {
            return w;
        }
        let w = self.peak_sockets().div_ceil(self.sockets_per_worker).max(1);
        usize::try_from(w).unwrap_or(usize::MAX)
    }
}

/// Options of `loadgen compare`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompareArgs {
    /// Repetitions of every (target, workload) cell, interleaved A/B/A/B.
    #[arg(long, default_value_t = 3)]
    pub(crate) repetitions: usize,
    /// Duration of each bulk and ping-pong measurement.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Targets to run, comma-separated, from: direct, tryst-splice-syscall,
    /// tryst-splice-uring, haproxy-splice, haproxy-copy, bore, tryst-agents (tryst connect
    /// -> relay -> tryst expose, the counterpart of bore's agents), tryst-cluster-local and
    /// tryst-cluster-cross (two clustered nodes and a redis-server this run starts: park on
    /// node A, reach via A or via B), and with TLS 1.3 on both legs direct-tls, tryst-tls
    /// and haproxy-tls (terminating and re-encrypting; the `-tls` targets' ratios are
    /// against direct-tls and haproxy-tls); the last six are not in the default set.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,tryst-splice-syscall,tryst-splice-uring,haproxy-splice,haproxy-copy,bore"
    )]
    pub(crate) targets: Vec<CompareTarget>,
    /// Workloads to run, comma-separated, from: bulk1, bulk16, bulk256, pingpong,
    /// pairing (closed loop: pairings/s at saturation), pairing-open (open loop at
    /// `--rate`: latency at a fixed offered rate).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bulk1,bulk16,bulk256,pingpong,pairing,pairing-open"
    )]
    pub(crate) workloads: Vec<Workload>,
    /// Generator threads of the pairing workloads, each with its own event loop and
    /// pinned to its own CPU away from the relay's when there are enough CPUs
    /// (default: one per CPU left after the relay's and the sink's, at least 1, at
    /// most 8).
    #[arg(long)]
    pub(crate) pairing_generators: Option<usize>,
    /// Concurrent connection loops per generator thread in the closed-loop `pairing`
    /// workload.
    #[arg(long, default_value_t = 16)]
    pub(crate) pairing_loops: usize,
    /// How the sink takes in the bulk workloads' bytes over plain TCP: `splice` (into
    /// `/dev/null`, no copy: on a machine where the generator and the sink share a
    /// CPU, the relay rather than that CPU sets the rate) or `copy` (`read`, as the
    /// figures before this option were measured). TLS sinks always read.
    #[arg(long, value_enum, default_value_t = BulkSink::Splice)]
    pub(crate) bulk_sink: BulkSink,
    /// Offered pairings per second (all generators together) in the open-loop
    /// `pairing-open` workload: arrivals at fixed intervals, whether or not earlier
    /// ones finished; latency is measured from each arrival's scheduled time.
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) rate: f64,
    /// The tryst binary (default: next to loadgen, or $TRYST_BIN).
    #[arg(long)]
    pub(crate) tryst: Option<PathBuf>,
    /// One more argument for every tryst relay this run starts (repeatable), e.g.
    /// `--relay-arg=--pipe-size=1048576` to measure a setting side by side with HAProxy.
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    pub(crate) relay_args: Vec<String>,
    /// The haproxy binary.
    #[arg(long, default_value = "haproxy")]
    pub(crate) haproxy: String,
    /// HAProxy's `tune.pipesize` (bytes), to compare at the pipe size tryst is given
    /// with `--relay-arg=--pipe-size=...`.
    #[arg(long, default_value_t = 262_144)]
    pub(crate) haproxy_pipe_size: usize,
    /// The bore binary.
    #[arg(long, default_value = "bore")]
    pub(crate) bore: String,
    /// The redis-server binary the cluster targets start (a private one per target, on a
    /// unix socket in a temp dir, no persistence).
    #[arg(long, default_value = "redis-server")]
    pub(crate) redis_server: String,
    /// Do not pin the relay and the load to separate CPUs.
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// The cluster targets' node B on these CPUs (`taskset -c` syntax) instead of the
    /// relays' CPU, e.g. `0` on a 2-CPU machine (beside the generator) or `2` on a larger
    /// one, so the two nodes do not share a CPU as two hosts would not. Not with
    /// `--no-pin`.
    #[arg(long, value_name = "CPUS", conflicts_with = "no_pin")]
    pub(crate) node_b_cpus: Option<String>,
    /// Write the results as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// Options of `loadgen qredo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct QredoArgs {
    /// Drive this relay (started with `--qredo-open true` or with an app named
    /// `loadgen` and an empty secret) instead of starting one; its CPU is not measured.
    #[arg(long)]
    pub(crate) relay: Option<SocketAddr>,
    /// The tryst binary for the local relay (default: next to loadgen, or $TRYST_BIN).
    #[arg(long)]
    pub(crate) tryst: Option<PathBuf>,
    /// Repetitions of the four phases (medians and spreads need at least 3).
    #[arg(long, default_value_t = 5)]
    pub(crate) repetitions: usize,
    /// Duration of each phase.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Keep-alive HTTP connections (one request in flight on each).
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// WebSockets.
    #[arg(long, default_value_t = 4)]
    pub(crate) sockets: usize,
    /// Requests in flight per WebSocket (the relay answers up to 16 at once per socket).
    #[arg(long, default_value_t = 8)]
    pub(crate) in_flight: usize,
    /// Generator threads (one event loop shared by all connections).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Pin the local relay to these CPUs (`taskset -c` syntax), e.g. `1` for one core.
    #[arg(long)]
    pub(crate) pin_relay: Option<String>,
    /// Write the results as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// Options of `loadgen cluster-recovery`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RecoveryArgs {
    /// Hidden servers parked on node A.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) hidden: usize,
    /// Keys reached from node B per round (spread over the parked ones).
    #[arg(long, default_value_t = 100)]
    pub(crate) sample: usize,
    /// Rounds of each measurement (medians over rounds need at least 3).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// The nodes' `--client-wait` (how long a client waits for a park anywhere).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) client_wait: Duration,
    /// Longest any one recovery may take before the run fails.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// The tryst binary (default: next to loadgen, or $TRYST_BIN).
    #[arg(long)]
    pub(crate) tryst: Option<PathBuf>,
    /// The redis-server binary (a private one on a unix socket in a temp dir).
    #[arg(long, default_value = "redis-server")]
    pub(crate) redis_server: String,
    /// One more argument for both nodes (repeatable).
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    pub(crate) relay_args: Vec<String>,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
}

impl RecoveryArgs {
    /// Checks the options.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.sample == 0 || self.rounds == 0 {
            bail!("--hidden, --sample and --rounds must be at least 1");
        }
        if self.sample > self.hidden {
            bail!("--sample cannot exceed --hidden");
        }
        if !(1..=64).contains(&self.threads) {
            bail!("--threads must be 1 to 64");
        }
        Ok(())
    }
}

impl QredoArgs {
    /// Checks the options.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.repetitions < 3 {
            bail!("--repetitions must be at least 3 (medians and spreads need them)");
        }
        if self.duration < Duration::from_millis(100) {
            bail!("--duration must be at least 100ms");
        }
        if !(1..=4096).contains(&self.connections) || !(1..=1024).contains(&self.sockets) {
            bail!("--connections must be 1 to 4096 and --sockets 1 to 1024");
        }
        if !(1..=16).contains(&self.in_flight) {
            bail!("--in-flight must be 1 to 16 (the relay's limit per socket)");
        }
        if !(1..=64).contains(&self.threads) {
            bail!("--threads must be 1 to 64");
        }
        Ok(())
    }
}

/// A target `compare` knows; its spelling (clap's kebab-case of the variant) is the one
/// the command line takes and the report prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompareTarget {
    /// The generator straight to the sink: the baseline every ratio is against.
    Direct,
    /// tryst with `--data-path splice-syscall`.
    TrystSpliceSyscall,
    /// tryst with `--data-path splice-uring`.
    TrystSpliceUring,
    /// HAProxy in TCP mode with splicing.
    HaproxySplice,
    /// HAProxy in TCP mode without splicing.
    HaproxyCopy,
    /// bore's server and local agent.
    Bore,
    /// tryst connect -> relay -> tryst expose.
    TrystAgents,
    /// The relay's port for the id (`--id-listen`) -> tryst expose: no agent on the
    /// client's side, bore's topology (a relay and one agent).
    TrystExpose,
    /// Two clustered tryst nodes and a redis-server: park on node A, reach via A.
    TrystClusterLocal,
    /// Two clustered tryst nodes and a redis-server: park on node A, reach via B.
    TrystClusterCross,
    /// The generator straight to the sink over TLS 1.3 (the sink terminates it): the
    /// baseline of the `-tls` targets' throughput and latency.
    DirectTls,
    /// tryst with TLS on both legs: the sink parks over TLS at tryst's TLS listener and
    /// the generator reaches it over TLS; tryst decrypts and re-encrypts every byte.
    TrystTls,
    /// HAProxy (one thread, TCP mode) terminating the generator's TLS and re-encrypting
    /// to the sink's TLS listener: the baseline of the `-tls` targets' relay CPU.
    HaproxyTls,
}

/// How `compare`'s sink takes in a bulk workload's bytes over plain TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BulkSink {
    /// `splice` into `/dev/null`: no copy, so where the generator and the sink share a
    /// CPU, the relay rather than that CPU sets the rate.
    Splice,
    /// `read` into a buffer, as an application would (the figures measured before this
    /// option).
    Copy,
}

/// A workload `compare` knows (spelled as [`CompareTarget`] is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// One bulk pair.
    Bulk1,
    /// 16 bulk pairs.
    Bulk16,
    /// 256 bulk pairs.
    Bulk256,
    /// Request/response round trips.
    Pingpong,
    /// Closed-loop pairings.
    Pairing,
    /// Open-loop pairings at `--rate`.
    PairingOpen,
}

/// The command-line spelling of a value.
fn spelling(value: &impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

impl std::fmt::Display for CompareTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&spelling(self))
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&spelling(self))
    }
}

/// Most generator threads `--pairing-generators` takes.
pub(crate) const MAX_PAIRING_GENERATORS: usize = 64;

impl CompareArgs {
    /// Checks the options.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.repetitions < 3 {
            bail!("--repetitions must be at least 3 (medians and spreads need them)");
        }
        if self.duration < Duration::from_millis(100) {
            bail!("--duration must be at least 100ms");
        }
        if !self.targets.contains(&CompareTarget::Direct) {
            bail!("the targets must include `direct` (ratios are against it)");
        }
        if let Some(g) = self.pairing_generators
            && (g == 0 || g > MAX_PAIRING_GENERATORS)
        {
            bail!("--pairing-generators must be between 1 and {MAX_PAIRING_GENERATORS}");
        }
        if self.pairing_loops == 0 {
            bail!("--pairing-loops must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("--rate must be a positive number of pairings per second");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_issue_command_line_parses_and_needs_eight_workers() {
        let cli = parse(&["--hidden", "10000", "--clients", "50000"]);
        assert!(cli.command.is_none());
        let a = cli.capacity;
        a.validate().unwrap();
        assert_eq!(a.peak_sockets(), 110_000);
        assert_eq!(a.worker_count(), 8);
        assert_eq!(a.concurrent_clients(), 50_000);
    }

    #[test]
    fn concurrency_caps_the_socket_estimate() {
        let a = parse(&[
            "--hidden",
            "10",
            "--clients",
            "100000",
            "--concurrency",
            "1000",
        ])
        .capacity;
        assert_eq!(a.peak_sockets(), 10 + 2000);
        assert_eq!(a.worker_count(), 1);
        let a = parse(&["--hidden", "10", "--clients", "5", "--concurrency", "1000"]).capacity;
        assert_eq!(a.concurrent_clients(), 5);
    }

    #[test]
    fn refuses_bad_combinations() {
        let bad: &[&[&str]] = &[
            &["--hidden", "0"],
            &["--parked", "0"],
            &["--rounds", "0"],
            &["--size", "0"],
            &["--concurrency", "0"],
            &["--rate", "0"],
            &["--rate=-5"],
            &["--rate", "NaN"],
            &["--relay", "127.0.0.1:9"],
            &["--secrets", "/tmp/x"],
            &[
                "--relay",
                "127.0.0.1:9",
                "--secrets",
                "/x",
                "--data-path",
                "splice-uring",
            ],
            &["--workers", "0"],
            &["--sockets-per-worker", "20000"],
            &["--source-ips", "0"],
            &["--max-inflight", "0"],
            &["--timeout", "0s"],
        ];
        for args in bad {
            assert!(
                parse(args).capacity.validate().is_err(),
                "{args:?} should be refused"
            );
        }
        parse(&["--relay", "127.0.0.1:9", "--secrets", "/x"])
            .capacity
            .validate()
            .unwrap();
    }

    #[test]
    fn tls_and_auth_options() {
        let a = parse(&[]).capacity;
        assert!(!a.tls);
        assert_eq!(a.auth, Auth::Native);
        let ok: &[&[&str]] = &[
            &["--tls"],
            &["--tls", "--auth", "totp"],
            &["--auth", "totp"],
            &["--relay", "127.0.0.1:9", "--secrets", "/x", "--tls"],
            &[
                "--relay",
                "127.0.0.1:9",
                "--secrets",
                "/x",
                "--tls",
                "--tls-ca",
                "/ca.pem",
                "--tls-name",
                "relay.example.org",
                "--auth",
                "totp",
            ],
        ];
        for args in ok {
            let a = parse(args).capacity;
            a.validate()
                .unwrap_or_else(|e| panic!("{args:?} should be accepted: {e}"));
        }
        let a = parse(&["--tls", "--auth", "totp"]).capacity;
        assert!(a.tls);
        assert_eq!(a.auth, Auth::Totp);
        let bad: &[(&[&str], &str)] = &[
            (
                &[
                    "--relay",
                    "127.0.0.1:9",
                    "--secrets",
                    "/x",
                    "--tls-ca",
                    "/ca.pem",
                ],
                "need --tls",
            ),
            (
                &[
                    "--relay",
                    "127.0.0.1:9",
                    "--secrets",
                    "/x",
                    "--tls-name",
                    "x.org",
                ],
                "need --tls",
            ),
            (&["--tls", "--tls-ca", "/ca.pem"], "only with --relay"),
            (&["--tls", "--tls-name", "127.0.0.1"], "only with --relay"),
            (
                &[
                    "--relay",
                    "127.0.0.1:9",
                    "--secrets",
                    "/x",
                    "--tls",
                    "--tls-name",
                    "not a name",
                ],
                "neither a DNS name",
            ),
        ];
        for (args, why) in bad {
            let err = parse(args).capacity.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{args:?}: {err}");
        }
        assert!(
            Cli::try_parse_from(["loadgen", "--auth", "basic"]).is_err(),
            "unknown --auth values are refused by the parser"
        );
    }

    #[test]
    fn compare_defaults_are_valid_and_checked() {
        let Some(Command::Compare(c)) = parse(&["compare"]).command else {
            panic!("compare")
        };
        c.validate().unwrap();
        assert_eq!(c.targets.len(), 6);
        let Some(Command::Compare(c)) = parse(&["compare", "--repetitions", "2"]).command else {
            panic!()
        };
        assert!(c.validate().is_err());
        let Some(Command::Compare(agents)) =
            parse(&["compare", "--targets", "direct,tryst-agents,bore"]).command
        else {
            panic!("not compare");
        };
        agents.validate().unwrap();
        let Some(Command::Compare(c)) = parse(&["compare", "--targets", "bore"]).command else {
            panic!()
        };
        assert!(c.validate().is_err(), "direct is required");
        for bad in [
            &["compare", "--workloads", "bulk7"][..],
            &["compare", "--targets", "direct,nginx"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("loadgen").chain(bad.iter().copied()))
                .expect_err("an unknown target or workload is refused");
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue, "{bad:?}");
        }
    }

    #[test]
    fn compare_bulk_sink_splices_unless_told_to_copy() {
        let Some(Command::Compare(c)) = parse(&["compare"]).command else {
            panic!("compare")
        };
        assert_eq!(c.bulk_sink, BulkSink::Splice);
        let Some(Command::Compare(c)) = parse(&["compare", "--bulk-sink", "copy"]).command else {
            panic!("compare")
        };
        assert_eq!(c.bulk_sink, BulkSink::Copy);
        let err = Cli::try_parse_from(["loadgen", "compare", "--bulk-sink", "mmap"])
            .expect_err("an unknown sink mode is refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn compare_passes_relay_args_through_in_order() {
        let Some(Command::Compare(c)) = parse(&[
            "compare",
            "--relay-arg=--pipe-size=1048576",
            "--relay-arg",
            "--max-pipes-per-worker=1024",
        ])
        .command
        else {
            panic!("compare")
        };
        assert_eq!(
            c.relay_args,
            ["--pipe-size=1048576", "--max-pipes-per-worker=1024"]
        );
        let Some(Command::Compare(c)) = parse(&["compare"]).command else {
            panic!("compare")
        };
        assert!(c.relay_args.is_empty());
        assert_eq!(c.haproxy_pipe_size, 262_144);
        let Some(Command::Compare(c)) =
            parse(&["compare", "--haproxy-pipe-size", "1048576"]).command
        else {
            panic!("compare")
        };
        assert_eq!(c.haproxy_pipe_size, 1_048_576);
    }

    #[test]
    fn compare_node_b_cpus_needs_pinning() {
        let Some(Command::Compare(c)) = parse(&["compare", "--node-b-cpus", "0"]).command else {
            panic!("compare")
        };
        assert_eq!(c.node_b_cpus.as_deref(), Some("0"));
        let Some(Command::Compare(c)) = parse(&["compare"]).command else {
            panic!("compare")
        };
        assert_eq!(c.node_b_cpus, None);
        let err = Cli::try_parse_from(["loadgen", "compare", "--node-b-cpus", "0", "--no-pin"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn compare_targets_and_workloads_keep_their_spellings() {
        let targets = [
            "direct",
            "tryst-splice-syscall",
            "tryst-splice-uring",
            "haproxy-splice",
            "haproxy-copy",
            "bore",
            "tryst-agents",
            "tryst-expose",
            "tryst-cluster-local",
            "tryst-cluster-cross",
            "direct-tls",
            "tryst-tls",
            "haproxy-tls",
        ];
        let workloads = [
            "bulk1",
            "bulk16",
            "bulk256",
            "pingpong",
            "pairing",
            "pairing-open",
        ];
        let joined = |v: &[&str]| v.join(",");
        let Some(Command::Compare(c)) = parse(&[
            "compare",
            "--targets",
            &joined(&targets),
            "--workloads",
            &joined(&workloads),
        ])
        .command
        else {
            panic!("compare")
        };
        let printed: Vec<String> = c.targets.iter().map(ToString::to_string).collect();
        assert_eq!(printed, targets);
        assert_eq!(CompareTarget::value_variants().len(), targets.len());
        let printed: Vec<String> = c.workloads.iter().map(ToString::to_string).collect();
        assert_eq!(printed, workloads);
        assert_eq!(Workload::value_variants().len(), workloads.len());
    }

    #[test]
    fn pairing_generator_options_are_checked() {
        let compare = |extra: &[&str]| {
            let args: Vec<&str> = std::iter::once("compare")
                .chain(extra.iter().copied())
                .collect();
            let Some(Command::Compare(c)) = parse(&args).command else {
                panic!("compare")
            };
            c
        };
        let c = compare(&[]);
        assert_eq!((c.pairing_generators, c.pairing_loops), (None, 16));
        assert!(c.workloads.contains(&Workload::PairingOpen));
        let c = compare(&["--pairing-generators", "4", "--rate", "5000"]);
        c.validate().unwrap();
        assert_eq!((c.pairing_generators, c.rate), (Some(4), 5000.0));
        for bad in [
            &["--pairing-generators", "0"][..],
            &["--pairing-generators", "65"],
            &["--pairing-loops", "0"],
            &["--rate", "0"],
            &["--rate=-3"],
            &["--rate", "inf"],
        ] {
            assert!(compare(bad).validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn worker_subcommand_is_hidden_but_parses() {
        assert!(matches!(
            parse(&["__worker"]).command,
            Some(Command::Worker)
        ));
    }
}
