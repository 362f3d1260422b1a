//! `loadgen qredo`: Qredo's Lingua Franca RPC at `/services` under load: `Rendezvous`
//! creates and responds per second, over HTTP (`POST /services` on `--connections`
//! keep-alive connections, one request in flight on each) and over the WebSocket
//! (`--sockets` sockets, `--in-flight` requests in flight on each), against a local
//! relay (started here with `--qredo-open true`) or `--relay ADDR`.
//!
//! Each repetition runs four phases for `--duration` each, in this order:
//! `create-http`, `respond-http`, `create-ws`, `respond-ws`. A create names a fresh
//! hashed tag (unlimited responses, one hour) and the same registered owner key; a
//! respond goes round robin to the tags its transport's create phase made (the
//! signature-free path: `respond` carries no ownership signature), and must be
//! answered `RendezvousResponseRegistered`. Anything else is an error, counted and
//! shown. Per phase: operations per second, latency p50/p99 from sending a request to
//! reading its result, and (local relay only) the relay's CPU time per operation (the
//! supervisor and its workers, from /proc), from which "per relay core" rates follow.
//! The report gives the median and the spread (min..max) of each over the repetitions,
//! as `loadgen compare` does. No speed is asserted anywhere.

use crate::cli::QredoArgs;
use crate::procfs;
use crate::relay::{LocalRelay, RelayOptions, tryst_binary};
use crate::stats::Latency;
use crate::stats::{median, spread};
use anyhow::{Context, Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tryst_relay::qredo::lf::{
    self, Interchange, Limits, Outcome, PROTOCOL_VERSION, Record, Request, Value,
};

/// The phases of one repetition, in order.
const PHASES: [Phase; 4] = [
    Phase {
        name: "create-http",
        op: Op::Create,
        ws: false,
    },
    Phase {
        name: "respond-http",
        op: Op::Respond,
        ws: false,
    },
    Phase {
        name: "create-ws",
        op: Op::Create,
        ws: true,
    },
    Phase {
        name: "respond-ws",
        op: Op::Respond,
        ws: true,
    },
];

/// Most tags a create phase keeps for its respond phase (each takes 1,000 responses).
const POOL: usize = 4096;
/// Longest wait for one answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Respond,
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    name: &'static str,
    op: Op,
    ws: bool,
}

type Metrics = BTreeMap<String, f64>;

/// Builds the requests of one phase; shared by its connections.
struct Requests {
    op: Op,
    /// Tags made by the create phase (create), or to respond to (respond).
    pool: std::sync::Mutex<Vec<[u8; 32]>>,
    next: AtomicU64,
    /// A per-run prefix keeping hashed tags and correlation ids unique across runs.
    salt: [u8; 16],
    owner: Vec<u8>,
}

impl Requests {
    fn new(op: Op, pool: Vec<[u8; 32]>, salt: [u8; 16]) -> Self {
        // Any strong Ed25519 key may own a rendezvous; one for all is enough here.
        let owner = ed25519_dalek::SigningKey::from_bytes(&[0x51; 32])
            .verifying_key()
            .to_bytes()
            .to_vec();
        Self {
            op,
            pool: std::sync::Mutex::new(pool),
            next: AtomicU64::new(0),
            salt,
            owner,
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<[u8; 32]>> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next request: its encoding and correlation id (and, for a create, its tag).
    fn build(&self) -> (Vec<u8>, Vec<u8>, Option<[u8; 32]>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut correlation = self.salt.to_vec();
        correlation.extend_from_slice(&n.to_be_bytes());
        let (operation, arg, tag) = match self.op {
            Op::Create => {
                let mut tag = [0u8; 32];
                tag[..16].copy_from_slice(&self.salt);
                tag[16..24].copy_from_slice(&n.to_be_bytes());
                tag[24] = u8::from(self.salt[0] == 0);
                let info = Value::Record(Record::new(
                    "RendezvousCreationInfo",
                    vec![
                        ("durationSeconds", Value::Set(vec![Value::Int32(3600)])),
                        (
                            "encryptedResponderInfo",
                            Value::Record(Record::new(
                                "EncryptedResponderInfo",
                                vec![
                                    ("authenticationCode", Value::Bytes(vec![0xac; 32])),
                                    (
                                        "authenticationType",
                                        Value::Record(Record::unit("RendezvousAnonymous")),
                                    ),
                                    ("value", Value::Bytes(vec![0x5e; 96])),
                                ],
                            )),
                        ),
                        ("hashedTag", Value::Quid(tag)),
                        ("ownershipPublicKey", Value::Bytes(self.owner.clone())),
                        (
                            "responseCountLimit",
                            Value::Record(Record::unit("RendezvousUnlimitedResponses")),
                        ),
                    ],
                ));
                ("create", info, Some(tag))
            }
            Op::Respond => {
                let tag = {
                    let pool = self.pool();
                    pool[n as usize % pool.len()]
                };
                let response = Value::Record(Record::new(
                    "RendezvousResponse",
                    vec![
                        ("hashedTag", Value::Quid(tag)),
                        ("responderAuthenticationCode", Value::Bytes(vec![0xa5; 32])),
                        ("responderPublicKey", Value::Bytes(vec![0x09; 32])),
                    ],
                ));
                ("respond", response, None)
            }
        };
        let req = Request {
            header: Interchange {
                protocol: PROTOCOL_VERSION,
                release: PROTOCOL_VERSION,
                return_channel: b"loadgen".to_vec(),
                correlation: correlation.clone(),
                service: "Rendezvous".into(),
                operation: operation.into(),
            },
            app_id: "loadgen".into(),
            app_secret: Vec::new(),
            args: vec![arg],
        };
        (req.encode(), correlation, tag)
    }

    /// Checks a result body; for a create, keeps its tag for the respond phase.
    fn check(&self, body: &[u8], tag: Option<[u8; 32]>) -> Result<(), String> {
        let resp = lf::decode_response(body, &Limits::default())
            .map_err(|e| format!("undecodable result: {e:?}"))?;
        let want = match self.op {
            Op::Create => "RendezvousCreated",
            Op::Respond => "RendezvousResponseRegistered",
        };
        match &resp.outcome {
            Outcome::Success(v) if v.len() == 1 => match v[0].as_record() {
                Ok(r) if r.name == want => {
                    if let Some(tag) = tag {
                        let mut pool = self.pool();
                        if pool.len() < POOL {
                            pool.push(tag);
                        }
                    }
                    Ok(())
                }
                Ok(r) => Err(format!("answered {}", r.name)),
                Err(_) => Err("answered a value that is not a record".into()),
            },
            Outcome::Success(_) => Err("answered several values".into()),
            Outcome::Failure(errors) => {
                Err(format!("failure {}", errors.first().map_or(0, |e| e.code)))
            }
        }
    }
}

/// What one connection did in a phase.
#[derive(Default)]
struct Tally {
    ops: u64,
    latency: Option<Latency>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, d: Duration) {
        self.latency.get_or_insert_with(Latency::new).record(d);
        self.ops += 1;
    }
    fn error(&mut self, e: String) {
        *self.errors.entry(e).or_default() += 1;
    }
    fn merge(&mut self, other: Self) {
        self.ops += other.ops;
        if let Some(l) = other.latency {
            match &mut self.latency {
                Some(mine) => mine.merge(&l),
                None => self.latency = Some(l),
            }
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// One keep-alive HTTP/1.1 connection posting requests one at a time until `end`.
async fn http_loop(addr: SocketAddr, reqs: Arc<Requests>, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            t.error(format!("http connect: {e}"));
            return t;
        }
    };
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < end {
        let (body, _, tag) = reqs.build();
        let mut out = format!(
            "POST /services HTTP/1.1\r\nHost: relay\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        let started = Instant::now();
        let answer = tokio::time::timeout(STEP_TIMEOUT, async {
            s.write_all(&out)
                .await
                .map_err(|e| format!("http write: {e}"))?;
            read_http_body(&mut s, &mut buf).await
        })
        .await
        .unwrap_or_else(|_| Err("http: no answer within 30 s".into()));
        match answer.and_then(|body| reqs.check(&body, tag)) {
            Ok(()) => t.record(started.elapsed()),
            Err(e) => {
                t.error(e);
                // The connection's state is unknown after a failure: start afresh.
                match TcpStream::connect(addr).await {
                    Ok(fresh) => s = fresh,
                    Err(_) => return t,
                }
                buf.clear();
            }
        }
    }
    t
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `s` (`buf` carries
/// bytes read past the previous response) and returns its body if the status is 200.
async fn read_http_body(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!(
                    "http status {}",
                    head.lines().next().unwrap_or_default()
                ));
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .ok_or("http: no Content-Length")?;
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("http read: {e}"))?;
                if n == 0 {
                    return Err("http: closed mid-body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Ok(body);
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("http read: {e}"))?;
        if n == 0 {
            return Err("http: closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One WebSocket keeping `in_flight` requests outstanding until `end`, then draining.
async fn ws_loop(addr: SocketAddr, reqs: Arc<Requests>, end: Instant, in_flight: usize) -> Tally {
    let mut t = Tally::default();
    let url = format!("ws://{addr}/services");
    let ws = match TcpStream::connect(addr).await {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            tokio_tungstenite::client_async(url, tcp).await
        }
        Err(e) => {
            t.error(format!("ws connect: {e}"));
            return t;
        }
    };
    let (mut tx, mut rx) = match ws {
        Ok((ws, _)) => ws.split(),
        Err(e) => {
            t.error(format!("ws handshake: {e}"));
            return t;
        }
    };
    let mut outstanding: HashMap<Vec<u8>, (Instant, Option<[u8; 32]>)> = HashMap::new();
    loop {
        while outstanding.len() < in_flight && Instant::now() < end {
            let (body, correlation, tag) = reqs.build();
            outstanding.insert(correlation, (Instant::now(), tag));
            if let Err(e) = tx.send(Message::binary(body)).await {
                t.error(format!("ws send: {e}"));
                return t;
            }
        }
        if outstanding.is_empty() {
            break;
        }
        let msg = match tokio::time::timeout(STEP_TIMEOUT, rx.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                t.error(format!("ws receive: {e}"));
                return t;
            }
            Ok(None) => {
                t.error("ws: closed by the relay".into());
                return t;
            }
            Err(_) => {
                t.error("ws: no answer within 30 s".into());
                return t;
            }
        };
        let Message::Binary(body) = msg else {
            continue;
        };
        let correlation = match lf::decode_response(&body, &Limits::default()) {
            Ok(r) => r.header.correlation,
            Err(e) => {
                t.error(format!("undecodable result: {e:?}"));
                return t;
            }
        };
        let Some((started, tag)) = outstanding.remove(&correlation) else {
            t.error("ws: an answer to no request".into());
            continue;
        };
        match reqs.check(&body, tag) {
            Ok(()) => t.record(started.elapsed()),
            Err(e) => t.error(e),
        }
    }
    let _ = tx.close().await;
    t
}

fn relay_cpu(pid: Option<u32>) -> Option<f64> {
    pid.map(|p| procfs::sample(p, false).cpu_seconds)
}

async fn run_phase(
    args: &QredoArgs,
    addr: SocketAddr,
    pid: Option<u32>,
    phase: Phase,
    reqs: Arc<Requests>,
) -> (Metrics, BTreeMap<String, u64>) {
    let cpu0 = relay_cpu(pid);
    let start = Instant::now();
    let end = start + args.duration;
    let mut tasks = Vec::new();
    if phase.ws {
        for _ in 0..args.sockets {
            tasks.push(tokio::spawn(ws_loop(
                addr,
                Arc::clone(&reqs),
                end,
                args.in_flight,
            )));
        }
    } else {
        for _ in 0..args.connections {
            tasks.push(tokio::spawn(http_loop(addr, Arc::clone(&reqs), end)));
        }
    }
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(_) => total.error("a load task failed".into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    m.insert("count".into(), total.ops as f64);
    m.insert("per_s".into(), total.ops as f64 / elapsed);
    if let Some(l) = &total.latency {
        m.insert("p50_us".into(), l.quantile_ns(0.5) as f64 / 1e3);
        m.insert("p99_us".into(), l.quantile_ns(0.99) as f64 / 1e3);
    }
    if let (Some(a), Some(b)) = (cpu0, relay_cpu(pid))
        && total.ops > 0
    {
        let us = (b - a) * 1e6 / total.ops as f64;
        m.insert("relay_cpu_us".into(), us);
        if us > 0.0 {
            m.insert("per_relay_core_s".into(), 1e6 / us);
        }
    }
    let errors: u64 = total.errors.values().sum();
    m.insert("errors".into(), errors as f64);
    (m, total.errors)
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
struct Cell {
    repetition: usize,
    phase: String,
    metrics: Metrics,
}

/// Median and spread of one metric of one phase over the repetitions.
#[derive(Debug, Clone, Serialize)]
struct SummaryRow {
    phase: String,
    metric: String,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    samples: usize,
}

#[derive(Debug, Serialize)]
struct QredoReport {
    command: String,
    relay: String,
    repetitions: usize,
    duration_s: f64,
    connections: usize,
    sockets: usize,
    in_flight: usize,
    cells: Vec<Cell>,
    summary: Vec<SummaryRow>,
    errors: BTreeMap<String, u64>,
}

const SHOWN: [(&str, &str); 5] = [
    ("per_s", "ops/s"),
    ("p50_us", "p50 µs"),
    ("p99_us", "p99 µs"),
    ("relay_cpu_us", "relay CPU µs/op"),
    ("per_relay_core_s", "ops per relay CPU-s"),
];

fn summarize(cells: &[Cell]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for phase in PHASES {
        for (key, _) in SHOWN {
            let values: Vec<f64> = cells
                .iter()
                .filter(|c| c.phase == phase.name)
                .filter_map(|c| c.metrics.get(key).copied())
                .collect();
            if values.is_empty() {
                continue;
            }
            let (min, max) = spread(&values).unzip();
            rows.push(SummaryRow {
                phase: phase.name.into(),
                metric: key.into(),
                median: median(&values),
                min,
                max,
                samples: values.len(),
            });
        }
    }
    rows
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

fn render(r: &QredoReport) -> String {
    let mut out = format!(
        "loadgen qredo: {} repetitions x {:.1} s per phase; HTTP: {} keep-alive connections, 1 request in flight each; WebSocket: {} sockets, {} requests in flight each\nrelay: {}\n\n{:<14} {:<22} {:>12} {:>24}\n",
        r.repetitions,
        r.duration_s,
        r.connections,
        r.sockets,
        r.in_flight,
        r.relay,
        "phase",
        "metric",
        "median",
        "spread (min..max)"
    );
    for row in &r.summary {
        let label = SHOWN
            .iter()
            .find(|(k, _)| *k == row.metric)
            .map_or(row.metric.as_str(), |(_, l)| l);
        out.push_str(&format!(
            "{:<14} {:<22} {:>12} {:>24}\n",
            row.phase,
            label,
            fmt(row.median),
            format!("{}..{}", fmt(row.min), fmt(row.max)),
        ));
    }
    if r.errors.is_empty() {
        out.push_str("\nerrors: none\n");
    } else {
        out.push_str("\nerrors:\n");
        for (k, v) in &r.errors {
            out.push_str(&format!("  {v} x {k}\n"));
        }
    }
    out
}

/// Entry point of `loadgen qredo`. `Ok(false)` when any request failed.
pub(crate) fn main(args: &QredoArgs) -> Result<bool> {
    args.validate()?;
    crate::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: &QredoArgs) -> Result<bool> {
    let mut _dir = None;
    let mut relay = None;
    let (addr, pid, relay_text) = match args.relay {
        Some(addr) => (
            addr,
            None,
            format!("{addr} (given; its CPU is not measured)"),
        ),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("loadgen-qredo-")
                .tempdir()?;
            let opts = RelayOptions {
                binary: tryst_binary(args.tryst.as_deref())?,
                data_dir: dir.path().to_path_buf(),
                data_path: None,
                workers: Some(1),
                extra: [
                    "--qredo-open",
                    "true",
                    // Every create of every repetition stays active for the run.
                    "--tag-max-tags",
                    "10000000",
                ]
                .map(String::from)
                .to_vec(),
                pin_cpus: args.pin_relay.clone(),
                tls: false,
            };
            let r = LocalRelay::start(&opts, Duration::from_secs(30))
                .await
                .context("starting the relay")?;
            let text = r.command.clone();
            let out = (r.addr, Some(r.pid), text);
            relay = Some(r);
            _dir = Some(dir);
            out
        }
    };
    eprintln!("loadgen qredo: relay {relay_text}");
    let mut cells = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for rep in 0..args.repetitions {
        let salt: [u8; 16] = rand::random();
        let mut made = Vec::new();
        for phase in PHASES {
            let pool = if phase.op == Op::Respond {
                std::mem::take(&mut made)
            } else {
                Vec::new()
            };
            if phase.op == Op::Respond && pool.is_empty() {
                bail!("{}: the create phase made no tag to respond to", phase.name);
            }
            let mut phase_salt = salt;
            phase_salt[15] ^= u8::from(phase.ws);
            let reqs = Arc::new(Requests::new(phase.op, pool, phase_salt));
            eprintln!(
                "loadgen qredo: repetition {}/{} {}",
                rep + 1,
                args.repetitions,
                phase.name
            );
            let (metrics, errs) = run_phase(args, addr, pid, phase, Arc::clone(&reqs)).await;
            for (k, v) in errs {
                *errors.entry(format!("{}: {k}", phase.name)).or_default() += v;
            }
            if phase.op == Op::Create {
                made = std::mem::take(&mut *reqs.pool());
            }
            cells.push(Cell {
                repetition: rep,
                phase: phase.name.into(),
                metrics,
            });
        }
    }
    if let Some(r) = relay.take() {
        let _ = r.stop(Duration::from_secs(10)).await;
    }
    let report = QredoReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        relay: relay_text,
        repetitions: args.repetitions,
        duration_s: args.duration.as_secs_f64(),
        connections: args.connections,
        sockets: args.sockets,
        in_flight: args.in_flight,
        summary: summarize(&cells),
        cells,
        errors,
    };
    println!("{}", render(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_well_formed_and_answers_are_checked() {
        let reqs = Requests::new(Op::Create, Vec::new(), [1; 16]);
        let (body, correlation, tag) = reqs.build();
        let req = lf::decode_request(&body, &Limits::default())
            .map_err(|_| "undecodable")
            .unwrap();
        assert_eq!(req.header.operation, "create");
        assert_eq!(req.header.correlation, correlation);
        let tag = tag.unwrap();
        let (_, second, other) = reqs.build();
        assert_ne!(second, correlation);
        assert_ne!(other.unwrap(), tag, "every create names a fresh tag");
        let answer = |value: Value| {
            lf::Response {
                header: req.header.clone(),
                outcome: Outcome::Success(vec![value]),
            }
            .encode()
        };
        let created = answer(Value::Record(Record::new(
            "RendezvousCreated",
            vec![("expiresAt", Value::Set(vec![]))],
        )));
        assert_eq!(reqs.check(&created, Some(tag)), Ok(()));
        assert_eq!(reqs.pool().as_slice(), &[tag]);
        let exists = answer(Value::Record(Record::unit("RendezvousAlreadyExists")));
        assert_eq!(
            reqs.check(&exists, None),
            Err("answered RendezvousAlreadyExists".into())
        );
        assert!(reqs.check(b"garbage", None).is_err());

        let respond = Requests::new(Op::Respond, vec![tag], [2; 16]);
        let (body, _, none) = respond.build();
        assert!(none.is_none());
        let req = lf::decode_request(&body, &Limits::default())
            .map_err(|_| "undecodable")
            .unwrap();
        assert_eq!(req.header.operation, "respond");
        let hashed = req.args[0]
            .as_record()
            .unwrap()
            .field("hashedTag")
            .unwrap()
            .as_quid()
            .unwrap();
        assert_eq!(hashed, &tag);
    }

    #[test]
    fn the_summary_takes_medians_and_spreads_per_phase() {
        let cell = |rep, phase: &str, v: f64| Cell {
            repetition: rep,
            phase: phase.into(),
            metrics: [("per_s".to_string(), v)].into_iter().collect(),
        };
        let cells = vec![
            cell(0, "respond-http", 10.0),
            cell(1, "respond-http", 30.0),
            cell(2, "respond-http", 20.0),
        ];
        let rows = summarize(&cells);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].phase, "respond-http");
        assert_eq!(rows[0].median, Some(20.0));
        assert_eq!((rows[0].min, rows[0].max), (Some(10.0), Some(30.0)));
        assert_eq!(rows[0].samples, 3);
    }
}
