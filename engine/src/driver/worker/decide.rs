//! The worker's per-connection decisions, free of sockets and of the ring, so they can be
//! unit-tested the way the room is: what a ready poll leads to, when a head is parsed,
//! where a classified head goes, when a lingering refusal ends, what a finished direction
//! does to its tunnel, and how a tunnel direction is named in a completion's `user_data`.

use super::SockState;
use crate::reject::Rejection;
use crate::route::{Classified, HalfClose};
use crate::target::Placement;

/// The two ends of a tunnel. The client is the side that reached; the server is the
/// side that parked. A direction is named by the side it reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The reaching connection (direction `Client`: client to server).
    Client = 0,
    /// The parked connection (direction `Server`: server to client).
    Server = 1,
}

impl Side {
    /// The other end.
    pub(super) fn other(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }

    /// Index into per-side arrays (`Tunnel::socks`, `Tunnel::dirs`).
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Which of a socket's two one-shot polls: the read role or the write role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PollRole {
    /// Readable (or hung up).
    Read = 0,
    /// Writable.
    Write = 1,
}

impl PollRole {
    /// Index into `Sock::armed`.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The direction a ready poll on `side` of a tunnel serves: a read-role poll on side `s`
/// serves direction `s` (it reads from `s`); a write-role poll serves the direction that
/// writes to `s`, the other one.
pub(super) fn direction_for(side: Side, role: PollRole) -> Side {
    match role {
        PollRole::Read => side,
        PollRole::Write => side.other(),
    }
}

/// What a ready poll on a socket leads to, by what the socket is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnReady {
    /// Reading its head: read more.
    ReadHead,
    /// Parked or waiting in the room, where only a hang-up is polled for: leave the room.
    LeaveRoom,
    /// Writing a refusal: write more.
    WriteRefusal,
    /// Refused and shut: discard more input.
    Linger,
    /// One side of a tunnel: pump the direction the poll serves.
    Pump {
        /// The tunnel's slot.
        tunnel: usize,
        /// The direction to pump.
        direction: Side,
    },
    /// A socket of a TLS front: pump the front.
    PumpFront {
        /// The front's slot.
        front: usize,
    },
}

/// What a `role` poll that became ready on a socket in `state` leads to.
pub(super) fn on_ready(state: &SockState, role: PollRole) -> OnReady {
    match *state {
        SockState::Head { .. } => OnReady::ReadHead,
        SockState::Parked { .. } | SockState::Waiting { .. } => OnReady::LeaveRoom,
        SockState::Refusing { .. } => OnReady::WriteRefusal,
        SockState::Lingering { .. } => OnReady::Linger,
        SockState::Tunnel { tunnel, side } => OnReady::Pump {
            tunnel,
            direction: direction_for(side, role),
        },
        SockState::TlsTcp { front } | SockState::TlsInner { front } => OnReady::PumpFront { front },
    }
}

/// Where a complete head goes once the router classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadNext {
    /// Refused here.
    Refuse(Rejection),
    /// Passed, with the bytes read, to worker `to` (`to == workers`: the HTTP side).
    HandOff {
        /// The receiving worker, or `workers` for the HTTP side.
        to: usize,
    },
    /// This worker decides: route it.
    Route,
}

/// Where a head classified as `classified` on worker `me` of `workers` goes. A
/// rendezvous head goes to the worker owning its key, unless it was `handed_in` (another
/// worker already chose this one: it is routed here rather than passed on again).
pub(super) fn after_classify(
    classified: Result<Classified, Rejection>,
    placement: &Placement,
    me: usize,
    workers: usize,
    handed_in: bool,
) -> HeadNext {
    match classified {
        Err(r) => HeadNext::Refuse(r),
        Ok(Classified::Http) => HeadNext::HandOff { to: workers },
        Ok(Classified::Rendezvous(key)) => {
            let owner = key.owner(placement);
            if owner != me && !handed_in {
                HeadNext::HandOff { to: owner }
            } else {
                HeadNext::Route
            }
        }
    }
}

/// Whether a lingering refused connection is closed after a read of `read` bytes, with
/// `discarded` bytes thrown away in all: at EOF, or once more than `limit` were discarded
/// (a peer that keeps sending does not hold the socket until the deadline).
pub(super) fn linger_over(read: usize, discarded: usize, limit: usize) -> bool {
    read == 0 || discarded > limit
}

/// What a finished direction (its FIN forwarded, its bytes delivered) does to its tunnel:
/// `true` closes the whole tunnel now. Natively the other direction keeps flowing until
/// it ends too; node-rendezvous ([`HalfClose::CloseBoth`]) ends both connections at once,
/// as upstream does.
pub(super) fn close_after_direction_done(half_close: HalfClose, both_done: bool) -> bool {
    half_close == HalfClose::CloseBoth || both_done
}

/// Whether a head buffer is parsed after a read that took it from `old` to `len` bytes
/// (`new_line`: the new bytes hold a `\n`). A head only completes at a line end, so
/// parsing only then keeps a byte-at-a-time sender from costing a full re-parse per
/// byte; the first `probe` bytes are parsed on every read, so bytes that cannot start a
/// request line are refused at once; and a buffer past `limit` is parsed so it is
/// refused as too large.
pub(super) fn parse_after_read(
    old: usize,
    len: usize,
    new_line: bool,
    limit: usize,
    probe: usize,
) -> bool {
    new_line || len > limit || old < probe
}

/// How a tunnel stands: open, or being torn down (with a reset or a clean close) while
/// splices it queued are still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    /// Pumping.
    Open,
    /// Closing; sockets are closed with `SO_LINGER` 0 (a reset) when `reset`.
    Closing {
        /// Reset rather than close cleanly.
        reset: bool,
    },
}

/// A tunnel slot in the tunnel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TunnelId(pub(super) usize);

/// One direction of one tunnel, as carried in the slot field of a splice completion's
/// `user_data` (`tunnel * 2 + side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DirSlot {
    pub(super) tunnel: TunnelId,
    pub(super) side: Side,
}

impl DirSlot {
    /// The slot number put in `user_data`.
    pub(super) fn encode(self) -> usize {
        self.tunnel.0 * 2 + self.side.index()
    }

    /// The direction a slot number names.
    pub(super) fn decode(slot: usize) -> Self {
        Self {
            tunnel: TunnelId(slot / 2),
            side: if slot.is_multiple_of(2) {
                Side::Client
            } else {
                Side::Server
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Side; 2] = [Side::Client, Side::Server];

    #[test]
    fn a_read_poll_serves_its_own_side_and_a_write_poll_the_other() {
        for side in BOTH {
            assert_eq!(direction_for(side, PollRole::Read), side);
            assert_eq!(direction_for(side, PollRole::Write), side.other());
            assert_ne!(side.other(), side);
            assert_eq!(side.other().other(), side);
        }
        assert_eq!(Side::Client.index(), 0);
        assert_eq!(Side::Server.index(), 1);
        assert_eq!(PollRole::Read.index(), 0);
        assert_eq!(PollRole::Write.index(), 1);
    }

    #[test]
    fn a_ready_poll_leads_to_what_the_socket_is_doing() {
        let head = SockState::Head {
            buf: Vec::new(),
            handed_in: false,
        };
        let refusing = SockState::Refusing {
            response: b"HTTP/1.1 400".to_vec(),
            written: 0,
        };
        let lingering = SockState::Lingering {
            deadline: std::time::Instant::now(),
            discarded: 0,
        };
        for role in [PollRole::Read, PollRole::Write] {
            assert_eq!(on_ready(&head, role), OnReady::ReadHead);
            assert_eq!(on_ready(&refusing, role), OnReady::WriteRefusal);
            assert_eq!(on_ready(&lingering, role), OnReady::Linger);
            for state in [
                SockState::TlsTcp { front: 3 },
                SockState::TlsInner { front: 3 },
            ] {
                assert_eq!(on_ready(&state, role), OnReady::PumpFront { front: 3 });
            }
        }
        let server = SockState::Tunnel {
            tunnel: 9,
            side: Side::Server,
        };
        assert_eq!(
            on_ready(&server, PollRole::Read),
            OnReady::Pump {
                tunnel: 9,
                direction: Side::Server
            },
            "the server is readable: pump server to client"
        );
        assert_eq!(
            on_ready(&server, PollRole::Write),
            OnReady::Pump {
                tunnel: 9,
                direction: Side::Client
            },
            "the server is writable: pump client to server"
        );
    }

    #[test]
    fn room_sockets_leave_the_room_when_ready() {
        use crate::room::{ParkOutcome, ReachOutcome, Room, RoomLimits};
        use crate::target::RendezvousKey;
        let now = std::time::Instant::now();
        let mut room: Room<usize> = Room::new(RoomLimits::default());
        let ParkOutcome::Parked { handle, .. } = room.park(RendezvousKey::uuid([1; 16]), 1, now)
        else {
            panic!("an empty room parks");
        };
        assert_eq!(
            on_ready(&SockState::Parked { handle }, PollRole::Read),
            OnReady::LeaveRoom
        );
        let ReachOutcome::Waiting { handle } = room.reach(RendezvousKey::uuid([2; 16]), 2, now)
        else {
            panic!("a reach with nobody parked waits");
        };
        let pairing = Box::new(super::super::Pairing {
            key: RendezvousKey::uuid([2; 16]),
            greeting: Vec::new(),
            to_server: Vec::new(),
            not_parked: None,
            half_close: HalfClose::PerDirection,
        });
        assert_eq!(
            on_ready(&SockState::Waiting { handle, pairing }, PollRole::Read),
            OnReady::LeaveRoom
        );
    }

    #[test]
    fn rendezvous_heads_go_to_their_owner_once_and_http_to_the_http_side() {
        use crate::target::RendezvousKey;
        const WORKERS: usize = 4;
        let placement = Placement::new(WORKERS, [7; 16]);
        let key = RendezvousKey::uuid([1; 16]);
        let owner = key.owner(&placement);
        let other = (owner + 1) % WORKERS;
        let rendezvous = || Ok(Classified::Rendezvous(key));
        assert_eq!(
            after_classify(rendezvous(), &placement, owner, WORKERS, false),
            HeadNext::Route
        );
        assert_eq!(
            after_classify(rendezvous(), &placement, other, WORKERS, false),
            HeadNext::HandOff { to: owner }
        );
        assert_eq!(
            after_classify(rendezvous(), &placement, other, WORKERS, true),
            HeadNext::Route,
            "a handed-in head is never passed on again"
        );
        for me in [owner, other] {
            assert_eq!(
                after_classify(Ok(Classified::Http), &placement, me, WORKERS, false),
                HeadNext::HandOff { to: WORKERS }
            );
            assert_eq!(
                after_classify(Err(Rejection::MalformedHead), &placement, me, WORKERS, true),
                HeadNext::Refuse(Rejection::MalformedHead)
            );
        }
    }

    #[test]
    fn a_lingering_refusal_ends_at_eof_or_past_its_byte_limit() {
        const LIMIT: usize = 256 * 1024;
        assert!(linger_over(0, 0, LIMIT), "EOF");
        assert!(linger_over(0, LIMIT, LIMIT), "EOF after input");
        assert!(!linger_over(4096, 4096, LIMIT));
        assert!(
            !linger_over(1, LIMIT, LIMIT),
            "exactly the limit is still read"
        );
        assert!(linger_over(1, LIMIT + 1, LIMIT));
    }

    #[test]
    fn half_close_per_direction_waits_for_both_and_close_both_does_not() {
        assert!(!close_after_direction_done(HalfClose::PerDirection, false));
        assert!(close_after_direction_done(HalfClose::PerDirection, true));
        assert!(close_after_direction_done(HalfClose::CloseBoth, false));
        assert!(close_after_direction_done(HalfClose::CloseBoth, true));
    }

    #[test]
    fn heads_are_parsed_at_line_ends_while_probing_and_past_the_limit() {
        const LIMIT: usize = 8192;
        const PROBE: usize = 256;
        // The first bytes are always parsed (a TLS ClientHello is refused at once).
        assert!(parse_after_read(0, 1, false, LIMIT, PROBE));
        assert!(parse_after_read(255, 300, false, LIMIT, PROBE));
        // Past the probe, only a line end or an oversize buffer triggers a parse.
        assert!(!parse_after_read(256, 257, false, LIMIT, PROBE));
        assert!(parse_after_read(256, 257, true, LIMIT, PROBE));
        assert!(!parse_after_read(4000, LIMIT, false, LIMIT, PROBE));
        assert!(parse_after_read(4000, LIMIT + 1, false, LIMIT, PROBE));
    }

    #[test]
    fn direction_slots_round_trip_and_match_the_old_numbering() {
        for t in [0usize, 1, 7, 1 << 20] {
            for side in BOTH {
                let slot = DirSlot {
                    tunnel: TunnelId(t),
                    side,
                };
                assert_eq!(slot.encode(), t * 2 + side.index());
                assert_eq!(DirSlot::decode(slot.encode()), slot);
            }
        }
    }
}
