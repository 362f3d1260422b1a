//! Messages between processes over unix datagram sockets: a connection handed to its
//! owner worker or to the supervisor's HTTP inbox (descriptor via `SCM_RIGHTS`, plus
//! every byte already read from it), and control messages from the supervisor.

use crate::route::Transport;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest message payload (a whole head plus what followed it fits many times over).
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;

const KIND_CONN: u8 = 1;
const KIND_CONN_TLS: u8 = 4;
const KIND_RELOAD: u8 = 2;
const KIND_SHUTDOWN: u8 = 3;

/// A received message.
#[derive(Debug)]
pub(crate) enum Message {
    /// A connection, the bytes already read from it, and how it arrived.
    Conn(OwnedFd, Vec<u8>, Transport),
    /// Re-read secrets.
    Reload,
    /// Stop accepting, drain, exit.
    Shutdown,
}

/// Sends a connection. `Err(WouldBlock)` when the receiver's queue is full.
pub(crate) fn send_conn(
    sock: BorrowedFd<'_>,
    conn: BorrowedFd<'_>,
    bytes: &[u8],
    transport: Transport,
) -> io::Result<()> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "payload too large",
        ));
    }
    let kind = [match transport {
        Transport::Plain => KIND_CONN,
        Transport::Tls => KIND_CONN_TLS,
    }];
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
    let kind = [kind];
    let iov = [IoSlice::new(&kind)];
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

/// Sends a reload request.
pub(crate) fn send_reload(sock: BorrowedFd<'_>) -> io::Result<()> {
    send_kind(sock, KIND_RELOAD)
}

/// Sends a shutdown request.
pub(crate) fn send_shutdown(sock: BorrowedFd<'_>) -> io::Result<()> {
    send_kind(sock, KIND_SHUTDOWN)
}

/// Receives one message without blocking; `Ok(None)` when none is queued. Malformed
/// messages (which only a bug could produce) are dropped, closing any descriptor.
pub(crate) fn try_recv(sock: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<Option<Message>> {
    buf.resize(MAX_PAYLOAD + 1, 0);
    loop {
        let mut cmsg_space = nix::cmsg_space!([RawFd; 4]);
        let (len, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf[..])];
            let msg = match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
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
            (msg.bytes, fds)
        };
        let mut fds = fds.into_iter();
        let msg = match (buf.first().copied(), len) {
            (_, 0) => None,
            (Some(KIND_CONN), n) if n <= MAX_PAYLOAD + 1 => fds
                .next()
                .map(|fd| Message::Conn(fd, buf[1..n].to_vec(), Transport::Plain)),
            (Some(KIND_CONN_TLS), n) if n <= MAX_PAYLOAD + 1 => fds
                .next()
                .map(|fd| Message::Conn(fd, buf[1..n].to_vec(), Transport::Tls)),
            (Some(KIND_RELOAD), _) => Some(Message::Reload),
            (Some(KIND_SHUTDOWN), _) => Some(Message::Shutdown),
            _ => None,
        };
        if let Some(m) = msg {
            return Ok(Some(m));
        }
    }
}
