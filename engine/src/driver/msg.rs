//! Messages between processes over unix datagram sockets: a connection handed to its
//! owner worker or to the supervisor's HTTP inbox (descriptor via `SCM_RIGHTS`, plus
//! every byte already read from it), and control messages from the supervisor; family
//! control messages both ways (opaque to the engine: the relay's families define them).

use super::Origin;
use crate::route::Transport;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest message payload (a whole head plus what followed it fits many times over).
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;

const KIND_CONN: u8 = 1;
const KIND_CONN_TLS: u8 = 4;
const KIND_ACCEPTED: u8 = 5;
const KIND_RELOAD: u8 = 2;
const KIND_SHUTDOWN: u8 = 3;
/// A mesh-origin connection handed to its owner (plain / TLS client transport).
const KIND_CONN_MESH: u8 = 6;
const KIND_CONN_TLS_MESH: u8 = 7;
/// A mesh-origin connection from the supervisor, head possibly incomplete.
const KIND_INJECTED: u8 = 8;
const KIND_INJECTED_TLS: u8 = 9;
/// A mesh socket for a waiting client (see `driver::cluster`).
const KIND_REMOTE_FOUND: u8 = 22;
/// A cluster-wide claim, worker -> supervisor (see [`crate::claim`]).
const KIND_CLAIM: u8 = 10;
/// The supervisor's verdict on a claim, supervisor -> worker.
const KIND_VERDICT: u8 = 11;
/// Close what is parked under a key (another node's newer replace park).
const KIND_EVICT: u8 = 12;
const KIND_FAMILY: u8 = 13;
/// A reload request with the worker's new share (a sealed memfd, see `driver::share`).
const KIND_RELOAD_SHARE: u8 = 14;
/// A connection accepted on a listener for one id, for that id's owner (16-byte id).
const KIND_FIXED_REACH: u8 = 15;

/// A received message.
#[derive(Debug)]
pub(crate) enum Message {
    /// A connection, the bytes already read from it, how it arrived, and whether a
    /// client or another node (the mesh) sent it.
    Conn(OwnedFd, Vec<u8>, Transport, Origin),
    /// A connection from another node (the mesh), given by the supervisor after it
    /// verified the preamble: the bytes read past the preamble (possibly not yet a
    /// whole head) and the client's transport on the sending node. The receiver reads
    /// and classifies it like an accepted connection.
    Injected(OwnedFd, Vec<u8>, Transport),
    /// A mesh socket to another node for the waiting client `ReachToken` names; that
    /// node's answer comes through it (see `driver::cluster`).
    RemoteFound(OwnedFd, super::cluster::ReachToken),
    /// A plain connection accepted by a worker at its socket budget and passed on
    /// before anything was read from it: the receiver reads its head as if it had
    /// accepted it itself.
    Accepted(OwnedFd),
    /// A connection accepted on a listener for one id (`Listener::fixed_id`), passed
    /// unread to the worker owning the id: a client of that id with no head.
    FixedReach(OwnedFd, crate::target::RendezvousId),
    /// A cluster-wide claim from a worker (received by the supervisor).
    Claim(crate::claim::ClaimRequest),
    /// The supervisor's verdict on this worker's claim `id`.
    Verdict(u64, crate::claim::Verdict),
    /// Close every connection parked under this key (another node's replace park).
    Evict(crate::target::RendezvousKey),
    /// Re-read secrets (from the share this brings, if any).
    Reload(ReloadShare),
    /// Stop accepting, drain, exit.
    Shutdown,
    /// A family control message (supervisor -> owner worker, or a worker's report to the
    /// supervisor): bytes only the relay's families read.
    Family(Vec<u8>),
    /// A connection whose descriptor the kernel could not install here (`MSG_CTRUNC`:
    /// the receiver's descriptor table was full). The connection is gone: the sender
    /// closed its copy and the kernel closed the one in flight. The receiver counts and
    /// logs it; budgets exist so that this does not happen.
    LostConn,
}

/// The share a reload request brings.
#[derive(Debug)]
pub(crate) enum ReloadShare {
    /// None: the worker re-reads what it read before.
    Unchanged,
    /// The worker's new share.
    New(OwnedFd),
    /// The request carried a share the kernel could not install here (`MSG_CTRUNC`:
    /// the descriptor table was full); the worker keeps its current secrets.
    Lost,
}

/// Sends a connection. `Err(WouldBlock)` when the receiver's queue is full.
pub(crate) fn send_conn(
    sock: BorrowedFd<'_>,
    conn: BorrowedFd<'_>,
    bytes: &[u8],
    transport: Transport,
    origin: Origin,
) -> io::Result<()> {
    let kind = match (transport, origin) {
        (Transport::Plain, Origin::Client) => KIND_CONN,
        (Transport::Tls, Origin::Client) => KIND_CONN_TLS,
        (Transport::Plain, Origin::Mesh) => KIND_CONN_MESH,
        (Transport::Tls, Origin::Mesh) => KIND_CONN_TLS_MESH,
    };
    send_fd(sock, kind, conn, bytes)
}

/// Sends a mesh connection to a worker (see [`Message::Injected`]).
pub(crate) fn send_injected(
    sock: BorrowedFd<'_>,
    conn: BorrowedFd<'_>,
    bytes: &[u8],
    transport: Transport,
) -> io::Result<()> {
    let kind = match transport {
        Transport::Plain => KIND_INJECTED,
        Transport::Tls => KIND_INJECTED_TLS,
    };
    send_fd(sock, kind, conn, bytes)
}

/// Sends a mesh socket for a waiting client (see [`Message::RemoteFound`]).
pub(crate) fn send_remote_found(
    sock: BorrowedFd<'_>,
    conn: BorrowedFd<'_>,
    token: super::cluster::ReachToken,
) -> io::Result<()> {
    let mut payload = [0u8; 12];
    payload[..4].copy_from_slice(&token.slot.to_be_bytes());
    payload[4..].copy_from_slice(&token.entry.to_be_bytes());
    send_fd(sock, KIND_REMOTE_FOUND, conn, &payload)
}

/// Sends a connection accepted on a listener for `id` (see [`Message::FixedReach`]).
pub(crate) fn send_fixed_reach(
    sock: BorrowedFd<'_>,
    conn: BorrowedFd<'_>,
    id: crate::target::RendezvousId,
) -> io::Result<()> {
    send_fd(sock, KIND_FIXED_REACH, conn, &id.0)
}

/// Sends a plain connection accepted but not read from (see [`Message::Accepted`]).
pub(crate) fn send_accepted(sock: BorrowedFd<'_>, conn: BorrowedFd<'_>) -> io::Result<()> {
    send_fd(sock, KIND_ACCEPTED, conn, &[])
}

fn send_fd(sock: BorrowedFd<'_>, kind: u8, conn: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "payload too large",
        ));
    }
    let kind = [kind];
    let iov = [IoSlice::new(&kind), IoSlice::new(bytes)];
    let fds = [conn.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
    .map_err(io::Error::from)
}

fn send_kind(sock: BorrowedFd<'_>, kind: u8) -> io::Result<()> {
    send_bytes(sock, kind, &[])
}

fn send_bytes(sock: BorrowedFd<'_>, kind: u8, payload: &[u8]) -> io::Result<()> {
    let kind = [kind];
    let iov = [IoSlice::new(&kind), IoSlice::new(payload)];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Sends a claim (worker -> supervisor). `Err(WouldBlock)` when the queue is full.
pub(crate) fn send_claim(
    sock: BorrowedFd<'_>,
    request: &crate::claim::ClaimRequest,
) -> io::Result<()> {
    send_bytes(sock, KIND_CLAIM, &crate::claim::encode_request(request))
}

/// Sends a verdict (supervisor -> worker).
pub(crate) fn send_verdict(
    sock: BorrowedFd<'_>,
    id: u64,
    verdict: crate::claim::Verdict,
) -> io::Result<()> {
    send_bytes(
        sock,
        KIND_VERDICT,
        &crate::claim::encode_verdict(id, verdict),
    )
}

/// Sends an eviction order (supervisor -> worker).
pub(crate) fn send_evict(
    sock: BorrowedFd<'_>,
    key: &crate::target::RendezvousKey,
) -> io::Result<()> {
    send_bytes(sock, KIND_EVICT, &crate::claim::encode_evict(key))
}

/// Sends a reload request, with the worker's new share if there is one.
pub(crate) fn send_reload(sock: BorrowedFd<'_>, share: Option<BorrowedFd<'_>>) -> io::Result<()> {
    match share {
        Some(share) => send_fd(sock, KIND_RELOAD_SHARE, share, &[]),
        None => send_kind(sock, KIND_RELOAD),
    }
}

/// Sends a shutdown request.
pub(crate) fn send_shutdown(sock: BorrowedFd<'_>) -> io::Result<()> {
    send_kind(sock, KIND_SHUTDOWN)
}

/// Sends a family control message (see [`Message::Family`]). `Err(WouldBlock)` when the
/// receiver's queue is full.
pub(crate) fn send_family(sock: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "payload too large",
        ));
    }
    send_bytes(sock, KIND_FAMILY, payload)
}

/// Receives one message without blocking; `Ok(None)` when none is queued. Malformed
/// messages (which only a bug could produce) are dropped, closing any descriptor.
pub(crate) fn try_recv(sock: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<Option<Message>> {
    recv_with(sock, buf, true)
}

/// [`try_recv`]; `with_fds == false` offers no room for descriptors (tests use it to
/// produce the `MSG_CTRUNC` a full descriptor table produces).
fn recv_with(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    with_fds: bool,
) -> io::Result<Option<Message>> {
    buf.resize(MAX_PAYLOAD + 1, 0);
    loop {
        let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
        let (len, fds, truncated) = {
            let mut iov = [IoSliceMut::new(&mut buf[..])];
            let msg = match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                with_fds.then_some(&mut cmsg_space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: SCM_RIGHTS installed these descriptors into this
                            // process just now; nothing else owns them.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
            }
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            (msg.bytes, fds, truncated)
        };
        let mut fds = fds.into_iter();
        let conn = matches!(
            buf.first().copied(),
            Some(
                KIND_CONN
                    | KIND_CONN_TLS
                    | KIND_ACCEPTED
                    | KIND_CONN_MESH
                    | KIND_CONN_TLS_MESH
                    | KIND_INJECTED
                    | KIND_INJECTED_TLS
                    | KIND_REMOTE_FOUND
                    | KIND_FIXED_REACH
            )
        );
        if len > 0 && conn && truncated && fds.len() == 0 {
            return Ok(Some(Message::LostConn));
        }
        let msg = match (buf.first().copied(), len) {
            (_, 0) => None,
            (Some(k @ (KIND_CONN | KIND_CONN_TLS | KIND_CONN_MESH | KIND_CONN_TLS_MESH)), n)
                if n <= MAX_PAYLOAD + 1 =>
            {
                let transport = if matches!(k, KIND_CONN_TLS | KIND_CONN_TLS_MESH) {
                    Transport::Tls
                } else {
                    Transport::Plain
                };
                let origin = if matches!(k, KIND_CONN_MESH | KIND_CONN_TLS_MESH) {
                    Origin::Mesh
                } else {
                    Origin::Client
                };
                fds.next()
                    .map(|fd| Message::Conn(fd, buf[1..n].to_vec(), transport, origin))
            }
            (Some(k @ (KIND_INJECTED | KIND_INJECTED_TLS)), n) if n <= MAX_PAYLOAD + 1 => {
                let transport = if k == KIND_INJECTED_TLS {
                    Transport::Tls
                } else {
                    Transport::Plain
                };
                fds.next()
                    .map(|fd| Message::Injected(fd, buf[1..n].to_vec(), transport))
            }
            (Some(KIND_ACCEPTED), _) => fds.next().map(Message::Accepted),
            (Some(KIND_FIXED_REACH), 17) => {
                let mut id = [0u8; 16];
                id.copy_from_slice(&buf[1..17]);
                fds.next()
                    .map(|fd| Message::FixedReach(fd, crate::target::RendezvousId(id)))
            }
            (Some(KIND_REMOTE_FOUND), 13) => {
                let slot = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                let mut entry = [0u8; 8];
                entry.copy_from_slice(&buf[5..13]);
                fds.next().map(|fd| {
                    Message::RemoteFound(
                        fd,
                        super::cluster::ReachToken {
                            slot,
                            entry: u64::from_be_bytes(entry),
                        },
                    )
                })
            }
            (Some(KIND_CLAIM), n) if n <= MAX_PAYLOAD + 1 => {
                crate::claim::decode_request(&buf[1..n]).map(Message::Claim)
            }
            (Some(KIND_VERDICT), n) if n <= MAX_PAYLOAD + 1 => {
                crate::claim::decode_verdict(&buf[1..n]).map(|(id, v)| Message::Verdict(id, v))
            }
            (Some(KIND_EVICT), n) if n <= MAX_PAYLOAD + 1 => {
                crate::claim::decode_evict(&buf[1..n]).map(Message::Evict)
            }
            (Some(KIND_RELOAD), _) => Some(Message::Reload(ReloadShare::Unchanged)),
            (Some(KIND_RELOAD_SHARE), _) => Some(Message::Reload(
                fds.next().map_or(ReloadShare::Lost, ReloadShare::New),
            )),
            (Some(KIND_SHUTDOWN), _) => Some(Message::Shutdown),
            // A descriptor never comes with a family message; one that did is closed
            // (dropped with `fds`).
            (Some(KIND_FAMILY), n) if n <= MAX_PAYLOAD + 1 => {
                Some(Message::Family(buf[1..n].to_vec()))
            }
            _ => None,
        };
        if let Some(m) = msg {
            return Ok(Some(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn claims_verdicts_and_evictions_cross_and_malformed_ones_are_skipped() {
        use crate::claim::{ClaimRequest, Verdict};
        let (a, b) = pair();
        let request = ClaimRequest {
            worker: 1,
            id: 42,
            ttl_secs: 60,
            key: "tryst:replay:native:00:11".into(),
        };
        // A zero ttl never leaves a worker; if it arrived it would be skipped.
        let bad = ClaimRequest {
            ttl_secs: 0,
            ..request.clone()
        };
        send_bytes(a.as_fd(), KIND_CLAIM, &crate::claim::encode_request(&bad)).unwrap();
        send_claim(a.as_fd(), &request).unwrap();
        send_verdict(a.as_fd(), 42, Verdict::Lost).unwrap();
        send_bytes(a.as_fd(), KIND_EVICT, &[9; 17]).unwrap();
        let key = crate::target::RendezvousKey::uuid([3; 16]);
        send_evict(a.as_fd(), &key).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            try_recv(b.as_fd(), &mut buf).unwrap(),
            Some(Message::Claim(r)) if r == request
        ));
        assert!(matches!(
            try_recv(b.as_fd(), &mut buf).unwrap(),
            Some(Message::Verdict(42, Verdict::Lost))
        ));
        assert!(matches!(
            try_recv(b.as_fd(), &mut buf).unwrap(),
            Some(Message::Evict(k)) if k == key
        ));
        assert!(try_recv(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn a_connection_arrives_with_its_descriptor_and_bytes() {
        let (a, b) = pair();
        let (conn, _peer) = pair();
        send_conn(
            a.as_fd(),
            conn.as_fd(),
            b"GET / HTTP/1.1\r\n\r\n",
            Transport::Tls,
            Origin::Client,
        )
        .unwrap();
        let mut buf = Vec::new();
        match try_recv(b.as_fd(), &mut buf).unwrap() {
            Some(Message::Conn(_fd, bytes, Transport::Tls, Origin::Client)) => {
                assert_eq!(bytes, b"GET / HTTP/1.1\r\n\r\n")
            }
            other => panic!("{other:?}"),
        }
        assert!(try_recv(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn mesh_origin_and_injected_connections_keep_their_kind() {
        let (a, b) = pair();
        let (conn, _peer) = pair();
        send_conn(a.as_fd(), conn.as_fd(), b"h", Transport::Tls, Origin::Mesh).unwrap();
        send_injected(a.as_fd(), conn.as_fd(), b"CONN", Transport::Plain).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            try_recv(b.as_fd(), &mut buf).unwrap(),
            Some(Message::Conn(_, _, Transport::Tls, Origin::Mesh))
        ));
        match try_recv(b.as_fd(), &mut buf).unwrap() {
            Some(Message::Injected(_, bytes, Transport::Plain)) => assert_eq!(bytes, b"CONN"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_family_message_arrives_whole_and_in_order() {
        let (a, b) = pair();
        send_family(a.as_fd(), b"tag:\x01payload").unwrap();
        send_family(a.as_fd(), b"").unwrap();
        send_reload(a.as_fd(), None).unwrap();
        let mut buf = Vec::new();
        match try_recv(b.as_fd(), &mut buf).unwrap() {
            Some(Message::Family(bytes)) => assert_eq!(bytes, b"tag:\x01payload"),
            other => panic!("{other:?}"),
        }
        match try_recv(b.as_fd(), &mut buf).unwrap() {
            Some(Message::Family(bytes)) => assert!(bytes.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            try_recv(b.as_fd(), &mut buf).unwrap(),
            Some(Message::Reload(ReloadShare::Unchanged))
        ));
        assert!(
            send_family(a.as_fd(), &vec![0; MAX_PAYLOAD + 1]).is_err(),
            "oversized"
        );
    }

    #[test]
    fn a_reload_brings_its_share_or_says_it_was_lost() {
        let (a, b) = pair();
        let share = super::super::share::sealed(b"[secrets]\n").unwrap();
        send_reload(a.as_fd(), Some(share.as_fd())).unwrap();
        send_reload(a.as_fd(), Some(share.as_fd())).unwrap();
        let mut buf = Vec::new();
        match try_recv(b.as_fd(), &mut buf).unwrap() {
            Some(Message::Reload(ReloadShare::New(fd))) => {
                let got = super::super::share::ShareFile::new(fd).read().unwrap();
                assert_eq!(got, b"[secrets]\n");
            }
            other => panic!("{other:?}"),
        }
        // The second one's descriptor is not installed (as with a full table).
        assert!(matches!(
            recv_with(b.as_fd(), &mut buf, false).unwrap(),
            Some(Message::Reload(ReloadShare::Lost))
        ));
    }

    #[test]
    fn a_connection_whose_descriptor_was_not_installed_is_reported_not_dropped() {
        // MSG_CTRUNC without a descriptor: what a full descriptor table (EMFILE) gives
        // the receiver. It used to be skipped silently; now it is a message to count.
        let (a, b) = pair();
        let (conn, _peer) = pair();
        send_conn(
            a.as_fd(),
            conn.as_fd(),
            b"x",
            Transport::Plain,
            Origin::Client,
        )
        .unwrap();
        send_reload(a.as_fd(), None).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            recv_with(b.as_fd(), &mut buf, false).unwrap(),
            Some(Message::LostConn)
        ));
        // The next message is unaffected.
        assert!(matches!(
            try_recv(b.as_fd(), &mut buf).unwrap(),
            Some(Message::Reload(ReloadShare::Unchanged))
        ));
    }
}
