//! What the workers tell the supervisor for the cluster directory, and what it answers
//! (only with `EngineConfig::cluster`; a single node sends none of it).
//!
//! Worker → supervisor, on a datagram socket of their own (non-blocking; a worker never
//! waits for the supervisor):
//! - [`ClusterEvent::Presence`]: a key's parked count on this worker went 0 → 1 or
//!   1 → 0. A worker that cannot send one keeps the key's latest state and retries
//!   every loop turn, so none is lost (only coalesced).
//! - [`ClusterEvent::Lookup`]: a client's reach for a key nobody parks here started
//!   waiting in the room; the supervisor may find a node that holds the key, carry the
//!   client's head there over the mesh, and give the mesh socket back with
//!   [`super::Injector::deliver`]. The client keeps waiting in the room meanwhile (a
//!   local park still pairs it at once; the wait's end still answers "not parked").
//!
//! Supervisor → worker, on the worker's inbox: `RemoteFound` (the mesh socket and the
//! [`ReachToken`] of the client it is for). The worker pairs them only if that client
//! still waits under the same room entry, and then splices without writing any greeting
//! of its own: the other node's family answers, through the mesh.

use crate::route::Transport;
use crate::target::RendezvousKey;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Names a waiting client: its socket slot and its room entry (generation-tagged, so a
/// token outliving its client matches nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReachToken {
    pub(crate) slot: u32,
    pub(crate) entry: u64,
}

/// A client waiting on a worker for a key not parked there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The worker it waits on (where the mesh socket must go).
    pub worker: usize,
    /// Which client.
    pub token: ReachToken,
    /// The key it waits for.
    pub key: RendezvousKey,
    /// How it reached this node.
    pub transport: Transport,
    /// Its address, when it has one (a TLS client's plaintext end has none).
    pub peer: Option<SocketAddr>,
    /// How long it waits from now (the client wait).
    pub wait: Duration,
    /// Its head and every byte after it read so far, verbatim.
    pub head: Vec<u8>,
}

/// A message from a worker for the cluster directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// `key` has parked servers on `worker` now (`parked`), or none any more.
    Presence {
        /// The worker (its presence dies with it).
        worker: usize,
        /// The key.
        key: RendezvousKey,
        /// Whether it has parked servers now.
        parked: bool,
    },
    /// See [`Lookup`].
    Lookup(Lookup),
}

pub(crate) const KIND_PRESENCE: u8 = 20;
pub(crate) const KIND_LOOKUP: u8 = 21;
const LOOKUP_FIXED: usize = 1 + 2 + 4 + 8 + 17 + 1 + 4 + 1 + 16 + 2;

/// Encodes a presence change.
pub(crate) fn encode_presence(worker: usize, key: &RendezvousKey, parked: bool) -> [u8; 21] {
    let mut out = [0u8; 21];
    out[0] = KIND_PRESENCE;
    out[1..3].copy_from_slice(&(worker as u16).to_be_bytes());
    out[3] = u8::from(parked);
    out[4..].copy_from_slice(&key.to_wire());
    out
}

/// Encodes a lookup (the head last, unbounded here; the message limit applies).
pub(crate) fn encode_lookup(l: &Lookup) -> Vec<u8> {
    let mut out = Vec::with_capacity(LOOKUP_FIXED + l.head.len());
    out.push(KIND_LOOKUP);
    out.extend_from_slice(&(l.worker as u16).to_be_bytes());
    out.extend_from_slice(&l.token.slot.to_be_bytes());
    out.extend_from_slice(&l.token.entry.to_be_bytes());
    out.extend_from_slice(&l.key.to_wire());
    out.push(match l.transport {
        Transport::Plain => 0,
        Transport::Tls => 1,
    });
    let ms = u32::try_from(l.wait.as_millis()).unwrap_or(u32::MAX);
    out.extend_from_slice(&ms.to_be_bytes());
    let (family, addr, port) = match l.peer {
        None => (0u8, [0u8; 16], 0u16),
        Some(SocketAddr::V4(a)) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.ip().octets());
            (4, b, a.port())
        }
        Some(SocketAddr::V6(a)) => (6, a.ip().octets(), a.port()),
    };
    out.push(family);
    out.extend_from_slice(&addr);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&l.head);
    out
}

/// Decodes either message; `None` for anything malformed (only a bug produces that).
pub(crate) fn decode(buf: &[u8]) -> Option<ClusterEvent> {
    let key_at = |at: usize| -> Option<RendezvousKey> {
        let wire: [u8; 17] = buf.get(at..at + 17)?.try_into().ok()?;
        RendezvousKey::from_wire(&wire)
    };
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?))
    };
    match *buf.first()? {
        KIND_PRESENCE if buf.len() == 21 => Some(ClusterEvent::Presence {
            worker: usize::from(u16_at(1)?),
            parked: buf[3] != 0,
            key: key_at(4)?,
        }),
        KIND_LOOKUP if buf.len() >= LOOKUP_FIXED => {
            let worker = usize::from(u16_at(1)?);
            let slot = u32::from_be_bytes(buf[3..7].try_into().ok()?);
            let entry = u64::from_be_bytes(buf[7..15].try_into().ok()?);
            let key = key_at(15)?;
            let transport = match buf[32] {
                0 => Transport::Plain,
                1 => Transport::Tls,
                _ => return None,
            };
            let ms = u32::from_be_bytes(buf[33..37].try_into().ok()?);
            let addr: [u8; 16] = buf[38..54].try_into().ok()?;
            let port = u16_at(54)?;
            let peer = match buf[37] {
                0 => None,
                4 => Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
                    port,
                )),
                6 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(addr)), port)),
                _ => return None,
            };
            Some(ClusterEvent::Lookup(Lookup {
                worker,
                token: ReachToken { slot, entry },
                key,
                transport,
                peer,
                wait: Duration::from_millis(u64::from(ms)),
                head: buf[LOOKUP_FIXED..].to_vec(),
            }))
        }
        _ => None,
    }
}

/// The supervisor's end of the workers' cluster events: a non-blocking unix datagram
/// socket. Wait for readability and call [`ClusterInbox::try_recv`] until `Ok(None)`.
#[derive(Debug)]
pub struct ClusterInbox {
    pub(crate) recv: std::os::fd::OwnedFd,
    pub(crate) buf: std::sync::Mutex<Vec<u8>>,
}

impl ClusterInbox {
    /// Receives one event; `Ok(None)` when none is queued.
    pub fn try_recv(&self) -> std::io::Result<Option<ClusterEvent>> {
        use std::os::fd::AsRawFd as _;
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.resize(super::msg::MAX_PAYLOAD + 1, 0);
        loop {
            match nix::sys::socket::recv(
                self.recv.as_raw_fd(),
                &mut buf[..],
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    if let Some(ev) = decode(&buf[..n]) {
                        return Ok(Some(ev));
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl std::os::fd::AsFd for ClusterInbox {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.recv.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let key = RendezvousKey::derived(crate::target::KeySpace::Tag, b"t");
        let p = encode_presence(3, &key, true);
        assert_eq!(
            decode(&p),
            Some(ClusterEvent::Presence {
                worker: 3,
                key,
                parked: true
            })
        );
        for peer in [
            None,
            Some("192.0.2.1:7".parse().unwrap()),
            Some("[2001:db8::2]:9".parse().unwrap()),
        ] {
            let l = Lookup {
                worker: 1,
                token: ReachToken {
                    slot: 42,
                    entry: 7 << 32 | 5,
                },
                key,
                transport: Transport::Tls,
                peer,
                wait: Duration::from_millis(1500),
                head: b"CONNECT x HTTP/1.1\r\n\r\nearly".to_vec(),
            };
            assert_eq!(decode(&encode_lookup(&l)), Some(ClusterEvent::Lookup(l)));
        }
        assert_eq!(decode(&[KIND_LOOKUP, 0]), None);
        assert_eq!(decode(&[]), None);
    }
}
