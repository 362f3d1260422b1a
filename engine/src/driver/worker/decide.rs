//! The worker's per-connection decisions, free of sockets and of the ring, so they can be
//! unit-tested the way the room is: what a ready poll leads to, when a head is parsed,
//! where a classified head goes, when a lingering refusal ends, what a finished
//! direction does to its tunnel, what a failed accept or a connection over the socket
//! budget leads to, what a failed hand-off does, when paused accepting resumes, what a splice completion does, and which fills show a bulk stream. (How ids are packed into `user_data` is in `ids`.)

use super::SockState;
use super::ids::{FrontId, TunnelId};
use crate::reject::Rejection;
use crate::route::{Classified, HalfClose, Transport};
use crate::target::Placement;
use std::time::{Duration, Instant};

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
        /// The tunnel.
        tunnel: TunnelId,
        /// The direction to pump.
        direction: Side,
    },
    /// A socket of a TLS front: pump the front.
    PumpFront {
        /// The front.
        front: FrontId,
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

/// Whether a fill that moved `moved` bytes into a pipe of `capacity` shows a bulk
/// stream, whose pipe is grown (`PipePool::grow`): the fill filled the pipe, or it is
/// the second fill (`fills_since_wait`, this one counted) since the direction last
/// waited for its source, i.e. the source still had bytes after a pipe's worth was
/// drained. The second test catches fills that end when the pipe's slots (one per
/// segment fragment) run out before its bytes do.
pub(super) fn bulk_fill(moved: usize, capacity: usize, fills_since_wait: u8) -> bool {
    moved >= capacity || fills_since_wait >= 2
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

/// What a failed accept completion (`errno`) leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AcceptFailed {
    /// Out of descriptors or memory: stop accepting for a while (tunnels are left alone).
    BackOff,
    /// A passing error on a multishot accept that ended: arm it again.
    Rearm,
    /// Cancelled on purpose, or the multishot accept is still armed: nothing to do.
    Nothing,
}

/// What a failed accept with `errno` does, the multishot accept being still `armed`.
pub(super) fn accept_failed(errno: i32, armed: bool) -> AcceptFailed {
    match errno {
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => AcceptFailed::BackOff,
        libc::ECANCELED => AcceptFailed::Nothing,
        _ if armed => AcceptFailed::Nothing,
        _ => AcceptFailed::Rearm,
    }
}

/// The next accept back-off after `current`: doubling, at most a second.
pub(super) fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_ACCEPT_BACKOFF)
}

/// Longest pause between accept attempts while out of descriptors.
pub(super) const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Whether paused accepting resumes: once the pause is over and the worker holds less
/// than 90 % of its socket cap (so it does not pause again at once).
pub(super) fn resume_accepting(
    now: Instant,
    paused_until: Instant,
    held: usize,
    cap: usize,
) -> bool {
    now >= paused_until && held < cap * 9 / 10
}

/// What a hand-off that could not be sent does with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandoffFailed {
    /// Answer `503 overloaded` and close: the receiver is alive but cannot take it.
    Refuse,
    /// The supervisor's end of the HTTP inbox is closed: the supervisor has exited (a
    /// crash, `kill -9`) and its death signal is about to end this worker too. Exit now,
    /// leaving the connection unanswered as the signal would: a `503 overloaded` would
    /// tell the client that a relay which has crashed is merely busy.
    SupervisorGone,
}

/// What a failed hand-off with `errno` does; `to_http` when it went to the supervisor's
/// HTTP inbox (whose receiving end the supervisor holds for its whole life, so only
/// its exit closes it).
pub(super) fn handoff_failed(errno: Option<i32>, to_http: bool) -> HandoffFailed {
    match errno {
        Some(libc::ECONNREFUSED | libc::EPIPE | libc::ENOTCONN) if to_http => {
            HandoffFailed::SupervisorGone
        }
        _ => HandoffFailed::Refuse,
    }
}

/// What happens to a connection accepted while the worker is at its socket budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OverBudget {
    /// Pass it, unread, to another worker with room (it is reserved there).
    PassOn,
    /// Refuse it here with `503 overloaded`.
    Refuse,
}

/// Where a connection accepted over the budget goes. Only a plain connection can be
/// passed unread (a TLS one is already inside a front), and only while the hand-off
/// queue has room and `peer_has_room()` (called last: it reserves a slot) finds a peer.
/// Holding it here while its 503 is written would spend the descriptor headroom that
/// connections handed to this worker need.
pub(super) fn over_budget(
    transport: Transport,
    pending_handoffs: usize,
    max_pending: usize,
    peer_has_room: impl FnOnce() -> bool,
) -> OverBudget {
    if transport == Transport::Plain && pending_handoffs < max_pending && peer_has_room() {
        OverBudget::PassOn
    } else {
        OverBudget::Refuse
    }
}

/// How often idle tunnels and fronts are looked for: an eighth of the idle timeout,
/// between 100 ms and a minute.
pub(super) fn idle_sweep_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Whether a completed wait for room (`POLLOUT`) with result `res` found no room: io_uring
/// always adds `POLLRDHUP`, so a socket whose peer half-closed completes such a wait at
/// once with only that bit. An error or hang-up counts as ready (the next write says
/// what happened), and so does a negative result (the poll itself failed).
pub(super) fn write_poll_not_writable(res: i32) -> bool {
    const READY: u32 = (libc::POLLOUT | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u32;
    u32::try_from(res).is_ok_and(|mask| mask & READY == 0)
}

/// What a splice completion (uring data path) with result `res` leads to; `fill` is a
/// splice from the source socket into the pipe, otherwise out of the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterSplice {
    /// The source had nothing: give the pipe back if empty, wait for it to be readable.
    WaitRead,
    /// The destination was full: wait for it to be writable.
    WaitWrite,
    /// Failed: reset the tunnel.
    Reset,
    /// Account `moved` bytes (0 on a fill is the source's EOF) and pump on.
    Moved {
        /// Bytes the splice moved.
        moved: usize,
    },
    /// Interrupted, or an empty splice out of a pipe that holds bytes: pump again.
    Retry,
}

/// What a splice completion with `res` (bytes, or a negated errno) does.
pub(super) fn after_splice(fill: bool, res: i32) -> AfterSplice {
    match res {
        r if r == -libc::EAGAIN && fill => AfterSplice::WaitRead,
        r if r == -libc::EAGAIN => AfterSplice::WaitWrite,
        r if r == -libc::EINTR => AfterSplice::Retry,
        r if r < 0 => AfterSplice::Reset,
        0 if !fill => AfterSplice::Retry,
        n => AfterSplice::Moved { moved: n as usize },
    }
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

#[cfg(test)]
mod tests {
    use super::super::ids::Id as _;
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
            deadline: Instant::now(),
            discarded: 0,
        };
        for role in [PollRole::Read, PollRole::Write] {
            assert_eq!(on_ready(&head, role), OnReady::ReadHead);
            assert_eq!(on_ready(&refusing, role), OnReady::WriteRefusal);
            assert_eq!(on_ready(&lingering, role), OnReady::Linger);
            for state in [
                SockState::TlsTcp {
                    front: FrontId::from_slot(3),
                },
                SockState::TlsInner {
                    front: FrontId::from_slot(3),
                },
            ] {
                assert_eq!(
                    on_ready(&state, role),
                    OnReady::PumpFront {
                        front: FrontId::from_slot(3)
                    }
                );
            }
        }
        let server = SockState::Tunnel {
            tunnel: TunnelId::from_slot(9),
            side: Side::Server,
        };
        assert_eq!(
            on_ready(&server, PollRole::Read),
            OnReady::Pump {
                tunnel: TunnelId::from_slot(9),
                direction: Side::Server
            },
            "the server is readable: pump server to client"
        );
        assert_eq!(
            on_ready(&server, PollRole::Write),
            OnReady::Pump {
                tunnel: TunnelId::from_slot(9),
                direction: Side::Client
            },
            "the server is writable: pump client to server"
        );
    }

    #[test]
    fn room_sockets_leave_the_room_when_ready() {
        use crate::room::{ParkOutcome, ReachOutcome, Room, RoomLimits};
        use crate::target::RendezvousKey;
        let now = Instant::now();
        let mut room: Room<usize> = Room::new(RoomLimits::default());
        let ParkOutcome::Parked { handle, .. } = room.park(RendezvousKey::uuid([1; 16]), 1, now)
        else {
            panic!("an empty room parks");
        };
        assert_eq!(
            on_ready(
                &SockState::Parked {
                    handle,
                    notice: false
                },
                PollRole::Read
            ),
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
    fn a_fill_is_bulk_when_it_filled_the_pipe_or_is_the_second_without_a_wait() {
        const CAP: usize = 256 * 1024;
        // The first fill since a wait: only a full pipe says bulk.
        assert!(bulk_fill(CAP, CAP, 1));
        assert!(!bulk_fill(CAP - 1, CAP, 1));
        assert!(!bulk_fill(64, CAP, 1));
        // A second fill without a wait, however short (slots ran out, or more came).
        assert!(bulk_fill(4096, CAP, 2));
        assert!(bulk_fill(1, CAP, u8::MAX));
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
    fn accept_errors_back_off_on_exhaustion_and_rearm_an_ended_accept() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            for armed in [false, true] {
                assert_eq!(accept_failed(errno, armed), AcceptFailed::BackOff);
            }
        }
        assert_eq!(accept_failed(libc::ECANCELED, false), AcceptFailed::Nothing);
        assert_eq!(
            accept_failed(libc::ECONNABORTED, false),
            AcceptFailed::Rearm
        );
        assert_eq!(
            accept_failed(libc::ECONNABORTED, true),
            AcceptFailed::Nothing,
            "a multishot accept still armed keeps going"
        );
    }

    #[test]
    fn a_hand_off_to_a_closed_http_inbox_means_the_supervisor_is_gone() {
        for errno in [libc::ECONNREFUSED, libc::EPIPE, libc::ENOTCONN] {
            assert_eq!(
                handoff_failed(Some(errno), true),
                HandoffFailed::SupervisorGone
            );
            assert_eq!(
                handoff_failed(Some(errno), false),
                HandoffFailed::Refuse,
                "a worker's inbox is held by the supervisor: not a sign of its exit"
            );
        }
        for errno in [Some(libc::ENOBUFS), Some(libc::EMFILE), None] {
            assert_eq!(handoff_failed(errno, true), HandoffFailed::Refuse);
        }
    }

    #[test]
    fn accept_back_off_doubles_to_a_second_and_resumes_below_ninety_percent() {
        assert_eq!(
            next_backoff(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
        assert_eq!(next_backoff(Duration::from_millis(600)), MAX_ACCEPT_BACKOFF);
        assert_eq!(next_backoff(MAX_ACCEPT_BACKOFF), MAX_ACCEPT_BACKOFF);
        let t = Instant::now();
        let later = t + Duration::from_millis(10);
        assert!(!resume_accepting(t, later, 0, 1000), "still paused");
        assert!(resume_accepting(later, later, 899, 1000));
        assert!(
            !resume_accepting(later, later, 900, 1000),
            "at 90 % of the cap"
        );
    }

    #[test]
    fn over_budget_connections_are_passed_on_only_when_plain_queued_and_placed() {
        let yes = || true;
        assert_eq!(over_budget(Transport::Plain, 0, 8, yes), OverBudget::PassOn);
        assert_eq!(
            over_budget(Transport::Plain, 0, 8, || false),
            OverBudget::Refuse
        );
        assert_eq!(over_budget(Transport::Plain, 8, 8, yes), OverBudget::Refuse);
        assert_eq!(over_budget(Transport::Tls, 0, 8, yes), OverBudget::Refuse);
        let mut asked = false;
        let _ = over_budget(Transport::Tls, 0, 8, || {
            asked = true;
            true
        });
        assert!(
            !asked,
            "no peer slot is reserved for a connection that is refused"
        );
    }

    #[test]
    fn idle_sweeps_run_at_an_eighth_of_the_timeout_within_bounds() {
        assert_eq!(
            idle_sweep_interval(Duration::from_secs(80)),
            Duration::from_secs(10)
        );
        assert_eq!(
            idle_sweep_interval(Duration::from_millis(80)),
            Duration::from_millis(100)
        );
        assert_eq!(
            idle_sweep_interval(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_wait_for_room_that_saw_only_a_half_close_found_no_room() {
        assert!(write_poll_not_writable(libc::POLLRDHUP as i32));
        assert!(!write_poll_not_writable(
            (libc::POLLOUT | libc::POLLRDHUP) as i32
        ));
        assert!(!write_poll_not_writable(libc::POLLHUP as i32));
        assert!(!write_poll_not_writable(libc::POLLERR as i32));
        assert!(!write_poll_not_writable(-libc::ECANCELED));
    }

    #[test]
    fn splice_completions_wait_fail_retry_or_move() {
        assert_eq!(after_splice(true, -libc::EAGAIN), AfterSplice::WaitRead);
        assert_eq!(after_splice(false, -libc::EAGAIN), AfterSplice::WaitWrite);
        for fill in [false, true] {
            assert_eq!(after_splice(fill, -libc::EINTR), AfterSplice::Retry);
            assert_eq!(after_splice(fill, -libc::EPIPE), AfterSplice::Reset);
            assert_eq!(after_splice(fill, 4096), AfterSplice::Moved { moved: 4096 });
        }
        assert_eq!(
            after_splice(true, 0),
            AfterSplice::Moved { moved: 0 },
            "an empty fill is the source's EOF"
        );
        assert_eq!(after_splice(false, 0), AfterSplice::Retry);
    }
}
