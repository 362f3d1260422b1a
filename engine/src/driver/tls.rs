//! TLS termination in front of the ordinary connection path.
//!
//! A connection accepted on a TLS listener gets a *front*: its TCP socket, a rustls
//! server session and one end (`inner`) of a unix stream socketpair. The other end of
//! the pair enters the worker as an ordinary connection (transport TLS) and follows the
//! same path as a plain one: head, classification, hand-off to the key's owner, room,
//! splice. The front only moves bytes: ciphertext from TCP through rustls into `inner`,
//! and bytes from `inner` through rustls out to TCP. There is no kernel TLS on this
//! machine, so tunnel bytes of a TLS connection necessarily pass through user space.
//!
//! Syscalls per byte are what the front can save: rustls reads ciphertext from a socket
//! in 4 KiB steps (four or five `recv`s per 16 KiB record) and writes one record per
//! `send`. The front instead takes ciphertext with one large `recv` into the worker's
//! scratch buffer and feeds rustls from memory, and writes every queued record with one
//! `writev`. Decrypted bytes wait in one 64 KiB buffer that exists only while it holds
//! bytes, so an idle (parked) front keeps no plaintext buffer.

use super::sys;
use rustls::ServerConnection;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most decrypted bytes held for `inner` before the front stops reading TCP.
const PLAIN_BUF: usize = 64 * 1024;
/// Most bytes taken from `inner` per read.
const CHUNK: usize = 64 * 1024;
/// Room kept for the plaintext of a record rustls already holds in part: a TLS record
/// on the wire is at most 16 KiB of plaintext plus its header, padding and tag.
const RECORD_SLACK: usize = 18 * 1024;

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

impl Write for FdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        sys::send_vectored(self.0, bufs)
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
            to_inner: Vec::new(),
            to_inner_written: 0,
            tcp_eof: false,
            inner_eof: false,
            inner_write_shut: false,
            tcp_write_shut: false,
        }
    }

    /// Feeds `ciphertext` (all of it) to rustls and moves every record's plaintext into
    /// the buffer for `inner`; the caller read no more than that buffer can take. An
    /// error is a TLS protocol error (rustls queued the alert).
    fn take_ciphertext(&mut self, mut ciphertext: &[u8]) -> Result<(), ()> {
        while !ciphertext.is_empty() {
            match self.session.read_tls(&mut ciphertext) {
                // close_notify was received: what follows it is ignored.
                Ok(0) => {
                    self.tcp_eof = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => return Err(()),
            }
            self.session.process_new_packets().map_err(drop)?;
            self.take_plaintext();
        }
        Ok(())
    }

    /// Moves the plaintext rustls holds into the buffer for `inner`.
    fn take_plaintext(&mut self) {
        loop {
            let mut reader = self.session.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    // close_notify: the peer finished sending.
                    self.tcp_eof = true;
                    return;
                }
                Ok(plain) => {
                    let n = plain.len();
                    if self.to_inner.capacity() == 0 {
                        self.to_inner.reserve_exact(PLAIN_BUF.max(n));
                    }
                    self.to_inner.extend_from_slice(plain);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // Unexpected EOF without close_notify: treat as end of stream.
                    self.tcp_eof = true;
                    return;
                }
            }
        }
    }

    /// Moves whatever can move without blocking, in both directions, and says what to
    /// wait for. `scratch` is the worker's shared buffer.
    pub(crate) fn pump(&mut self, tcp: &OwnedFd, inner: &OwnedFd, scratch: &mut [u8]) -> Needs {
        let mut needs = Needs::default();
        let chunk = scratch.len().min(CHUNK);
        loop {
            let mut progress = false;
            match self.read_ciphertext(tcp, scratch, &mut needs) {
                Ok(moved) => progress |= moved,
                Err(()) => {
                    needs.failed = true;
                    return needs;
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
                // Nothing waits for `inner`: give the buffer back (a parked or idle
                // front holds none; the next plaintext takes a fresh one).
                self.to_inner = Vec::new();
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
            match self.flush_out(tcp, &mut needs) {
                Ok(moved) => progress |= moved,
                Err(()) => {
                    needs.failed = true;
                    return needs;
                }
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

/// What a fused pair (see [`pump_fused`]) needs next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FusedNeeds {
    /// Each front's TCP socket: `tcp_read` / `tcp_write` (the `inner_*` flags unused).
    pub(crate) sides: [Needs; 2],
    /// Plaintext bytes passed from one session to the other in this call.
    pub(crate) moved: u64,
    /// Both directions finished (or, closing both, one): close both connections.
    pub(crate) done: bool,
    /// A protocol or socket error on either side: reset both.
    pub(crate) failed: bool,
}

impl TlsFront {
    /// The plaintext this front decrypted and has not passed on (taken): what it held
    /// for `inner` when its tunnel's two fronts are fused.
    pub(crate) fn take_unsent(&mut self) -> Vec<u8> {
        let mut unsent = std::mem::take(&mut self.to_inner);
        unsent.drain(..self.to_inner_written);
        self.to_inner_written = 0;
        unsent
    }

    /// Plaintext to pass on before anything this front decrypts next (set when fusing:
    /// what the socketpairs still held, the pairing's own bytes, [`Self::take_unsent`]).
    pub(crate) fn set_unsent(&mut self, bytes: Vec<u8>) {
        self.to_inner = bytes;
        self.to_inner_written = 0;
        // If this side's end was already passed to `inner`, it has not reached the
        // peer's session yet: it is passed on again after these bytes.
        self.inner_write_shut = false;
    }

    /// One direction of a fused pair: ciphertext in from `tcp`, its plaintext into
    /// `peer`'s session (as much as the peer's outgoing buffer takes), and the end of
    /// the stream passed on as the peer's close_notify. Returns whether anything moved.
    fn pass_to(
        &mut self,
        tcp: &OwnedFd,
        peer: &mut Self,
        scratch: &mut [u8],
        needs: &mut Needs,
        moved: &mut u64,
    ) -> Result<bool, ()> {
        let mut progress = self.read_ciphertext(tcp, scratch, needs)?;
        while self.to_inner_written < self.to_inner.len() {
            // Ok(0): the peer's outgoing buffer (rustls' limit) is full; it drains first.
            match peer
                .session
                .writer()
                .write(&self.to_inner[self.to_inner_written..])
            {
                Ok(0) => break,
                Ok(n) => {
                    self.to_inner_written += n;
                    *moved += n as u64;
                    progress = true;
                }
                Err(_) => return Err(()),
            }
        }
        if self.to_inner_written == self.to_inner.len() {
            self.to_inner = Vec::new();
            self.to_inner_written = 0;
            if self.tcp_eof && !self.inner_write_shut {
                // This side finished sending: so does the peer's session, once drained.
                peer.session.send_close_notify();
                peer.inner_eof = true;
                self.inner_write_shut = true;
                progress = true;
            }
        }
        Ok(progress)
    }

    /// Ciphertext in from `tcp` with one large read, while the plaintext of all of it
    /// (and of a record rustls holds in part) fits in the buffer of plaintext not yet
    /// passed on; decrypted into that buffer. Returns whether anything moved; an error
    /// is a protocol or socket error (the alert rustls queued is sent first).
    fn read_ciphertext(
        &mut self,
        tcp: &OwnedFd,
        scratch: &mut [u8],
        needs: &mut Needs,
    ) -> Result<bool, ()> {
        // Saturating: bytes queued when fusing may exceed the buffer's usual size.
        let room = PLAIN_BUF.saturating_sub(self.to_inner.len());
        if self.tcp_eof || room <= RECORD_SLACK || !self.session.wants_read() {
            return Ok(false);
        }
        let want = (room - RECORD_SLACK).min(scratch.len());
        match sys::recv(tcp.as_fd(), &mut scratch[..want]) {
            Ok(0) => {
                self.tcp_eof = true;
                Ok(true)
            }
            Ok(n) => {
                if self.take_ciphertext(&scratch[..n]).is_err() {
                    // Send the alert rustls queued, then give up.
                    let _ = self.session.write_tls(&mut FdIo(tcp.as_fd()));
                    return Err(());
                }
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                needs.tcp_read = true;
                Ok(false)
            }
            Err(_) => Err(()),
        }
    }

    /// This session's queued ciphertext out to `tcp`; the write side is shut once the
    /// other side's end was passed on (the `inner` end, or a fused peer's) and
    /// everything is out.
    fn flush_out(&mut self, tcp: &OwnedFd, needs: &mut Needs) -> Result<bool, ()> {
        let mut progress = false;
        while self.session.wants_write() {
            match self.session.write_tls(&mut FdIo(tcp.as_fd())) {
                Ok(_) => progress = true,
                Err(e) if would_block(&e) => {
                    needs.tcp_write = true;
                    break;
                }
                Err(_) => return Err(()),
            }
        }
        if self.inner_eof && !self.session.wants_write() && !self.tcp_write_shut {
            let _ = sys::shutdown_write(tcp.as_fd());
            self.tcp_write_shut = true;
        }
        Ok(progress)
    }

    /// Whether everything this side sent has been passed on, its end included, and
    /// written out by `peer`.
    fn sent_and_delivered(&self, peer: &Self) -> bool {
        self.tcp_eof && self.inner_write_shut && peer.tcp_write_shut
    }
}

/// A tunnel whose two connections are both TLS fronts in this worker: plaintext passes
/// from one rustls session to the other in memory, with no socketpair and no splice
/// (the fronts are *fused*). Moves whatever can move without blocking, both ways, and
/// says what each TCP socket waits for. `close_both`: the tunnel ends when either side
/// has finished and its bytes are delivered (`HalfClose::CloseBoth`), else when both
/// have.
pub(crate) fn pump_fused(
    fronts: [&mut TlsFront; 2],
    tcp: [&OwnedFd; 2],
    scratch: &mut [u8],
    close_both: bool,
) -> FusedNeeds {
    let [a, b] = fronts;
    let mut out = FusedNeeds::default();
    loop {
        let mut needs = [Needs::default(); 2];
        match fused_step(a, b, tcp, scratch, &mut needs, &mut out.moved) {
            Err(()) => {
                out.failed = true;
                return out;
            }
            Ok(true) => {}
            Ok(false) => {
                out.sides = needs;
                break;
            }
        }
    }
    let a_done = a.sent_and_delivered(b);
    let b_done = b.sent_and_delivered(a);
    out.done = (a_done && b_done) || (close_both && (a_done || b_done));
    out
}

/// One pass of [`pump_fused`] over both directions; whether anything moved.
fn fused_step(
    a: &mut TlsFront,
    b: &mut TlsFront,
    tcp: [&OwnedFd; 2],
    scratch: &mut [u8],
    needs: &mut [Needs; 2],
    moved: &mut u64,
) -> Result<bool, ()> {
    let [na, nb] = needs;
    let mut progress = a.pass_to(tcp[0], b, scratch, na, moved)?;
    progress |= b.pass_to(tcp[1], a, scratch, nb, moved)?;
    progress |= a.flush_out(tcp[0], na)?;
    progress |= b.flush_out(tcp[1], nb)?;
    Ok(progress)
}
