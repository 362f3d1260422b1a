//! One worker: one thread, one io_uring, its own fd table.
//!
//! The ring carries multishot accepts, one-shot `POLL_ADD`s (readiness; the driver then
//! calls non-blocking syscalls itself), `POLL_REMOVE`s and, in
//! [`DataPath::SpliceUring`] mode, `IORING_OP_SPLICE`s. No user-space buffer is ever
//! lent to the kernel: heads are read with `recv(2)` on readiness into buffers the worker
//! owns, so there is no buffer whose lifetime depends on a completion. Descriptors that a
//! queued splice names are kept open until its completion arrives.
//!
//! Completions are routed by `user_data` = kind (8 bits) | generation (24 bits) | slot
//! (32 bits); a completion whose generation no longer matches its slot is stale and is
//! ignored, so a reused slot is never confused with its previous occupant.

use super::msg::{self, Message};
use super::pipes::{Pipe, PipePool};
use super::shm::{Counter, WorkerCounters};
use super::sys;
use super::tls::TlsFront;
use super::{DataPath, EngineConfig};
use crate::head::{HeadStatus, RequestHead, parse_head};
use crate::reject::{OK_RESPONSE, Rejection};
use crate::room::{EntryHandle, ParkOutcome, ReachOutcome, Role, Room};
use crate::route::{Classified, HalfClose, ParkMode, Route, Router, Transport};
use crate::target::{Placement, RendezvousKey};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

pub mod footprint;
use footprint::Tables;

const TICK: Duration = Duration::from_millis(50);
/// How often the router is asked for retired keys ([`Router::evictions`]).
const EVICTION_POLL: Duration = Duration::from_millis(250);
/// Most bytes one direction moves before yielding to other connections.
const PUMP_BUDGET: usize = 1 << 20;
/// Size of each `recv(2)` while reading a head.
const HEAD_CHUNK: usize = 4096;
/// While fewer bytes than this were read, every read is parsed (see `read_head`).
const REQUEST_LINE_PROBE: usize = 256;
/// Most queued outgoing hand-offs before new connections are refused.
const MAX_PENDING_HANDOFFS: usize = 8192;
/// How long a refused connection may keep sending before it is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded from a refused connection.
const LINGER_BYTES: usize = 256 * 1024;
/// At most one warning per this interval for each kind of overload (with a count of
/// what was not logged), so a flood cannot turn into a log flood.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

const POLL_READ: u32 = (libc::POLLIN | libc::POLLRDHUP) as u32;
const POLL_HANGUP: u32 = libc::POLLRDHUP as u32;
const POLL_WRITE: u32 = libc::POLLOUT as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Ignore = 0,
    Accept = 1,
    PollRead = 2,
    PollWrite = 3,
    Inbox = 4,
    PeerWritable = 5,
    SpliceIn = 6,
    SpliceOut = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Accept,
            2 => Self::PollRead,
            3 => Self::PollWrite,
            4 => Self::Inbox,
            5 => Self::PeerWritable,
            6 => Self::SpliceIn,
            7 => Self::SpliceOut,
            _ => Self::Ignore,
        }
    }
}

fn user_data(kind: Kind, generation: u32, slot: usize) -> u64 {
    ((kind as u64) << 56)
        | ((u64::from(generation) & 0xff_ffff) << 32)
        | (slot as u64 & 0xffff_ffff)
}

fn decode(ud: u64) -> (Kind, u32, usize) {
    (
        Kind::from_u8((ud >> 56) as u8),
        ((ud >> 32) & 0xff_ffff) as u32,
        (ud & 0xffff_ffff) as usize,
    )
}

/// What a socket is doing.
#[derive(Debug)]
enum SockState {
    /// Reading its request head.
    Head { buf: Vec<u8>, handed_in: bool },
    /// A hidden server parked in the room.
    Parked { handle: EntryHandle },
    /// A client waiting in the room, with the bytes that followed its head.
    Waiting {
        handle: EntryHandle,
        pairing: Box<Pairing>,
    },
    /// Writing a refusal; then lingering.
    Refusing { response: Vec<u8>, written: usize },
    /// Refusal sent and write side shut; discarding input until EOF or the deadline.
    Lingering { deadline: Instant, discarded: usize },
    /// One side of a tunnel.
    Tunnel { tunnel: usize, side: usize },
    /// The TCP socket of a TLS front.
    TlsTcp { front: usize },
    /// The front's end of the socketpair whose other end is the plaintext connection.
    TlsInner { front: usize },
}

#[derive(Debug)]
struct Sock<F = OwnedFd> {
    /// The descriptor (a stand-in number in [`footprint::simulate`]).
    fd: F,
    state: SockState,
    /// How the peer reached us (a TLS front's inner end is `Tls`).
    transport: Transport,
    /// `user_data` of the armed read-role and write-role polls.
    armed: [Option<u64>; 2],
}

/// What a waiting client carries into its pairing.
#[derive(Debug)]
struct Pairing {
    key: RendezvousKey,
    /// Written to the client first.
    greeting: Vec<u8>,
    /// Written to the server first: forwarded head, then the client's early bytes.
    to_server: Vec<u8>,
    /// Exact refusal when nobody parks in time (`None`: the engine's 404).
    not_parked: Option<Vec<u8>>,
    /// How the tunnel ends when one side finishes.
    half_close: HalfClose,
}

/// One direction of a tunnel: side `d` to side `1 - d`.
#[derive(Debug, Default)]
struct Direction {
    /// Bytes to write before any spliced byte (the 200, or a client's early bytes).
    pending: Vec<u8>,
    written: usize,
    pipe: Option<Pipe>,
    in_pipe: usize,
    src_eof: bool,
    done: bool,
    /// A splice of this direction is queued on the ring (uring mode).
    inflight: bool,
}

#[derive(Debug)]
struct Tunnel {
    socks: [usize; 2],
    dirs: [Direction; 2],
    last_active: Instant,
    /// Set once the tunnel is being torn down (with a reset when true).
    closing: Option<bool>,
    /// How it ends when one side finishes sending.
    half_close: HalfClose,
}

/// Outcome of pumping a direction.
#[derive(Debug, PartialEq, Eq)]
enum Pump {
    WaitRead,
    WaitWrite,
    /// Budget used up; re-arm a read poll so other connections get a turn.
    Yield,
    /// A splice is queued; its completion continues the pump.
    InFlight,
    Done,
    Fail,
}

/// Result of [`Worker::pipe_or_copy`].
enum PipeOrCopy {
    /// The direction holds a pipe: splice.
    Pipe,
    /// No pipe to lend; a chunk was copied (or EOF seen): pump again.
    Copied,
    /// Stop pumping with this result.
    Stop(Pump),
}

#[derive(Debug)]
struct PendingHandoff {
    to: usize,
    fd: OwnedFd,
    bytes: Vec<u8>,
    transport: Transport,
    /// Accepted here at the socket budget and passed on unread ([`Message::Accepted`]).
    accepted: bool,
}

/// A TLS front and the two sockets it pumps between.
struct TlsFrontEntry {
    front: TlsFront,
    tcp: usize,
    inner: usize,
    /// Last time either side was ready; idle fronts are closed like idle tunnels.
    last_active: Instant,
}

impl std::fmt::Debug for TlsFrontEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFrontEntry")
            .field("tcp", &self.tcp)
            .field("inner", &self.inner)
            .finish()
    }
}

/// A warning logged at most once per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
struct WarnLimit {
    next: Option<Instant>,
    suppressed: u64,
}

impl WarnLimit {
    /// `Some(n)` when a warning may be logged now, `n` being how many were suppressed
    /// since the last one; `None` (and one more suppressed) otherwise.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + WARN_INTERVAL);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Descriptors a worker is started with.
#[derive(Debug)]
pub(crate) struct WorkerFds {
    pub(crate) index: usize,
    pub(crate) workers: usize,
    /// Which worker owns which key (the relay's shared owner-hash key).
    pub(crate) placement: Placement,
    /// Every worker's counters (this one's included), for the hand-off budget.
    pub(crate) peer_counters: Vec<WorkerCounters>,
    pub(crate) inbox: OwnedFd,
    pub(crate) http_out: OwnedFd,
    pub(crate) peers: Vec<OwnedFd>,
    pub(crate) listeners: Vec<(OwnedFd, Transport)>,
    pub(crate) counters: WorkerCounters,
}

pub(crate) struct Worker<R> {
    cfg: EngineConfig,
    index: usize,
    workers: usize,
    placement: Placement,
    peer_counters: Vec<WorkerCounters>,
    /// Rate limits for the overload warnings: hand-offs refused, hand-offs lost.
    refused_warn: WarnLimit,
    lost_warn: WarnLimit,
    router: R,
    ring: IoUring,
    socks: Slab<Sock>,
    sock_gens: Vec<u32>,
    tunnels: Slab<Tunnel>,
    tunnel_gens: Vec<u32>,
    room: Room<usize>,
    pipes: PipePool,
    inbox: OwnedFd,
    http_out: OwnedFd,
    peers: Vec<OwnedFd>,
    listeners: Vec<(OwnedFd, Transport)>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    tls_source: Option<super::TlsSource>,
    fronts: Slab<TlsFrontEntry>,
    accept_armed: Vec<bool>,
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
    counters: WorkerCounters,
    head_deadlines: VecDeque<(Instant, usize, u32)>,
    linger_deadlines: VecDeque<(Instant, usize, u32)>,
    pending_handoffs: VecDeque<PendingHandoff>,
    peer_poll_armed: Vec<bool>,
    shutdown_deadline: Option<Instant>,
    /// Set once a draining worker has no tunnels left: it accepts nothing more.
    accept_stopped: bool,
    now: Instant,
    /// Descriptors the worker holds besides sockets and pipes (ring, inbox, peers,
    /// listeners, stdio), measured at start.
    fd_overhead: usize,
    /// The socket cap implied by the current soft `RLIMIT_NOFILE`, re-read every second
    /// (an operator may lower it on a running worker).
    limit_cap: usize,
    next_idle_sweep: Instant,
    next_fd_count: Instant,
    /// Next time the router is asked for keys to evict ([`Router::evictions`]).
    next_eviction_poll: Instant,
    evict_keys: Vec<RendezvousKey>,
    scratch: Vec<u8>,
    msg_buf: Vec<u8>,
    cqes: Vec<(u64, i32, u32)>,
    expired: Vec<crate::room::Expired<usize>>,
}

impl<R: Router> Worker<R> {
    pub(crate) fn new(
        cfg: EngineConfig,
        fds: WorkerFds,
        router: R,
        mut tls_source: Option<super::TlsSource>,
    ) -> io::Result<Self> {
        let tls = match tls_source.as_mut() {
            Some(load) => Some(load().map_err(io::Error::other)?),
            None => None,
        };
        let entries = cfg.ring_entries.max(64);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        // Splices queued on the ring run in io-wq workers; cap them so a burst of
        // blocked splices cannot spawn unbounded kernel threads.
        let mut max_workers = [2u32, 4u32];
        let _ = ring.submitter().register_iowq_max_workers(&mut max_workers);
        let now = Instant::now();
        let Tables {
            socks,
            sock_gens,
            head_deadlines,
            room,
        } = Tables::new(&cfg);
        Ok(Self {
            pipes: PipePool::new(cfg.max_pipes_per_worker, cfg.pipe_size),
            index: fds.index,
            workers: fds.workers.max(1),
            placement: fds.placement,
            peer_counters: fds.peer_counters,
            refused_warn: WarnLimit::default(),
            lost_warn: WarnLimit::default(),
            router,
            ring,
            socks,
            sock_gens,
            tunnels: Slab::new(),
            tunnel_gens: Vec::new(),
            room,
            inbox: fds.inbox,
            http_out: fds.http_out,
            peer_poll_armed: vec![false; fds.peers.len() + 1],
            peers: fds.peers,
            accept_armed: vec![false; fds.listeners.len()],
            listeners: fds.listeners,
            tls,
            tls_source,
            fronts: Slab::new(),
            accept_paused_until: None,
            accept_backoff: Duration::from_millis(10),
            counters: fds.counters,
            head_deadlines,
            linger_deadlines: VecDeque::new(),
            pending_handoffs: VecDeque::new(),
            shutdown_deadline: None,
            accept_stopped: false,
            now,
            fd_overhead: sys::open_fds() as usize,
            limit_cap: usize::MAX,
            next_idle_sweep: now,
            next_fd_count: now,
            next_eviction_poll: now,
            evict_keys: Vec::new(),
            scratch: vec![0; 64 * 1024],
            msg_buf: Vec::new(),
            cqes: Vec::with_capacity(1024),
            expired: Vec::new(),
            cfg,
        })
    }

    /// Runs until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.arm_inbox();
        loop {
            self.wait()?;
            self.now = Instant::now();
            self.handle_completions();
            self.on_tick();
            self.publish_budget();
            if let Some(deadline) = self.shutdown_deadline {
                if self.tunnels.is_empty() && !self.accept_stopped {
                    // Drained: stop answering new connections (they go to workers still
                    // draining, or are reset when the last listener copy closes at exit)
                    // and leave once the refusals in flight are written.
                    self.accept_stopped = true;
                    self.cancel_accepts();
                }
                if self.tunnels.is_empty() && self.socks.is_empty() {
                    break;
                }
                if self.now >= deadline {
                    self.abort_all();
                    break;
                }
            }
        }
        // Flush the PollRemoves of the final teardown; the process exits right after.
        let _ = self.ring.submit();
        Ok(())
    }

    fn wait(&mut self) -> io::Result<()> {
        let ts = types::Timespec::new().nsec(TICK.as_nanos() as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry pushed here references only descriptors (no memory):
            // poll, poll-remove, cancel, accept without an address, and splice. The
            // descriptors are owned by `self` (listeners, inbox, peer sockets, sockets in
            // `self.socks`, pipes in tunnel directions) and are kept open until the
            // entry's terminal completion arrives (tunnels with a splice in flight are not
            // torn down until it completes; polls on closed sockets are removed).
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            // Queue full: hand what is queued to the kernel and retry.
            if self.ring.submit().is_err() {
                // Completion queue pressure: reap before submitting more.
                self.handle_completions();
            }
        }
    }

    // ----- arming -----

    fn arm_accept(&mut self, i: usize) {
        if self.accept_armed[i] || self.accept_stopped {
            return;
        }
        let fd = types::Fd(self.listeners[i].0.as_raw_fd());
        let e = opcode::AcceptMulti::new(fd)
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Kind::Accept, 0, i));
        self.push(e);
        self.accept_armed[i] = true;
    }

    fn cancel_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.accept_armed[i] {
                let e = opcode::AsyncCancel::new(user_data(Kind::Accept, 0, i))
                    .build()
                    .user_data(user_data(Kind::Ignore, 0, 0));
                self.push(e);
            }
        }
    }

    fn arm_inbox(&mut self) {
        let e = opcode::PollAdd::new(types::Fd(self.inbox.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(user_data(Kind::Inbox, 0, 0));
        self.push(e);
    }

    /// Arms a one-shot poll on a socket for the read role (0) or write role (1).
    fn arm(&mut self, sock: usize, role: usize, events: u32) {
        let Some(s) = self.socks.get(sock) else {
            return;
        };
        if s.armed[role].is_some() {
            return;
        }
        let kind = if role == 0 {
            Kind::PollRead
        } else {
            Kind::PollWrite
        };
        let ud = user_data(kind, self.sock_gens[sock], sock);
        let e = opcode::PollAdd::new(types::Fd(s.fd.as_raw_fd()), events)
            .build()
            .user_data(ud);
        self.socks[sock].armed[role] = Some(ud);
        self.push(e);
    }

    /// Removes every armed poll of a socket and invalidates late completions.
    fn disarm(&mut self, sock: usize) {
        let Some(s) = self.socks.get_mut(sock) else {
            return;
        };
        let armed = std::mem::take(&mut s.armed);
        for ud in armed.into_iter().flatten() {
            let e = opcode::PollRemove::new(ud)
                .build()
                .user_data(user_data(Kind::Ignore, 0, 0));
            self.push(e);
        }
        self.sock_gens[sock] = self.sock_gens[sock].wrapping_add(1) & 0xff_ffff;
    }

    // ----- socket table -----

    fn insert_sock(&mut self, fd: OwnedFd, state: SockState) -> usize {
        let idx = footprint::insert_sock(&mut self.socks, &mut self.sock_gens, fd, state);
        // Senders read this before handing a connection over: publish growth at once.
        self.counters.set(Counter::Held, self.held_fds() as u64);
        idx
    }

    /// Publishes what this worker holds and may hold, for the workers that hand
    /// connections to it ([`WorkerCounters::reserve_inbound`]).
    fn publish_budget(&self) {
        self.counters.set(Counter::Held, self.held_fds() as u64);
        self.counters
            .set(Counter::Budget, self.socket_cap().max(1) as u64);
    }

    /// Closes a socket: removes its polls, then drops the descriptor.
    fn close_sock(&mut self, sock: usize, reset: bool) {
        if !self.socks.contains(sock) {
            return;
        }
        self.disarm(sock);
        let s = self.socks.remove(sock);
        if reset {
            let _ = sys::set_linger_zero(s.fd.as_fd());
        }
        drop(s);
    }

    fn gen_ok(&self, sock: usize, generation: u32) -> bool {
        self.socks.contains(sock) && self.sock_gens.get(sock) == Some(&generation)
    }

    // ----- completions -----

    fn handle_completions(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        loop {
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                break;
            }
            for &(ud, res, flags) in &cqes {
                self.on_completion(ud, res, flags);
            }
        }
        self.cqes = cqes;
    }

    fn on_completion(&mut self, ud: u64, res: i32, flags: u32) {
        let (kind, generation, slot) = decode(ud);
        match kind {
            Kind::Ignore => {}
            Kind::Accept => self.on_accept(slot, res, flags),
            Kind::Inbox => self.on_inbox(),
            Kind::PeerWritable => {
                if let Some(a) = self.peer_poll_armed.get_mut(slot) {
                    *a = false;
                }
                self.flush_handoffs();
            }
            Kind::PollRead | Kind::PollWrite => {
                if !self.gen_ok(slot, generation) {
                    return;
                }
                let role = usize::from(kind == Kind::PollWrite);
                self.socks[slot].armed[role] = None;
                self.on_ready(slot, role, res);
            }
            Kind::SpliceIn | Kind::SpliceOut => self.on_splice(kind, generation, slot, res),
        }
    }

    fn on_accept(&mut self, listener: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed[listener] = false;
        }
        if res < 0 {
            let err = -res;
            if err == libc::EMFILE
                || err == libc::ENFILE
                || err == libc::ENOBUFS
                || err == libc::ENOMEM
            {
                // Out of descriptors: back off (doubling, capped) and leave tunnels alone.
                self.counters.add(Counter::AcceptBackoffs, 1);
                self.pause_accepting();
            } else if err != libc::ECANCELED && !self.accept_armed[listener] {
                self.arm_accept(listener);
            }
            return;
        }
        // SAFETY: a successful accept completion carries a fresh descriptor installed in
        // this process's table; nothing else owns it.
        let fd = unsafe { sys::owned_from_raw(res) };
        self.counters.add(Counter::Accepted, 1);
        self.accept_backoff = Duration::from_millis(10);
        if self.shutdown_deadline.is_some() {
            let idx = self.insert_sock(
                fd,
                SockState::Lingering {
                    deadline: self.now,
                    discarded: 0,
                },
            );
            self.refuse(idx, Rejection::ShuttingDown);
            if !self.accept_armed[listener] && self.accept_paused_until.is_none() {
                self.arm_accept(listener);
            }
            return;
        }
        if self.held_fds() + self.inbound() >= self.socket_cap() {
            self.counters.add(Counter::AcceptBackoffs, 1);
            if self.accept_paused_until.is_none() {
                self.pause_accepting();
            }
            // One accept completion batch can bring many connections past the budget.
            // Holding each one here while its 503 is written would spend the descriptor
            // headroom that connections handed to this worker need (the kernel drops a
            // descriptor it cannot install). Pass it, unread, to a worker with room;
            // only when none has room is it refused here.
            if self.listeners[listener].1 == Transport::Plain
                && self.pending_handoffs.len() < MAX_PENDING_HANDOFFS
                && let Some(to) = self.peer_with_room()
            {
                self.pending_handoffs.push_back(PendingHandoff {
                    to,
                    fd,
                    bytes: Vec::new(),
                    transport: Transport::Plain,
                    accepted: true,
                });
                self.counters.add(Counter::HandoffsOut, 1);
                self.flush_handoffs();
                return;
            }
            let idx = self.insert_sock(
                fd,
                SockState::Lingering {
                    deadline: self.now,
                    discarded: 0,
                },
            );
            self.refuse(idx, Rejection::Overloaded);
            return;
        }
        let fd = match self.listeners[listener].1 {
            Transport::Plain => fd,
            Transport::Tls => match self.open_front(fd) {
                Some(inner) => inner,
                None => return,
            },
        };
        let transport = self.listeners[listener].1;
        let deadline = self.now + self.cfg.head_timeout;
        let idx = self.insert_sock(
            fd,
            SockState::Head {
                buf: Vec::new(),
                handed_in: false,
            },
        );
        self.socks[idx].transport = transport;
        self.head_deadlines
            .push_back((deadline, idx, self.sock_gens[idx]));
        self.read_head(idx);
        if !self.accept_armed[listener] && self.accept_paused_until.is_none() {
            self.arm_accept(listener);
        }
    }

    /// Sockets and pipe ends held now (what the socket cap limits).
    fn held_fds(&self) -> usize {
        self.socks.len() + 2 * self.pipes.held() + self.pending_handoffs.len()
    }

    /// Another worker with room under its budget, reserved for one connection (round
    /// robin from the next index).
    fn peer_with_room(&self) -> Option<usize> {
        (1..self.workers)
            .map(|k| (self.index + k) % self.workers)
            .find(|&j| self.peer_counters[j].reserve_inbound())
    }

    /// Connections other workers are handing to this one now (counted against its
    /// budget by the senders).
    fn inbound(&self) -> usize {
        usize::try_from(self.counters.get(Counter::Inbound)).unwrap_or(usize::MAX)
    }

    /// The most sockets and pipe ends this worker may hold: the configured budget, or
    /// less when the soft descriptor limit was lowered while running.
    fn socket_cap(&self) -> usize {
        self.cfg.max_sockets_per_worker.min(self.limit_cap)
    }

    fn pause_accepting(&mut self) {
        self.cancel_accepts();
        self.accept_paused_until = Some(self.now + self.accept_backoff);
        self.accept_backoff = (self.accept_backoff * 2).min(Duration::from_secs(1));
    }

    fn on_inbox(&mut self) {
        let mut buf = std::mem::take(&mut self.msg_buf);
        loop {
            match msg::try_recv(self.inbox.as_fd(), &mut buf) {
                Ok(Some(Message::Conn(fd, bytes, transport))) => {
                    let deadline = self.now + self.cfg.head_timeout;
                    let idx = self.insert_sock(
                        fd,
                        SockState::Head {
                            buf: bytes,
                            handed_in: true,
                        },
                    );
                    // Now held here (published by insert_sock): no longer in transit.
                    self.counters_release_inbound();
                    self.socks[idx].transport = transport;
                    if self.held_fds() > self.socket_cap() {
                        // A sender's view of this worker lagged; the budget still holds.
                        self.refuse(idx, Rejection::Overloaded);
                        self.warn_refused(
                            "a handed-over connection arrived above the socket budget",
                        );
                        continue;
                    }
                    self.head_deadlines
                        .push_back((deadline, idx, self.sock_gens[idx]));
                    self.process_head(idx);
                }
                Ok(Some(Message::Accepted(fd))) => {
                    let idx = self.insert_sock(
                        fd,
                        SockState::Head {
                            buf: Vec::new(),
                            handed_in: false,
                        },
                    );
                    self.counters_release_inbound();
                    if self.held_fds() > self.socket_cap() {
                        self.refuse(idx, Rejection::Overloaded);
                        self.warn_refused("a passed-on connection arrived above the socket budget");
                        continue;
                    }
                    let deadline = self.now + self.cfg.head_timeout;
                    self.head_deadlines
                        .push_back((deadline, idx, self.sock_gens[idx]));
                    self.read_head(idx);
                }
                Ok(Some(Message::LostConn)) => {
                    self.counters.add(Counter::HandoffsLost, 1);
                    if let Some(suppressed) = self.lost_warn.ready(self.now) {
                        tracing::warn!(
                            worker = self.index,
                            suppressed,
                            "a handed-over connection arrived without its descriptor (descriptor table full); it is lost"
                        );
                    }
                }
                Ok(Some(Message::Reload)) => {
                    if let Some(load) = self.tls_source.as_mut() {
                        match load() {
                            Ok(config) => self.tls = Some(config),
                            Err(e) => {
                                tracing::warn!(worker = self.index, error = %e, "TLS reload failed; keeping the previous certificate")
                            }
                        }
                    }
                    if let Err(e) = self.router.reload() {
                        tracing::warn!(worker = self.index, error = %e, "reload failed; keeping the previous secrets");
                    } else {
                        tracing::info!(worker = self.index, "reloaded");
                    }
                }
                Ok(Some(Message::Shutdown)) => self.begin_shutdown(),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "inbox receive failed");
                    break;
                }
            }
        }
        self.msg_buf = buf;
        self.arm_inbox();
    }

    fn on_ready(&mut self, sock: usize, role: usize, res: i32) {
        let state = match &self.socks[sock].state {
            SockState::Head { .. } => 0,
            SockState::Parked { .. } | SockState::Waiting { .. } => 1,
            SockState::Refusing { .. } => 2,
            SockState::Lingering { .. } => 3,
            SockState::Tunnel { .. } => 4,
            SockState::TlsTcp { front } | SockState::TlsInner { front } => {
                let front = *front;
                self.pump_front(front);
                return;
            }
        };
        match state {
            0 => self.read_head(sock),
            1 => self.on_room_hangup(sock, res),
            2 => self.write_refusal(sock),
            3 => self.linger(sock),
            _ => {
                let SockState::Tunnel { tunnel, side } = self.socks[sock].state else {
                    return;
                };
                // A read-role poll on side s serves direction s (s reads); a write-role
                // poll on side s serves the direction writing to s, i.e. 1 - s.
                let dir = if role == 0 { side } else { 1 - side };
                self.pump_and_arm(tunnel, dir);
            }
        }
    }

    // ----- TLS fronts -----

    /// Wraps an accepted TLS connection in a front; returns the plaintext end for the
    /// ordinary path, or `None` when the front could not be set up (socket closed).
    fn open_front(&mut self, tcp: OwnedFd) -> Option<OwnedFd> {
        let config = self.tls.clone()?;
        let session = rustls::ServerConnection::new(config).ok()?;
        let _ = sys::set_nodelay(tcp.as_fd());
        let (inner, outer) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .ok()?;
        let front = self.fronts.insert(TlsFrontEntry {
            front: TlsFront::new(session),
            tcp: usize::MAX,
            inner: usize::MAX,
            last_active: self.now,
        });
        let tcp = self.insert_sock(tcp, SockState::TlsTcp { front });
        let inner = self.insert_sock(inner, SockState::TlsInner { front });
        self.socks[tcp].transport = Transport::Tls;
        self.socks[inner].transport = Transport::Tls;
        self.fronts[front].tcp = tcp;
        self.fronts[front].inner = inner;
        self.counters.add(Counter::TlsSessions, 1);
        self.pump_front(front);
        Some(outer)
    }

    fn pump_front(&mut self, front: usize) {
        let Some(entry) = self.fronts.get_mut(front) else {
            return;
        };
        let (tcp, inner) = (entry.tcp, entry.inner);
        entry.last_active = self.now;
        let (Some(tcp_sock), Some(inner_sock)) = (self.socks.get(tcp), self.socks.get(inner))
        else {
            return;
        };
        let needs = entry
            .front
            .pump(&tcp_sock.fd, &inner_sock.fd, &mut self.scratch);
        if needs.failed || needs.done {
            self.close_front(front, needs.failed);
            return;
        }
        if needs.tcp_read {
            self.arm(tcp, 0, POLL_READ);
        }
        if needs.tcp_write {
            self.arm(tcp, 1, POLL_WRITE);
        }
        if needs.inner_read {
            self.arm(inner, 0, POLL_READ);
        }
        if needs.inner_write {
            self.arm(inner, 1, POLL_WRITE);
        }
    }

    fn close_front(&mut self, front: usize, reset: bool) {
        if !self.fronts.contains(front) {
            return;
        }
        let entry = self.fronts.remove(front);
        self.close_sock(entry.tcp, reset);
        self.close_sock(entry.inner, reset);
        self.counters.add(Counter::TlsSessions, u64::MAX);
    }

    // ----- heads -----

    fn read_head(&mut self, sock: usize) {
        let limit = self.cfg.head_max_bytes;
        loop {
            let s = &mut self.socks[sock];
            let SockState::Head { buf, .. } = &mut s.state else {
                return;
            };
            let old = buf.len();
            let fd = s.fd.as_fd();
            match footprint::receive_head(buf, &mut self.scratch, |into| sys::recv(fd, into)) {
                Ok(0) => {
                    // Peer closed before finishing its head.
                    self.close_sock(sock, false);
                    return;
                }
                Ok(_) => {
                    // A head only completes at a line end: parsing only then keeps a
                    // byte-at-a-time sender from costing a full re-parse per byte. The
                    // first bytes are parsed on every read, so bytes that cannot start
                    // a request line (NULs, a TLS ClientHello) are refused at once
                    // (`parse_head` checks viability) rather than at the head deadline.
                    if !buf[old..].contains(&b'\n')
                        && buf.len() <= limit
                        && old >= REQUEST_LINE_PROBE
                    {
                        continue;
                    }
                    match self.try_parse(sock) {
                        Some(true) => return,  // complete: handled
                        Some(false) => return, // refused
                        None => {
                            let SockState::Head { buf, .. } = &self.socks[sock].state else {
                                return;
                            };
                            if buf.len() > limit {
                                self.refuse(sock, Rejection::HeadTooLarge);
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.arm(sock, 0, POLL_READ);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_sock(sock, false);
                    return;
                }
            }
        }
    }

    /// Parses the buffered head. `None`: incomplete; `Some(_)`: handled (routed or refused).
    fn try_parse(&mut self, sock: usize) -> Option<bool> {
        let SockState::Head { buf, .. } = &self.socks[sock].state else {
            return Some(false);
        };
        match parse_head(buf, &self.cfg.head_limits()) {
            Ok(HeadStatus::Partial) => None,
            Ok(HeadStatus::Complete(head)) => {
                self.dispatch(sock, head);
                Some(true)
            }
            Err(e) => {
                self.refuse(sock, e.into());
                Some(false)
            }
        }
    }

    /// A complete head arrived through the inbox: parse and route it.
    fn process_head(&mut self, sock: usize) {
        if self.try_parse(sock).is_none() {
            // A hand-off always carries a complete head; anything else is refused.
            self.refuse(sock, Rejection::MalformedHead);
        }
    }

    fn dispatch(&mut self, sock: usize, head: RequestHead) {
        let handed_in = matches!(
            self.socks[sock].state,
            SockState::Head {
                handed_in: true,
                ..
            }
        );
        let transport = self.socks[sock].transport;
        match self.router.classify(&head, transport) {
            Err(r) => self.refuse(sock, r),
            Ok(Classified::Http) => self.hand_off(sock, self.workers),
            Ok(Classified::Rendezvous(key)) => {
                let owner = key.owner(&self.placement);
                if owner != self.index && !handed_in {
                    self.hand_off(sock, owner);
                } else {
                    self.route(sock, &head);
                }
            }
        }
    }

    fn route(&mut self, sock: usize, head: &RequestHead) {
        if self.shutdown_deadline.is_some() {
            self.refuse(sock, Rejection::ShuttingDown);
            return;
        }
        let SockState::Head { buf, .. } = &mut self.socks[sock].state else {
            return;
        };
        let early = buf.split_off(head.head_len.min(buf.len()));
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let transport = self.socks[sock].transport;
        match self.router.route(head, &early, now_unix, transport) {
            Route::Reject(r) => self.refuse(sock, r),
            Route::RejectWith(r, response) => self.refuse_with(sock, r, response),
            Route::Http => self.hand_off(sock, self.workers),
            Route::Park { key, mode } => {
                if mode == ParkMode::Replace {
                    let mut old = Vec::new();
                    self.room.take_parked(&key, &mut old);
                    for s in old {
                        self.close_sock(s, false);
                    }
                }
                self.park(sock, key);
            }
            Route::Reach(plan) => {
                let mut to_server = plan.forward;
                to_server.extend_from_slice(&early);
                let pairing = Pairing {
                    key: plan.key,
                    greeting: plan.greeting,
                    to_server,
                    not_parked: plan.not_parked,
                    half_close: plan.half_close,
                };
                self.reach(sock, Box::new(pairing));
            }
        }
    }

    fn park(&mut self, sock: usize, key: RendezvousKey) {
        match self.room.park(key, sock, self.now) {
            ParkOutcome::Full(sock) => self.refuse(sock, Rejection::RoomFull),
            ParkOutcome::Parked { handle, evicted } => {
                if sys::send(self.socks[sock].fd.as_fd(), OK_RESPONSE).ok()
                    != Some(OK_RESPONSE.len())
                {
                    self.room.remove(handle);
                    self.close_sock(sock, false);
                } else {
                    self.socks[sock].state = SockState::Parked { handle };
                    self.arm(sock, 0, POLL_HANGUP);
                }
                if let Some(old) = evicted {
                    self.close_sock(old, false);
                }
            }
            ParkOutcome::Paired { server, client } => {
                let pairing = self.take_pairing(client);
                if sys::send(self.socks[server].fd.as_fd(), OK_RESPONSE).ok()
                    != Some(OK_RESPONSE.len())
                {
                    // The server vanished between its head and its 200: the client keeps
                    // waiting for another one.
                    self.close_sock(server, false);
                    self.disarm(client);
                    self.reach(client, pairing);
                    return;
                }
                self.pair(client, server, *pairing);
            }
        }
        self.sync_room_counters();
    }

    /// Takes a waiting client's pairing plan out of its state.
    fn take_pairing(&mut self, client: usize) -> Box<Pairing> {
        let empty = || {
            Box::new(Pairing {
                key: RendezvousKey::uuid([0; 16]),
                greeting: Vec::new(),
                to_server: Vec::new(),
                not_parked: None,
                half_close: HalfClose::PerDirection,
            })
        };
        match &mut self.socks[client].state {
            SockState::Waiting { pairing, .. } => std::mem::replace(pairing, empty()),
            _ => empty(),
        }
    }

    fn reach(&mut self, sock: usize, pairing: Box<Pairing>) {
        match self.room.reach(pairing.key, sock, self.now) {
            ReachOutcome::Full(sock) => self.refuse(sock, Rejection::TooManyWaiting),
            ReachOutcome::Waiting { handle } => {
                self.socks[sock].state = SockState::Waiting { handle, pairing };
                self.arm(sock, 0, POLL_HANGUP);
            }
            ReachOutcome::Paired { server, client } => self.pair(client, server, *pairing),
        }
        self.sync_room_counters();
    }

    fn on_room_hangup(&mut self, sock: usize, _res: i32) {
        let handle = match &self.socks[sock].state {
            SockState::Parked { handle } | SockState::Waiting { handle, .. } => *handle,
            _ => return,
        };
        self.room.remove(handle);
        self.close_sock(sock, false);
        self.sync_room_counters();
    }

    fn sync_room_counters(&self) {
        self.counters
            .set(Counter::Parked, self.room.parked() as u64);
        self.counters
            .set(Counter::Waiting, self.room.waiting() as u64);
    }

    // ----- hand-offs -----

    /// Passes a socket (with every byte read from it) to worker `to`, or to the HTTP
    /// inbox when `to == self.workers`.
    fn hand_off(&mut self, sock: usize, to: usize) {
        if to < self.workers && !self.peer_counters[to].reserve_inbound() {
            // The owner is at its socket budget: refuse here, where the connection still
            // has a descriptor, rather than send it to be dropped there.
            self.counters.add(Counter::HandoffsRefused, 1);
            self.refuse(sock, Rejection::Overloaded);
            self.warn_refused("the worker owning the id is at its socket budget");
            return;
        }
        self.disarm(sock);
        let s = self.socks.remove(sock);
        let transport = s.transport;
        let bytes = match s.state {
            SockState::Head { buf, .. } => buf,
            _ => Vec::new(),
        };
        if to == self.workers {
            self.counters.add(Counter::HttpHandoffs, 1);
        } else {
            self.counters.add(Counter::HandoffsOut, 1);
        }
        if self.pending_handoffs.len() >= MAX_PENDING_HANDOFFS {
            self.unreserve(to);
            let idx = self.insert_sock(
                s.fd,
                SockState::Lingering {
                    deadline: self.now,
                    discarded: 0,
                },
            );
            self.refuse(idx, Rejection::Overloaded);
            return;
        }
        self.pending_handoffs.push_back(PendingHandoff {
            to,
            fd: s.fd,
            bytes,
            transport,
            accepted: false,
        });
        self.flush_handoffs();
    }

    /// Gives back a budget reservation for a hand-off to `to` that will not be sent.
    fn unreserve(&self, to: usize) {
        if let Some(c) = self.peer_counters.get(to) {
            c.release_inbound();
        }
    }

    fn counters_release_inbound(&self) {
        self.counters.release_inbound();
    }

    /// Logs a refusal for lack of budget, at most once per [`WARN_INTERVAL`].
    fn warn_refused(&mut self, why: &'static str) {
        if let Some(suppressed) = self.refused_warn.ready(self.now) {
            tracing::warn!(
                worker = self.index,
                suppressed,
                "connection refused with 503 overloaded: {why}"
            );
        }
    }

    fn handoff_socket(&self, to: usize) -> BorrowedFd<'_> {
        if to >= self.workers {
            self.http_out.as_fd()
        } else {
            self.peers[to].as_fd()
        }
    }

    fn flush_handoffs(&mut self) {
        let mut blocked = vec![false; self.workers + 1];
        // Each queued hand-off is looked at once, in order; those that stay go back to
        // the end, so the queue is rotated in place instead of rebuilt (rebuilding grew
        // a second queue by doubling on every flush).
        for _ in 0..self.pending_handoffs.len() {
            let Some(h) = self.pending_handoffs.pop_front() else {
                break;
            };
            let to = h.to.min(self.workers);
            if blocked[to] {
                self.pending_handoffs.push_back(h);
                continue;
            }
            let sent = if h.accepted {
                msg::send_accepted(self.handoff_socket(to), h.fd.as_fd())
            } else {
                msg::send_conn(self.handoff_socket(to), h.fd.as_fd(), &h.bytes, h.transport)
            };
            match sent {
                Ok(()) => drop(h),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked[to] = true;
                    self.pending_handoffs.push_back(h);
                }
                Err(e) => {
                    // Still ours: answer it rather than close it silently.
                    tracing::warn!(worker = self.index, to, error = %e, "hand-off failed; refusing the connection");
                    self.unreserve(h.to);
                    let idx = self.insert_sock(
                        h.fd,
                        SockState::Lingering {
                            deadline: self.now,
                            discarded: 0,
                        },
                    );
                    self.refuse(idx, Rejection::Overloaded);
                }
            }
        }
        for (to, b) in blocked.into_iter().enumerate() {
            if b && !self.peer_poll_armed[to] {
                self.peer_poll_armed[to] = true;
                let fd = types::Fd(self.handoff_socket(to).as_raw_fd());
                let e = opcode::PollAdd::new(fd, POLL_WRITE)
                    .build()
                    .user_data(user_data(Kind::PeerWritable, 0, to));
                self.push(e);
            }
        }
    }

    // ----- refusals -----

    fn refuse(&mut self, sock: usize, r: Rejection) {
        self.refuse_with(sock, r, r.response());
    }

    /// Refuses with exact bytes, counted under `r`.
    fn refuse_with(&mut self, sock: usize, r: Rejection, response: Vec<u8>) {
        self.counters.reject(r);
        self.disarm(sock);
        self.socks[sock].state = SockState::Refusing {
            response,
            written: 0,
        };
        self.write_refusal(sock);
    }

    fn write_refusal(&mut self, sock: usize) {
        let s = &mut self.socks[sock];
        let SockState::Refusing { response, written } = &mut s.state else {
            return;
        };
        while *written < response.len() {
            match sys::send(s.fd.as_fd(), &response[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.arm(sock, 1, POLL_WRITE);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_sock(sock, false);
                    return;
                }
            }
        }
        // Sent: shut our side and discard what the peer still sends, so unread input
        // does not turn our close into a reset that destroys the response in flight.
        let _ = sys::shutdown_write(s.fd.as_fd());
        let deadline = self.now + LINGER;
        s.state = SockState::Lingering {
            deadline,
            discarded: 0,
        };
        self.linger_deadlines
            .push_back((deadline, sock, self.sock_gens[sock]));
        self.linger(sock);
    }

    fn linger(&mut self, sock: usize) {
        loop {
            let s = &mut self.socks[sock];
            let SockState::Lingering { discarded, .. } = &mut s.state else {
                return;
            };
            match sys::recv(s.fd.as_fd(), &mut self.scratch) {
                Ok(0) => break,
                Ok(n) => {
                    *discarded += n;
                    if *discarded > LINGER_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.arm(sock, 0, POLL_READ);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close_sock(sock, false);
    }

    // ----- tunnels -----

    fn pair(&mut self, client: usize, server: usize, pairing: Pairing) {
        self.disarm(client);
        self.disarm(server);
        let _ = sys::set_nodelay(self.socks[client].fd.as_fd());
        let _ = sys::set_nodelay(self.socks[server].fd.as_fd());
        let mut dirs = [Direction::default(), Direction::default()];
        dirs[0].pending = pairing.to_server;
        dirs[1].pending = pairing.greeting;
        let t = self.tunnels.insert(Tunnel {
            socks: [client, server],
            dirs,
            last_active: self.now,
            closing: None,
            half_close: pairing.half_close,
        });
        if self.tunnel_gens.len() <= t {
            self.tunnel_gens.resize(t + 1, 0);
        }
        self.socks[client].state = SockState::Tunnel { tunnel: t, side: 0 };
        self.socks[server].state = SockState::Tunnel { tunnel: t, side: 1 };
        self.counters.add(Counter::Paired, 1);
        self.counters
            .set(Counter::ActiveTunnels, self.tunnels.len() as u64);
        self.pump_and_arm(t, 1);
        if self.tunnels.contains(t) {
            self.pump_and_arm(t, 0);
        }
    }

    fn pump_and_arm(&mut self, t: usize, d: usize) {
        if !self.tunnels.contains(t) || self.tunnels[t].closing.is_some() {
            return;
        }
        let result = match self.cfg.data_path {
            DataPath::SpliceSyscall => self.pump_syscall(t, d),
            DataPath::SpliceUring => self.pump_uring(t, d),
        };
        let [src, dst] = self.dir_socks(t, d);
        match result {
            Pump::WaitRead | Pump::Yield => self.arm(src, 0, POLL_READ),
            Pump::WaitWrite => self.arm(dst, 1, POLL_WRITE),
            Pump::InFlight => {}
            Pump::Done => {
                // One direction ended: its FIN is forwarded and its bytes delivered.
                // Natively the other keeps flowing until it ends too; node-rendezvous
                // ends both connections now, as upstream does.
                if self.tunnels[t].half_close == HalfClose::CloseBoth
                    || self.tunnels[t].dirs.iter().all(|d| d.done)
                {
                    self.close_tunnel(t, false);
                }
            }
            Pump::Fail => self.close_tunnel(t, true),
        }
    }

    fn dir_socks(&self, t: usize, d: usize) -> [usize; 2] {
        let socks = self.tunnels[t].socks;
        [socks[d], socks[1 - d]]
    }

    /// Writes a direction's pending user-space bytes. `None` when all are written.
    fn flush_pending(&mut self, t: usize, d: usize) -> Option<Pump> {
        let [_, dst] = self.dir_socks(t, d);
        let tunnel = &mut self.tunnels[t];
        let dir = &mut tunnel.dirs[d];
        while dir.written < dir.pending.len() {
            match sys::send(self.socks[dst].fd.as_fd(), &dir.pending[dir.written..]) {
                Ok(n) => {
                    dir.written += n;
                    tunnel.last_active = self.now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Pump::WaitWrite),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Pump::Fail),
            }
        }
        dir.pending.clear();
        dir.written = 0;
        None
    }

    /// With no pipe to lend, moves one chunk through user space.
    fn copy_chunk(&mut self, t: usize, d: usize) -> Result<(), Pump> {
        let [src, _] = self.dir_socks(t, d);
        match sys::recv(self.socks[src].fd.as_fd(), &mut self.scratch) {
            Ok(0) => {
                self.tunnels[t].dirs[d].src_eof = true;
                Ok(())
            }
            Ok(n) => {
                let dir = &mut self.tunnels[t].dirs[d];
                dir.pending.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Pump::WaitRead),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(Pump::Fail),
        }
    }

    /// Makes sure a direction holds a pipe; with none left to lend, moves one chunk
    /// through user space instead.
    fn pipe_or_copy(&mut self, t: usize, d: usize) -> PipeOrCopy {
        if self.tunnels[t].dirs[d].pipe.is_some() {
            return PipeOrCopy::Pipe;
        }
        match self.pipes.get() {
            Some(p) => {
                self.tunnels[t].dirs[d].pipe = Some(p);
                PipeOrCopy::Pipe
            }
            None => match self.copy_chunk(t, d) {
                Ok(()) => PipeOrCopy::Copied,
                Err(p) => PipeOrCopy::Stop(p),
            },
        }
    }

    fn release_pipe_if_empty(&mut self, t: usize, d: usize) {
        let dir = &mut self.tunnels[t].dirs[d];
        if dir.in_pipe == 0
            && let Some(p) = dir.pipe.take()
        {
            self.pipes.put(p);
        }
    }

    fn finish_direction(&mut self, t: usize, d: usize) -> Pump {
        let [_, dst] = self.dir_socks(t, d);
        let _ = sys::shutdown_write(self.socks[dst].fd.as_fd());
        self.release_pipe_if_empty(t, d);
        self.tunnels[t].dirs[d].done = true;
        Pump::Done
    }

    fn pump_syscall(&mut self, t: usize, d: usize) -> Pump {
        let [src, dst] = self.dir_socks(t, d);
        let mut moved = 0usize;
        loop {
            if self.tunnels[t].dirs[d].done {
                return Pump::Done;
            }
            if let Some(p) = self.flush_pending(t, d) {
                return p;
            }
            let dir = &mut self.tunnels[t].dirs[d];
            if dir.in_pipe > 0 {
                let Some(pipe) = dir.pipe.as_ref() else {
                    return Pump::Fail;
                };
                match sys::splice(pipe.read.as_fd(), self.socks[dst].fd.as_fd(), dir.in_pipe) {
                    Ok(0) => return Pump::Fail,
                    Ok(n) => {
                        dir.in_pipe -= n;
                        moved += n;
                        self.tunnels[t].last_active = self.now;
                        self.counters.add(Counter::BytesSpliced, n as u64);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pump::WaitWrite,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Pump::Fail,
                }
            }
            if dir.src_eof {
                return self.finish_direction(t, d);
            }
            if moved >= PUMP_BUDGET {
                self.release_pipe_if_empty(t, d);
                return Pump::Yield;
            }
            match self.pipe_or_copy(t, d) {
                PipeOrCopy::Pipe => {}
                PipeOrCopy::Copied => continue,
                PipeOrCopy::Stop(p) => return p,
            }
            let dir = &mut self.tunnels[t].dirs[d];
            let Some(pipe) = dir.pipe.as_ref() else {
                return Pump::Fail;
            };
            match sys::splice(
                self.socks[src].fd.as_fd(),
                pipe.write.as_fd(),
                pipe.capacity,
            ) {
                Ok(0) => dir.src_eof = true,
                Ok(n) => dir.in_pipe = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.release_pipe_if_empty(t, d);
                    return Pump::WaitRead;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pump::Fail,
            }
        }
    }

    fn pump_uring(&mut self, t: usize, d: usize) -> Pump {
        if self.tunnels[t].dirs[d].inflight {
            return Pump::InFlight;
        }
        if self.tunnels[t].dirs[d].done {
            return Pump::Done;
        }
        loop {
            if let Some(p) = self.flush_pending(t, d) {
                return p;
            }
            let [src, dst] = self.dir_socks(t, d);
            let generation = self.tunnel_gens[t];
            let dir = &mut self.tunnels[t].dirs[d];
            if dir.in_pipe > 0 {
                let Some(pipe) = dir.pipe.as_ref() else {
                    return Pump::Fail;
                };
                let (from, to, len) = (
                    pipe.read.as_raw_fd(),
                    self.socks[dst].fd.as_raw_fd(),
                    dir.in_pipe,
                );
                dir.inflight = true;
                self.queue_splice(from, to, len, Kind::SpliceOut, generation, t * 2 + d);
                return Pump::InFlight;
            }
            if dir.src_eof {
                return self.finish_direction(t, d);
            }
            match self.pipe_or_copy(t, d) {
                PipeOrCopy::Pipe => {}
                PipeOrCopy::Copied => continue,
                PipeOrCopy::Stop(p) => return p,
            }
            let dir = &mut self.tunnels[t].dirs[d];
            let Some(pipe) = dir.pipe.as_ref() else {
                return Pump::Fail;
            };
            let (from, to, len) = (
                self.socks[src].fd.as_raw_fd(),
                pipe.write.as_raw_fd(),
                pipe.capacity,
            );
            dir.inflight = true;
            self.queue_splice(from, to, len, Kind::SpliceIn, generation, t * 2 + d);
            return Pump::InFlight;
        }
    }

    /// Queues one non-blocking `IORING_OP_SPLICE` of up to `len` bytes; its completion
    /// comes back as `kind` for tunnel direction `slot` (tunnel * 2 + direction).
    fn queue_splice(
        &mut self,
        from: RawFd,
        to: RawFd,
        len: usize,
        kind: Kind,
        generation: u32,
        slot: usize,
    ) {
        let e = opcode::Splice::new(
            types::Fd(from),
            -1,
            types::Fd(to),
            -1,
            u32::try_from(len).unwrap_or(u32::MAX),
        )
        .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
        .build()
        .user_data(user_data(kind, generation, slot));
        self.push(e);
    }

    fn on_splice(&mut self, kind: Kind, generation: u32, slot: usize, res: i32) {
        let (t, d) = (slot / 2, slot % 2);
        if !self.tunnels.contains(t) || self.tunnel_gens[t] != generation {
            return;
        }
        self.tunnels[t].dirs[d].inflight = false;
        if let Some(reset) = self.tunnels[t].closing {
            if self.tunnels[t].dirs.iter().all(|d| !d.inflight) {
                self.finish_close(t, reset);
            }
            return;
        }
        let [src, dst] = self.dir_socks(t, d);
        if res == -libc::EAGAIN {
            if kind == Kind::SpliceIn {
                self.release_pipe_if_empty(t, d);
                self.arm(src, 0, POLL_READ);
            } else {
                self.arm(dst, 1, POLL_WRITE);
            }
            return;
        }
        if res < 0 && res != -libc::EINTR {
            self.close_tunnel(t, true);
            return;
        }
        let n = res.max(0) as usize;
        let dir = &mut self.tunnels[t].dirs[d];
        match kind {
            Kind::SpliceIn if res == 0 => dir.src_eof = true,
            Kind::SpliceIn => dir.in_pipe = n,
            _ => {
                dir.in_pipe = dir.in_pipe.saturating_sub(n);
                self.counters.add(Counter::BytesSpliced, n as u64);
            }
        }
        if n > 0 {
            self.tunnels[t].last_active = self.now;
        }
        self.pump_and_arm(t, d);
    }

    fn close_tunnel(&mut self, t: usize, reset: bool) {
        if !self.tunnels.contains(t) || self.tunnels[t].closing.is_some() {
            return;
        }
        self.tunnels[t].closing = Some(reset);
        // Stop polls now; descriptors named by a queued splice stay open until it completes.
        let socks = self.tunnels[t].socks;
        self.disarm(socks[0]);
        self.disarm(socks[1]);
        if self.tunnels[t].dirs.iter().all(|d| !d.inflight) {
            self.finish_close(t, reset);
        }
    }

    fn finish_close(&mut self, t: usize, reset: bool) {
        let mut tunnel = self.tunnels.remove(t);
        self.tunnel_gens[t] = self.tunnel_gens[t].wrapping_add(1) & 0xff_ffff;
        for dir in &mut tunnel.dirs {
            if let Some(p) = dir.pipe.take() {
                if dir.in_pipe == 0 {
                    self.pipes.put(p)
                } else {
                    self.pipes.discard(p)
                }
            }
        }
        self.close_sock(tunnel.socks[0], reset);
        self.close_sock(tunnel.socks[1], reset);
        self.counters
            .set(Counter::ActiveTunnels, self.tunnels.len() as u64);
    }

    // ----- time -----

    fn on_tick(&mut self) {
        let now = self.now;
        // Head deadlines (408).
        while let Some(&(deadline, sock, generation)) = self.head_deadlines.front() {
            if deadline > now {
                break;
            }
            self.head_deadlines.pop_front();
            if self.sock_gens.get(sock) == Some(&generation)
                && matches!(
                    self.socks.get(sock).map(|s| &s.state),
                    Some(SockState::Head { .. })
                )
            {
                self.refuse(sock, Rejection::HeadTimeout);
            }
        }
        // Lingering refusals.
        while let Some(&(deadline, sock, _)) = self.linger_deadlines.front() {
            if deadline > now {
                break;
            }
            self.linger_deadlines.pop_front();
            if matches!(self.socks.get(sock).map(|s| &s.state), Some(SockState::Lingering { deadline: d, .. }) if *d <= now)
            {
                self.close_sock(sock, false);
            }
        }
        // Waiting room.
        let mut expired = std::mem::take(&mut self.expired);
        self.room.expire(now, &mut expired);
        for e in expired.drain(..) {
            match e.role {
                Role::Client => match self.take_pairing(e.item).not_parked {
                    Some(bytes) => self.refuse_with(e.item, Rejection::NotParked, bytes),
                    None => self.refuse(e.item, Rejection::NotParked),
                },
                Role::Server => self.close_sock(e.item, false),
            }
        }
        self.expired = expired;
        // Keys the router retired (expired or consumed tags): close what is parked.
        if now >= self.next_eviction_poll {
            self.next_eviction_poll = now + EVICTION_POLL;
            self.evict_retired_keys();
        }
        self.sync_room_counters();
        // Idle tunnels.
        if now >= self.next_idle_sweep {
            let idle = self.cfg.idle_timeout;
            self.next_idle_sweep =
                now + (idle / 8).clamp(Duration::from_millis(100), Duration::from_secs(60));
            let stale: Vec<usize> = self
                .tunnels
                .iter()
                .filter(|(_, t)| now.saturating_duration_since(t.last_active) >= idle)
                .map(|(i, _)| i)
                .collect();
            for t in stale {
                self.close_tunnel(t, true);
            }
            let stale: Vec<usize> = self
                .fronts
                .iter()
                .filter(|(_, f)| now.saturating_duration_since(f.last_active) >= idle)
                .map(|(i, _)| i)
                .collect();
            for f in stale {
                self.close_front(f, true);
            }
        }
        // Accept back-off.
        if let Some(until) = self.accept_paused_until {
            let below_cap = self.held_fds() < self.socket_cap() * 9 / 10;
            if now >= until && below_cap {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.arm_accept(i);
                }
            }
        }
        if !self.pending_handoffs.is_empty() {
            self.flush_handoffs();
        }
        self.counters.set(Counter::Sockets, self.socks.len() as u64);
        self.counters.set(Counter::Pipes, self.pipes.held() as u64);
        if now >= self.next_fd_count {
            self.next_fd_count = now + Duration::from_secs(1);
            self.counters.set(Counter::Fds, sys::open_fds());
            self.limit_cap = sys::soft_nofile().map_or(usize::MAX, |soft| {
                soft.saturating_sub(self.fd_overhead + 16)
            });
        }
    }

    /// Closes every connection parked under a key [`Router::evictions`] names.
    fn evict_retired_keys(&mut self) {
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut keys = std::mem::take(&mut self.evict_keys);
        self.router.evictions(now_unix, &mut keys);
        let mut parked = Vec::new();
        for key in keys.drain(..) {
            self.room.take_parked(&key, &mut parked);
        }
        self.evict_keys = keys;
        for sock in parked {
            self.close_sock(sock, false);
        }
    }

    // ----- shutdown -----

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        tracing::info!(
            worker = self.index,
            tunnels = self.tunnels.len(),
            "shutting down: draining tunnels"
        );
        self.shutdown_deadline = Some(self.now + self.cfg.drain_timeout);
        // Accepting goes on while tunnels drain: a new connection (a load balancer's
        // health check, a client) gets `503 shutting_down` at once instead of hanging
        // in the listen queue until the process exits (see `on_accept`).
        for (role, item) in self.room.drain_all() {
            match role {
                Role::Server => self.close_sock(item, false),
                Role::Client => self.refuse(item, Rejection::ShuttingDown),
            }
        }
        self.sync_room_counters();
        let heads: Vec<usize> = self
            .socks
            .iter()
            .filter(|(_, s)| matches!(s.state, SockState::Head { .. }))
            .map(|(i, _)| i)
            .collect();
        for s in heads {
            self.refuse(s, Rejection::ShuttingDown);
        }
    }

    fn abort_all(&mut self) {
        let tunnels: Vec<usize> = self.tunnels.iter().map(|(i, _)| i).collect();
        for t in tunnels {
            // Splices still queued keep their descriptors; the process exits next, which
            // releases everything after the kernel finishes with them.
            self.tunnels[t].closing = None;
            for d in &mut self.tunnels[t].dirs {
                d.inflight = false;
            }
            self.close_tunnel(t, true);
        }
        let socks: Vec<usize> = self.socks.iter().map(|(i, _)| i).collect();
        for s in socks {
            self.close_sock(s, true);
        }
    }
}
