//! A connection's head (read, parse, classify, route), its place in the room, and its
//! refusal and linger.

use super::decide::{self, HeadNext, PollRole};
use super::ids::SockId;
use super::{
    LINGER, LINGER_BYTES, POLL_HANGUP, POLL_READ, POLL_WRITE, Pairing, REQUEST_LINE_PROBE,
    SockState, Worker, footprint,
};
use crate::driver::shm::Counter;
use crate::driver::sys;
use crate::head::{HeadStatus, RequestHead, parse_head};
use crate::reject::{OK_RESPONSE, Rejection};
use crate::room::{ParkOutcome, ReachOutcome};
use crate::route::{HalfClose, ParkMode, Route, Router};
use crate::target::{RendezvousId, RendezvousKey};
use std::io;
use std::os::fd::AsFd;

/// What [`Worker::try_parse`] did with a buffered head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parsed {
    /// Not complete yet: keep reading.
    Partial,
    /// Complete and routed, or refused (bad, or the socket is no longer reading one).
    Handled,
}

impl<R: Router> Worker<R> {
    pub(super) fn read_head(&mut self, sock: SockId) {
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
                    let new_line = buf[old..].contains(&b'\n');
                    if !decide::parse_after_read(
                        old,
                        buf.len(),
                        new_line,
                        limit,
                        REQUEST_LINE_PROBE,
                    ) {
                        continue;
                    }
                    match self.try_parse(sock) {
                        Parsed::Handled => return,
                        Parsed::Partial => {
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
                    self.arm(sock, PollRole::Read, POLL_READ);
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

    /// Parses the buffered head, and routes or refuses it when it is complete or bad.
    pub(super) fn try_parse(&mut self, sock: SockId) -> Parsed {
        let SockState::Head { buf, .. } = &self.socks[sock].state else {
            return Parsed::Handled;
        };
        match parse_head(buf, &self.cfg.head_limits()) {
            Ok(HeadStatus::Partial) => Parsed::Partial,
            Ok(HeadStatus::Complete(head)) => {
                self.dispatch(sock, head);
                Parsed::Handled
            }
            Err(e) => {
                self.refuse(sock, e.into());
                Parsed::Handled
            }
        }
    }

    /// A mesh connection from the supervisor (see `msg::Message::Injected`): read and
    /// route like an accepted connection, marked mesh-origin. Nobody reserved room in
    /// this worker's budget for it, so nothing is released; above the budget it is
    /// refused like any connection.
    pub(super) fn on_injected(
        &mut self,
        fd: std::os::fd::OwnedFd,
        bytes: Vec<u8>,
        transport: crate::route::Transport,
    ) {
        let idx = self.insert_sock(
            fd,
            SockState::Head {
                buf: bytes,
                handed_in: false,
            },
        );
        self.socks[idx].transport = transport;
        self.socks[idx].origin = crate::driver::Origin::Mesh;
        if self.held_fds() > self.socket_cap() {
            self.refuse(idx, Rejection::Overloaded);
            self.warn_refused("a mesh connection arrived above the socket budget");
            return;
        }
        let deadline = self.now + self.cfg.head_timeout;
        self.head_deadlines
            .push_back((deadline, idx, self.sock_gens.get(idx)));
        let has_line =
            matches!(&self.socks[idx].state, SockState::Head { buf, .. } if buf.contains(&b'\n'));
        if !has_line || self.try_parse(idx) == Parsed::Partial {
            self.read_head(idx);
        }
    }

    /// A complete head arrived through the inbox: parse and route it.
    pub(super) fn process_head(&mut self, sock: SockId) {
        if self.try_parse(sock) == Parsed::Partial {
            // A hand-off always carries a complete head; anything else is refused.
            self.refuse(sock, Rejection::MalformedHead);
        }
    }

    pub(super) fn dispatch(&mut self, sock: SockId, head: RequestHead) {
        let handed_in = matches!(
            self.socks[sock].state,
            SockState::Head {
                handed_in: true,
                ..
            }
        );
        let transport = self.socks[sock].transport;
        let classified = self.router.classify(&head, transport);
        match decide::after_classify(
            classified,
            &self.placement,
            self.index,
            self.workers,
            handed_in,
        ) {
            HeadNext::Refuse(r) => self.refuse(sock, r),
            HeadNext::HandOff { to } => self.hand_off(sock, to),
            HeadNext::Route => self.route(sock, &head),
        }
    }

    pub(super) fn route(&mut self, sock: SockId, head: &RequestHead) {
        if self.shutdown_deadline.is_some() {
            self.refuse(sock, Rejection::ShuttingDown);
            return;
        }
        let SockState::Head { buf, .. } = &mut self.socks[sock].state else {
            return;
        };
        let early = buf.split_off(head.head_len.min(buf.len()));
        let now_unix = super::timers::unix_now();
        let transport = self.socks[sock].transport;
        let route = self.router.route(head, &early, now_unix, transport);
        // A cluster takes the claim after every decision, so that none outlives it. A
        // single node never asks (a router's unread claim is overwritten by its next
        // decision): no claim is built, nothing is sent.
        let claim = if self.cfg.cluster_claims {
            self.router.claim(now_unix)
        } else {
            None
        };
        if let Route::Reject(r) = &route {
            let r = *r;
            if self.waits_remote(sock, r) {
                // Not here: another node may hold the key (asked for off this path).
                self.wait_remote(sock, head, early, r);
                return;
            }
        }
        if self.cfg.cluster_claims && matches!(route, Route::Park { .. } | Route::Reach(_)) {
            // A replace park without a claim of its own is announced to the other nodes.
            let claim = claim.or_else(|| match &route {
                Route::Park {
                    key,
                    mode: ParkMode::Replace,
                    ..
                } => Some(crate::claim::replace_claim(key)),
                _ => None,
            });
            if let Some(claim) = claim {
                self.hold_for_claim(sock, head, early, route, claim, now_unix);
                return;
            }
        }
        self.carry_out(sock, route, early);
    }

    /// Carries out a route decision for `sock` (`early`: the bytes after its head).
    pub(super) fn carry_out(&mut self, sock: SockId, route: Route, early: Vec<u8>) {
        match route {
            Route::Reject(r) => self.refuse(sock, r),
            Route::RejectWith(r, response) => self.refuse_with(sock, r, response),
            Route::Http => self.hand_off(sock, self.workers),
            Route::Park { key, mode, notice } => {
                if mode == ParkMode::Replace {
                    let mut old = Vec::new();
                    self.room.take_parked(&key, &mut old);
                    for s in old {
                        self.close_sock(s, false);
                    }
                }
                self.park(sock, key, notice);
            }
            Route::Reach(plan) => {
                // With a cluster, a client's own reach may be carried to another node:
                // keep its bytes verbatim for the lookup (a mesh-origin one never is).
                let raw = (self.cfg.cluster
                    && self.socks[sock].origin == crate::driver::Origin::Client)
                    .then(|| match &self.socks[sock].state {
                        SockState::Head { buf, .. } => [buf.as_slice(), &early].concat(),
                        _ => Vec::new(),
                    });
                let mut to_server = plan.forward;
                to_server.extend_from_slice(&early);
                let key = plan.key;
                let pairing = Pairing {
                    key,
                    greeting: plan.greeting,
                    to_server,
                    not_parked: plan.not_parked,
                    half_close: plan.half_close,
                };
                self.reach(sock, Box::new(pairing));
                if let Some(raw) = raw
                    && matches!(
                        self.socks.get(sock).map(|s| &s.state),
                        Some(SockState::Waiting { .. })
                    )
                {
                    self.send_lookup(sock, key, raw);
                }
            }
        }
    }

    /// Closes every connection parked under `key` (another node's newer replace park).
    /// Another node's replace park for `key`: closes what is parked here under it and
    /// tells the router.
    pub(super) fn replaced_elsewhere(&mut self, key: &RendezvousKey) {
        self.evict_key(key);
        // A replace park under the key still waiting here for its claims is newer than
        // the one announced (the supervisor holds other nodes' announcements from the
        // moment it decides this park's own, so this one was published before it): the
        // router's state for the key is that park's, and stays.
        if self.claims.replace_park_pending(key) {
            return;
        }
        self.router
            .replaced_elsewhere(key, super::timers::unix_now());
    }

    pub(super) fn evict_key(&mut self, key: &RendezvousKey) {
        let mut old = Vec::new();
        self.room.take_parked(key, &mut old);
        for s in old {
            self.close_sock(s, false);
        }
        self.sync_room_counters();
    }

    /// Parks `sock` under `key` (`notice`: it asked to be told of its pairing, see
    /// [`crate::reject::PAIRING_NOTICE`]), or pairs it with a waiting client at once.
    pub(super) fn park(&mut self, sock: SockId, key: RendezvousKey, notice: bool) {
        let ok = if notice {
            crate::reject::OK_RESPONSE_WITH_NOTICE
        } else {
            OK_RESPONSE
        };
        match self.room.park(key, sock, self.now) {
            ParkOutcome::Full(sock) => self.refuse(sock, Rejection::RoomFull),
            ParkOutcome::Parked { handle, evicted } => {
                if sys::send(self.socks[sock].fd.as_fd(), ok).ok() != Some(ok.len()) {
                    self.room.remove(handle);
                    self.close_sock(sock, false);
                } else {
                    self.socks[sock].state = SockState::Parked { handle, notice };
                    self.arm(sock, PollRole::Read, POLL_HANGUP);
                }
                if let Some(old) = evicted {
                    self.close_sock(old, false);
                }
            }
            ParkOutcome::Paired { server, client } => {
                let pairing = self.take_pairing(client);
                if sys::send(self.socks[server].fd.as_fd(), ok).ok() != Some(ok.len()) {
                    // The server vanished between its head and its 200: the client keeps
                    // waiting for another one.
                    self.close_sock(server, false);
                    self.disarm(client);
                    self.reach(client, pairing);
                    return;
                }
                self.pair(client, server, *pairing, notice);
            }
        }
        self.sync_room_counters();
    }

    /// Takes a waiting client's pairing plan out of its state.
    pub(super) fn take_pairing(&mut self, client: SockId) -> Box<Pairing> {
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

    pub(super) fn reach(&mut self, sock: SockId, pairing: Box<Pairing>) {
        match self.room.reach(pairing.key, sock, self.now) {
            ReachOutcome::Full(sock) => self.refuse(sock, Rejection::TooManyWaiting),
            ReachOutcome::Waiting { handle } => {
                self.socks[sock].state = SockState::Waiting { handle, pairing };
                self.arm(sock, PollRole::Read, POLL_HANGUP);
            }
            ReachOutcome::Paired { server, client } => {
                let notice = matches!(
                    self.socks[server].state,
                    SockState::Parked { notice: true, .. }
                );
                self.pair(client, server, *pairing, notice);
            }
        }
        self.sync_room_counters();
    }

    /// A connection accepted on a listener for `id` (`Listener::fixed_id`): a client of
    /// the id with no head. Reaches here when this worker owns the id, else goes unread
    /// to the owner (within the owner's socket budget, not this worker's: it is not
    /// kept here). Refusals close it without a byte, as its client speaks its own
    /// protocol.
    pub(super) fn accept_fixed(&mut self, fd: std::os::fd::OwnedFd, id: RendezvousId) {
        let owner = RendezvousKey::uuid(id.0).owner(&self.placement);
        if owner != self.index {
            if !self.peer_counters[owner].reserve_inbound() {
                self.counters.add(Counter::HandoffsRefused, 1);
                self.refuse_fd_with(fd, Rejection::Overloaded, Vec::new());
                self.warn_refused("the worker owning the fixed id is at its socket budget");
                return;
            }
            let queued = self.queue_handoff(super::handoff::PendingHandoff {
                to: owner,
                fd,
                bytes: Vec::new(),
                transport: crate::route::Transport::Plain,
                origin: crate::driver::Origin::Client,
                carry: super::handoff::Carry::FixedReach(id),
            });
            if let Err(fd) = queued {
                self.refuse_fd_with(fd, Rejection::Overloaded, Vec::new());
            }
            return;
        }
        if self.held_fds() + self.inbound() >= self.socket_cap() {
            self.refuse_fd_with(fd, Rejection::Overloaded, Vec::new());
            self.warn_refused("a connection for a fixed id arrived at the socket budget");
            return;
        }
        let idx = self.insert_sock(
            fd,
            SockState::Head {
                buf: Vec::new(),
                handed_in: false,
            },
        );
        self.reach_fixed(idx, id);
    }

    /// Puts a client of a fixed id in the room: no greeting, nothing forwarded ahead of
    /// its own bytes (still in its socket, spliced once paired), and a close without a
    /// byte when nothing parks within the client wait.
    pub(super) fn reach_fixed(&mut self, sock: SockId, id: RendezvousId) {
        self.counters.add(Counter::FixedReaches, 1);
        self.reach(
            sock,
            Box::new(Pairing {
                key: RendezvousKey::uuid(id.0),
                greeting: Vec::new(),
                to_server: Vec::new(),
                not_parked: Some(Vec::new()),
                half_close: HalfClose::PerDirection,
            }),
        );
    }

    pub(super) fn on_room_hangup(&mut self, sock: SockId, _res: i32) {
        let handle = match &self.socks[sock].state {
            SockState::Parked { handle, .. } | SockState::Waiting { handle, .. } => *handle,
            _ => return,
        };
        self.room.remove(handle);
        self.close_sock(sock, false);
        self.sync_room_counters();
    }

    pub(super) fn sync_room_counters(&self) {
        self.counters
            .set(Counter::Parked, self.room.parked() as u64);
        self.counters
            .set(Counter::Waiting, self.room.waiting() as u64);
    }

    pub(super) fn refuse(&mut self, sock: SockId, r: Rejection) {
        self.refuse_with(sock, r, r.response());
    }

    /// Refuses with exact bytes, counted under `r`.
    pub(super) fn refuse_with(&mut self, sock: SockId, r: Rejection, response: Vec<u8>) {
        self.counters.reject(r);
        self.disarm(sock);
        self.socks[sock].state = SockState::Refusing {
            response,
            written: 0,
        };
        self.write_refusal(sock);
    }

    pub(super) fn write_refusal(&mut self, sock: SockId) {
        let s = &mut self.socks[sock];
        let SockState::Refusing { response, written } = &mut s.state else {
            return;
        };
        while *written < response.len() {
            match sys::send(s.fd.as_fd(), &response[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.arm(sock, PollRole::Write, POLL_WRITE);
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
            .push_back((deadline, sock, self.sock_gens.get(sock)));
        self.linger(sock);
    }

    pub(super) fn linger(&mut self, sock: SockId) {
        loop {
            let s = &mut self.socks[sock];
            let SockState::Lingering { discarded, .. } = &mut s.state else {
                return;
            };
            match sys::recv(s.fd.as_fd(), &mut self.scratch) {
                Ok(n) => {
                    *discarded += n;
                    if decide::linger_over(n, *discarded, LINGER_BYTES) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.arm(sock, PollRole::Read, POLL_READ);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close_sock(sock, false);
    }
}
