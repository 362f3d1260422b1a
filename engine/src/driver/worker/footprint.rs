//! A worker's per-connection tables, and a simulation of them for memory measurement.
//!
//! `Tables::new` builds the socket table, its generations, the head-deadline queue and
//! the room exactly as `super::Worker::new` does (it calls this), and
//! `receive_head` is the step `super::Worker` reads heads with. [`simulate`] drives
//! both with `n` connections without a ring or a single socket (descriptor numbers are
//! stand-ins, never opened or closed), so a heap profiler can count what the engine's
//! own structures hold per connection: `benches/src/bin/parked_mem.rs` does, under a
//! counting allocator, at 10k, 100k and 1M connections. Kernel memory (socket buffers,
//! the armed poll per parked socket) is not here; see docs/deploy.md.

use super::ids::{Generations, IdSlab, Kind, SockId, UserData};
use super::{HEAD_CHUNK, Sock, SockState};
use crate::driver::EngineConfig;
use crate::room::{ParkOutcome, Room, RoomLimits, SlabEntry};
use crate::route::Transport;
use crate::target::RendezvousKey;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// The tables a worker keeps per connection.
#[derive(Debug)]
pub(super) struct Tables<F> {
    pub(super) socks: IdSlab<SockId, Sock<F>>,
    /// Generation of every socket slot ever used (stale completions are ignored).
    pub(super) sock_gens: Generations<SockId>,
    /// `(deadline, slot, generation)` of every accepted connection, in accept order;
    /// lazily deleted, so an entry stays until its deadline even after the head came.
    pub(super) head_deadlines: VecDeque<(Instant, SockId, u32)>,
    pub(super) room: Room<SockId>,
}

/// Most entries a table is reserved for up front, whatever the configured budget (a
/// budget above it grows by doubling past this point).
const MAX_RESERVE: usize = 1 << 22;

impl<F> Tables<F> {
    /// The worker's empty tables for `cfg`, reserved for its socket budget
    /// (`max_sockets_per_worker`; the room for at most that many entries). A table
    /// filled by doubling copies itself into one twice its size, so it peaks at up to
    /// three times what it holds, and keeps up to twice; reserving the known budget
    /// avoids both. Reserved but unused capacity is address space, not resident memory
    /// (the allocator maps large blocks lazily), except one control byte per bucket
    /// of the room's key index.
    pub(super) fn new(cfg: &EngineConfig) -> Self {
        let budget = cfg.max_sockets_per_worker.min(MAX_RESERVE);
        let room = Room::with_capacity(
            RoomLimits {
                max_parked: cfg.max_parked_per_worker,
                max_parked_per_key: cfg.max_parked_per_key,
                max_waiting: cfg.max_waiting_per_worker,
                max_waiting_per_key: cfg.max_waiting_per_worker,
                client_wait: cfg.client_wait,
                park_ttl: None,
            },
            budget.min(
                cfg.max_parked_per_worker
                    .saturating_add(cfg.max_waiting_per_worker),
            ),
        );
        Self {
            socks: IdSlab::with_capacity(budget),
            sock_gens: Generations::with_capacity(budget),
            head_deadlines: VecDeque::with_capacity(budget),
            room,
        }
    }
}

/// Adds a socket in `state` to the socket table; its slot index.
pub(super) fn insert_sock<F>(
    socks: &mut IdSlab<SockId, Sock<F>>,
    sock_gens: &mut Generations<SockId>,
    fd: F,
    state: SockState,
) -> SockId {
    let idx = socks.insert(Sock {
        fd,
        state,
        transport: Transport::Plain,
        origin: crate::driver::Origin::Client,
        armed: [None, None],
    });
    sock_gens.track(idx);
    idx
}

/// One read step of a request head: `recv` fills up to [`HEAD_CHUNK`] bytes of the
/// worker's shared `scratch` buffer, and only what it returns is appended to `buf`. A
/// connection whose head has not arrived holds no buffer, and one whose head came in
/// one piece holds exactly its bytes (it used to be a 4 KiB buffer per connection,
/// kept while waiting and carried into a hand-off).
pub(super) fn receive_head(
    buf: &mut Vec<u8>,
    scratch: &mut [u8],
    recv: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let room = HEAD_CHUNK.min(scratch.len());
    let n = recv(&mut scratch[..room])?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/// How far the simulated connections get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; the first `recv` found nothing yet (their head has not arrived).
    AwaitingHead,
    /// Head read and routed; parked in the room with their hang-up poll armed.
    Parked,
}

/// `n` simulated connections held in a worker's tables. Dropping it frees them.
#[derive(Debug)]
pub struct Simulated {
    tables: Tables<RawFd>,
}

impl Simulated {
    /// Connections in the socket table.
    pub fn sockets(&self) -> usize {
        self.tables.socks.len()
    }

    /// Connections parked in the room.
    pub fn parked(&self) -> usize {
        self.tables.room.parked()
    }

    /// Bytes each table has allocated (capacity times element size; what a head
    /// buffer holds is summed over the sockets). `parked_mem` checks the sum against
    /// the counting allocator.
    pub fn table_bytes(&self) -> Vec<(&'static str, usize)> {
        let t = &self.tables;
        let heads: usize = t
            .socks
            .iter()
            .map(|(_, s)| match &s.state {
                SockState::Head { buf, .. } => buf.capacity(),
                _ => 0,
            })
            .sum();
        let mut out = vec![
            (
                "socket slab",
                t.socks.capacity() * size_of::<SlabEntry<Sock<RawFd>>>(),
            ),
            (
                "socket generations",
                t.sock_gens.capacity() * size_of::<u32>(),
            ),
            (
                "head deadlines",
                t.head_deadlines.capacity() * size_of::<(Instant, SockId, u32)>(),
            ),
            ("head buffers", heads),
        ];
        out.extend(t.room.table_bytes());
        out
    }
}

/// Length of the simulated park head: `CONNECT uuid:<36-char id> HTTP/1.1`, `Host`, and a
/// proof header, as `loadgen` sends them.
pub const HEAD_BYTES: usize = 220;

/// Runs `n` connections with distinct rendezvous keys (the worst case for the key index)
/// through a worker's tables for `cfg`, the way the worker (`super::Worker`) does for a hidden
/// server that connects and parks: insert in the socket table with a head deadline,
/// read the head with `receive_head`, split off the bytes past it, park in the room,
/// and keep only the room handle and the armed poll's `user_data`. The head is "parsed"
/// by position (its length is known), not by the parser. `now` is the only time used.
pub fn simulate(cfg: &EngineConfig, n: usize, stage: Stage, now: Instant) -> Simulated {
    let mut tables = Tables::<RawFd>::new(cfg);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut head = vec![b'h'; HEAD_BYTES];
    head[HEAD_BYTES - 4..].copy_from_slice(b"\r\n\r\n");
    let deadline = now + cfg.head_timeout;
    for i in 0..n {
        let idx = insert_sock(
            &mut tables.socks,
            &mut tables.sock_gens,
            i as RawFd,
            SockState::Head {
                buf: Vec::new(),
                handed_in: false,
            },
        );
        tables
            .head_deadlines
            .push_back((deadline, idx, tables.sock_gens.get(idx)));
        let SockState::Head { buf, .. } = &mut tables.socks[idx].state else {
            unreachable!("inserted as a head");
        };
        match stage {
            Stage::AwaitingHead => {
                let _ = receive_head(buf, &mut scratch, |_| Err(io::ErrorKind::WouldBlock.into()));
                tables.socks[idx].armed[0] = Some(UserData::sock(
                    Kind::PollRead,
                    tables.sock_gens.get(idx),
                    idx,
                ));
            }
            Stage::Parked => {
                let _ = receive_head(buf, &mut scratch, |into| {
                    let got = head.len().min(into.len());
                    into[..got].copy_from_slice(&head[..got]);
                    Ok(got)
                });
                let early = buf.split_off(HEAD_BYTES.min(buf.len()));
                drop(early);
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                match tables.room.park(RendezvousKey::uuid(id), idx, now) {
                    ParkOutcome::Parked { handle, .. } => {
                        tables.socks[idx].state = SockState::Parked {
                            handle,
                            notice: false,
                        };
                        tables.socks[idx].armed[0] = Some(UserData::sock(
                            Kind::PollRead,
                            tables.sock_gens.get(idx),
                            idx,
                        ));
                    }
                    ParkOutcome::Full(_) | ParkOutcome::Paired { .. } => {
                        tables.socks.remove(idx);
                    }
                }
            }
        }
    }
    Simulated { tables }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_keeps_only_the_bytes_that_arrived() {
        let mut scratch = vec![0u8; 64 * 1024];
        let mut buf = Vec::new();
        let r = receive_head(&mut buf, &mut scratch, |_| {
            Err(io::ErrorKind::WouldBlock.into())
        });
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            (buf.len(), buf.capacity()),
            (0, 0),
            "nothing held before bytes"
        );
        let n = receive_head(&mut buf, &mut scratch, |into| {
            assert_eq!(into.len(), HEAD_CHUNK, "one recv reads at most HEAD_CHUNK");
            into[..5].copy_from_slice(b"CONNE");
            Ok(5)
        })
        .unwrap();
        assert_eq!((n, buf.as_slice()), (5, &b"CONNE"[..]));
        assert!(
            buf.capacity() < 64,
            "capacity {} for 5 bytes",
            buf.capacity()
        );
        let n = receive_head(&mut buf, &mut scratch, |into| {
            into[..3].copy_from_slice(b"CT ");
            Ok(3)
        })
        .unwrap();
        assert_eq!((n, buf.as_slice()), (3, &b"CONNECT "[..]));
    }

    #[test]
    fn tables_are_reserved_for_the_budget_and_do_not_grow() {
        let cfg = EngineConfig {
            max_sockets_per_worker: 1000,
            max_parked_per_worker: 1000,
            ..EngineConfig::default()
        };
        let empty = Tables::<RawFd>::new(&cfg);
        let reserved = (
            empty.socks.capacity(),
            empty.sock_gens.capacity(),
            empty.room.table_bytes(),
        );
        assert!(reserved.0 >= 1000 && reserved.1 >= 1000, "{reserved:?}");
        let sim = simulate(&cfg, 1000, Stage::Parked, Instant::now());
        assert_eq!((sim.sockets(), sim.parked()), (1000, 1000));
        let t = &sim.tables;
        assert_eq!(
            (
                t.socks.capacity(),
                t.sock_gens.capacity(),
                t.room.table_bytes()
            ),
            reserved,
            "a table grew past its reservation"
        );
        let heads = sim.table_bytes();
        assert!(heads.contains(&("head buffers", 0)), "{heads:?}");
    }

    #[test]
    fn connections_awaiting_their_head_hold_no_buffer() {
        let cfg = EngineConfig::default();
        let sim = simulate(&cfg, 100, Stage::AwaitingHead, Instant::now());
        assert_eq!((sim.sockets(), sim.parked()), (100, 0));
        assert!(sim.table_bytes().contains(&("head buffers", 0)));
    }
}
