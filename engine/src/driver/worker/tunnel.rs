//! A tunnel's two directions and the two pumps (splice syscalls, or splices queued on
//! the ring), and its close.

use super::decide::{self, AfterSplice, Closing, PollRole, Side};
use super::ids::{DirSlot, Kind, SockId, TunnelId, UserData};
use super::{POLL_READ, POLL_WRITE, PUMP_BUDGET, Pairing, SockState, Worker};
use crate::driver::pipes::Pipe;
use crate::driver::shm::Counter;
use crate::driver::sys;
use crate::driver::{DataPath, Origin};
use crate::route::{HalfClose, Router};
use io_uring::{opcode, types};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

/// One direction of a tunnel, named by the side it reads from: side `d` to `d.other()`.
#[derive(Debug, Default)]
pub(super) struct Direction {
    /// Bytes to write before any spliced byte (the 200, or a client's early bytes).
    pub(super) pending: Vec<u8>,
    pub(super) written: usize,
    pub(super) pipe: Option<Pipe>,
    pub(super) in_pipe: usize,
    pub(super) src_eof: bool,
    pub(super) done: bool,
    /// A splice of this direction is queued on the ring (uring mode).
    pub(super) inflight: bool,
    /// The last fill moved under [`super::SHORT_FILL`] bytes: once drained, wait for
    /// readiness rather than try another fill.
    pub(super) short_fill: bool,
    /// Fills since the direction last waited for its source to become readable: a
    /// second one means more was waiting than one pipe's worth (a bulk stream).
    pub(super) fills_since_wait: u8,
}

#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) socks: [SockId; 2],
    pub(super) dirs: [Direction; 2],
    pub(super) last_active: Instant,
    /// Set once the tunnel is being torn down (with a reset when true).
    pub(super) closing: Closing,
    /// How it ends when one side finishes sending.
    pub(super) half_close: HalfClose,
    /// The side whose socket is a mesh connection to another node (a cross-node
    /// tunnel: the client's node splices its client with it, the holder its hidden
    /// server): its bytes both ways are counted as mesh bytes.
    pub(super) mesh: Option<Side>,
}

/// Outcome of pumping a direction.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pump {
    WaitRead,
    WaitWrite,
    /// Budget used up; re-arm a read poll so other connections get a turn.
    Yield,
    /// A splice is queued; its completion continues the pump.
    InFlight,
    Done,
    Fail,
}

/// What a direction does next, decided once for both data paths by
/// [`Worker::next_step`]; the pumps only differ in how they splice.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Move `len` bytes from the direction's pipe to its destination socket.
    Drain { len: usize },
    /// Move up to `capacity` bytes from the source socket into the direction's pipe.
    Fill { capacity: usize },
    /// Stop pumping with this result.
    Stop(Pump),
}

impl<R: Router> Worker<R> {
    /// Joins `client` and `server` into a tunnel. `notice`: the server parked with
    /// `Tryst-Pairing-Notice: 1`, so it learns of its client first
    /// ([`crate::reject::PAIRING_NOTICE`] ahead of everything else it is sent).
    pub(super) fn pair(
        &mut self,
        client: SockId,
        server: SockId,
        mut pairing: Pairing,
        notice: bool,
    ) {
        if notice {
            pairing
                .to_server
                .splice(0..0, crate::reject::PAIRING_NOTICE.iter().copied());
        }
        self.disarm(client);
        self.disarm(server);
        // Both TLS fronts here: plaintext passes between their sessions, no splice.
        let Err(pairing) = self.fuse(client, server, pairing) else {
            return;
        };
        // Tunnels carry interactive traffic too. A socket accepted from the relay's
        // listeners inherited `TCP_NODELAY` from them (set in `Worker::new`); one that
        // came over the mesh did not.
        for s in [client, server] {
            if !self.listeners_nodelay || self.socks[s].origin == Origin::Mesh {
                let _ = sys::set_nodelay(self.socks[s].fd.as_fd());
            }
        }
        let mut dirs = [Direction::default(), Direction::default()];
        dirs[0].pending = pairing.to_server;
        dirs[1].pending = pairing.greeting;
        let is_mesh = |s: SockId| self.socks[s].origin == Origin::Mesh;
        let mesh = if is_mesh(client) {
            Some(Side::Client)
        } else if is_mesh(server) {
            Some(Side::Server)
        } else {
            None
        };
        let t = self.tunnels.insert(Tunnel {
            socks: [client, server],
            dirs,
            last_active: self.now,
            closing: Closing::Open,
            half_close: pairing.half_close,
            mesh,
        });
        self.tunnel_gens.track(t);
        self.socks[client].state = SockState::Tunnel {
            tunnel: t,
            side: Side::Client,
        };
        self.socks[server].state = SockState::Tunnel {
            tunnel: t,
            side: Side::Server,
        };
        self.counters.add(Counter::Paired, 1);
        self.publish_tunnels();
        self.start_direction(t, Side::Server);
        if self.tunnels.contains(t) {
            self.start_direction(t, Side::Client);
        }
    }

    /// A new tunnel's direction: writes what it carries in (the `200`, or the forwarded
    /// head and the client's early bytes) and then waits for its source to be readable.
    /// It does not try a splice first: right after pairing the source almost never has
    /// bytes (the peer has not seen its `200` or the head yet), so that splice would be
    /// an `EAGAIN` (two per pairing). Bytes already waiting complete the poll at once.
    fn start_direction(&mut self, t: TunnelId, d: Side) {
        if !self.tunnels.contains(t) || self.tunnels[t].closing != Closing::Open {
            return;
        }
        let result = self.flush_pending(t, d).unwrap_or(Pump::WaitRead);
        self.after_pump(t, d, result);
    }

    pub(super) fn pump_and_arm(&mut self, t: TunnelId, d: Side) {
        if !self.tunnels.contains(t) || self.tunnels[t].closing != Closing::Open {
            return;
        }
        let result = match self.cfg.data_path {
            DataPath::SpliceSyscall => self.pump_syscall(t, d),
            DataPath::SpliceUring => self.pump_uring(t, d),
        };
        self.after_pump(t, d, result);
    }

    /// Arms what a direction waits for, or ends it, after a pump returned `result`.
    fn after_pump(&mut self, t: TunnelId, d: Side, result: Pump) {
        let [src, dst] = self.dir_socks(t, d);
        match result {
            Pump::WaitRead => self.wait_for_source(t, d),
            // Out of budget with bytes still coming: still the same stream.
            Pump::Yield => self.arm(src, PollRole::Read, POLL_READ),
            Pump::WaitWrite => self.arm(dst, PollRole::Write, POLL_WRITE),
            Pump::InFlight => {}
            Pump::Done => {
                // One direction ended: its FIN is forwarded and its bytes delivered.
                let tunnel = &self.tunnels[t];
                let both_done = tunnel.dirs.iter().all(|d| d.done);
                if decide::close_after_direction_done(tunnel.half_close, both_done) {
                    self.close_tunnel(t, false);
                }
            }
            Pump::Fail => self.close_tunnel(t, true),
        }
    }

    /// Direction `d` found its source empty: it waits for readability, and its next fill
    /// starts a new count of fills without a wait ([`decide::bulk_fill`]).
    fn wait_for_source(&mut self, t: TunnelId, d: Side) {
        self.tunnels[t].dirs[d.index()].fills_since_wait = 0;
        let [src, _] = self.dir_socks(t, d);
        self.arm(src, PollRole::Read, POLL_READ);
    }

    pub(super) fn dir_socks(&self, t: TunnelId, d: Side) -> [SockId; 2] {
        let socks = self.tunnels[t].socks;
        [socks[d.index()], socks[d.other().index()]]
    }

    /// Counts `n` bytes direction `d` delivered, as mesh bytes when the tunnel crosses
    /// nodes (read from the mesh: in; written to it: out).
    fn count_mesh(&self, t: TunnelId, d: Side, n: usize) {
        if let Some(m) = self.tunnels[t].mesh {
            let c = if m == d {
                Counter::MeshBytesIn
            } else {
                Counter::MeshBytesOut
            };
            self.counters.add(c, n as u64);
        }
    }

    /// Writes a direction's pending user-space bytes. `None` when all are written.
    pub(super) fn flush_pending(&mut self, t: TunnelId, d: Side) -> Option<Pump> {
        let [_, dst] = self.dir_socks(t, d);
        let tunnel = &mut self.tunnels[t];
        let dir = &mut tunnel.dirs[d.index()];
        let mut sent = 0;
        let mut stop = None;
        while dir.written < dir.pending.len() {
            match sys::send(self.socks[dst].fd.as_fd(), &dir.pending[dir.written..]) {
                Ok(n) => {
                    dir.written += n;
                    sent += n;
                    tunnel.last_active = self.now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stop = Some(Pump::WaitWrite);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    stop = Some(Pump::Fail);
                    break;
                }
            }
        }
        if stop.is_none() {
            dir.pending.clear();
            dir.written = 0;
        }
        if sent > 0 {
            self.count_mesh(t, d, sent);
        }
        stop
    }

    /// With no pipe to lend, moves one chunk through user space (into `pending`, which
    /// the next step writes).
    pub(super) fn copy_chunk(&mut self, t: TunnelId, d: Side) -> Result<(), Pump> {
        let [src, _] = self.dir_socks(t, d);
        match sys::recv(self.socks[src].fd.as_fd(), &mut self.scratch) {
            Ok(0) => {
                self.tunnels[t].dirs[d.index()].src_eof = true;
                Ok(())
            }
            Ok(n) => {
                let dir = &mut self.tunnels[t].dirs[d.index()];
                dir.pending.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Pump::WaitRead),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(Pump::Fail),
        }
    }

    /// What direction `d` does next: write its pending bytes, drain its pipe, finish at
    /// EOF, yield once its budget is spent (`budget_left` false), or fill its pipe. With
    /// no pipe to lend, one chunk is copied through user space and the step repeats.
    /// The one place both pumps take a pipe from the pool or fall back to copying.
    pub(super) fn next_step(&mut self, t: TunnelId, d: Side, budget_left: bool) -> Step {
        loop {
            if let Some(p) = self.flush_pending(t, d) {
                return Step::Stop(p);
            }
            let dir = &self.tunnels[t].dirs[d.index()];
            if dir.in_pipe > 0 {
                if dir.pipe.is_none() {
                    return Step::Stop(Pump::Fail);
                }
                return Step::Drain { len: dir.in_pipe };
            }
            if dir.src_eof {
                return Step::Stop(self.finish_direction(t, d));
            }
            if dir.short_fill {
                self.tunnels[t].dirs[d.index()].short_fill = false;
                self.release_pipe_if_empty(t, d);
                return Step::Stop(Pump::WaitRead);
            }
            if !budget_left {
                self.release_pipe_if_empty(t, d);
                return Step::Stop(Pump::Yield);
            }
            if let Some(pipe) = &self.tunnels[t].dirs[d.index()].pipe {
                return Step::Fill {
                    capacity: pipe.capacity,
                };
            }
            match self.pipes.get() {
                Some(p) => {
                    let capacity = p.capacity;
                    self.tunnels[t].dirs[d.index()].pipe = Some(p);
                    return Step::Fill { capacity };
                }
                None => {
                    if let Err(p) = self.copy_chunk(t, d) {
                        return Step::Stop(p);
                    }
                }
            }
        }
    }

    pub(super) fn release_pipe_if_empty(&mut self, t: TunnelId, d: Side) {
        let dir = &mut self.tunnels[t].dirs[d.index()];
        if dir.in_pipe == 0
            && let Some(p) = dir.pipe.take()
        {
            self.pipes.put(p);
        }
    }

    pub(super) fn finish_direction(&mut self, t: TunnelId, d: Side) -> Pump {
        let [_, dst] = self.dir_socks(t, d);
        let _ = sys::shutdown_write(self.socks[dst].fd.as_fd());
        self.release_pipe_if_empty(t, d);
        self.tunnels[t].dirs[d.index()].done = true;
        Pump::Done
    }

    /// Accounts a splice result: `Ok(n)` bytes in (`fill`) or out of the pipe. `Err` is
    /// the pump's result when the splice did not move bytes.
    fn spliced(&mut self, t: TunnelId, d: Side, fill: bool, n: usize) -> Result<(), Pump> {
        let dir = &mut self.tunnels[t].dirs[d.index()];
        if fill {
            if n == 0 {
                dir.src_eof = true;
            } else {
                dir.in_pipe = n;
                dir.short_fill = n < super::SHORT_FILL;
                dir.fills_since_wait = dir.fills_since_wait.saturating_add(1);
                let since_wait = dir.fills_since_wait;
                if let Some(pipe) = dir
                    .pipe
                    .as_mut()
                    .filter(|p| decide::bulk_fill(n, p.capacity, since_wait))
                {
                    self.pipes.grow(pipe);
                }
            }
        } else {
            if n == 0 {
                // A pipe with bytes in it never reads as empty: the destination is gone.
                return Err(Pump::Fail);
            }
            dir.in_pipe = dir.in_pipe.saturating_sub(n);
            self.counters.add(Counter::BytesSpliced, n as u64);
            self.count_mesh(t, d, n);
        }
        if n > 0 {
            self.tunnels[t].last_active = self.now;
        }
        Ok(())
    }

    pub(super) fn pump_syscall(&mut self, t: TunnelId, d: Side) -> Pump {
        let [src, dst] = self.dir_socks(t, d);
        let mut moved = 0usize;
        loop {
            if self.tunnels[t].dirs[d.index()].done {
                return Pump::Done;
            }
            let step = self.next_step(t, d, moved < PUMP_BUDGET);
            let dir = &self.tunnels[t].dirs[d.index()];
            let (fill, result) = match (step, dir.pipe.as_ref()) {
                (Step::Stop(p), _) => return p,
                (_, None) => return Pump::Fail,
                (Step::Drain { len }, Some(pipe)) => (
                    false,
                    sys::splice(pipe.read.as_fd(), self.socks[dst].fd.as_fd(), len),
                ),
                (Step::Fill { capacity }, Some(pipe)) => (
                    true,
                    sys::splice(self.socks[src].fd.as_fd(), pipe.write.as_fd(), capacity),
                ),
            };
            match result {
                Ok(n) => {
                    if !fill {
                        moved += n;
                    }
                    if let Err(p) = self.spliced(t, d, fill, n) {
                        return p;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if fill {
                        self.release_pipe_if_empty(t, d);
                        return Pump::WaitRead;
                    }
                    return Pump::WaitWrite;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pump::Fail,
            }
        }
    }

    pub(super) fn pump_uring(&mut self, t: TunnelId, d: Side) -> Pump {
        let dir = &self.tunnels[t].dirs[d.index()];
        if dir.inflight {
            return Pump::InFlight;
        }
        if dir.done {
            return Pump::Done;
        }
        let [src, dst] = self.dir_socks(t, d);
        let step = self.next_step(t, d, true);
        let dir = &mut self.tunnels[t].dirs[d.index()];
        let (from, to, len, kind) = match (step, dir.pipe.as_ref()) {
            (Step::Stop(p), _) => return p,
            (_, None) => return Pump::Fail,
            (Step::Drain { len }, Some(pipe)) => (
                pipe.read.as_raw_fd(),
                self.socks[dst].fd.as_raw_fd(),
                len,
                Kind::SpliceOut,
            ),
            (Step::Fill { capacity }, Some(pipe)) => (
                self.socks[src].fd.as_raw_fd(),
                pipe.write.as_raw_fd(),
                capacity,
                Kind::SpliceIn,
            ),
        };
        dir.inflight = true;
        let dir = DirSlot { tunnel: t, side: d };
        self.queue_splice(from, to, len, kind, dir);
        Pump::InFlight
    }

    /// Queues one non-blocking `IORING_OP_SPLICE` of up to `len` bytes; its completion
    /// comes back as `kind` for the tunnel direction `dir` names.
    pub(super) fn queue_splice(
        &mut self,
        from: RawFd,
        to: RawFd,
        len: usize,
        kind: Kind,
        dir: DirSlot,
    ) {
        let generation = self.tunnel_gens.get(dir.tunnel);
        let e = opcode::Splice::new(
            types::Fd(from),
            -1,
            types::Fd(to),
            -1,
            u32::try_from(len).unwrap_or(u32::MAX),
        )
        .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
        .build()
        .user_data(UserData::splice(kind, generation, dir));
        self.push(e);
    }

    pub(super) fn on_splice(&mut self, ud: UserData, res: i32) {
        let DirSlot { tunnel: t, side: d } = ud.dir();
        if !self.tunnels.contains(t) || !self.tunnel_gens.is_current(t, ud.generation) {
            return;
        }
        self.tunnels[t].dirs[d.index()].inflight = false;
        if let Closing::Closing { reset } = self.tunnels[t].closing {
            if self.tunnels[t].dirs.iter().all(|d| !d.inflight) {
                self.finish_close(t, reset);
            }
            return;
        }
        let [_, dst] = self.dir_socks(t, d);
        let fill = ud.kind == Kind::SpliceIn;
        match decide::after_splice(fill, res) {
            AfterSplice::WaitRead => {
                self.release_pipe_if_empty(t, d);
                self.wait_for_source(t, d);
                return;
            }
            AfterSplice::WaitWrite => {
                self.arm(dst, PollRole::Write, POLL_WRITE);
                return;
            }
            AfterSplice::Reset => {
                self.close_tunnel(t, true);
                return;
            }
            AfterSplice::Moved { moved } => {
                // Only a drain of 0 bytes errs, and that is a Retry, not Moved.
                let _ = self.spliced(t, d, fill, moved);
            }
            AfterSplice::Retry => {}
        }
        self.pump_and_arm(t, d);
    }

    pub(super) fn close_tunnel(&mut self, t: TunnelId, reset: bool) {
        if !self.tunnels.contains(t) || self.tunnels[t].closing != Closing::Open {
            return;
        }
        self.tunnels[t].closing = Closing::Closing { reset };
        // Stop polls now; descriptors named by a queued splice stay open until it completes.
        let socks = self.tunnels[t].socks;
        self.disarm(socks[0]);
        self.disarm(socks[1]);
        if self.tunnels[t].dirs.iter().all(|d| !d.inflight) {
            self.finish_close(t, reset);
        }
    }

    pub(super) fn finish_close(&mut self, t: TunnelId, reset: bool) {
        let mut tunnel = self.tunnels.remove(t);
        self.tunnel_gens.bump(t);
        for dir in &mut tunnel.dirs {
            if let Some(p) = dir.pipe.take() {
                if dir.in_pipe == 0 {
                    self.pipes.put(p)
                } else {
                    self.pipes.discard(p)
                }
            }
        }
        self.close_sock(tunnel.socks[0], reset);
        self.close_sock(tunnel.socks[1], reset);
        self.publish_tunnels();
    }
}
