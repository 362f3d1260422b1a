//! A worker process: one slice of the hidden servers and clients of a capacity run, on a
//! current-thread runtime, within this machine's 20,000 fd per-process limit.
//!
//! The parent re-executes itself as `loadgen __worker`, writes a [`WorkerSpec`] as one
//! JSON line on the worker's stdin, then the commands `go` (start clients), `finish`
//! (end the hold) and `stop` (close parked connections). The worker answers with JSON
//! lines on stdout ([`FromWorker`]).

use crate::net::{self, Failure};
use crate::pattern::{Pattern, splitmix64};
use crate::proto::{self, Credential, ParkAuth};
use crate::stats::{Stats, StatsWire};
use crate::transport::{Conn, TlsClient, TlsSpec};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// What one worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// Worker number (for messages).
    pub(crate) index: usize,
    /// The relay.
    pub(crate) relay: SocketAddr,
    /// Hidden server ids this worker serves, with their credentials.
    pub(crate) hidden: Vec<(Uuid, Credential)>,
    /// TLS to the relay, if any.
    pub(crate) tls: Option<TlsSpec>,
    /// Parked connections each hidden server keeps.
    pub(crate) parked: usize,
    /// Every hidden id of the run; clients pick one at random.
    pub(crate) targets: Vec<Uuid>,
    /// Number of clients this worker runs.
    pub(crate) clients: u64,
    /// Global index of this worker's first client (pattern and target choice).
    pub(crate) first_client: u64,
    /// Echo rounds before the hold.
    pub(crate) rounds: u32,
    /// Bytes per echo round.
    pub(crate) size: usize,
    /// Run seed.
    pub(crate) seed: u64,
    /// Client arrivals per second in this worker (open loop), or `None` for as fast as
    /// the in-flight cap allows.
    pub(crate) rate: Option<f64>,
    /// Clients running at once in this worker.
    pub(crate) concurrency: u64,
    /// `None`: hold until the parent's `finish` (all clients held together);
    /// `Some(ms)`: each client holds this long on its own.
    pub(crate) hold_ms: Option<u64>,
    /// Source addresses to spread connections over (empty: let the kernel choose).
    pub(crate) source_ips: Vec<Ipv4Addr>,
    /// Client handshakes in flight at once, and separately parks in flight at once.
    pub(crate) max_inflight: usize,
    /// Limit for each step, in milliseconds.
    pub(crate) timeout_ms: u64,
}

/// Live counters, sent every second.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Hidden connections parked right now.
    pub(crate) parked: u64,
    /// Clients paired and not yet closed.
    pub(crate) connected: u64,
    /// Clients paired so far.
    pub(crate) paired: u64,
    /// Errors so far.
    pub(crate) errors: u64,
    /// Hidden-side tunnels open.
    pub(crate) tunnels: u64,
}

/// A line from a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FromWorker {
    /// Periodic counters.
    Progress(Progress),
    /// Every hidden slot finished its first park attempt.
    Parked,
    /// Every client is holding (or failed); only when holding until `finish`.
    Held,
    /// Every client finished.
    ClientsDone,
    /// Final measurements; the worker exits after this.
    Done(Box<StatsWire>),
}

/// Before connecting to park with a TOTP code, how much of the step must be left (else
/// wait for the next step): room for the connect and TLS handshake of a busy run.
const TOTP_CONNECT_GUARD_MS: u64 = 2000;

fn emit(msg: &FromWorker) {
    // A closed stdout means the parent is gone; the worker ends with it.
    if let Ok(line) = serde_json::to_string(msg) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Shared state of the worker's tasks (single thread).
struct Ctx {
    spec: WorkerSpec,
    tls: Option<TlsClient>,
    stats: RefCell<Stats>,
    parked: Cell<u64>,
    connected: Cell<u64>,
    tunnels: Cell<u64>,
    tunnels_idle: Notify,
    first_parks_pending: Cell<u64>,
    clients_pending: Cell<u64>,
    clients_unheld: Cell<u64>,
    next_src: Cell<usize>,
    /// Client handshakes in flight (connect until the first echoed byte).
    inflight: Semaphore,
    /// Parks in flight (connect until the 200), separate so that clients waiting at the
    /// relay for a pairing never starve the re-parks that would serve them.
    park_inflight: Semaphore,
    go_at: Cell<Option<Instant>>,
    stop: watch::Receiver<bool>,
    finish: watch::Receiver<bool>,
}

impl Ctx {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.spec.timeout_ms)
    }

    fn src(&self) -> Option<Ipv4Addr> {
        let ips = &self.spec.source_ips;
        if ips.is_empty() {
            return None;
        }
        let i = self.next_src.get();
        self.next_src.set(i.wrapping_add(1));
        Some(ips[i % ips.len()])
    }

    fn fail(&self, f: Failure) {
        self.stats.borrow_mut().errors.add(f.0);
    }

    fn progress(&self) -> Progress {
        let s = self.stats.borrow();
        Progress {
            parked: self.parked.get(),
            connected: self.connected.get(),
            paired: s.pairings,
            errors: s.errors.total(),
            tunnels: self.tunnels.get(),
        }
    }
}

/// Entry point of `loadgen __worker`: reads the spec from stdin and runs it.
pub(crate) fn main() -> Result<()> {
    crate::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run());
    drop(local);
    // The stdin reader sits in a blocking read that only the parent can end; do not wait
    // for it.
    rt.shutdown_background();
    result
}

async fn run() -> Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .context("no worker spec on stdin")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("worker spec")?;
    let tls = spec.tls.as_ref().map(TlsClient::load).transpose()?;
    let mut auths = Vec::with_capacity(spec.hidden.len());
    for (id, cred) in &spec.hidden {
        auths.push((*id, Rc::new(ParkAuth::new(cred)?)));
    }

    let (go_tx, mut go_rx) = watch::channel(false);
    let (finish_tx, finish_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::task::spawn_local(async move {
        // Commands from the parent; end of stdin means the parent is gone: stop all.
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "go" => drop(go_tx.send(true)),
                "finish" => drop(finish_tx.send(true)),
                "stop" => drop(stop_tx.send(true)),
                _ => {}
            }
        }
        let _ = go_tx.send(true);
        let _ = finish_tx.send(true);
        let _ = stop_tx.send(true);
    });

    let slots = (spec.hidden.len() * spec.parked) as u64;
    let ctx = Rc::new(Ctx {
        stats: RefCell::new(Stats::default()),
        parked: Cell::new(0),
        connected: Cell::new(0),
        tunnels: Cell::new(0),
        tunnels_idle: Notify::new(),
        first_parks_pending: Cell::new(slots),
        clients_pending: Cell::new(spec.clients),
        clients_unheld: Cell::new(spec.clients),
        next_src: Cell::new(spec.index),
        inflight: Semaphore::new(spec.max_inflight.max(1)),
        park_inflight: Semaphore::new(spec.max_inflight.max(1)),
        go_at: Cell::new(None),
        stop: stop_rx,
        finish: finish_rx,
        spec,
        tls,
    });

    // Progress ticker.
    let ticker = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            loop {
                iv.tick().await;
                emit(&FromWorker::Progress(ctx.progress()));
            }
        })
    };

    // Hidden servers.
    let mut hidden_tasks = Vec::new();
    for (id, auth) in &auths {
        for _ in 0..ctx.spec.parked {
            let ctx = ctx.clone();
            let id = *id;
            let auth = auth.clone();
            hidden_tasks.push(tokio::task::spawn_local(async move {
                hidden_slot(&ctx, id, &auth).await;
            }));
        }
    }
    if slots == 0 {
        emit(&FromWorker::Parked);
    }

    // Clients start on `go`.
    while !*go_rx.borrow_and_update() {
        if go_rx.changed().await.is_err() {
            break;
        }
    }
    let go = Instant::now();
    ctx.go_at.set(Some(go));
    if ctx.spec.clients == 0 {
        emit(&FromWorker::Held);
        emit(&FromWorker::ClientsDone);
    }
    let clients = std::sync::Arc::new(Semaphore::new(
        usize::try_from(ctx.spec.concurrency.max(1)).unwrap_or(usize::MAX),
    ));
    let interval = ctx.spec.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut client_tasks = Vec::with_capacity(usize::try_from(ctx.spec.clients).unwrap_or(0));
    for k in 0..ctx.spec.clients {
        let intended = interval.map(|iv| go + iv * u32::try_from(k).unwrap_or(u32::MAX));
        if let Some(at) = intended {
            tokio::time::sleep_until(at).await;
        }
        // Closed loop over the concurrency cap.
        let Ok(permit) = clients.clone().acquire_owned().await else {
            break;
        };
        let ctx = ctx.clone();
        client_tasks.push(tokio::task::spawn_local(async move {
            let global = ctx.spec.first_client + k;
            let result = client(&ctx, global, intended).await;
            drop(permit);
            match result {
                Ok(()) => ctx.stats.borrow_mut().clients_ok += 1,
                Err(f) => ctx.fail(f),
            }
            client_finished(&ctx);
        }));
    }
    for t in client_tasks {
        let _ = t.await;
    }

    // Stop parking once the parent says every worker's clients are done.
    let mut stop = ctx.stop.clone();
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    for t in hidden_tasks {
        let _ = t.await;
    }
    // Hidden-side tunnels end when their clients close; bound the wait.
    let waited = tokio::time::timeout(ctx.timeout(), async {
        while ctx.tunnels.get() > 0 {
            ctx.tunnels_idle.notified().await;
        }
    })
    .await;
    if waited.is_err() {
        for _ in 0..ctx.tunnels.get() {
            ctx.fail(Failure(
                "hidden/tunnel: still open at the end of the run".into(),
            ));
        }
    }
    ticker.abort();
    emit(&FromWorker::Progress(ctx.progress()));
    let wire = ctx.stats.borrow().to_wire()?;
    emit(&FromWorker::Done(Box::new(wire)));
    Ok(())
}

fn client_finished(ctx: &Ctx) {
    let left = ctx.clients_pending.get().saturating_sub(1);
    ctx.clients_pending.set(left);
    if left == 0 {
        emit(&FromWorker::ClientsDone);
    }
}

/// Counts one client as holding (or failed before its hold).
fn count_unheld(ctx: &Ctx) {
    let left = ctx.clients_unheld.get().saturating_sub(1);
    ctx.clients_unheld.set(left);
    if left == 0 && ctx.spec.hold_ms.is_none() {
        emit(&FromWorker::Held);
    }
}

/// One hidden server's parked slot: park, wait for a client, hand the tunnel to an echo
/// task and park again at once, until stopped.
/// Bytes a parked hidden server reads when its client arrives (the echo reads the rest).
const FIRST_READ: usize = 256;

async fn hidden_slot(ctx: &Rc<Ctx>, id: Uuid, auth: &ParkAuth) {
    let mut first = true;
    let mut stop = ctx.stop.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        // Boxed: the park's state (connect, TLS handshake, timers) is large, and inline
        // it would size every waiting hidden server's task for its whole life.
        let parked = Box::pin(async {
            let _permit = ctx
                .park_inflight
                .acquire()
                .await
                .map_err(|_| Failure("hidden/park: shutting down".into()))?;
            // The relay accepts a TOTP code only within its step: near a step's end, wait
            // for the next step before connecting (not counted as park latency).
            if let Some(step) = auth.totp_step()
                && let Some(ms) =
                    proto::totp_boundary_wait(net::unix_now_ms(), step, TOTP_CONNECT_GUARD_MS)
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let t0 = Instant::now();
            let s = net::park(
                ctx.spec.relay,
                ctx.src(),
                &id,
                auth,
                ctx.tls.as_ref(),
                ctx.timeout(),
            )
            .await?;
            ctx.stats.borrow_mut().park.record(t0.elapsed());
            Ok::<_, Failure>(s)
        })
        .await;
        if first {
            first = false;
            let left = ctx.first_parks_pending.get().saturating_sub(1);
            ctx.first_parks_pending.set(left);
            if left == 0 {
                emit(&FromWorker::Parked);
            }
        }
        let mut s = match parked {
            Ok(s) => s,
            Err(f) => {
                ctx.fail(f);
                // Counted above; back off before the next attempt so a refusing relay
                // is not hammered.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        ctx.stats.borrow_mut().parks += 1;
        ctx.parked.set(ctx.parked.get() + 1);
        // Held by every parked hidden server while it waits (a million of them in one
        // run): a small buffer for the first bytes; the echo takes the rest.
        let mut buf = [0u8; FIRST_READ];
        let got = tokio::select! {
            r = s.read(&mut buf) => Some(r),
            _ = stop.changed() => None,
        };
        ctx.parked.set(ctx.parked.get().saturating_sub(1));
        match got {
            None => break,
            Some(Ok(0)) => {
                if !*stop.borrow() {
                    ctx.fail(Failure("hidden/parked: closed by the relay".into()));
                }
            }
            Some(Err(e)) => ctx.fail(Failure::io("hidden/parked read", &e)),
            Some(Ok(n)) => spawn_echo(ctx, s, buf[..n].to_vec()),
        }
    }
}

fn spawn_echo(ctx: &Rc<Ctx>, mut s: Conn, first: Vec<u8>) {
    ctx.tunnels.set(ctx.tunnels.get() + 1);
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
        if let Err(f) = net::echo_serve(&mut s, &first, "hidden").await {
            ctx.fail(f);
        }
        let left = ctx.tunnels.get().saturating_sub(1);
        ctx.tunnels.set(left);
        if left == 0 {
            ctx.tunnels_idle.notify_waiters();
        }
    });
}

/// One client: connect, handshake, echo rounds, hold, last echo, clean close.
async fn client(ctx: &Ctx, global: u64, intended: Option<Instant>) -> Result<(), Failure> {
    let spec = &ctx.spec;
    let pattern = Pattern::new(spec.seed, global);
    let target = spec.targets
        [(splitmix64(spec.seed ^ 0x5eed ^ global) % spec.targets.len() as u64) as usize];
    let permit = ctx
        .inflight
        .acquire()
        .await
        .map_err(|_| Failure("client/connect: shutting down".into()))?;
    let start = intended.unwrap_or_else(Instant::now);
    let result = async {
        let mut s = net::connect(
            spec.relay,
            ctx.src(),
            ctx.tls.as_ref(),
            "client",
            ctx.timeout(),
        )
        .await?;
        net::within(ctx.timeout(), "client/handshake", async {
            s.write_all(&proto::connect_head(&target))
                .await
                .map_err(|e| Failure::io("client/head write", &e))?;
            net::read_answer(&mut s, "client").await
        })
        .await?;
        let mut offset = 0u64;
        for round in 0..spec.rounds {
            let t = Instant::now();
            let e = net::within(
                ctx.timeout(),
                "client/echo",
                net::echo_round(&mut s, &pattern, offset, spec.size, "client"),
            )
            .await?;
            offset += spec.size as u64;
            let mut st = ctx.stats.borrow_mut();
            st.rtt.record(e.done - t);
            st.bytes_verified += spec.size as u64;
            if round == 0 {
                st.pairing.record(e.first_byte - start);
                st.pairings += 1;
                if let Some(go) = ctx.go_at.get() {
                    st.last_pairing_ms = st.last_pairing_ms.max(
                        u64::try_from(e.first_byte.duration_since(go).as_millis())
                            .unwrap_or(u64::MAX),
                    );
                }
            }
        }
        Ok::<_, Failure>((s, offset))
    }
    .await;
    drop(permit);
    let (mut s, offset) = match result {
        Ok(v) => v,
        Err(f) => {
            count_unheld(ctx);
            return Err(f);
        }
    };
    ctx.connected.set(ctx.connected.get() + 1);
    count_unheld(ctx);
    match spec.hold_ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => {
            let mut fin = ctx.finish.clone();
            while !*fin.borrow_and_update() {
                if fin.changed().await.is_err() {
                    break;
                }
            }
        }
    }
    let last = async {
        let t = Instant::now();
        let e = net::within(
            ctx.timeout(),
            "client/last echo",
            net::echo_round(&mut s, &pattern, offset, spec.size, "client"),
        )
        .await?;
        {
            let mut st = ctx.stats.borrow_mut();
            st.last_echo.record(e.done - t);
            st.bytes_verified += spec.size as u64;
        }
        net::within(
            ctx.timeout(),
            "client/close",
            net::close_clean(&mut s, "client"),
        )
        .await
    }
    .await;
    ctx.connected.set(ctx.connected.get().saturating_sub(1));
    last
}
