//! Dead-drop throughput and latency over HTTP: deposits/s and retrieves/s with `C`
//! concurrent clients, and each phase's p99 latency, against several hivemind-rendezvous
//! 0.1.2a2 compatible servers in one invocation: tryst on redb, tryst on PostgreSQL, and
//! upstream's Python server for a side-by-side.
//!
//! usage: deaddrop_bench [--clients 1,8] [--deposits 2000] [--retrieves 400] TARGET...
//!
//! TARGET is `redb` (the bench starts `tryst serve` on a redb file in a temporary
//! directory), `postgres=URL` (starts `tryst serve --deaddrop-store URL`; use an empty
//! database), or `LABEL=HOST:PORT` (a server already running, e.g. upstream's). The
//! started `tryst` is the one next to this example (`target/<profile>/tryst`), with the
//! deposit rate limit and caps raised. A running server's deposit rate limit must be
//! raised by hand (upstream: `run_server(deposit_rate_limit=...)`).
//!
//! Every request uses a new connection (upstream speaks HTTP/1.0 and closes after each
//! reply), so all servers see the same load. Each phase deposits into a mailbox of its
//! own, then retrieves from it (the first retrieve drains it, the rest find it empty).
//! Proofs are signed before the clock starts. For the tryst servers the deposit phase
//! also reports, from `/metrics`, how many deposits each store transaction held (group
//! commit) and how long a transaction took, commit included.

use base64::Engine as _;
use clap::Parser;
use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use sha2::{Digest as _, Sha256};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Mailbox owners: each phase uses its own, so phases do not see each other's messages.
const KEYS: [(&str, &str); 2] = [
    (
        include_str!("../tests/fixtures/deaddrop/client-key.pem"),
        include_str!("../tests/fixtures/deaddrop/client-pub.pem"),
    ),
    (
        include_str!("../tests/fixtures/deaddrop/other-key.pem"),
        include_str!("../tests/fixtures/deaddrop/other-pub.pem"),
    ),
];

#[derive(Parser)]
#[command(about = "dead-drop deposits/s, retrieves/s and p99 latency per server")]
struct Args {
    /// Client counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    clients: Vec<usize>,
    /// Deposits per phase.
    #[arg(long, default_value_t = 2000)]
    deposits: usize,
    /// Retrieves per phase.
    #[arg(long, default_value_t = 400)]
    retrieves: usize,
    /// `redb`, `postgres=URL` or `LABEL=HOST:PORT`.
    #[arg(required = true)]
    targets: Vec<String>,
}

fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Rate (requests/s) and p99 latency of `bodies` sent by `clients` threads.
fn run(
    addr: SocketAddr,
    clients: usize,
    bodies: Vec<String>,
    path: &'static str,
) -> (f64, Duration) {
    let per = bodies.len().div_ceil(clients.max(1));
    let chunks: Vec<Vec<String>> = bodies.chunks(per.max(1)).map(<[String]>::to_vec).collect();
    let start = Instant::now();
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(chunk.len());
                for b in chunk {
                    let t = Instant::now();
                    let (status, body) = exchange(addr, "POST", path, &b);
                    lat.push(t.elapsed());
                    assert_eq!(status, 200, "{path}: {body}");
                }
                lat
            })
        })
        .collect();
    let n = bodies.len();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p99 = lat
        .get((lat.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    (rate, p99)
}

/// The dead-drop writer's totals on `/metrics` (tryst only): transactions, requests in
/// them, seconds spent in them.
#[derive(Clone, Copy, Default)]
struct WriterTotals {
    batches: f64,
    requests: f64,
    commit_secs: f64,
}

impl WriterTotals {
    fn scrape(addr: SocketAddr) -> Option<Self> {
        let (status, body) = exchange(addr, "GET", "/metrics", "");
        if status != 200 {
            return None;
        }
        let value = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        Some(Self {
            batches: value("tryst_deaddrop_batch_requests_count")?,
            requests: value("tryst_deaddrop_batch_requests_sum")?,
            commit_secs: value("tryst_deaddrop_commit_seconds_sum")?,
        })
    }

    /// `requests per transaction | ms per transaction` between two scrapes.
    fn since(self, before: Self) -> String {
        let batches = self.batches - before.batches;
        if batches <= 0.0 {
            return "- | -".into();
        }
        format!(
            "{:.1} | {:.2}",
            (self.requests - before.requests) / batches,
            (self.commit_secs - before.commit_secs) * 1e3 / batches
        )
    }
}

/// A `tryst serve` this bench started; killed on drop.
struct Started {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tryst(store: Option<&str>) -> (SocketAddr, Started) {
    let exe = std::env::current_exe().expect("current exe");
    let tryst = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("tryst"))
        .expect("target directory");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = Command::new(&tryst);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--deaddrop-rate-limit",
            "100000000",
            "--deaddrop-max-pending",
            "1000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = store {
        cmd.args(["--deaddrop-store", url]);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", tryst.display()));
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("start-up line");
    let addr = first
        .strip_prefix("tryst: listening on ")
        .and_then(|a| a.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("tryst did not start: {first:?}"));
    (addr, Started { child, _dir: dir })
}

fn sign_proofs(relay_pem: &str, owner: usize, n: usize) -> Vec<String> {
    let (key, pem) = KEYS[owner];
    let key = rsa::pss::BlindedSigningKey::<Sha256>::new(
        RsaPrivateKey::from_pkcs8_pem(key).expect("key"),
    );
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 20;
    let mut msg = b"hivemind-rendezvous-v1\0".to_vec();
    msg.extend_from_slice(pem.as_bytes());
    msg.push(0);
    msg.extend_from_slice(relay_pem.as_bytes());
    msg.push(0);
    msg.extend_from_slice(ts.to_string().as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    (0..n)
        .map(|_| {
            let sig = b64.encode(key.sign_with_rng(&mut rand::thread_rng(), &msg).to_bytes());
            serde_json::json!({"pubkey": pem, "timestamp": ts, "signature": sig}).to_string()
        })
        .collect()
}

fn deposit_bodies(owner: usize, n: usize, tag: usize) -> Vec<String> {
    let pem = KEYS[owner].1;
    let fingerprint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(pem));
    let blob = "x".repeat(1024);
    (0..n)
        .map(|i| {
            let payload = serde_json::json!({"msg_type": "intercom", "payload": {"ciphertext": blob, "n": i, "phase": tag, "recipient_fingerprint": fingerprint}, "metadata": {}, "route": []}).to_string();
            serde_json::json!({"payload": payload, "target_pubkey": pem}).to_string()
        })
        .collect()
}

fn main() {
    let args = Args::parse();
    println!(
        "| server | clients | deposits/s | deposit p99 ms | deposits per commit | ms per commit | retrieves/s | retrieve p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for target in &args.targets {
        let (label, addr, _started) = match target.split_once('=') {
            None if target == "redb" => {
                let (addr, s) = start_tryst(None);
                ("tryst redb".to_owned(), addr, Some(s))
            }
            Some(("postgres", url)) => {
                let (addr, s) = start_tryst(Some(url));
                ("tryst postgres".to_owned(), addr, Some(s))
            }
            Some((label, addr)) => (
                label.to_owned(),
                addr.parse()
                    .unwrap_or_else(|_| panic!("{target}: not LABEL=HOST:PORT")),
                None,
            ),
            None => panic!("{target}: expected redb, postgres=URL or LABEL=HOST:PORT"),
        };
        let (_, body) = exchange(addr, "GET", "/pubkey", "");
        let relay_pem =
            serde_json::from_str::<serde_json::Value>(&body).expect("pubkey json")["pubkey"]
                .as_str()
                .expect("pubkey")
                .to_owned();
        for (phase, &clients) in args.clients.iter().enumerate() {
            let owner = phase % KEYS.len();
            let deposits = deposit_bodies(owner, args.deposits, phase);
            let before = WriterTotals::scrape(addr);
            let (dps, dp99) = run(addr, clients, deposits, "/deposit");
            let batching = match (before, WriterTotals::scrape(addr)) {
                (Some(before), Some(after)) => after.since(before),
                _ => "- | -".into(),
            };
            let proofs = sign_proofs(&relay_pem, owner, args.retrieves);
            let (rps, rp99) = run(addr, clients, proofs, "/retrieve");
            println!(
                "| {label} | {clients} | {dps:.0} | {:.1} | {batching} | {rps:.0} | {:.1} |",
                dp99.as_secs_f64() * 1e3,
                rp99.as_secs_f64() * 1e3
            );
        }
    }
    println!(
        "({} deposits of 1 KiB and {} retrieves per phase; the first retrieve drains the mailbox)",
        args.deposits, args.retrieves
    );
}
