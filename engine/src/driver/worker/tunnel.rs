//! A tunnel's two directions and the two pumps (splice syscalls, or splices queued on
//! the ring), and its close.

use super::decide::{self, Closing, DirSlot, PollRole, Side, TunnelId};
use super::{Kind, POLL_READ, POLL_WRITE, PUMP_BUDGET, Pairing, SockState, Worker, user_data};
use crate::driver::DataPath;
use crate::driver::pipes::Pipe;
use crate::driver::shm::Counter;
use crate::driver::sys;
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
}

#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) socks: [usize; 2],
    pub(super) dirs: [Direction; 2],
    pub(super) last_active: Instant,
    /// Set once the tunnel is being torn down (with a reset when true).
    pub(super) closing: Closing,
    /// How it ends when one side finishes sending.
    pub(super) half_close: HalfClose,
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

/// Result of [`Worker::pipe_or_copy`].
pub(super) enum PipeOrCopy {
    /// The direction holds a pipe: splice.
    Pipe,
    /// No pipe to lend; a chunk was copied (or EOF seen): pump again.
    Copied,
    /// Stop pumping with this result.
    Stop(Pump),
}

impl<R: Router> Worker<R> {
    pub(super) fn pair(&mut self, client: usize, server: usize, pairing: Pairing) {
        self.disarm(client);
        self.disarm(server);
        let _ = sys::set_nodelay(self.socks[client].fd.as_fd());
        let _ = sys::set_nodelay(self.socks[server].fd.as_fd());
        let mut dirs = [Direction::default(), Direction::default()];
        dirs[0].pending = pairing.to_server;
        dirs[1].pending = pairing.greeting;
        let t = self.tunnels.insert(Tunnel {
            socks: [client, server],
            dirs,
            last_active: self.now,
            closing: Closing::Open,
            half_close: pairing.half_close,
        });
        if self.tunnel_gens.len() <= t {
            self.tunnel_gens.resize(t + 1, 0);
        }
        self.socks[client].state = SockState::Tunnel {
            tunnel: t,
            side: Side::Client,
        };
        self.socks[server].state = SockState::Tunnel {
            tunnel: t,
            side: Side::Server,
        };
        self.counters.add(Counter::Paired, 1);
        self.counters
            .set(Counter::ActiveTunnels, self.tunnels.len() as u64);
        self.pump_and_arm(t, Side::Server);
        if self.tunnels.contains(t) {
            self.pump_and_arm(t, Side::Client);
        }
    }

    pub(super) fn pump_and_arm(&mut self, t: usize, d: Side) {
        if !self.tunnels.contains(t) || self.tunnels[t].closing != Closing::Open {
            return;
        }
        let result = match self.cfg.data_path {
            DataPath::SpliceSyscall => self.pump_syscall(t, d),
            DataPath::SpliceUring => self.pump_uring(t, d),
        };
        let [src, dst] = self.dir_socks(t, d);
        match result {
            Pump::WaitRead | Pump::Yield => self.arm(src, PollRole::Read, POLL_READ),
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

    pub(super) fn dir_socks(&self, t: usize, d: Side) -> [usize; 2] {
        let socks = self.tunnels[t].socks;
        [socks[d.index()], socks[d.other().index()]]
    }

    /// Writes a direction's pending user-space bytes. `None` when all are written.
    pub(super) fn flush_pending(&mut self, t: usize, d: Side) -> Option<Pump> {
        let [_, dst] = self.dir_socks(t, d);
        let tunnel = &mut self.tunnels[t];
        let dir = &mut tunnel.dirs[d.index()];
        while dir.written < dir.pending.len() {
            match sys::send(self.socks[dst].fd.as_fd(), &dir.pending[dir.written..]) {
                Ok(n) => {
                    dir.written += n;
                    tunnel.last_active = self.now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Pump::WaitWrite),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Pump::Fail),
            }
        }
        dir.pending.clear();
        dir.written = 0;
        None
    }

    /// With no pipe to lend, moves one chunk through user space.
    pub(super) fn copy_chunk(&mut self, t: usize, d: Side) -> Result<(), Pump> {
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

    /// Makes sure a direction holds a pipe; with none left to lend, moves one chunk
    /// through user space instead.
    pub(super) fn pipe_or_copy(&mut self, t: usize, d: Side) -> PipeOrCopy {
        if self.tunnels[t].dirs[d.index()].pipe.is_some() {
            return PipeOrCopy::Pipe;
        }
        match self.pipes.get() {
            Some(p) => {
                self.tunnels[t].dirs[d.index()].pipe = Some(p);
                PipeOrCopy::Pipe
            }
            None => match self.copy_chunk(t, d) {
                Ok(()) => PipeOrCopy::Copied,
                Err(p) => PipeOrCopy::Stop(p),
            },
        }
    }

    pub(super) fn release_pipe_if_empty(&mut self, t: usize, d: Side) {
        let dir = &mut self.tunnels[t].dirs[d.index()];
        if dir.in_pipe == 0
            && let Some(p) = dir.pipe.take()
        {
            self.pipes.put(p);
        }
    }

    pub(super) fn finish_direction(&mut self, t: usize, d: Side) -> Pump {
        let [_, dst] = self.dir_socks(t, d);
        let _ = sys::shutdown_write(self.socks[dst].fd.as_fd());
        self.release_pipe_if_empty(t, d);
        self.tunnels[t].dirs[d.index()].done = true;
        Pump::Done
    }

    pub(super) fn pump_syscall(&mut self, t: usize, d: Side) -> Pump {
        let [src, dst] = self.dir_socks(t, d);
        let mut moved = 0usize;
        loop {
            if self.tunnels[t].dirs[d.index()].done {
                return Pump::Done;
            }
            if let Some(p) = self.flush_pending(t, d) {
                return p;
            }
            let dir = &mut self.tunnels[t].dirs[d.index()];
            if dir.in_pipe > 0 {
                let Some(pipe) = dir.pipe.as_ref() else {
                    return Pump::Fail;
                };
                match sys::splice(pipe.read.as_fd(), self.socks[dst].fd.as_fd(), dir.in_pipe) {
                    Ok(0) => return Pump::Fail,
                    Ok(n) => {
                        dir.in_pipe -= n;
                        moved += n;
                        self.tunnels[t].last_active = self.now;
                        self.counters.add(Counter::BytesSpliced, n as u64);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pump::WaitWrite,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Pump::Fail,
                }
            }
            if dir.src_eof {
                return self.finish_direction(t, d);
            }
            if moved >= PUMP_BUDGET {
                self.release_pipe_if_empty(t, d);
                return Pump::Yield;
            }
            match self.pipe_or_copy(t, d) {
                PipeOrCopy::Pipe => {}
                PipeOrCopy::Copied => continue,
                PipeOrCopy::Stop(p) => return p,
            }
            let dir = &mut self.tunnels[t].dirs[d.index()];
            let Some(pipe) = dir.pipe.as_ref() else {
                return Pump::Fail;
            };
            match sys::splice(
                self.socks[src].fd.as_fd(),
                pipe.write.as_fd(),
                pipe.capacity,
            ) {
                Ok(0) => dir.src_eof = true,
                Ok(n) => dir.in_pipe = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.release_pipe_if_empty(t, d);
                    return Pump::WaitRead;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pump::Fail,
            }
        }
    }

    pub(super) fn pump_uring(&mut self, t: usize, d: Side) -> Pump {
        if self.tunnels[t].dirs[d.index()].inflight {
            return Pump::InFlight;
        }
        if self.tunnels[t].dirs[d.index()].done {
            return Pump::Done;
        }
        loop {
            if let Some(p) = self.flush_pending(t, d) {
                return p;
            }
            let [src, dst] = self.dir_socks(t, d);
            let generation = self.tunnel_gens[t];
            let dir = &mut self.tunnels[t].dirs[d.index()];
            if dir.in_pipe > 0 {
                let Some(pipe) = dir.pipe.as_ref() else {
                    return Pump::Fail;
                };
                let (from, to, len) = (
                    pipe.read.as_raw_fd(),
                    self.socks[dst].fd.as_raw_fd(),
                    dir.in_pipe,
                );
                dir.inflight = true;
                self.queue_splice(
                    from,
                    to,
                    len,
                    Kind::SpliceOut,
                    generation,
                    DirSlot {
                        tunnel: TunnelId(t),
                        side: d,
                    },
                );
                return Pump::InFlight;
            }
            if dir.src_eof {
                return self.finish_direction(t, d);
            }
            match self.pipe_or_copy(t, d) {
                PipeOrCopy::Pipe => {}
                PipeOrCopy::Copied => continue,
                PipeOrCopy::Stop(p) => return p,
            }
            let dir = &mut self.tunnels[t].dirs[d.index()];
            let Some(pipe) = dir.pipe.as_ref() else {
                return Pump::Fail;
            };
            let (from, to, len) = (
                self.socks[src].fd.as_raw_fd(),
                pipe.write.as_raw_fd(),
                pipe.capacity,
            );
            dir.inflight = true;
            self.queue_splice(
                from,
                to,
                len,
                Kind::SpliceIn,
                generation,
                DirSlot {
                    tunnel: TunnelId(t),
                    side: d,
                },
            );
            return Pump::InFlight;
        }
    }

    /// Queues one non-blocking `IORING_OP_SPLICE` of up to `len` bytes; its completion
    /// comes back as `kind` for the tunnel direction `slot` names.
    pub(super) fn queue_splice(
        &mut self,
        from: RawFd,
        to: RawFd,
        len: usize,
        kind: Kind,
        generation: u32,
        slot: DirSlot,
    ) {
        let e = opcode::Splice::new(
            types::Fd(from),
            -1,
            types::Fd(to),
            -1,
            u32::try_from(len).unwrap_or(u32::MAX),
        )
        .flags(libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
        .build()
        .user_data(user_data(kind, generation, slot.encode()));
        self.push(e);
    }

    pub(super) fn on_splice(&mut self, kind: Kind, generation: u32, slot: usize, res: i32) {
        let DirSlot {
            tunnel: TunnelId(t),
            side: d,
        } = DirSlot::decode(slot);
        if !self.tunnels.contains(t) || self.tunnel_gens[t] != generation {
            return;
        }
        self.tunnels[t].dirs[d.index()].inflight = false;
        if let Closing::Closing { reset } = self.tunnels[t].closing {
            if self.tunnels[t].dirs.iter().all(|d| !d.inflight) {
                self.finish_close(t, reset);
            }
            return;
        }
        let [src, dst] = self.dir_socks(t, d);
        if res == -libc::EAGAIN {
            if kind == Kind::SpliceIn {
                self.release_pipe_if_empty(t, d);
                self.arm(src, PollRole::Read, POLL_READ);
            } else {
                self.arm(dst, PollRole::Write, POLL_WRITE);
            }
            return;
        }
        if res < 0 && res != -libc::EINTR {
            self.close_tunnel(t, true);
            return;
        }
        let n = res.max(0) as usize;
        let dir = &mut self.tunnels[t].dirs[d.index()];
        match kind {
            Kind::SpliceIn if res == 0 => dir.src_eof = true,
            Kind::SpliceIn => dir.in_pipe = n,
            _ => {
                dir.in_pipe = dir.in_pipe.saturating_sub(n);
                self.counters.add(Counter::BytesSpliced, n as u64);
            }
        }
        if n > 0 {
            self.tunnels[t].last_active = self.now;
        }
        self.pump_and_arm(t, d);
    }

    pub(super) fn close_tunnel(&mut self, t: usize, reset: bool) {
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

    pub(super) fn finish_close(&mut self, t: usize, reset: bool) {
        let mut tunnel = self.tunnels.remove(t);
        self.tunnel_gens[t] = self.tunnel_gens[t].wrapping_add(1) & 0xff_ffff;
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
        self.counters
            .set(Counter::ActiveTunnels, self.tunnels.len() as u64);
    }
}
