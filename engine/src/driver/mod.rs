//! The io_uring driver: worker processes, rings, splice. The only module with `unsafe`.
//!
//! Process model: the relay's main process (the *supervisor*) binds the listeners and
//! starts `workers` worker processes by re-executing its own binary with the same
//! arguments and the `TRYST_WORKER` environment variable set. Each worker is one thread
//! with one io_uring and its own fd table, so each gets the full `RLIMIT_NOFILE` and the
//! relay as a whole holds `workers x RLIMIT_NOFILE` sockets. A rendezvous key is owned by
//! worker `key.owner(&placement)` (a hash keyed with a per-start random key, shared by
//! the workers through the stats mapping); a connection accepted elsewhere is passed once
//! (fd and bytes already read) to its owner over a unix datagram socket with
//! `SCM_RIGHTS`, if the owner has room under its socket budget (else it is answered 503).
//! Non-rendezvous requests are passed the same way to the supervisor's HTTP inbox.
//! Counters live in a shared memory region the supervisor reads for `/metrics`.
#![allow(unsafe_code)]

pub mod cluster;
mod msg;
mod pipes;
mod share;
pub use share::{MAX_SHARE_BYTES, ShareFile};
mod shm;
mod sys;
pub use sys::release_free_memory;
mod tls;
mod worker;

/// Per-connection tables of a worker, simulated for memory measurement (`parked_mem`).
#[doc(hidden)]
pub use worker::footprint;

use crate::head::HeadLimits;
use crate::reject::Rejection;
use crate::route::{Router, Transport};
use crate::target::{Placement, RendezvousId};
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use shm::{Counter, SharedStats};
use std::ffi::OsString;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How tunnel bytes move between the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// Readiness (io_uring `POLL_ADD`) plus non-blocking `splice(2)` from the worker thread.
    SpliceSyscall,
    /// `IORING_OP_SPLICE` submitted to the ring (executed by io-wq kernel workers).
    SpliceUring,
}

/// Everything the engine needs to run. Built identically in the supervisor and in every
/// worker (the workers re-parse the same command line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// Worker processes (each one thread, one ring).
    pub workers: usize,
    /// Tunnel data path.
    pub data_path: DataPath,
    /// Pipe capacity set with `F_SETPIPE_SZ`, bytes.
    pub pipe_size: usize,
    /// Capacity a tunnel's pipe is grown to when a fill fills it (a bulk stream), bytes;
    /// at most one pipe in 16 of a worker's is grown. At or below `pipe_size`: none is.
    #[serde(default = "default_bulk_pipe_size")]
    pub bulk_pipe_size: usize,
    /// Most pipes a worker holds at once (each is 2 fds; pipes are held only while
    /// bytes are in flight).
    pub max_pipes_per_worker: usize,
    /// Most sockets a worker holds at once; accepting pauses at this level.
    pub max_sockets_per_worker: usize,
    /// Request-head limits.
    pub head_max_bytes: usize,
    /// Request-head header-count limit.
    pub head_max_headers: usize,
    /// Absolute deadline for a complete head (408 after it).
    pub head_timeout: Duration,
    /// How long a client waits for a hidden server to park (404 after it).
    pub client_wait: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long tunnels may drain.
    pub drain_timeout: Duration,
    /// Most parked connections per id (oldest evicted beyond it).
    pub max_parked_per_key: usize,
    /// Most parked connections per worker.
    pub max_parked_per_worker: usize,
    /// Most waiting clients per worker.
    pub max_waiting_per_worker: usize,
    /// Submission queue entries per ring.
    pub ring_entries: u32,
    /// Several nodes as one: workers report parked keys ([`cluster::ClusterEvent`])
    /// and ask the supervisor to look up keys not parked here. Off: none of it.
    #[serde(default)]
    pub cluster: bool,
    /// A clustered relay: routes carrying a cluster-wide claim ([`crate::claim`]) wait
    /// for the supervisor's verdict. Off for a single node: claims are dropped unread.
    #[serde(default)]
    pub cluster_claims: bool,
}

impl EngineConfig {
    /// The request-head limits as the parser takes them.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_head_bytes: self.head_max_bytes,
            max_headers: self.head_max_headers,
        }
    }
}

/// The default [`EngineConfig::bulk_pipe_size`]: 1 MiB, the kernel's default
/// `fs.pipe-max-size` (the most an unprivileged process may ask for).
fn default_bulk_pipe_size() -> usize {
    1 << 20
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            data_path: DataPath::SpliceSyscall,
            pipe_size: 256 * 1024,
            bulk_pipe_size: default_bulk_pipe_size(),
            max_pipes_per_worker: 1024,
            max_sockets_per_worker: 19_000,
            head_max_bytes: 16 * 1024,
            head_max_headers: 64,
            head_timeout: Duration::from_secs(10),
            client_wait: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(30),
            max_parked_per_key: 16,
            max_parked_per_worker: 100_000,
            max_waiting_per_worker: 100_000,
            ring_entries: 4096,
            cluster: false,
            cluster_claims: false,
        }
    }
}

/// Counters of one worker, as read from shared memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    /// Worker index.
    pub index: usize,
    /// Process id (0 while not running).
    pub pid: u32,
    /// Connections accepted (total).
    pub accepted: u64,
    /// Hidden-server connections parked now.
    pub parked: u64,
    /// Clients waiting for a hidden server now.
    pub waiting: u64,
    /// Pairings made (total).
    pub paired: u64,
    /// Tunnels open now.
    pub active_tunnels: u64,
    /// Bytes moved through pipes (total, both directions).
    pub bytes_spliced: u64,
    /// Connections passed to another worker (total).
    pub handoffs_out: u64,
    /// Connections passed to the HTTP service (total).
    pub http_handoffs: u64,
    /// Sockets held now.
    pub sockets: u64,
    /// File descriptors open in the worker now (sockets, pipes, ring, control), as the
    /// worker counts them (the table is listed once, at its start).
    pub fds: u64,
    /// Pipes held now (in flight).
    pub pipes: u64,
    /// Times accepting paused on EMFILE/ENFILE or the socket cap (total).
    pub accept_backoffs: u64,
    /// TLS sessions terminated by this worker now.
    pub tls_sessions: u64,
    /// Times the supervisor restarted this worker after it died unexpectedly.
    pub restarts: u64,
    /// Connections this worker refused with `503 overloaded` instead of handing them
    /// to an owner worker at its socket budget (total).
    pub handoffs_refused: u64,
    /// Connections handed to this worker whose descriptor it could not install, so the
    /// connection was lost (total; the budget keeps this at zero).
    pub handoffs_lost: u64,
    /// Cluster-wide claims settled without the supervisor's verdict (the hand-off to it
    /// full, or no answer before the deadline): each took the fallback path (total).
    pub claims_unanswered: u64,
    /// Bytes of cross-node tunnels written to the mesh connection (total).
    pub mesh_bytes_out: u64,
    /// Bytes of cross-node tunnels read from the mesh connection (total).
    pub mesh_bytes_in: u64,
    /// Pipes created smaller than `--pipe-size` because the kernel refused that size
    /// (`fs.pipe-max-size`, `fs.pipe-user-pages-soft`), total.
    pub pipes_shrunk: u64,
    /// Times the kernel refused a pipe of at least 64 KiB (or any pipe), so tunnel
    /// directions copied through user space instead of splicing, total.
    pub pipe_refusals: u64,
    /// Pipes grown to `--bulk-pipe-size` because a fill filled them (a bulk stream),
    /// total.
    pub pipes_grown: u64,
    /// Clients of a listener for one id (`Listener::fixed_id`) put in the owner's room
    /// (total, counted by the owner).
    pub fixed_reaches: u64,
    /// Tunnels whose two TLS fronts were in the pairing worker and were fused: plaintext
    /// passed between the two rustls sessions in memory, with no socketpair (total).
    pub tls_fused: u64,
    /// Refusals by [`Rejection::index`] (total).
    pub rejections: Vec<u64>,
}

/// Counters of all workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// One entry per worker, by index.
    pub workers: Vec<WorkerStats>,
    /// Connections handed to the HTTP service whose descriptor the supervisor could
    /// not install (total).
    pub http_handoffs_lost: u64,
}

impl StatsSnapshot {
    /// Sums one counter over all workers.
    pub fn sum(&self, field: impl Fn(&WorkerStats) -> u64) -> u64 {
        self.workers.iter().map(field).sum()
    }

    /// Total refusals for one reason.
    pub fn rejections(&self, reason: Rejection) -> u64 {
        self.workers
            .iter()
            .map(|w| w.rejections.get(reason.index()).copied().unwrap_or(0))
            .sum()
    }
}

/// Who sent a connection to this node: a client, or another node of the cluster over the
/// mesh (carrying a client's head). A mesh-origin reach is never carried to a third node
/// (one hop at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// A client connected to this node.
    #[default]
    Client,
    /// Another node carried the connection here (its preamble verified by the
    /// supervisor).
    Mesh,
}

/// Gives mesh connections (verified by the supervisor) to the workers: each goes to the
/// next worker in turn, which reads, classifies and routes it like an accepted
/// connection (handing it to the key's owner if needed), marked [`Origin::Mesh`].
/// Cheap to share; usable from any thread.
#[derive(Debug)]
pub struct Injector {
    sends: Vec<OwnedFd>,
    next: std::sync::atomic::AtomicUsize,
}

impl Injector {
    /// Gives worker `worker` the mesh socket `conn` for the waiting client `token` (see
    /// [`cluster`]); non-blocking. The worker closes it if that client is gone.
    pub fn deliver(
        &self,
        worker: usize,
        token: cluster::ReachToken,
        conn: OwnedFd,
    ) -> io::Result<()> {
        let sock = self
            .sends
            .get(worker)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such worker"))?;
        msg::send_remote_found(sock.as_fd(), conn.as_fd(), token)
    }

    /// Sends `conn` (non-blocking, with the bytes already read past the preamble) to a
    /// worker; `Err(WouldBlock)` when every worker's inbox is full. `transport` is the
    /// client's on the sending node.
    pub fn inject(&self, conn: OwnedFd, early: &[u8], transport: Transport) -> io::Result<()> {
        let n = self.sends.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut last = io::Error::from(io::ErrorKind::WouldBlock);
        for k in 0..n {
            let sock = &self.sends[(start + k) % n];
            match msg::send_injected(sock.as_fd(), conn.as_fd(), early, transport) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// A connection passed to the HTTP service, with the bytes already read from it.
#[derive(Debug)]
pub struct HandedOff {
    /// The client's socket (blocking mode; set non-blocking before giving it to tokio).
    pub stream: TcpStream,
    /// Bytes already read: the request head and whatever followed it.
    pub early: Vec<u8>,
    /// How the client reached the relay. For [`Transport::Tls`] the relay terminated
    /// TLS and `stream` is the plaintext end of a unix stream socket, not TCP.
    pub transport: Transport,
    /// A client's own connection, or one another node carried here over the mesh.
    pub origin: Origin,
}

/// The supervisor's end of the HTTP hand-off: a non-blocking unix datagram socket.
/// Wait for readability (e.g. with tokio's `AsyncFd`) and call [`HttpInbox::try_recv`]
/// until it returns `Ok(None)`.
#[derive(Debug)]
pub struct HttpInbox {
    recv: OwnedFd,
    buf: std::sync::Mutex<Vec<u8>>,
    lost: shm::LostCounter,
    claims: std::sync::OnceLock<ClaimSink>,
    /// Family reports from workers ([`Router::reports`]) received by `try_recv`, kept
    /// for [`HttpInbox::take_family_reports`] (bounded: the oldest go beyond it).
    reports: std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>,
}

/// Where [`HttpInbox::try_recv`] passes the workers' cluster-wide claims.
pub type ClaimSinkFn = Box<dyn Fn(crate::claim::ClaimRequest) + Send + Sync>;

struct ClaimSink(ClaimSinkFn);

impl std::fmt::Debug for ClaimSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimSink")
    }
}

/// Answers the workers' cluster-wide claims and orders evictions (see
/// [`crate::claim`]). Usable from any thread; every send is non-blocking.
#[derive(Debug)]
pub struct ClaimAnswerer {
    sends: Vec<OwnedFd>,
}

impl ClaimAnswerer {
    /// Sends `verdict` on claim `id` to `worker`. `Err(WouldBlock)` when its inbox is
    /// full (the worker then settles the claim at its deadline).
    pub fn answer(&self, worker: u16, id: u64, verdict: crate::claim::Verdict) -> io::Result<()> {
        let sock = self
            .sends
            .get(usize::from(worker))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        msg::send_verdict(sock.as_fd(), id, verdict)
    }

    /// Tells every worker to close what is parked under `key` (only its owner holds
    /// any). Returns how many workers could not be told (inbox full).
    pub fn evict(&self, key: &crate::target::RendezvousKey) -> usize {
        self.sends
            .iter()
            .filter(|s| msg::send_evict(s.as_fd(), key).is_err())
            .count()
    }
}

/// Most family reports [`HttpInbox`] keeps between two
/// [`HttpInbox::take_family_reports`] calls.
const MAX_QUEUED_REPORTS: usize = 65_536;

impl HttpInbox {
    /// Routes the workers' cluster-wide claims to `sink` (called from
    /// [`HttpInbox::try_recv`]; must not block). Set once; later calls are ignored.
    /// Without a sink, claims are dropped and the workers settle them at their deadline.
    pub fn set_claim_sink(&self, sink: ClaimSinkFn) {
        let _ = self.claims.set(ClaimSink(sink));
    }

    /// Receives one handed-off connection; `Ok(None)` when none is queued.
    pub fn try_recv(&self) -> io::Result<Option<HandedOff>> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match msg::try_recv(self.recv.as_fd(), &mut buf)? {
                None => return Ok(None),
                Some(msg::Message::Conn(fd, early, transport, origin)) => {
                    let stream = TcpStream::from(fd);
                    stream.set_nonblocking(false)?;
                    return Ok(Some(HandedOff {
                        stream,
                        early,
                        transport,
                        origin,
                    }));
                }
                Some(msg::Message::LostConn) => {
                    self.lost.add();
                    tracing::warn!(
                        "a connection handed to the HTTP service arrived without its descriptor (descriptor table full?); it is lost"
                    );
                }
                Some(msg::Message::Claim(request)) => {
                    if let Some(sink) = self.claims.get() {
                        (sink.0)(request);
                    }
                }
                Some(msg::Message::Family(report)) => {
                    let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
                    if reports.len() >= MAX_QUEUED_REPORTS {
                        reports.pop_front();
                        tracing::warn!("family reports are not being read; the oldest is dropped");
                    }
                    reports.push_back(report);
                }
                // Control messages are never sent to the supervisor.
                Some(_) => {}
            }
        }
    }
}

impl HttpInbox {
    /// The family reports workers sent ([`Router::reports`]) that [`HttpInbox::try_recv`]
    /// received so far, oldest first. Call it after draining `try_recv`.
    pub fn take_family_reports(&self) -> Vec<Vec<u8>> {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.drain(..).collect()
    }
}

impl AsFd for HttpInbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.recv.as_fd()
    }
}

/// A listening socket and the transport its connections speak.
#[derive(Debug)]
pub struct Listener {
    /// The bound, listening socket.
    pub socket: TcpListener,
    /// Plain, or TLS terminated by the workers (needs a TLS configuration in
    /// [`run_worker`]).
    pub transport: Transport,
    /// A listener for one id: every connection accepted on it is a client of the
    /// hidden server parked natively under this id, with no head read or written. Its
    /// bytes are the tunnel's from the first one (as with bore's per-service port), so
    /// any TCP client reaches the id without an agent; when nothing parks within the
    /// client wait the connection is closed without a byte. Plain transport only.
    pub fixed_id: Option<RendezvousId>,
}

impl Listener {
    /// A listener whose connections send a head (any family).
    pub fn new(socket: TcpListener, transport: Transport) -> Self {
        Self {
            socket,
            transport,
            fixed_id: None,
        }
    }

    /// A plain listener for one id (see [`Listener::fixed_id`]).
    pub fn for_id(socket: TcpListener, id: RendezvousId) -> Self {
        Self {
            socket,
            transport: Transport::Plain,
            fixed_id: Some(id),
        }
    }
}

/// How a worker treats a listener's connections, as passed in `TRYST_WORKER`: `p`
/// (plain), `t` (TLS) or `i` followed by 32 hex digits (plain, for that id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerKind {
    pub(crate) transport: Transport,
    pub(crate) fixed_id: Option<RendezvousId>,
}

impl ListenerKind {
    fn of(l: &Listener) -> Self {
        Self {
            transport: l.transport,
            fixed_id: l.fixed_id,
        }
    }

    /// Appends this kind's code to a `TRYST_WORKER` listener list.
    fn encode(self, out: &mut String) {
        match (self.fixed_id, self.transport) {
            (Some(id), _) => {
                out.push('i');
                out.push_str(&hex::encode(id.0));
            }
            (None, Transport::Plain) => out.push('p'),
            (None, Transport::Tls) => out.push('t'),
        }
    }

    /// Reads a listener list written by [`ListenerKind::encode`]; `None` if malformed.
    fn decode_all(codes: &str) -> Option<Vec<Self>> {
        let mut kinds = Vec::new();
        let mut rest = codes.as_bytes();
        while let Some((&code, tail)) = rest.split_first() {
            rest = tail;
            let kind = match code {
                b'p' => Self {
                    transport: Transport::Plain,
                    fixed_id: None,
                },
                b't' => Self {
                    transport: Transport::Tls,
                    fixed_id: None,
                },
                b'i' => {
                    let hex_id = rest.get(..32)?;
                    rest = &rest[32..];
                    let mut id = [0u8; 16];
                    hex::decode_to_slice(hex_id, &mut id).ok()?;
                    Self {
                        transport: Transport::Plain,
                        fixed_id: Some(RendezvousId(id)),
                    }
                }
                _ => return None,
            };
            kinds.push(kind);
        }
        Some(kinds)
    }
}

/// For tests only: 32 hex digits fixing the owner-hash key instead of a random one, so
/// a test can compute which worker owns an id (`Placement::new(workers, key)`). Never
/// set it in production: a known key lets peers aim ids at one worker.
pub const TEST_OWNER_KEY_ENV: &str = "TRYST_TEST_OWNER_KEY";

/// For profiling only: the executable workers are started from, instead of
/// `/proc/self/exe`. Under `valgrind --trace-children=yes` the supervisor's
/// `/proc/self/exe` is valgrind's own tool, so a worker can only be profiled when it is
/// started from the relay's binary by name (docs/performance.md). Never set it in
/// production: a restarted worker would run whatever the path holds then.
pub const TEST_WORKER_EXE_ENV: &str = "TRYST_TEST_WORKER_EXE";

fn parse_owner_key(hex: &str) -> io::Result<[u8; 16]> {
    let mut key = [0u8; 16];
    hex::decode_to_slice(hex.trim(), &mut key).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{TEST_OWNER_KEY_ENV} must be 32 hex digits"),
        )
    })?;
    Ok(key)
}

/// Environment variable carrying a worker's index and descriptor layout.
const WORKER_ENV: &str = "TRYST_WORKER";
/// First descriptor number of the layout in a worker: inbox, HTTP out, stats, then one
/// send socket per worker, then the listeners, then the cluster events socket.
const FIRST_FD: RawFd = 3;

#[derive(Debug)]
struct WorkerSlot {
    child: Option<Child>,
    /// Receiving end of this worker's inbox (kept to hand to a restarted worker).
    inbox_recv: OwnedFd,
    /// Sending end of this worker's inbox (control messages and hand-offs).
    inbox_send: OwnedFd,
    restarts: u32,
    /// When the current process was started.
    started: Instant,
    /// A restart waiting out its back-off.
    respawn_at: Option<Instant>,
    /// Back-off before the next restart of a worker that keeps dying young.
    backoff: Duration,
    /// This worker's current share (see [`Engine::start_with_shares`]), given to a
    /// replacement too.
    share: Option<OwnedFd>,
}

/// A worker that lived at least this long is considered healthy again.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Longest wait between restarts of a crash-looping worker.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// The supervisor's handle on the running workers.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    listeners: Vec<Listener>,
    worker_args: Vec<OsString>,
    slots: Vec<WorkerSlot>,
    http_send: OwnedFd,
    http: HttpInbox,
    /// Workers' end of the cluster events socket (mapped into each worker).
    cluster_send: OwnedFd,
    cluster: cluster::ClusterInbox,
    stats: SharedStats,
    shutdown_started: Option<Instant>,
    placement: Placement,
    /// Workers started again since the last [`Engine::take_restarted`].
    restarted: Vec<usize>,
}

/// What [`Engine::start_with_shares`] and [`Engine::reload_with_shares`] call to make
/// every worker's share.
type MakeShares<'a> = Box<dyn FnOnce(&[WorkerShare]) -> io::Result<Vec<Vec<u8>>> + 'a>;

fn dgram_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

impl Engine {
    /// Starts `config.workers` worker processes serving `listeners`. Each worker is
    /// `current_exe()` run with `worker_args` (normally the supervisor's own arguments)
    /// and `TRYST_WORKER` set; the relay's `main` calls [`run_worker`] when
    /// [`is_worker`] is true.
    pub fn start(
        config: &EngineConfig,
        listeners: Vec<Listener>,
        worker_args: Vec<OsString>,
    ) -> io::Result<Self> {
        Self::start_inner(config, listeners, worker_args, None)
    }

    /// [`Engine::start`], giving each worker a share the supervisor prepared: `shares`
    /// is called once with every worker's [`WorkerShare`] (which keys it owns), in
    /// worker order, and returns the bytes each of them reads through the
    /// [`ShareFile`] handed to its router builder ([`run_worker_with`]), in that order. The relay uses it to parse the secrets
    /// file once, here, and give each worker only the ids it owns, instead of every
    /// worker reading and parsing the whole file (memory and CPU times the workers).
    /// A replacement worker gets the same share; [`Engine::reload_with_shares`]
    /// changes them.
    pub fn start_with_shares(
        config: &EngineConfig,
        listeners: Vec<Listener>,
        worker_args: Vec<OsString>,
        shares: impl FnOnce(&[WorkerShare]) -> io::Result<Vec<Vec<u8>>>,
    ) -> io::Result<Self> {
        Self::start_inner(config, listeners, worker_args, Some(Box::new(shares)))
    }

    fn start_inner(
        config: &EngineConfig,
        listeners: Vec<Listener>,
        worker_args: Vec<OsString>,
        shares: Option<MakeShares<'_>>,
    ) -> io::Result<Self> {
        if listeners
            .iter()
            .any(|l| l.fixed_id.is_some() && l.transport != Transport::Plain)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a listener for one id must be plain (TLS is not supported there)",
            ));
        }
        let workers = config.workers.max(1);
        let stats = SharedStats::create(workers)?;
        // The owner-hash key: random per relay run, the same in every worker (they read
        // it from the shared mapping), so ids cannot be aimed at one worker.
        let placement = match std::env::var(TEST_OWNER_KEY_ENV) {
            Ok(hex) => Placement::new(workers, parse_owner_key(&hex)?),
            Err(_) => Placement::random(workers),
        };
        stats.set_owner_key(placement.key());
        let shares = match shares {
            Some(make) => Self::make_shares(workers, placement, make)?
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..workers).map(|_| None).collect::<Vec<_>>(),
        };
        let mut slots = Vec::with_capacity(workers);
        for share in shares {
            let (inbox_recv, inbox_send) = dgram_pair()?;
            slots.push(WorkerSlot {
                share,
                child: None,
                inbox_recv,
                inbox_send,
                restarts: 0,
                started: Instant::now(),
                respawn_at: None,
                backoff: Duration::ZERO,
            });
        }
        let (http_recv, http_send) = dgram_pair()?;
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&http_recv),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        let (cluster_recv, cluster_send) = dgram_pair()?;
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&cluster_recv),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        let mut engine = Self {
            cluster_send,
            cluster: cluster::ClusterInbox {
                recv: cluster_recv,
                buf: std::sync::Mutex::new(Vec::new()),
            },
            config: EngineConfig {
                workers,
                ..config.clone()
            },
            listeners,
            worker_args,
            slots,
            http_send,
            http: HttpInbox {
                recv: http_recv,
                buf: std::sync::Mutex::new(Vec::new()),
                lost: stats.http_lost(),
                claims: std::sync::OnceLock::new(),
                reports: std::sync::Mutex::new(std::collections::VecDeque::new()),
            },
            stats,
            shutdown_started: None,
            placement,
            restarted: Vec::new(),
        };
        for i in 0..workers {
            engine.spawn(i)?;
        }
        Ok(engine)
    }

    /// Every worker's share, made by `make`, sealed (all or none).
    fn make_shares(
        workers: usize,
        placement: Placement,
        make: MakeShares<'_>,
    ) -> io::Result<Vec<OwnedFd>> {
        let owners: Vec<WorkerShare> = (0..workers)
            .map(|index| WorkerShare::new(index, placement))
            .collect();
        let bytes = make(&owners)?;
        if bytes.len() != workers {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} shares made for {workers} workers", bytes.len()),
            ));
        }
        bytes.iter().map(|b| share::sealed(b)).collect()
    }

    fn spawn(&mut self, index: usize) -> io::Result<()> {
        let workers = self.slots.len();
        let mut mappings = vec![
            FdMapping {
                parent_fd: self.slots[index].inbox_recv.try_clone()?,
                child_fd: FIRST_FD,
            },
            FdMapping {
                parent_fd: self.http_send.try_clone()?,
                child_fd: FIRST_FD + 1,
            },
            FdMapping {
                parent_fd: self.stats.memfd().try_clone()?,
                child_fd: FIRST_FD + 2,
            },
        ];
        let mut next = FIRST_FD + 3;
        for slot in &self.slots {
            mappings.push(FdMapping {
                parent_fd: slot.inbox_send.try_clone()?,
                child_fd: next,
            });
            next += 1;
        }
        for l in &self.listeners {
            mappings.push(FdMapping {
                parent_fd: OwnedFd::from(l.socket.try_clone()?),
                child_fd: next,
            });
            next += 1;
        }
        mappings.push(FdMapping {
            parent_fd: self.cluster_send.try_clone()?,
            child_fd: next,
        });
        let share = self.slots[index].share.as_ref();
        if let Some(share) = share {
            mappings.push(FdMapping {
                parent_fd: share.try_clone()?,
                child_fd: next + 1,
            });
        }
        // /proc/self/exe, not current_exe(): after an upgrade replaces the binary on
        // disk, the path reads "... (deleted)" but the running image can still be
        // executed through /proc, so a crashed worker restarts as the same version.
        let exe = std::env::var_os(TEST_WORKER_EXE_ENV)
            .unwrap_or_else(|| OsString::from("/proc/self/exe"));
        let mut cmd = Command::new(exe);
        cmd.args(&self.worker_args)
            .env(
                WORKER_ENV,
                format!(
                    "{index}:{workers}:{}{}",
                    self.listeners.iter().fold(String::new(), |mut codes, l| {
                        ListenerKind::of(l).encode(&mut codes);
                        codes
                    }),
                    if share.is_some() { ":share" } else { "" }
                ),
            )
            .fd_mappings(mappings)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // The worker dies with the supervisor from its first instruction on, before it
        // reads a setting or writes a file: the parent-death signal is set between fork
        // and exec (it survives the exec), and a supervisor that died before that point
        // is caught by comparing the parent with the pid taken before the fork. Checking
        // for a parent of 1 after the exec instead would miss the supervisor's death
        // under a subreaper (systemd --user, a container's init), and the worker would
        // run on as an orphan holding its listeners.
        let supervisor = nix::unistd::getpid();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes two system calls (`prctl`,
        // `getppid`) and builds an `io::Error` from a constant kind, allocating nothing.
        // It touches no memory shared with the parent; `supervisor` is a copied pid.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                if nix::unistd::getppid() != supervisor {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                Ok(())
            });
        }
        // A replacement starts from zero gauges (its predecessor's tunnels, sockets and
        // parked connections died with it); totals keep counting.
        self.stats.worker(index).reset_gauges();
        let child = cmd.spawn()?;
        tracing::debug!(worker = index, pid = child.id(), "worker started");
        self.slots[index].child = Some(child);
        self.slots[index].started = Instant::now();
        if self.slots[index].restarts > 0 {
            self.restarted.push(index);
        }
        Ok(())
    }

    /// A handle that gives mesh connections to the workers (see [`Injector`]).
    pub fn injector(&self) -> io::Result<Injector> {
        Ok(Injector {
            sends: self
                .slots
                .iter()
                .map(|s| s.inbox_send.try_clone())
                .collect::<io::Result<_>>()?,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Where the workers' cluster events arrive (only with [`EngineConfig::cluster`]).
    pub fn cluster_inbox(&self) -> &cluster::ClusterInbox {
        &self.cluster
    }

    /// A handle that answers the workers' claims and orders evictions (see
    /// [`ClaimAnswerer`]).
    pub fn claim_answerer(&self) -> io::Result<ClaimAnswerer> {
        Ok(ClaimAnswerer {
            sends: self
                .slots
                .iter()
                .map(|s| s.inbox_send.try_clone())
                .collect::<io::Result<_>>()?,
        })
    }

    /// The worker owning `key` (the same answer every worker computes).
    pub fn owner(&self, key: &crate::target::RendezvousKey) -> usize {
        key.owner(&self.placement)
    }

    /// Sends a family control message to the worker owning `key`, which passes it to its
    /// [`Router::control`]. Messages to one worker arrive in the order sent (also across
    /// a restart: they wait in its inbox). `Err(WouldBlock)` when its inbox is full.
    pub fn send_family(
        &self,
        key: &crate::target::RendezvousKey,
        message: &[u8],
    ) -> io::Result<()> {
        self.send_family_to(self.owner(key), message)
    }

    /// Sends a family control message to worker `index` (see [`Engine::send_family`]).
    pub fn send_family_to(&self, index: usize, message: &[u8]) -> io::Result<()> {
        let slot = self
            .slots
            .get(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such worker"))?;
        msg::send_family(slot.inbox_send.as_fd(), message)
    }

    /// Workers restarted (after dying) since the last call: a family that keeps state in
    /// the workers re-sends what the replacement must hold.
    pub fn take_restarted(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.restarted)
    }

    /// Worker processes.
    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Where handed-off HTTP connections arrive.
    pub fn http_inbox(&self) -> &HttpInbox {
        &self.http
    }

    /// Current counters of every worker.
    pub fn stats(&self) -> StatsSnapshot {
        let workers = (0..self.slots.len())
            .map(|i| {
                let c = self.stats.worker(i);
                // The supervisor knows its children's pids without waiting for a
                // worker to publish its own.
                let pid = self.slots[i].child.as_ref().map_or(0, Child::id);
                WorkerStats {
                    index: i,
                    pid,
                    accepted: c.get(Counter::Accepted),
                    parked: c.get(Counter::Parked),
                    waiting: c.get(Counter::Waiting),
                    paired: c.get(Counter::Paired),
                    active_tunnels: c.get(Counter::ActiveTunnels),
                    bytes_spliced: c.get(Counter::BytesSpliced),
                    handoffs_out: c.get(Counter::HandoffsOut),
                    http_handoffs: c.get(Counter::HttpHandoffs),
                    sockets: c.get(Counter::Sockets),
                    fds: c.get(Counter::Fds),
                    pipes: c.get(Counter::Pipes),
                    accept_backoffs: c.get(Counter::AcceptBackoffs),
                    tls_sessions: c.get(Counter::TlsSessions),
                    restarts: u64::from(self.slots[i].restarts),
                    handoffs_refused: c.get(Counter::HandoffsRefused),
                    handoffs_lost: c.get(Counter::HandoffsLost),
                    claims_unanswered: c.get(Counter::ClaimsUnanswered),
                    mesh_bytes_out: c.get(Counter::MeshBytesOut),
                    mesh_bytes_in: c.get(Counter::MeshBytesIn),
                    pipes_shrunk: c.get(Counter::PipesShrunk),
                    pipe_refusals: c.get(Counter::PipeRefusals),
                    pipes_grown: c.get(Counter::PipesGrown),
                    fixed_reaches: c.get(Counter::FixedReaches),
                    tls_fused: c.get(Counter::TlsFused),
                    rejections: c.rejections(),
                }
            })
            .collect();
        StatsSnapshot {
            workers,
            http_handoffs_lost: self.stats.http_handoffs_lost(),
        }
    }

    /// Asks every worker to call [`Router::reload`] (after SIGHUP). Workers started with
    /// shares re-read the ones they have; see [`Engine::reload_with_shares`].
    pub fn reload(&self) -> io::Result<()> {
        for slot in &self.slots {
            msg::send_reload(slot.inbox_send.as_fd(), None)?;
        }
        Ok(())
    }

    /// Gives every worker a new share made by `make` (as in
    /// [`Engine::start_with_shares`]), then asks it to call [`Router::reload`], which
    /// reads the new share. Every share is made before any is sent: if `make` fails,
    /// nothing changes. Replacements of a worker get its new share.
    pub fn reload_with_shares(
        &mut self,
        make: impl FnOnce(&[WorkerShare]) -> io::Result<Vec<Vec<u8>>>,
    ) -> io::Result<()> {
        let shares = Self::make_shares(self.slots.len(), self.placement, Box::new(make))?;
        let mut first_error = None;
        for (slot, share) in self.slots.iter_mut().zip(shares) {
            if let Err(e) = msg::send_reload(slot.inbox_send.as_fd(), Some(share.as_fd())) {
                first_error.get_or_insert(e);
            }
            slot.share = Some(share);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Asks every worker to stop accepting, close parked connections and drain tunnels
    /// for up to the drain timeout, then exit.
    pub fn begin_shutdown(&mut self) -> io::Result<()> {
        if self.shutdown_started.is_none() {
            self.shutdown_started = Some(Instant::now());
            for slot in &self.slots {
                // A worker that already exited cannot receive it; that is fine.
                let _ = msg::send_shutdown(slot.inbox_send.as_fd());
            }
        }
        Ok(())
    }

    /// Reaps exited workers without blocking; restarts any that died unexpectedly
    /// (unless shutting down). Returns true once every worker has exited after
    /// [`Engine::begin_shutdown`]. Call it periodically.
    pub fn poll_workers(&mut self) -> io::Result<bool> {
        let grace = self.config.drain_timeout + Duration::from_secs(5);
        for i in 0..self.slots.len() {
            if let Some(at) = self.slots[i].respawn_at
                && self.shutdown_started.is_none()
                && Instant::now() >= at
            {
                self.slots[i].respawn_at = None;
                self.spawn(i)?;
            }
            let Some(child) = self.slots[i].child.as_mut() else {
                continue;
            };
            match child.try_wait()? {
                None => {
                    if self.shutdown_started.is_some_and(|t| t.elapsed() > grace) {
                        tracing::warn!(worker = i, "worker did not drain in time; killing it");
                        let _ = child.kill();
                    }
                }
                Some(status) => {
                    self.slots[i].child = None;
                    // Whatever the dead worker held is gone now, not at its restart.
                    self.stats.worker(i).reset_gauges();
                    if self.shutdown_started.is_none() {
                        let slot = &mut self.slots[i];
                        slot.restarts += 1;
                        // Restart at once after a healthy run; back off (doubling, capped)
                        // while the worker keeps dying young, so a broken configuration
                        // does not turn into a fork loop.
                        slot.backoff = if slot.started.elapsed() >= HEALTHY_AFTER {
                            Duration::ZERO
                        } else {
                            (slot.backoff * 2)
                                .max(Duration::from_millis(100))
                                .min(MAX_RESTART_BACKOFF)
                        };
                        tracing::error!(worker = i, %status, restarts = slot.restarts, backoff = ?slot.backoff, "worker exited unexpectedly; restarting it");
                        slot.respawn_at = Some(Instant::now() + slot.backoff);
                        if slot.backoff.is_zero() {
                            slot.respawn_at = None;
                            self.spawn(i)?;
                        }
                    }
                }
            }
        }
        Ok(self.shutdown_started.is_some() && self.slots.iter().all(|s| s.child.is_none()))
    }
}

/// True in a worker process (the `TRYST_WORKER` environment variable is set).
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// Produces the TLS configuration for new connections: called once at worker start and
/// again on every reload (SIGHUP), so certificates rotate without dropping anything.
/// Sessions already open keep the configuration they started with.
pub type TlsSource =
    Box<dyn FnMut() -> Result<std::sync::Arc<rustls::ServerConfig>, String> + Send>;

/// Which worker this process is and which rendezvous keys it owns, given to the router
/// builder of [`run_worker_with`]. Only the owner of a key checks its proofs (see
/// docs/ARCHITECTURE.md "Ownership and hand-off"), so per-key state a router loads
/// (the secrets file) need only hold the keys its worker owns: with the whole file in
/// every worker, memory was ids x workers, and the worker count grows with the socket
/// budget (docs/performance.md "Secrets per worker").
#[derive(Debug, Clone, Copy)]
pub struct WorkerShare {
    index: usize,
    placement: Placement,
}

impl WorkerShare {
    /// Worker `index` of those `placement` spreads keys over.
    pub fn new(index: usize, placement: Placement) -> Self {
        Self { index, placement }
    }

    /// The share of a process that is the only worker: it owns every key.
    pub fn everything() -> Self {
        Self::new(0, Placement::new(1, [0; 16]))
    }

    /// This worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether this worker owns `key` (checks its proofs and parks it).
    pub fn owns(&self, key: &crate::target::RendezvousKey) -> bool {
        self.placement.workers() == 1 || key.owner(&self.placement) == self.index
    }

    /// The index of the worker that owns `key` (one hash, whichever share asks).
    pub fn owner(&self, key: &crate::target::RendezvousKey) -> usize {
        if self.placement.workers() == 1 {
            0
        } else {
            key.owner(&self.placement)
        }
    }
}

/// Runs this worker process's event loop until shutdown. `router` decides every request;
/// `tls` terminates connections from TLS listeners (required when there are any).
pub fn run_worker<R: Router>(
    config: &EngineConfig,
    router: R,
    tls: Option<TlsSource>,
) -> io::Result<()> {
    run_worker_with(config, |_, _| Ok(router), tls)
}

/// [`run_worker`] with the router built once the worker knows its [`WorkerShare`]
/// (after it has read its index and the owner-hash key, before it accepts anything),
/// and the [`ShareFile`] the supervisor prepared for it when it was started with
/// [`Engine::start_with_shares`] (the router reads it again on every reload).
pub fn run_worker_with<R: Router>(
    config: &EngineConfig,
    router: impl FnOnce(WorkerShare, Option<ShareFile>) -> io::Result<R>,
    tls: Option<TlsSource>,
) -> io::Result<()> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidInput, "malformed TRYST_WORKER");
    let spec = std::env::var(WORKER_ENV)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "TRYST_WORKER is not set"))?;
    let mut parts = spec.split(':');
    let index: usize = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(malformed)?;
    let workers: usize = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(malformed)?;
    let kinds = ListenerKind::decode_all(parts.next().unwrap_or("")).ok_or_else(malformed)?;
    let has_share = match parts.next() {
        None => false,
        Some("share") => true,
        Some(_) => return Err(malformed()),
    };
    if kinds.iter().any(|k| k.transport == Transport::Tls) && tls.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a TLS listener needs a TLS configuration",
        ));
    }
    if workers == 0 || index >= workers {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "malformed TRYST_WORKER",
        ));
    }
    // Signals aimed at the whole process group (Ctrl-C, systemd's control-group kill,
    // `pkill tryst`) must not kill workers mid-drain: the supervisor turns them into
    // messages. Ignore them here.
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no handler code, so no async-signal-safety
        // question arises; the worker is single-threaded at this point.
        unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }
            .map_err(io::Error::from)?;
    }
    // Die with the supervisor rather than linger as an orphan holding sockets. A worker
    // the engine spawned has had this since before its exec (`Engine::spawn`); this
    // covers one started by other means.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
    sys::raise_nofile()?;
    let take = |fd: RawFd| {
        // SAFETY: the supervisor mapped exactly these descriptor numbers into this
        // process (see `Engine::spawn`) and nothing else in the worker uses them.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let inbox = take(FIRST_FD);
    let http_out = take(FIRST_FD + 1);
    let stats = SharedStats::map(take(FIRST_FD + 2), workers)?;
    let peers: Vec<OwnedFd> = (0..workers)
        .map(|j| take(FIRST_FD + 3 + j as RawFd))
        .collect();
    let listeners: Vec<(OwnedFd, ListenerKind)> = kinds
        .iter()
        .enumerate()
        .map(|(k, kind)| (take(FIRST_FD + 3 + workers as RawFd + k as RawFd), *kind))
        .collect();
    let cluster_out = take(FIRST_FD + 3 + workers as RawFd + kinds.len() as RawFd);
    let share_fd = has_share.then(|| take(FIRST_FD + 4 + workers as RawFd + kinds.len() as RawFd));
    for fd in [&inbox, &http_out, &cluster_out]
        .into_iter()
        .chain(&share_fd)
        .chain(&peers)
        .chain(listeners.iter().map(|(fd, _)| fd))
    {
        set_cloexec(fd)?;
    }
    let placement = Placement::new(workers, stats.owner_key());
    let share_file = share_fd.map(ShareFile::new);
    let router = router(WorkerShare::new(index, placement), share_file.clone())?;
    let fds = worker::WorkerFds {
        index,
        workers,
        placement,
        peer_counters: (0..workers).map(|j| stats.worker(j)).collect(),
        inbox,
        http_out,
        cluster_out,
        peers,
        listeners,
        counters: stats.worker(index),
        share: share_file,
    };
    let config = EngineConfig {
        workers,
        ..config.clone()
    };
    tracing::info!(worker = index, pid = std::process::id(), "worker running");
    worker::Worker::new(config, fds, router, tls)?.run()
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map(drop)
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::{ListenerKind, Transport};
    use crate::target::RendezvousId;

    #[test]
    fn listener_kinds_survive_the_worker_spec() {
        let kinds = [
            ListenerKind {
                transport: Transport::Plain,
                fixed_id: None,
            },
            ListenerKind {
                transport: Transport::Plain,
                fixed_id: Some(RendezvousId([0xab; 16])),
            },
            ListenerKind {
                transport: Transport::Tls,
                fixed_id: None,
            },
        ];
        let mut codes = String::new();
        for k in kinds {
            k.encode(&mut codes);
        }
        assert_eq!(codes, format!("pi{}t", "ab".repeat(16)));
        assert_eq!(ListenerKind::decode_all(&codes).unwrap(), kinds);
        assert_eq!(ListenerKind::decode_all("").unwrap(), []);
    }

    #[test]
    fn a_malformed_listener_list_is_refused() {
        for codes in [
            "x",
            "pq",
            "i",
            "iabc",
            &format!("i{}", "zz".repeat(16)),
            &format!("i{}", "a".repeat(31)),
            "é",
        ] {
            assert_eq!(ListenerKind::decode_all(codes), None, "{codes:?}");
        }
    }
}
