//! The worker's side of the cluster (only with `EngineConfig::cluster`; see
//! `driver::cluster`): presence changes of its room sent to the supervisor, lookups for
//! clients waiting for keys not parked here, and the mesh sockets that come back.

use super::ids::{Id as _, SockId};
use super::{Pairing, SockState, Worker};
use crate::driver::cluster::{self, Lookup, ReachToken};
use crate::driver::{Origin, sys};
use crate::reject::Rejection;
use crate::room::EntryHandle;
use crate::route::Router;
use crate::target::RendezvousKey;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

impl<R: Router> Worker<R> {
    /// Sends the room's presence changes of this turn, and retries those that could
    /// not be sent before (latest state per key: a change is coalesced, never lost).
    pub(super) fn flush_presence(&mut self) {
        if !self.cfg.cluster {
            return;
        }
        let mut changes = std::mem::take(&mut self.presence_changes);
        self.room.take_presence(&mut changes);
        for (key, parked) in changes.drain(..) {
            self.presence_backlog.insert(key, parked);
        }
        self.presence_changes = changes;
        if self.presence_backlog.is_empty() {
            return;
        }
        let mut sent = Vec::new();
        for (key, parked) in &self.presence_backlog {
            let msg = cluster::encode_presence(self.index, key, *parked);
            match sys::send(self.cluster_out.as_fd(), &msg) {
                Ok(_) => sent.push(*key),
                // Full: the supervisor is behind; the rest waits for the next turn.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "cannot send presence to the supervisor");
                    break;
                }
            }
        }
        for key in sent {
            self.presence_backlog.remove(&key);
        }
    }

    /// After a client's reach started waiting in the room: asks the supervisor to look
    /// the key up on the other nodes (only for a client's own connection; a mesh-origin
    /// reach never goes further). `raw` is its head and early bytes, verbatim. Best
    /// effort: if the message cannot be sent the client waits for a local park only.
    pub(super) fn send_lookup(&mut self, sock: SockId, key: RendezvousKey, raw: Vec<u8>) {
        let SockState::Waiting { handle, .. } = &self.socks[sock].state else {
            return;
        };
        if self.socks[sock].origin != Origin::Client {
            return;
        }
        let lookup = Lookup {
            worker: self.index,
            token: ReachToken {
                slot: sock.slot() as u32,
                entry: handle.to_bits(),
            },
            key,
            transport: self.socks[sock].transport,
            // A duplicate descriptor to ask std for the peer (a TLS front's plaintext
            // end is a unix socket: no address).
            peer: self.socks[sock]
                .fd
                .try_clone()
                .ok()
                .and_then(|fd| std::net::TcpStream::from(fd).peer_addr().ok()),
            wait: self.cfg.client_wait,
            head: raw,
        };
        let msg = cluster::encode_lookup(&lookup);
        if msg.len() > crate::driver::msg::MAX_PAYLOAD {
            return;
        }
        if let Err(e) = sys::send(self.cluster_out.as_fd(), &msg)
            && e.kind() != io::ErrorKind::WouldBlock
        {
            tracing::warn!(worker = self.index, error = %e, "cannot send a lookup to the supervisor");
        }
    }

    /// Whether refusal `r` of a client's own request only means "not known on this
    /// node" and, in a cluster, may be known on another: a tag responder whose tag was
    /// published on another node (the tag table is per node).
    pub(super) fn waits_remote(&self, sock: SockId, r: Rejection) -> bool {
        self.cfg.cluster && r == Rejection::UnknownTag && self.socks[sock].origin == Origin::Client
    }

    /// Lets a client refused with `r` (see [`Self::waits_remote`]) wait for a node that
    /// holds its key instead: it waits in the room under a shadow key no park can take
    /// (so only a mesh socket from the lookup pairs it) and, when the wait ends,
    /// receives exactly the refusal it would have had at once.
    pub(super) fn wait_remote(
        &mut self,
        sock: SockId,
        head: &crate::head::RequestHead,
        early: Vec<u8>,
        r: Rejection,
    ) {
        let transport = self.socks[sock].transport;
        let Ok(crate::route::Classified::Rendezvous(key)) = self.router.classify(head, transport)
        else {
            self.refuse(sock, r);
            return;
        };
        let raw = match &self.socks[sock].state {
            SockState::Head { buf, .. } => [buf.as_slice(), &early].concat(),
            _ => early,
        };
        let shadow = RendezvousKey::derived(
            key.space(),
            &[b"tryst-remote-only\0".as_slice(), &key.to_wire()].concat(),
        );
        let pairing = Pairing {
            key: shadow,
            greeting: Vec::new(),
            to_server: Vec::new(),
            not_parked: Some(r.response()),
            half_close: crate::route::HalfClose::PerDirection,
        };
        self.reach(sock, Box::new(pairing));
        if matches!(
            self.socks.get(sock).map(|s| &s.state),
            Some(SockState::Waiting { .. })
        ) {
            self.send_lookup(sock, key, raw);
        }
    }

    /// A mesh socket for a waiting client: if that client still waits under the same
    /// room entry, take it out of the room and splice it with the mesh socket, writing
    /// nothing of our own (the other node's family answers). Otherwise close the socket.
    pub(super) fn on_remote_found(&mut self, fd: OwnedFd, token: ReachToken) {
        let sock = SockId::from_slot(token.slot as usize);
        let handle = EntryHandle::from_bits(token.entry);
        let waiting = matches!(
            self.socks.get(sock).map(|s| &s.state),
            Some(SockState::Waiting { handle: h, .. }) if *h == handle
        );
        if !waiting || self.room.remove(handle).is_none() {
            // Paired locally, gone, or timed out meanwhile: the mesh socket closes and
            // the other node's tunnel with it.
            return;
        }
        let pairing = self.take_pairing(sock);
        let server = self.insert_sock(
            fd,
            SockState::Head {
                buf: Vec::new(),
                handed_in: true,
            },
        );
        self.socks[server].origin = Origin::Mesh;
        self.sync_room_counters();
        self.pair(
            sock,
            server,
            Pairing {
                key: pairing.key,
                greeting: Vec::new(),
                to_server: Vec::new(),
                not_parked: None,
                half_close: pairing.half_close,
            },
            // The other node's relay, not a parked hidden server: the holder sends the
            // notice, if its server asked for one.
            false,
        );
    }
}
