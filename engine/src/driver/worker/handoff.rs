//! Hand-offs: passing a connection (with the bytes read from it) to the worker that owns
//! its key or to the HTTP side, and the socket-budget reservation that keeps the receiver
//! under its descriptor budget.

use super::decide::{self, HandoffFailed};
use super::ids::{Kind, SockId, UserData};
use super::{MAX_PENDING_HANDOFFS, POLL_WRITE, SockState, Worker};
use crate::driver::shm::Counter;
use crate::driver::{Origin, msg};
use crate::reject::Rejection;
use crate::route::{Router, Transport};
use io_uring::{opcode, types};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

#[derive(Debug)]
pub(super) struct PendingHandoff {
    pub(super) to: usize,
    pub(super) fd: OwnedFd,
    pub(super) bytes: Vec<u8>,
    pub(super) transport: Transport,
    /// Carried into the receiver's socket table.
    pub(super) origin: Origin,
    /// What the message says about the connection.
    pub(super) carry: Carry,
}

/// What a hand-off tells the receiver about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carry {
    /// The bytes read from it so far (a head, complete or not).
    Read,
    /// Accepted here at the socket budget and passed on unread ([`msg::Message::Accepted`]).
    Unread,
    /// Accepted on a listener for this id and passed on unread to the id's owner
    /// ([`msg::Message::FixedReach`]).
    FixedReach(crate::target::RendezvousId),
}

impl<R: Router> Worker<R> {
    /// Sockets and pipe ends held now (what the socket cap limits).
    pub(super) fn held_fds(&self) -> usize {
        self.socks.len() + 2 * self.pipes.held() + self.pending_handoffs.len()
    }

    /// Another worker with room under its budget, reserved for one connection (round
    /// robin from the next index).
    pub(super) fn peer_with_room(&self) -> Option<usize> {
        (1..self.workers)
            .map(|k| (self.index + k) % self.workers)
            .find(|&j| self.peer_counters[j].reserve_inbound())
    }

    /// Connections other workers are handing to this one now (counted against its
    /// budget by the senders).
    pub(super) fn inbound(&self) -> usize {
        usize::try_from(self.counters.get(Counter::Inbound)).unwrap_or(usize::MAX)
    }

    /// The most sockets and pipe ends this worker may hold: the configured budget, or
    /// less when the soft descriptor limit was lowered while running.
    pub(super) fn socket_cap(&self) -> usize {
        self.cfg.max_sockets_per_worker.min(self.limit_cap)
    }

    /// Passes a socket (with every byte read from it) to worker `to`, or to the HTTP
    /// inbox when `to == self.workers`.
    pub(super) fn hand_off(&mut self, sock: SockId, to: usize) {
        if to < self.workers && !self.peer_counters[to].reserve_inbound() {
            // The owner is at its socket budget: refuse here, where the connection still
            // has a descriptor, rather than send it to be dropped there.
            self.counters.add(Counter::HandoffsRefused, 1);
            self.refuse(sock, Rejection::Overloaded);
            self.warn_refused("the worker owning the id is at its socket budget");
            return;
        }
        self.disarm(sock);
        self.forget_outer(sock);
        let s = self.socks.remove(sock);
        let transport = s.transport;
        let origin = s.origin;
        let bytes = match s.state {
            SockState::Head { buf, .. } => buf,
            _ => Vec::new(),
        };
        let queued = self.queue_handoff(PendingHandoff {
            to,
            fd: s.fd,
            bytes,
            transport,
            origin,
            carry: Carry::Read,
        });
        if let Err(fd) = queued {
            self.refuse_fd(fd, Rejection::Overloaded);
        }
    }

    /// Queues `handoff` (its receiver's budget already reserved), counts it as sent
    /// (`HandoffsOut`, or `HttpHandoffs` for the HTTP inbox) and sends what the socket
    /// takes now. With [`MAX_PENDING_HANDOFFS`] already queued it is neither queued nor
    /// counted: the reservation is given back and the descriptor returned, for the
    /// caller to refuse in its own way.
    pub(super) fn queue_handoff(&mut self, handoff: PendingHandoff) -> Result<(), OwnedFd> {
        if self.pending_handoffs.len() >= MAX_PENDING_HANDOFFS {
            self.unreserve(handoff.to);
            return Err(handoff.fd);
        }
        let sent = if handoff.to == self.workers {
            Counter::HttpHandoffs
        } else {
            Counter::HandoffsOut
        };
        self.counters.add(sent, 1);
        self.pending_handoffs.push_back(handoff);
        self.flush_handoffs();
        Ok(())
    }

    /// Gives back a budget reservation for a hand-off to `to` that will not be sent.
    pub(super) fn unreserve(&self, to: usize) {
        if let Some(c) = self.peer_counters.get(to) {
            c.release_inbound();
        }
    }

    pub(super) fn counters_release_inbound(&self) {
        self.counters.release_inbound();
    }

    /// Logs a refusal for lack of budget, at most once per [`WARN_INTERVAL`].
    pub(super) fn warn_refused(&mut self, why: &'static str) {
        if let Some(suppressed) = self.refused_warn.ready(self.now) {
            tracing::warn!(
                worker = self.index,
                suppressed,
                "connection refused with 503 overloaded: {why}"
            );
        }
    }

    pub(super) fn handoff_socket(&self, to: usize) -> BorrowedFd<'_> {
        if to >= self.workers {
            self.http_out.as_fd()
        } else {
            self.peers[to].as_fd()
        }
    }

    pub(super) fn flush_handoffs(&mut self) {
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
            let sent = match h.carry {
                Carry::Unread => msg::send_accepted(self.handoff_socket(to), h.fd.as_fd()),
                Carry::FixedReach(id) => {
                    msg::send_fixed_reach(self.handoff_socket(to), h.fd.as_fd(), id)
                }
                Carry::Read => msg::send_conn(
                    self.handoff_socket(to),
                    h.fd.as_fd(),
                    &h.bytes,
                    h.transport,
                    h.origin,
                ),
            };
            match sent {
                Ok(()) => drop(h),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked[to] = true;
                    self.pending_handoffs.push_back(h);
                }
                Err(e) => match decide::handoff_failed(e.raw_os_error(), to == self.workers) {
                    HandoffFailed::Refuse => {
                        // Still ours: answer it rather than close it silently.
                        tracing::warn!(worker = self.index, to, error = %e, "hand-off failed; refusing the connection");
                        self.unreserve(h.to);
                        match h.carry {
                            // Its client speaks its own protocol: a clean close.
                            Carry::FixedReach(_) => {
                                self.refuse_fd_with(h.fd, Rejection::Overloaded, Vec::new())
                            }
                            Carry::Read | Carry::Unread => {
                                self.refuse_fd(h.fd, Rejection::Overloaded)
                            }
                        }
                    }
                    HandoffFailed::SupervisorGone => {
                        tracing::error!(worker = self.index, error = %e, "the supervisor has exited; this worker exits too");
                        std::process::exit(1);
                    }
                },
            }
        }
        for (to, b) in blocked.into_iter().enumerate() {
            if b && !self.peer_poll_armed[to] {
                self.peer_poll_armed[to] = true;
                let fd = types::Fd(self.handoff_socket(to).as_raw_fd());
                let e = opcode::PollAdd::new(fd, POLL_WRITE)
                    .build()
                    .user_data(UserData::plain(Kind::PeerWritable, to));
                self.push(e);
            }
        }
    }
}
