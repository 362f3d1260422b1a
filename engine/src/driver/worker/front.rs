//! TLS fronts: a rustls session pumping between the accepted TCP socket and one end of a
//! socketpair whose other end takes the ordinary plaintext path.

use super::decide::PollRole;
use super::ids::{FrontId, Id as _, SockId};
use super::{POLL_READ, POLL_WRITE, Pairing, SockState, Worker};
use crate::driver::shm::Counter;
use crate::driver::sys;
use crate::driver::tls::{self, TlsFront};
use crate::route::{HalfClose, Router, Transport};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

/// A TLS front and the two sockets it pumps between.
pub(super) struct TlsFrontEntry {
    pub(super) front: TlsFront,
    pub(super) tcp: SockId,
    /// The front's end of the socketpair (none once fused).
    pub(super) inner: SockId,
    /// The other end of the socketpair while it is in this worker's table (the
    /// plaintext connection on the ordinary path): what lets a pairing here find the
    /// front behind it ([`Worker::fuse`]). `None` once handed to another worker or closed.
    pub(super) outer: Option<SockId>,
    /// The tunnel's other front, when both are in this worker and were fused: its
    /// session moves here and both TCP sockets name this entry.
    pub(super) fused: Option<Box<FusedPeer>>,
    /// Last time either side was ready; idle fronts are closed like idle tunnels.
    pub(super) last_active: Instant,
}

/// The server-side front of a fused pair (the client side's entry holds it).
pub(super) struct FusedPeer {
    pub(super) front: TlsFront,
    pub(super) tcp: SockId,
    /// The tunnel ends when either side finishes (`HalfClose::CloseBoth`).
    pub(super) close_both: bool,
}

impl std::fmt::Debug for TlsFrontEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFrontEntry")
            .field("tcp", &self.tcp)
            .field("inner", &self.inner)
            .field("outer", &self.outer)
            .field("fused", &self.fused.as_ref().map(|p| p.tcp))
            .finish()
    }
}

impl<R: Router> Worker<R> {
    /// Wraps an accepted TLS connection in a front; returns the plaintext end for the
    /// ordinary path and the front, or `None` when the front could not be set up (socket
    /// closed). The caller names the plaintext end's slot with [`Self::front_outer`].
    pub(super) fn open_front(&mut self, tcp: OwnedFd) -> Option<(OwnedFd, FrontId)> {
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
            outer: None,
            fused: None,
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
        // The handshake's first flight may already have failed and closed the front.
        Some((outer, front))
    }

    /// Records that `outer`, the plaintext end of `front`'s socketpair, is in this
    /// worker's table.
    pub(super) fn front_outer(&mut self, front: FrontId, outer: SockId) {
        if let Some(entry) = self.fronts.get_mut(front) {
            entry.outer = Some(outer);
            self.front_of_outer.insert(outer, front);
        }
    }

    /// `sock` leaves this worker's table (closed or handed over): if it is a front's
    /// plaintext end, that front can no longer be fused.
    pub(super) fn forget_outer(&mut self, sock: SockId) {
        if self.front_of_outer.is_empty() {
            return;
        }
        if let Some(front) = self.front_of_outer.remove(&sock)
            && let Some(entry) = self.fronts.get_mut(front)
        {
            entry.outer = None;
        }
    }

    /// The front behind `sock` when `sock` is the plaintext end of a front in this
    /// worker that is not fused yet.
    fn local_front(&self, sock: SockId) -> Option<FrontId> {
        let front = *self.front_of_outer.get(&sock)?;
        let entry = self.fronts.get(front)?;
        (entry.outer == Some(sock) && entry.fused.is_none()).then_some(front)
    }

    /// Pairs `client` and `server` by fusing their fronts, when both are plaintext ends
    /// of TLS fronts in this worker: the socketpairs go, and plaintext passes between
    /// the two rustls sessions in memory ([`tls::pump_fused`]). Whatever the socketpairs
    /// still held, and the pairing's own bytes (the greeting, the forwarded head and
    /// early bytes), are passed on first, in order. Gives the pairing back when the
    /// connections are not both local fronts.
    pub(super) fn fuse(
        &mut self,
        client: SockId,
        server: SockId,
        pairing: Pairing,
    ) -> Result<(), Pairing> {
        let (Some(fc), Some(fs)) = (self.local_front(client), self.local_front(server)) else {
            return Err(pairing);
        };
        if fc == fs {
            return Err(pairing);
        }
        let (inner_c, inner_s) = (self.fronts[fc].inner, self.fronts[fs].inner);
        // Engine -> front bytes not read by the front yet (the park's 200 to a server),
        // and front -> engine bytes not read by the engine yet (what followed a head).
        let drained = [inner_c, client, inner_s, server].map(|s| self.drain_sock(s));
        let [
            Ok(to_client),
            Ok(from_client),
            Ok(to_server),
            Ok(from_server),
        ] = drained
        else {
            self.close_front(fc, true);
            self.close_front(fs, true);
            self.close_sock(client, true);
            self.close_sock(server, true);
            return Ok(());
        };
        let mut toward_server = to_server;
        toward_server.extend_from_slice(&pairing.to_server);
        toward_server.extend_from_slice(&from_client);
        toward_server.extend(self.fronts[fc].front.take_unsent());
        let mut toward_client = to_client;
        toward_client.extend_from_slice(&pairing.greeting);
        toward_client.extend_from_slice(&from_server);
        toward_client.extend(self.fronts[fs].front.take_unsent());
        self.fronts[fc].front.set_unsent(toward_server);
        self.fronts[fs].front.set_unsent(toward_client);
        for s in [client, server, inner_c, inner_s] {
            self.close_sock(s, false);
        }
        let peer = self.fronts.remove(fs);
        self.socks[peer.tcp].state = SockState::TlsTcp { front: fc };
        let entry = &mut self.fronts[fc];
        entry.inner = SockId::from_slot(usize::MAX);
        entry.outer = None;
        entry.fused = Some(Box::new(FusedPeer {
            front: peer.front,
            tcp: peer.tcp,
            close_both: pairing.half_close == HalfClose::CloseBoth,
        }));
        self.fused_pairs += 1;
        self.counters.add(Counter::Paired, 1);
        self.counters.add(Counter::TlsFused, 1);
        self.publish_tunnels();
        self.pump_front(fc);
        Ok(())
    }

    /// Everything `sock` has to read now (until it would block).
    fn drain_sock(&mut self, sock: SockId) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let Some(s) = self.socks.get(sock) else {
            return Ok(out);
        };
        loop {
            match sys::recv(s.fd.as_fd(), &mut self.scratch) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn pump_front(&mut self, front: FrontId) {
        let Some(entry) = self.fronts.get_mut(front) else {
            return;
        };
        let (tcp, inner) = (entry.tcp, entry.inner);
        entry.last_active = self.now;
        if let Some(peer) = entry.fused.as_mut() {
            let peer_tcp = peer.tcp;
            let (Some(a), Some(b)) = (self.socks.get(tcp), self.socks.get(peer_tcp)) else {
                return;
            };
            let out = tls::pump_fused(
                [&mut entry.front, &mut peer.front],
                [&a.fd, &b.fd],
                &mut self.scratch,
                peer.close_both,
            );
            self.counters.add(Counter::BytesSpliced, out.moved);
            if out.failed || out.done {
                self.close_front(front, out.failed);
                return;
            }
            for (sock, needs) in [(tcp, out.sides[0]), (peer_tcp, out.sides[1])] {
                if needs.tcp_read {
                    self.arm(sock, PollRole::Read, POLL_READ);
                }
                if needs.tcp_write {
                    self.arm(sock, PollRole::Write, POLL_WRITE);
                }
            }
            return;
        }
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
        if let Some(outer) = entry.outer {
            self.front_of_outer.remove(&outer);
        }
        self.close_sock(entry.tcp, reset);
        match entry.fused {
            Some(peer) => {
                self.close_sock(peer.tcp, reset);
                self.counters.add(Counter::TlsSessions, u64::MAX - 1);
                self.fused_pairs -= 1;
                self.publish_tunnels();
            }
            None => {
                self.close_sock(entry.inner, reset);
                self.counters.add(Counter::TlsSessions, u64::MAX);
            }
        }
    }
}
