//! The worker's per-connection decisions, free of sockets and of the ring, so they can be
//! unit-tested the way the room is: which direction a ready poll serves, when a head is
//! parsed, what a finished direction does to its tunnel, and how a tunnel direction is
//! named in a completion's `user_data`.

use crate::route::HalfClose;

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
