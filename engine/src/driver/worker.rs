//! One worker: one thread, one io_uring, its own fd table.
//!
//! The ring carries multishot accepts, one-shot `POLL_ADD`s (readiness; the driver then
//! calls non-blocking syscalls itself), `ASYNC_CANCEL`s and, in
//! [`super::DataPath::SpliceUring`] mode, `IORING_OP_SPLICE`s. No user-space buffer is ever
//! lent to the kernel: heads are read with `recv(2)` on readiness into buffers the worker
//! owns, so there is no buffer whose lifetime depends on a completion. Descriptors that a
//! queued splice names are kept open until its completion arrives.
//!
//! Completions are routed by `user_data` = kind (8 bits) | generation (24 bits) | slot
//! (32 bits) ([`ids::UserData`]); a completion whose generation no longer matches its
//! slot is stale and is ignored, so a reused slot is never confused with its previous
//! occupant. Sockets, tunnels and TLS fronts are named by typed ids ([`ids::SockId`],
//! [`ids::TunnelId`], [`ids::FrontId`]) into tables that take only their own kind.
//!
//! This file holds the ring and the loop (arming, the socket table, completions,
//! accepts, the inbox). The rest is split by what it does: `head` (a connection's head,
//! the room, refusal and linger), `tunnel` (a tunnel's directions and the two pumps),
//! `handoff` (passing connections on, and the socket-budget reservation), `front` (TLS
//! fronts), `timers` (deadlines, sweeps, shutdown), `decide` (the per-connection
//! decisions, free of sockets and unit-tested) and `ids` (the typed ids, their tables and
//! `user_data`).

use super::msg::{self, Message};
use super::pipes::PipePool;
use super::shm::{Counter, WorkerCounters};
use super::sys;
use super::{EngineConfig, Origin};
use crate::reject::Rejection;
use crate::room::{EntryHandle, Room};
use crate::route::{HalfClose, Router, Transport};
use crate::target::{Placement, RendezvousKey};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

mod claims;
mod cluster;
mod decide;
pub mod footprint;
mod front;
mod handoff;
mod head;
mod ids;
mod timers;
mod tunnel;
use decide::{AcceptFailed, OnReady, OverBudget, PollRole, Side};
use footprint::Tables;
use front::TlsFrontEntry;
use handoff::PendingHandoff;
use ids::{FrontId, Generations, IdSlab, Kind, SockId, TunnelId, UserData};
use tunnel::Tunnel;

const TICK: Duration = Duration::from_millis(50);
/// How often the router is asked for retired keys ([`Router::evictions`]).
const EVICTION_POLL: Duration = Duration::from_millis(250);
/// Most bytes one direction moves before yielding to other connections.
const PUMP_BUDGET: usize = 1 << 20;
/// A fill smaller than this (a keystroke, a 64 B request, a 2-byte echo) most likely
/// emptied its socket, so the direction waits for readiness instead of spending one more
/// splice on `EAGAIN`; a poll armed on a socket with bytes completes at once, so nothing
/// is stranded. Below any real segment of bulk traffic (a 1448-byte MSS and up), which
/// keeps filling until `EAGAIN` (measured: waiting after fills under 16 KiB cost bulk
/// streams a ring round trip per short fill).
const SHORT_FILL: usize = 1024;
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

/// What a socket is doing.
#[derive(Debug)]
enum SockState {
    /// Reading its request head.
    Head { buf: Vec<u8>, handed_in: bool },
    /// A hidden server parked in the room (`notice`: it is sent
    /// [`crate::reject::PAIRING_NOTICE`] when paired).
    Parked { handle: EntryHandle, notice: bool },
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
    Tunnel { tunnel: TunnelId, side: Side },
    /// The TCP socket of a TLS front.
    TlsTcp { front: FrontId },
    /// The front's end of the socketpair whose other end is the plaintext connection.
    TlsInner { front: FrontId },
}

#[derive(Debug)]
struct Sock<F = OwnedFd> {
    /// The descriptor (a stand-in number in [`footprint::simulate`]).
    fd: F,
    state: SockState,
    /// How the peer reached us (a TLS front's inner end is `Tls`).
    transport: Transport,
    /// A client's own connection, or one another node carried over the mesh.
    origin: Origin,
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
    /// Cluster events to the supervisor (used only with `EngineConfig::cluster`).
    pub(crate) cluster_out: OwnedFd,
    pub(crate) peers: Vec<OwnedFd>,
    pub(crate) listeners: Vec<(OwnedFd, super::ListenerKind)>,
    pub(crate) counters: WorkerCounters,
    /// The supervisor's share for this worker, if it was started with one: a reload
    /// message's new share replaces it before the router reloads.
    pub(crate) share: Option<super::ShareFile>,
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
    /// Rate limit for the warning that the kernel refused pipe sizes.
    pipe_warn: WarnLimit,
    router: R,
    ring: IoUring,
    socks: IdSlab<SockId, Sock>,
    sock_gens: Generations<SockId>,
    tunnels: IdSlab<TunnelId, Tunnel>,
    tunnel_gens: Generations<TunnelId>,
    room: Room<SockId>,
    pipes: PipePool,
    inbox: OwnedFd,
    http_out: OwnedFd,
    cluster_out: OwnedFd,
    /// Presence changes being sent (reused buffer) and those not sent yet (latest state
    /// per key), with `EngineConfig::cluster`.
    presence_changes: Vec<(RendezvousKey, bool)>,
    presence_backlog: std::collections::HashMap<RendezvousKey, bool>,
    peers: Vec<OwnedFd>,
    listeners: Vec<(OwnedFd, super::ListenerKind)>,
    /// `TCP_NODELAY` is set on every listener, so accepted sockets inherit it and a
    /// pairing need not set it on each (see `pair`).
    listeners_nodelay: bool,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    tls_source: Option<super::TlsSource>,
    share: Option<super::ShareFile>,
    fronts: IdSlab<FrontId, TlsFrontEntry>,
    /// The front behind each plaintext end of a front's socketpair in this table (see
    /// `TlsFrontEntry::outer`).
    front_of_outer: std::collections::HashMap<SockId, FrontId>,
    /// Tunnels whose two TLS fronts were fused (they have no `Tunnel` entry).
    fused_pairs: usize,
    accept_armed: Vec<bool>,
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
    counters: WorkerCounters,
    head_deadlines: VecDeque<(Instant, SockId, u32)>,
    linger_deadlines: VecDeque<(Instant, SockId, u32)>,
    pending_handoffs: VecDeque<PendingHandoff>,
    peer_poll_armed: Vec<bool>,
    shutdown_deadline: Option<Instant>,
    /// Set once a draining worker has no tunnels left: it accepts nothing more.
    accept_stopped: bool,
    now: Instant,
    /// Descriptors the worker holds besides sockets and pipes (ring, inbox, peers,
    /// listeners, stdio), measured once at start; what the worker opens and closes
    /// later it counts itself ([`Self::held_fds`]).
    fd_overhead: usize,
    /// The socket cap implied by the current soft `RLIMIT_NOFILE`, re-read every second
    /// (an operator may lower it on a running worker).
    limit_cap: usize,
    next_idle_sweep: Instant,
    /// Next once-a-second check: the descriptor limit, the pipe pool's refusals.
    next_second: Instant,
    /// Next time the router is asked for keys to evict ([`Router::evictions`]).
    next_eviction_poll: Instant,
    evict_keys: Vec<RendezvousKey>,
    /// Family reports the router produced ([`Router::reports`]) not yet sent to the
    /// supervisor (its inbox was full); retried every turn, oldest first.
    pending_reports: VecDeque<Vec<u8>>,
    scratch: Vec<u8>,
    msg_buf: Vec<u8>,
    cqes: Vec<(u64, i32, u32)>,
    expired: Vec<crate::room::Expired<SockId>>,
    /// Connections waiting for a cluster-wide claim's verdict.
    claims: claims::Claims,
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
            mut room,
        } = Tables::new(&cfg);
        if cfg.cluster {
            room.track_presence();
        }
        Ok(Self {
            pipes: PipePool::new(cfg.max_pipes_per_worker, cfg.pipe_size)
                .with_bulk_size(cfg.bulk_pipe_size),
            index: fds.index,
            workers: fds.workers.max(1),
            placement: fds.placement,
            peer_counters: fds.peer_counters,
            refused_warn: WarnLimit::default(),
            lost_warn: WarnLimit::default(),
            pipe_warn: WarnLimit::default(),
            router,
            ring,
            socks,
            sock_gens,
            tunnels: IdSlab::with_capacity(0),
            tunnel_gens: Generations::with_capacity(0),
            room,
            inbox: fds.inbox,
            http_out: fds.http_out,
            cluster_out: fds.cluster_out,
            presence_changes: Vec::new(),
            presence_backlog: std::collections::HashMap::new(),
            peer_poll_armed: vec![false; fds.peers.len() + 1],
            peers: fds.peers,
            accept_armed: vec![false; fds.listeners.len()],
            listeners_nodelay: fds
                .listeners
                .iter()
                .all(|(l, _)| sys::set_nodelay(l.as_fd()).is_ok()),
            listeners: fds.listeners,
            tls,
            tls_source,
            share: fds.share,
            fronts: IdSlab::with_capacity(0),
            front_of_outer: std::collections::HashMap::new(),
            fused_pairs: 0,
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
            next_second: now,
            next_eviction_poll: now,
            evict_keys: Vec::new(),
            pending_reports: VecDeque::new(),
            scratch: vec![0; 64 * 1024],
            msg_buf: Vec::new(),
            cqes: Vec::with_capacity(1024),
            expired: Vec::new(),
            claims: claims::Claims::default(),
            cfg,
        })
    }

    /// Runs until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        // What waits in the inbox goes first (it also arms the inbox): a replacement
        // worker applies the family control messages the supervisor queued for it
        // (`Engine::take_restarted`) before it accepts a connection they concern.
        self.on_inbox();
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        loop {
            self.wait()?;
            self.now = Instant::now();
            self.handle_completions();
            self.on_tick();
            self.flush_presence();
            self.publish_budget();
            if let Some(deadline) = self.shutdown_deadline {
                if self.open_tunnels() == 0 && !self.accept_stopped {
                    // Drained: stop answering new connections (they go to workers still
                    // draining, or are reset when the last listener copy closes at exit)
                    // and leave once the refusals in flight are written.
                    self.accept_stopped = true;
                    self.cancel_accepts();
                }
                if self.open_tunnels() == 0 && self.socks.is_empty() {
                    break;
                }
                if self.now >= deadline {
                    self.abort_all();
                    break;
                }
            }
        }
        // Flush the cancels of the final teardown; the process exits right after.
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
            // poll, cancel, accept without an address, and splice. The
            // descriptors are owned by `self` (listeners, inbox, peer sockets, sockets in
            // `self.socks`, pipes in tunnel directions) and are kept open until the
            // entry's terminal completion arrives (tunnels with a splice in flight are not
            // torn down until it completes; polls on closed sockets are cancelled).
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
            .user_data(UserData::plain(Kind::Accept, i));
        self.push(e);
        self.accept_armed[i] = true;
    }

    fn cancel_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.accept_armed[i] {
                let e = opcode::AsyncCancel::new(UserData::plain(Kind::Accept, i))
                    .build()
                    .user_data(UserData::IGNORE);
                self.push(e);
            }
        }
    }

    fn arm_inbox(&mut self) {
        let e = opcode::PollAdd::new(types::Fd(self.inbox.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(UserData::plain(Kind::Inbox, 0));
        self.push(e);
    }

    /// Arms a one-shot poll on a socket for the read role or the write role.
    fn arm(&mut self, sock: SockId, role: PollRole, events: u32) {
        let Some(s) = self.socks.get(sock) else {
            return;
        };
        if s.armed[role.index()].is_some() {
            return;
        }
        let kind = match role {
            PollRole::Read => Kind::PollRead,
            PollRole::Write => Kind::PollWrite,
        };
        let ud = UserData::sock(kind, self.sock_gens.get(sock), sock);
        let e = opcode::PollAdd::new(types::Fd(s.fd.as_raw_fd()), events)
            .build()
            .user_data(ud);
        self.socks[sock].armed[role.index()] = Some(ud);
        self.push(e);
    }

    /// Waits for room on `sock` with a multishot poll (see the `PollWrite` completion):
    /// it stays armed, as `arm` sees, until the socket closes.
    fn arm_multishot_write(&mut self, sock: SockId) {
        let Some(s) = self.socks.get(sock) else {
            return;
        };
        let ud = UserData::sock(Kind::PollWrite, self.sock_gens.get(sock), sock);
        let e = opcode::PollAdd::new(types::Fd(s.fd.as_raw_fd()), POLL_WRITE)
            .multi(true)
            .build()
            .user_data(ud);
        self.socks[sock].armed[PollRole::Write.index()] = Some(ud);
        self.push(e);
    }

    /// Removes every armed poll of a socket and invalidates late completions.
    fn disarm(&mut self, sock: SockId) {
        let Some(s) = self.socks.get_mut(sock) else {
            return;
        };
        let armed = std::mem::take(&mut s.armed);
        for ud in armed.into_iter().flatten() {
            // ASYNC_CANCEL, not POLL_REMOVE: a poll remove that meets a wake-up in
            // progress fails with EALREADY, and if that wake-up then finds no event the
            // kernel re-arms the poll, which keeps the socket's file open after our close
            // (its peer never sees the end). Cancellation sets a flag the wake-up honours.
            let e = opcode::AsyncCancel::new(ud)
                .build()
                .user_data(UserData::IGNORE);
            self.push(e);
        }
        self.sock_gens.bump(sock);
    }

    /// Tunnels open now: spliced ones and fused TLS pairs.
    fn open_tunnels(&self) -> usize {
        self.tunnels.len() + self.fused_pairs
    }

    /// Publishes [`Self::open_tunnels`] (the active-tunnels gauge).
    fn publish_tunnels(&self) {
        self.counters
            .set(Counter::ActiveTunnels, self.open_tunnels() as u64);
    }

    // ----- socket table -----

    fn insert_sock(&mut self, fd: OwnedFd, state: SockState) -> SockId {
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
    fn close_sock(&mut self, sock: SockId, reset: bool) {
        if !self.socks.contains(sock) {
            return;
        }
        self.disarm(sock);
        self.forget_outer(sock);
        let s = self.socks.remove(sock);
        if reset {
            let _ = sys::set_linger_zero(s.fd.as_fd());
        }
        drop(s);
    }

    /// Refuses a descriptor that has no slot yet: it is taken into the table only to
    /// have its refusal written, then linger.
    fn refuse_fd(&mut self, fd: OwnedFd, r: Rejection) {
        self.refuse_fd_with(fd, r, r.response());
    }

    /// Refuses a connection not in the table yet with exact bytes (none: a clean
    /// close), counted under `r`.
    fn refuse_fd_with(&mut self, fd: OwnedFd, r: Rejection, response: Vec<u8>) {
        let idx = self.insert_sock(
            fd,
            SockState::Lingering {
                deadline: self.now,
                discarded: 0,
            },
        );
        self.refuse_with(idx, r, response);
    }

    fn gen_ok(&self, sock: SockId, generation: u32) -> bool {
        self.socks.contains(sock) && self.sock_gens.is_current(sock, generation)
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
        let ud = UserData::decode(ud);
        match ud.kind {
            Kind::Ignore => {}
            Kind::Accept => self.on_accept(ud.slot, res, flags),
            Kind::Inbox => self.on_inbox(),
            Kind::PeerWritable => {
                if let Some(a) = self.peer_poll_armed.get_mut(ud.slot) {
                    *a = false;
                }
                self.flush_handoffs();
            }
            Kind::PollRead | Kind::PollWrite => {
                let sock = ud.sock_id();
                if !self.gen_ok(sock, ud.generation) {
                    return;
                }
                let role = if ud.kind == Kind::PollWrite {
                    PollRole::Write
                } else {
                    PollRole::Read
                };
                // A multishot poll stays armed while the kernel says more will come.
                let still_armed = cqueue::more(flags);
                if !still_armed {
                    self.socks[sock].armed[role.index()] = None;
                }
                if role == PollRole::Write && decide::write_poll_not_writable(res) {
                    // io_uring reports a peer's half-close (POLLRDHUP) to every poll, so
                    // a one-shot wait for room on a socket whose peer stopped sending
                    // fires again at once, forever, while the peer does not read: a
                    // busy loop. Wait for room with a multishot poll instead, which
                    // posts only on the socket's wake-ups, and skip the ones without
                    // room.
                    if !still_armed {
                        self.arm_multishot_write(sock);
                    }
                    return;
                }
                self.on_ready(sock, role, res);
            }
            Kind::SpliceIn | Kind::SpliceOut => self.on_splice(ud, res),
        }
    }

    fn on_accept(&mut self, listener: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed[listener] = false;
        }
        if res < 0 {
            match decide::accept_failed(-res, self.accept_armed[listener]) {
                AcceptFailed::BackOff => {
                    // Out of descriptors: back off (doubling, capped) and leave tunnels alone.
                    self.counters.add(Counter::AcceptBackoffs, 1);
                    self.pause_accepting();
                }
                AcceptFailed::Rearm => self.arm_accept(listener),
                AcceptFailed::Nothing => {}
            }
            return;
        }
        // SAFETY: a successful accept completion carries a fresh descriptor installed in
        // this process's table; nothing else owns it.
        let fd = unsafe { sys::owned_from_raw(res) };
        self.counters.add(Counter::Accepted, 1);
        self.accept_backoff = Duration::from_millis(10);
        let fixed_id = self.listeners[listener].1.fixed_id;
        if self.shutdown_deadline.is_some() {
            match fixed_id {
                // Its client speaks its own protocol: no HTTP answer, a clean close.
                Some(_) => self.refuse_fd_with(fd, Rejection::ShuttingDown, Vec::new()),
                None => self.refuse_fd(fd, Rejection::ShuttingDown),
            }
            if !self.accept_armed[listener] && self.accept_paused_until.is_none() {
                self.arm_accept(listener);
            }
            return;
        }
        if let Some(id) = fixed_id {
            self.accept_fixed(fd, id);
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
            let mut to = None;
            let next = decide::over_budget(
                self.listeners[listener].1.transport,
                self.pending_handoffs.len(),
                MAX_PENDING_HANDOFFS,
                || {
                    to = self.peer_with_room();
                    to.is_some()
                },
            );
            if let (OverBudget::PassOn, Some(to)) = (next, to) {
                let queued = self.queue_handoff(PendingHandoff {
                    to,
                    fd,
                    bytes: Vec::new(),
                    transport: Transport::Plain,
                    origin: Origin::Client,
                    carry: handoff::Carry::Unread,
                });
                if let Err(fd) = queued {
                    self.refuse_fd(fd, Rejection::Overloaded);
                }
                return;
            }
            self.refuse_fd(fd, Rejection::Overloaded);
            return;
        }
        let (fd, front) = match self.listeners[listener].1.transport {
            Transport::Plain => (fd, None),
            Transport::Tls => match self.open_front(fd) {
                Some((outer, front)) => (outer, Some(front)),
                None => return,
            },
        };
        let transport = self.listeners[listener].1.transport;
        let deadline = self.now + self.cfg.head_timeout;
        let idx = self.insert_sock(
            fd,
            SockState::Head {
                buf: Vec::new(),
                handed_in: false,
            },
        );
        self.socks[idx].transport = transport;
        if let Some(front) = front {
            self.front_outer(front, idx);
        }
        self.head_deadlines
            .push_back((deadline, idx, self.sock_gens.get(idx)));
        self.read_head(idx);
        if !self.accept_armed[listener] && self.accept_paused_until.is_none() {
            self.arm_accept(listener);
        }
    }

    fn pause_accepting(&mut self) {
        self.cancel_accepts();
        self.accept_paused_until = Some(self.now + self.accept_backoff);
        self.accept_backoff = decide::next_backoff(self.accept_backoff);
    }

    fn on_inbox(&mut self) {
        let mut buf = std::mem::take(&mut self.msg_buf);
        loop {
            match msg::try_recv(self.inbox.as_fd(), &mut buf) {
                Ok(Some(Message::Conn(fd, bytes, transport, origin))) => {
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
                    self.socks[idx].origin = origin;
                    if self.held_fds() > self.socket_cap() {
                        // A sender's view of this worker lagged; the budget still holds.
                        self.refuse(idx, Rejection::Overloaded);
                        self.warn_refused(
                            "a handed-over connection arrived above the socket budget",
                        );
                        continue;
                    }
                    self.head_deadlines
                        .push_back((deadline, idx, self.sock_gens.get(idx)));
                    self.process_head(idx);
                }
                Ok(Some(Message::FixedReach(fd, id))) => {
                    let idx = self.insert_sock(
                        fd,
                        SockState::Head {
                            buf: Vec::new(),
                            handed_in: true,
                        },
                    );
                    self.counters_release_inbound();
                    if self.held_fds() > self.socket_cap() {
                        self.refuse_with(idx, Rejection::Overloaded, Vec::new());
                        self.warn_refused(
                            "a connection for a fixed id arrived above the socket budget",
                        );
                        continue;
                    }
                    if self.shutdown_deadline.is_some() {
                        self.refuse_with(idx, Rejection::ShuttingDown, Vec::new());
                        continue;
                    }
                    self.reach_fixed(idx, id);
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
                        .push_back((deadline, idx, self.sock_gens.get(idx)));
                    self.read_head(idx);
                }
                Ok(Some(Message::Injected(fd, bytes, transport))) => {
                    self.on_injected(fd, bytes, transport);
                }
                Ok(Some(Message::RemoteFound(fd, token))) => self.on_remote_found(fd, token),
                Ok(Some(Message::Verdict(id, verdict))) => self.on_verdict(id, verdict),
                Ok(Some(Message::Evict(key))) => self.replaced_elsewhere(&key),
                // Claims go to the supervisor, never to a worker.
                Ok(Some(Message::Claim(_))) => {}
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
                Ok(Some(Message::Reload(share))) => {
                    match (share, &self.share) {
                        (msg::ReloadShare::New(fd), Some(current)) => current.replace(fd),
                        (msg::ReloadShare::Lost, _) => {
                            tracing::warn!(
                                worker = self.index,
                                "a reload's share arrived without its descriptor (descriptor table full); keeping the previous secrets and certificate"
                            );
                            continue;
                        }
                        // A share for a worker started without one is not read.
                        (msg::ReloadShare::New(_) | msg::ReloadShare::Unchanged, _) => {}
                    }
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
                Ok(Some(Message::Family(bytes))) => self.on_family_message(&bytes),
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

    fn on_ready(&mut self, sock: SockId, role: PollRole, res: i32) {
        match decide::on_ready(&self.socks[sock].state, role) {
            OnReady::ReadHead => self.read_head(sock),
            OnReady::LeaveRoom => self.on_room_hangup(sock, res),
            OnReady::WriteRefusal => self.write_refusal(sock),
            OnReady::Linger => self.linger(sock),
            OnReady::Pump { tunnel, direction } => self.pump_and_arm(tunnel, direction),
            OnReady::PumpFront { front } => self.pump_front(front),
        }
    }
}
