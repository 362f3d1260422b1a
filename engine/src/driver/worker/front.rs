//! TLS fronts: a rustls session pumping between the accepted TCP socket and one end of a
//! socketpair whose other end takes the ordinary plaintext path.

use super::decide::PollRole;
use super::ids::{FrontId, Id as _, SockId};
use super::{POLL_READ, POLL_WRITE, SockState, Worker};
use crate::driver::shm::Counter;
use crate::driver::sys;
use crate::driver::tls::TlsFront;
use crate::route::{Router, Transport};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

/// A TLS front and the two sockets it pumps between.
pub(super) struct TlsFrontEntry {
    pub(super) front: TlsFront,
    pub(super) tcp: SockId,
    pub(super) inner: SockId,
    /// Last time either side was ready; idle fronts are closed like idle tunnels.
    pub(super) last_active: Instant,
}

impl std::fmt::Debug for TlsFrontEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFrontEntry")
            .field("tcp", &self.tcp)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<R: Router> Worker<R> {
    /// Wraps an accepted TLS connection in a front; returns the plaintext end for the
    /// ordinary path, or `None` when the front could not be set up (socket closed).
    pub(super) fn open_front(&mut self, tcp: OwnedFd) -> Option<OwnedFd> {
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
            // Set below, once the sockets (which name the front) are in the table.
            tcp: SockId::from_slot(usize::MAX),
            inner: SockId::from_slot(usize::MAX),
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

    pub(super) fn pump_front(&mut self, front: FrontId) {
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
            self.arm(tcp, PollRole::Read, POLL_READ);
        }
        if needs.tcp_write {
            self.arm(tcp, PollRole::Write, POLL_WRITE);
        }
        if needs.inner_read {
            self.arm(inner, PollRole::Read, POLL_READ);
        }
        if needs.inner_write {
            self.arm(inner, PollRole::Write, POLL_WRITE);
        }
    }

    pub(super) fn close_front(&mut self, front: FrontId, reset: bool) {
        if !self.fronts.contains(front) {
            return;
        }
        let entry = self.fronts.remove(front);
        self.close_sock(entry.tcp, reset);
        self.close_sock(entry.inner, reset);
        self.counters.add(Counter::TlsSessions, u64::MAX);
    }
}
