//! TLS termination in front of the ordinary connection path.
//!
//! A connection accepted on a TLS listener gets a *front*: its TCP socket, a rustls
//! server session and one end (`inner`) of a unix stream socketpair. The other end of
//! the pair enters the worker as an ordinary connection (transport TLS) and follows the
//! same path as a plain one: head, classification, hand-off to the key's owner, room,
//! splice. The front only moves bytes: ciphertext from TCP through rustls into `inner`,
//! and bytes from `inner` through rustls out to TCP. There is no kernel TLS on this
//! machine, so tunnel bytes of a TLS connection necessarily pass through user space;
//! the front reuses fixed buffers, so it allocates nothing per chunk once running.

use super::sys;
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most decrypted bytes held for `inner` before the front stops reading TCP.
const PLAIN_BUF: usize = 64 * 1024;
/// Most bytes taken from `inner` per read.
const CHUNK: usize = 64 * 1024;

/// One TLS connection's front.
pub(crate) struct TlsFront {
    pub(crate) session: ServerConnection,
    /// Decrypted bytes not yet written to `inner`.
    to_inner: Vec<u8>,
    to_inner_written: usize,
    tcp_eof: bool,
    inner_eof: bool,
    inner_write_shut: bool,
    tcp_write_shut: bool,
}

/// What a front needs next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    pub(crate) tcp_read: bool,
    pub(crate) tcp_write: bool,
    pub(crate) inner_read: bool,
    pub(crate) inner_write: bool,
    /// Both directions finished cleanly: close everything.
    pub(crate) done: bool,
    /// A protocol or socket error: close everything with a reset.
    pub(crate) failed: bool,
}

struct FdIo<'a>(BorrowedFd<'a>);

impl Read for FdIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf)
    }
}

impl Write for FdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl TlsFront {
    pub(crate) fn new(session: ServerConnection) -> Self {
        Self {
            session,
            to_inner: Vec::with_capacity(PLAIN_BUF),
            to_inner_written: 0,
            tcp_eof: false,
            inner_eof: false,
            inner_write_shut: false,
            tcp_write_shut: false,
        }
    }

    /// Moves whatever can move without blocking, in both directions, and says what to
    /// wait for. `scratch` is the worker's shared buffer.
    pub(crate) fn pump(&mut self, tcp: &OwnedFd, inner: &OwnedFd, scratch: &mut [u8]) -> Needs {
        let mut needs = Needs::default();
        let chunk = scratch.len().min(CHUNK);
        loop {
            let mut progress = false;
            // Ciphertext in from TCP, while there is room for the plaintext.
            if !self.tcp_eof && self.to_inner.len() < PLAIN_BUF && self.session.wants_read() {
                match self.session.read_tls(&mut FdIo(tcp.as_fd())) {
                    Ok(0) => {
                        self.tcp_eof = true;
                        progress = true;
                    }
                    Ok(_) => {
                        progress = true;
                        if self.session.process_new_packets().is_err() {
                            // Send the alert rustls queued, then give up.
                            let _ = self.session.write_tls(&mut FdIo(tcp.as_fd()));
                            needs.failed = true;
                            return needs;
                        }
                    }
                    Err(e) if would_block(&e) => needs.tcp_read = true,
                    Err(_) => {
                        needs.failed = true;
                        return needs;
                    }
                }
            }
            // Plaintext out of rustls into the buffer for `inner`.
            while self.to_inner.len() < PLAIN_BUF {
                let room = (PLAIN_BUF - self.to_inner.len()).min(chunk);
                match self.session.reader().read(&mut scratch[..room]) {
                    Ok(0) => {
                        // close_notify: the peer finished sending.
                        self.tcp_eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.to_inner.extend_from_slice(&scratch[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // Unexpected EOF without close_notify: treat as end of stream.
                        self.tcp_eof = true;
                        break;
                    }
                }
            }
            // Buffered plaintext into `inner`.
            while self.to_inner_written < self.to_inner.len() {
                match sys::send(inner.as_fd(), &self.to_inner[self.to_inner_written..]) {
                    Ok(n) => {
                        self.to_inner_written += n;
                        progress = true;
                    }
                    Err(e) if would_block(&e) => {
                        needs.inner_write = true;
                        break;
                    }
                    Err(_) => {
                        needs.failed = true;
                        return needs;
                    }
                }
            }
            if self.to_inner_written == self.to_inner.len() {
                self.to_inner.clear();
                self.to_inner_written = 0;
                if self.tcp_eof && !self.inner_write_shut {
                    let _ = sys::shutdown_write(inner.as_fd());
                    self.inner_write_shut = true;
                }
            }
            // Bytes from `inner` into rustls, while its outgoing buffer is drained.
            if !self.inner_eof && !self.session.wants_write() {
                match sys::recv(inner.as_fd(), &mut scratch[..chunk]) {
                    Ok(0) => {
                        self.inner_eof = true;
                        self.session.send_close_notify();
                        progress = true;
                    }
                    Ok(n) => {
                        if self.session.writer().write_all(&scratch[..n]).is_err() {
                            needs.failed = true;
                            return needs;
                        }
                        progress = true;
                    }
                    Err(e) if would_block(&e) => needs.inner_read = true,
                    Err(_) => {
                        needs.failed = true;
                        return needs;
                    }
                }
            }
            // Ciphertext out to TCP.
            while self.session.wants_write() {
                match self.session.write_tls(&mut FdIo(tcp.as_fd())) {
                    Ok(_) => progress = true,
                    Err(e) if would_block(&e) => {
                        needs.tcp_write = true;
                        break;
                    }
                    Err(_) => {
                        needs.failed = true;
                        return needs;
                    }
                }
            }
            if self.inner_eof && !self.session.wants_write() && !self.tcp_write_shut {
                let _ = sys::shutdown_write(tcp.as_fd());
                self.tcp_write_shut = true;
            }
            if !progress {
                break;
            }
            needs = Needs::default();
        }
        if self.tcp_eof && self.inner_write_shut && self.inner_eof && self.tcp_write_shut {
            needs.done = true;
        }
        if self.inner_eof && self.session.is_handshaking() {
            // The connection behind the front is gone (e.g. refused for a stalled
            // handshake) before TLS was even set up: nothing more can be said.
            needs.failed = true;
        }
        needs
    }
}
