//! The io_uring driver: worker processes, rings, splice. The only module with `unsafe`.
//!
//! Process model: the relay's main process (the *supervisor*) binds the listeners and
//! starts `workers` worker processes by re-executing its own binary with the same
//! arguments and the `TRYST_WORKER` environment variable set. Each worker is one thread
//! with one io_uring and its own fd table, so each gets the full `RLIMIT_NOFILE` and the
//! relay as a whole holds `workers x RLIMIT_NOFILE` sockets. A rendezvous key is owned by
//! worker `key.owner(workers)`; a connection accepted elsewhere is passed once (fd and
//! bytes already read) to its owner over a unix datagram socket with `SCM_RIGHTS`.
//! Non-rendezvous requests are passed the same way to the supervisor's HTTP inbox.
//! Counters live in a shared memory region the supervisor reads for `/metrics`.
#![allow(unsafe_code)]

use crate::head::HeadLimits;
use crate::reject::Rejection;
use crate::route::Router;
use std::ffi::OsString;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

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
}

impl EngineConfig {
    /// The request-head limits as the parser takes them.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits { max_head_bytes: self.head_max_bytes, max_headers: self.head_max_headers }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            data_path: DataPath::SpliceSyscall,
            pipe_size: 256 * 1024,
            max_pipes_per_worker: 128,
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
    /// File descriptors open in the worker now (sockets, pipes, ring, control).
    pub fds: u64,
    /// Pipes held now (in flight).
    pub pipes: u64,
    /// Times accepting paused on EMFILE/ENFILE or the socket cap (total).
    pub accept_backoffs: u64,
    /// Refusals by [`Rejection::index`] (total).
    pub rejections: Vec<u64>,
}

/// Counters of all workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// One entry per worker, by index.
    pub workers: Vec<WorkerStats>,
}

impl StatsSnapshot {
    /// Sums one counter over all workers.
    pub fn sum(&self, field: impl Fn(&WorkerStats) -> u64) -> u64 {
        self.workers.iter().map(field).sum()
    }

    /// Total refusals for one reason.
    pub fn rejections(&self, reason: Rejection) -> u64 {
        self.workers.iter().map(|w| w.rejections.get(reason.index()).copied().unwrap_or(0)).sum()
    }
}

/// A connection passed to the HTTP service, with the bytes already read from it.
#[derive(Debug)]
pub struct HandedOff {
    /// The client's socket (blocking mode; set non-blocking before giving it to tokio).
    pub stream: TcpStream,
    /// Bytes already read: the request head and whatever followed it.
    pub early: Vec<u8>,
}

/// The supervisor's end of the HTTP hand-off: a non-blocking unix datagram socket.
/// Wait for readability (e.g. with tokio's `AsyncFd`) and call [`HttpInbox::try_recv`]
/// until it returns `Ok(None)`.
#[derive(Debug)]
pub struct HttpInbox {
    _private: (),
}

impl HttpInbox {
    /// Receives one handed-off connection; `Ok(None)` when none is queued.
    pub fn try_recv(&self) -> io::Result<Option<HandedOff>> {
        todo!("driver")
    }
}

impl AsFd for HttpInbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        todo!("driver")
    }
}

/// The supervisor's handle on the running workers.
#[derive(Debug)]
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Starts `config.workers` worker processes serving `listeners`. Each worker is
    /// `current_exe()` run with `worker_args` (normally the supervisor's own arguments)
    /// and `TRYST_WORKER` set; the relay's `main` calls [`run_worker`] when
    /// [`is_worker`] is true.
    pub fn start(
        config: &EngineConfig,
        listeners: Vec<TcpListener>,
        worker_args: Vec<OsString>,
    ) -> io::Result<Self> {
        let _ = (config, listeners, worker_args);
        todo!("driver")
    }

    /// Where handed-off HTTP connections arrive.
    pub fn http_inbox(&self) -> &HttpInbox {
        todo!("driver")
    }

    /// Current counters of every worker.
    pub fn stats(&self) -> StatsSnapshot {
        todo!("driver")
    }

    /// Asks every worker to call [`Router::reload`] (after SIGHUP).
    pub fn reload(&self) -> io::Result<()> {
        todo!("driver")
    }

    /// Asks every worker to stop accepting, close parked connections and drain tunnels
    /// for up to the drain timeout, then exit.
    pub fn begin_shutdown(&mut self) -> io::Result<()> {
        todo!("driver")
    }

    /// Reaps exited workers without blocking; restarts any that died unexpectedly
    /// (unless shutting down). Returns true once every worker has exited after
    /// [`Engine::begin_shutdown`]. Call it periodically.
    pub fn poll_workers(&mut self) -> io::Result<bool> {
        todo!("driver")
    }
}

/// True in a worker process (the `TRYST_WORKER` environment variable is set).
pub fn is_worker() -> bool {
    std::env::var_os("TRYST_WORKER").is_some()
}

/// Runs this worker process's event loop until shutdown. `router` decides every request.
pub fn run_worker<R: Router>(config: &EngineConfig, router: R) -> io::Result<()> {
    let _ = (config, router);
    todo!("driver")
}
