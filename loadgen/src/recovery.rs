//! `loadgen cluster-recovery`: how long a cluster takes to recover (issue #16), with
//! the cluster targets' helpers (`compare::targets`: a private redis-server on a unix
//! socket, nodes A and B with one worker each).
//!
//! - **Valkey restarted**: N hidden servers parked on A; the redis-server is killed and
//!   started again, empty. From the moment it answers PING: the time until the directory
//!   holds a presence record for every one of the N keys again (A re-writes them), and
//!   for a sample of the keys the time until a client on B is paired with its hidden
//!   server on A (each client retries at once on a refusal). The sampled servers are
//!   parked again before the next round.
//! - **A killed**: the same N parked on A, then `kill -9` of A. For a sample of the keys,
//!   the time from the kill until a client on B gets a clean answer (an HTTP status line,
//!   the family's "not parked"), never a hang or a reset. A is started again (a new
//!   epoch) and the N parked again before the next round.
//!
//! Medians (and the slowest sample) per round, then the median over rounds. A benchmark,
//! not a timed test: run it on a quiet machine (docs/performance.md).

use crate::cli::RecoveryArgs;
use crate::compare::targets::{ClusterNode, cluster_node, start_redis, write_mesh_key};
use crate::net::{self, Failure};
use crate::proto::{self, Answer, ParkAuth};
use crate::relay::{LocalRelay, tryst_binary};
use crate::stats::median;
use crate::transport::Conn;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

/// Parks started at once.
const PARK_CONCURRENCY: usize = 256;
/// Bound of one network step.
const STEP: Duration = Duration::from_secs(10);

pub(crate) fn main(args: &RecoveryArgs) -> Result<bool> {
    args.validate()?;
    crate::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// One round's figures, seconds.
#[derive(Debug, Default)]
struct Round {
    /// Until the directory held every key again (Valkey restart only).
    directory: Option<f64>,
    /// Per sampled key: until the client on B was answered as wanted.
    samples: Vec<f64>,
    /// Reaches that ended without an HTTP answer before the wanted one (A killed: the
    /// clients carried to A in the instant it died).
    unclean: u64,
}

struct Cluster {
    dir: tempfile::TempDir,
    redis: tokio::process::Child,
    socket: std::path::PathBuf,
    binary: std::path::PathBuf,
    psk: std::path::PathBuf,
    ids: Vec<(Uuid, Vec<u8>)>,
    extra: Vec<String>,
    a: Option<LocalRelay>,
    b: LocalRelay,
}

impl Cluster {
    fn node(&self, name: &str) -> Result<crate::relay::RelayOptions> {
        cluster_node(&ClusterNode {
            binary: &self.binary,
            dir: self.dir.path(),
            socket: &self.socket,
            psk: &self.psk,
            node: name,
            ids: &self.ids,
            extra: &self.extra,
            pin: None,
        })
    }

    fn a_addr(&self) -> Result<SocketAddr> {
        Ok(self.a.as_ref().context("node A is not running")?.addr)
    }
}

async fn run(args: &RecoveryArgs) -> Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("loadgen-recovery-")
        .tempdir()?;
    let (redis, _, socket, redis_cmd) = start_redis(&args.redis_server, dir.path(), None).await?;
    let psk = write_mesh_key(dir.path())?;
    let ids = proto::generate_ids(args.hidden);
    let mut extra = vec![
        "--client-wait".to_string(),
        format!("{}ms", args.client_wait.as_millis()),
        "--max-sockets".to_string(),
        (args.hidden * 2 + 10_000).to_string(),
    ];
    extra.extend(args.relay_args.iter().cloned());
    let binary = tryst_binary(args.tryst.as_deref())?;
    let first = cluster_node(&ClusterNode {
        binary: &binary,
        dir: dir.path(),
        socket: &socket,
        psk: &psk,
        node: "a",
        ids: &ids,
        extra: &extra,
        pin: None,
    })?;
    let a = LocalRelay::start(&first, Duration::from_secs(30)).await?;
    let second = cluster_node(&ClusterNode {
        node: "b",
        binary: &binary,
        dir: dir.path(),
        socket: &socket,
        psk: &psk,
        ids: &ids,
        extra: &extra,
        pin: None,
    })?;
    let b = LocalRelay::start(&second, Duration::from_secs(30)).await?;
    println!(
        "cluster-recovery: {} hidden servers on A, {} sampled per round, {} rounds, client wait {:?}\n  {redis_cmd}\n  A: {}\n  B: {}",
        args.hidden, args.sample, args.rounds, args.client_wait, a.command, b.command
    );
    let mut c = Cluster {
        dir,
        redis,
        socket,
        binary,
        psk,
        ids,
        extra,
        a: Some(a),
        b,
    };
    let result = measure(args, &mut c).await;
    if let Some(a) = c.a.take() {
        let _ = a.stop(Duration::from_secs(10)).await;
    }
    let _ = c.b.stop(Duration::from_secs(10)).await;
    let _ = c.redis.kill().await;
    result
}

async fn measure(args: &RecoveryArgs, c: &mut Cluster) -> Result<bool> {
    let mut parked = park_all(c.a_addr()?, &c.ids).await?;
    await_directory(&c.socket, c.ids.len(), Instant::now(), args.timeout).await?;
    let mut restarts = Vec::new();
    for round in 1..=args.rounds {
        let r = valkey_restart(args, c, &mut parked).await?;
        print_round("valkey restarted", round, &r);
        restarts.push(r);
    }
    let mut kills = Vec::new();
    for round in 1..=args.rounds {
        let r = node_killed(args, c, &mut parked).await?;
        print_round("A killed", round, &r);
        kills.push(r);
    }
    drop(parked);
    let med = |rounds: &[Round], f: &dyn Fn(&Round) -> Option<f64>| {
        median(&rounds.iter().filter_map(f).collect::<Vec<_>>())
    };
    println!(
        "median over {} rounds:\n  valkey restarted: directory holds all {} keys after {}; a client on B paired after {} (median of the sampled keys' medians), slowest {}\n  A killed: a client on B answered \"not parked\" after {} (median), slowest {}",
        args.rounds,
        args.hidden,
        secs(med(&restarts, &|r| r.directory)),
        secs(med(&restarts, &|r| median(&r.samples))),
        secs(med(&restarts, &|r| r
            .samples
            .iter()
            .copied()
            .reduce(f64::max))),
        secs(med(&kills, &|r| median(&r.samples))),
        secs(med(&kills, &|r| r.samples.iter().copied().reduce(f64::max))),
    );
    Ok(true)
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.3} s"))
}

fn print_round(what: &str, round: usize, r: &Round) {
    println!(
        "  round {round} {what}: directory {} sampled median {} slowest {} ({} samples, {} reaches reset before it)",
        secs(r.directory),
        secs(median(&r.samples)),
        secs(r.samples.iter().copied().reduce(f64::max)),
        r.samples.len(),
        r.unclean
    );
}

/// The sampled keys of a round: every `n / sample`-th.
fn sample(ids: &[(Uuid, Vec<u8>)], n: usize) -> Vec<(Uuid, Vec<u8>)> {
    let step = (ids.len() / n.max(1)).max(1);
    ids.iter().step_by(step).take(n).cloned().collect()
}

async fn valkey_restart(
    args: &RecoveryArgs,
    c: &mut Cluster,
    parked: &mut Vec<Conn>,
) -> Result<Round> {
    let _ = c.redis.kill().await;
    let _ = std::fs::remove_file(&c.socket);
    let (redis, _, socket, _) = start_redis(&args.redis_server, c.dir.path(), None).await?;
    c.redis = redis;
    let t0 = Instant::now();
    let picked = sample(&c.ids, args.sample);
    let b = c.b.addr;
    let reaches: Vec<_> = picked
        .iter()
        .map(|(id, _)| {
            let id = *id;
            let until = t0 + args.timeout;
            tokio::spawn(async move { reach_until_paired(b, id, t0, until).await })
        })
        .collect();
    let directory = await_directory(&socket, c.ids.len(), t0, args.timeout).await?;
    let mut samples = Vec::new();
    for r in reaches {
        samples.push(
            r.await?
                .map_err(|f| anyhow::anyhow!("reach via B: {}", f.0))?,
        );
    }
    // The sampled hidden servers were paired: park them again (A re-writes their
    // presence on 0 -> 1) and wait for the whole directory.
    parked.extend(park_all(c.a_addr()?, &picked).await?);
    await_directory(&socket, c.ids.len(), Instant::now(), args.timeout).await?;
    Ok(Round {
        directory: Some(directory),
        samples,
        unclean: 0,
    })
}

async fn node_killed(
    args: &RecoveryArgs,
    c: &mut Cluster,
    parked: &mut Vec<Conn>,
) -> Result<Round> {
    let a = c.a.take().context("node A is not running")?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(a.pid)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
    let t0 = Instant::now();
    let picked = sample(&c.ids, args.sample);
    let b = c.b.addr;
    let reaches: Vec<_> = picked
        .iter()
        .map(|(id, _)| {
            let id = *id;
            let until = t0 + args.timeout;
            tokio::spawn(async move { reach_refused(b, id, t0, until).await })
        })
        .collect();
    let mut samples = Vec::new();
    let mut unclean = 0;
    for r in reaches {
        let (s, u) = r
            .await?
            .map_err(|f| anyhow::anyhow!("reach via B: {}", f.0))?;
        samples.push(s);
        unclean += u;
    }
    let _ = a.stop(Duration::from_secs(5)).await;
    parked.clear();
    // A again (a new epoch), every hidden server parked again.
    let opts = c.node("a")?;
    c.a = Some(LocalRelay::start(&opts, Duration::from_secs(30)).await?);
    let addr = c.a_addr()?;
    parked.extend(park_all(addr, &c.ids).await?);
    await_directory(&c.socket, c.ids.len(), Instant::now(), args.timeout).await?;
    Ok(Round {
        directory: None,
        samples,
        unclean,
    })
}

/// Parks one hidden server for each of `which` on `relay`.
async fn park_all(relay: SocketAddr, which: &[(Uuid, Vec<u8>)]) -> Result<Vec<Conn>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(PARK_CONCURRENCY));
    let tasks: Vec<_> = which
        .iter()
        .map(|(id, secret)| {
            let (id, gate) = (*id, gate.clone());
            let auth = ParkAuth::new(&proto::Credential::Native(secret.clone()));
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                net::park(relay, None, &id, &auth?, None, STEP)
                    .await
                    .map_err(|f| anyhow::anyhow!("park: {}", f.0))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Retries a reach of `id` via `relay` until it is paired (the exact 200); seconds
/// from `t0`.
async fn reach_until_paired(
    relay: SocketAddr,
    id: Uuid,
    t0: Instant,
    until: Instant,
) -> Result<f64, Failure> {
    loop {
        match reach_once(relay, id).await {
            Ok(Answer::Ok) => return Ok(t0.elapsed().as_secs_f64()),
            Ok(_) | Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(a) => return Err(Failure(format!("still {a:?} at the timeout"))),
            Err(f) => return Err(f),
        }
    }
}

/// Reaches `id` via `relay` until one is refused with a status line (the family's
/// "not parked"); (seconds from `t0` until that answer, unclean ends before it: a
/// client carried to the dead node in the instant it died sees its connection reset).
async fn reach_refused(
    relay: SocketAddr,
    id: Uuid,
    t0: Instant,
    until: Instant,
) -> Result<(f64, u64), Failure> {
    let mut unclean = 0;
    loop {
        match reach_once(relay, id).await {
            Ok(Answer::Status(_)) => return Ok((t0.elapsed().as_secs_f64(), unclean)),
            Ok(Answer::Ok) => return Err(Failure("paired with a dead node's key".into())),
            Ok(Answer::Garbage) | Err(_) if Instant::now() < until => unclean += 1,
            Ok(a) => return Err(Failure(format!("{a:?} at the timeout"))),
            Err(f) => return Err(f),
        }
    }
}

/// Connects, sends the client's head and classifies the answer's first bytes.
async fn reach_once(relay: SocketAddr, id: Uuid) -> Result<Answer, Failure> {
    let limit = Duration::from_secs(60);
    let mut s = net::within(STEP, "client/connect", async {
        net::dial(relay, None)
            .await
            .map_err(|e| Failure::io("client/connect", &e))
    })
    .await?;
    s.write_all(&proto::connect_head(&id))
        .await
        .map_err(|e| Failure::io("client/write", &e))?;
    let mut buf = vec![0u8; tryst_engine::reject::OK_RESPONSE.len()];
    let mut got = 0;
    net::within(limit, "client/answer", async {
        while got < buf.len() {
            match s.read(&mut buf[got..]).await {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(Failure::io("client/answer", &e)),
            }
        }
        Ok(())
    })
    .await?;
    if got == 0 {
        return Err(Failure("client/answer: closed without a byte".into()));
    }
    Ok(proto::classify(&buf[..got]))
}

/// Waits until the directory holds `want` presence records (`tryst:park:*`); seconds
/// from `t0`.
async fn await_directory(
    socket: &Path,
    want: usize,
    t0: Instant,
    timeout: Duration,
) -> Result<f64> {
    loop {
        if park_keys(socket).await.unwrap_or(0) >= want {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > timeout {
            bail!("the directory did not hold {want} parked keys within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many `tryst:park:*` keys the redis-server on `socket` holds (one `EVAL`).
async fn park_keys(socket: &Path) -> Result<usize> {
    let script = "return #redis.call('KEYS', 'tryst:park:*')";
    let cmd = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n",
        script.len()
    );
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    s.write_all(cmd.as_bytes()).await?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            s.read_exact(&mut byte).await?;
            if byte[0] == b'\n' {
                return Ok::<_, std::io::Error>(());
            }
            line.push(byte[0]);
        }
    })
    .await??;
    let text = String::from_utf8_lossy(&line);
    text.trim_end()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected EVAL answer {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_keys() {
        let ids = proto::generate_ids(10);
        let s = sample(&ids, 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, ids[0].0);
        assert_eq!(s[1].0, ids[3].0);
        assert_eq!(sample(&ids, 50).len(), 10);
    }
}
