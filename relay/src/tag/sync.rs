//! One tag table for `/services` and `CONNECT tag:`: the messages between the
//! supervisor (where Qredo's `Rendezvous` service keeps its table) and the worker owning
//! a hashed tag (where the `tag:` family keeps its [`TagTable`](super::table::TagTable)).
//!
//! They travel as family control messages over the engine's control channel
//! (`Engine::send_family`, `Router::control`, `Router::reports`), behind the family's
//! scheme `tag:` (which [`crate::router::RelayRouter`] strips and adds). The engine never
//! reads them.
//!
//! Who decides what:
//! - the supervisor's table decides a shared tag's existence, owner, mode, expiry and
//!   activation (`create`, `activate`, `deactivate` are RPC operations): every change
//!   is sent to the owner worker as [`Control::Put`], which `activate` and `deactivate`
//!   wait for ([`Answer::Applied`]) before they reply, so a park or reach right after
//!   the reply sees the change; a `create` waits for the worker's [`Answer`] to
//!   [`Control::Create`] (a tag a publisher already created with
//!   a `CONNECT tag:` park is not taken over: `RendezvousAlreadyExists`);
//! - the owner worker decides single-shot consumption: it sees every tunnel responder,
//!   and an RPC `respond` to a single-shot tag first claims it there
//!   ([`Control::Claim`]), so exactly one responder wins whichever way each came. A tag
//!   a tunnel consumed is reported back ([`Report::Consumed`]).
//!
//! Layout (big-endian integers): a control message is an op byte, then for `Create`
//! `id u64` and a [`SharedTag`], for `Put` `id u64` (0: no answer wanted) and a
//! [`SharedTag`], for `Claim` `id u64` and the
//! hashed tag. A [`SharedTag`] is `tag [32] owner [32] mode u8 (1 single-shot, 2
//! long-term) requested_duration u64 expires_at u64 flags u8 (1 active, 2 consumed)`. A
//! report is `1 id u64 answer u8` or `2 tag [32]`. Nothing else parses.

use super::kdf::HashedTag;
use super::wire::TagMode;

/// A shared tag as the supervisor's table holds it, for the owner worker's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedTag {
    /// The hashed tag.
    pub tag: HashedTag,
    /// The ownership public key (Ed25519) a publisher's `CONNECT tag:` park must be
    /// signed by (the creation info's `ownershipPublicKey`).
    pub owner: [u8; 32],
    /// Single response, or unlimited.
    pub mode: TagMode,
    /// The duration asked for, seconds (a park naming another `Tag-Duration` conflicts).
    pub requested_duration_secs: u64,
    /// Unix seconds at which it stops (the supervisor's millisecond expiry rounded down,
    /// so a tunnel never outlives the RPC side).
    pub expires_at: u64,
    /// Not deactivated (and not yet expired when sent).
    pub active: bool,
    /// A single-shot tag whose one response is taken.
    pub consumed: bool,
}

/// Supervisor → owner worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// A rendezvous created over `/services`: answered with [`Answer::Created`],
    /// [`Answer::Exists`] (a live `CONNECT`-created tag holds it) or [`Answer::Full`].
    Create {
        /// Correlates the answer.
        id: u64,
        /// The new tag.
        shared: SharedTag,
    },
    /// The supervisor's current view of a shared tag (after `activate` or `deactivate`,
    /// or re-sent to a restarted worker); applied as given and answered
    /// [`Answer::Applied`] (or [`Answer::Full`]) unless `id` is 0. A tag that is not
    /// active (or is consumed) has its parked publishers closed.
    Put {
        /// Correlates the answer; 0 when none is wanted.
        id: u64,
        /// The tag's state.
        shared: SharedTag,
    },
    /// An RPC `respond` to a single-shot tag: answered [`Answer::Claimed`] (this
    /// responder won and the tag is consumed), [`Answer::Consumed`] or
    /// [`Answer::Unknown`].
    Claim {
        /// Correlates the answer.
        id: u64,
        /// The tag.
        tag: HashedTag,
    },
}

/// The owner worker's answer to a [`Control::Create`] or [`Control::Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Created in the worker's table.
    Created,
    /// A live tag (created by a `CONNECT tag:` park) already holds the hashed tag.
    Exists,
    /// The worker's tag table is full.
    Full,
    /// The claim won: the single-shot tag is consumed by this responder.
    Claimed,
    /// The single-shot tag was already consumed.
    Consumed,
    /// The worker holds no live entry for the tag.
    Unknown,
    /// A [`Control::Put`] is applied to the worker's table.
    Applied,
}

/// Owner worker → supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The answer to the control message with this id.
    Reply {
        /// The control message's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// A tunnel responder consumed this shared single-shot tag.
    Consumed {
        /// The tag.
        tag: HashedTag,
    },
}

/// Why a message did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Shorter or longer than its op's layout.
    #[error("tag sync message has the wrong length")]
    Length,
    /// An op, mode, flag or answer byte outside the layout.
    #[error("tag sync message has an unknown byte where a code belongs")]
    Code,
}

const OP_CREATE: u8 = 1;
const OP_PUT: u8 = 2;
const OP_CLAIM: u8 = 3;
const REPORT_REPLY: u8 = 1;
const REPORT_CONSUMED: u8 = 2;
const SHARED_LEN: usize = 32 + 32 + 1 + 8 + 8 + 1;
const FLAG_ACTIVE: u8 = 1;
const FLAG_CONSUMED: u8 = 2;

fn put_shared(out: &mut Vec<u8>, s: &SharedTag) {
    out.extend_from_slice(&s.tag.0);
    out.extend_from_slice(&s.owner);
    out.push(s.mode.wire_byte());
    out.extend_from_slice(&s.requested_duration_secs.to_be_bytes());
    out.extend_from_slice(&s.expires_at.to_be_bytes());
    out.push(if s.active { FLAG_ACTIVE } else { 0 } | if s.consumed { FLAG_CONSUMED } else { 0 });
}

fn array<const N: usize>(b: &[u8]) -> Result<[u8; N], SyncError> {
    b.try_into().map_err(|_| SyncError::Length)
}

fn get_shared(b: &[u8]) -> Result<SharedTag, SyncError> {
    if b.len() != SHARED_LEN {
        return Err(SyncError::Length);
    }
    let mode = match b[64] {
        1 => TagMode::SingleShot,
        2 => TagMode::LongTerm,
        _ => return Err(SyncError::Code),
    };
    let flags = b[81];
    if flags & !(FLAG_ACTIVE | FLAG_CONSUMED) != 0 {
        return Err(SyncError::Code);
    }
    Ok(SharedTag {
        tag: HashedTag(array(&b[..32])?),
        owner: array(&b[32..64])?,
        mode,
        requested_duration_secs: u64::from_be_bytes(array(&b[65..73])?),
        expires_at: u64::from_be_bytes(array(&b[73..81])?),
        active: flags & FLAG_ACTIVE != 0,
        consumed: flags & FLAG_CONSUMED != 0,
    })
}

fn answer_byte(a: Answer) -> u8 {
    match a {
        Answer::Created => 1,
        Answer::Exists => 2,
        Answer::Full => 3,
        Answer::Claimed => 4,
        Answer::Consumed => 5,
        Answer::Unknown => 6,
        Answer::Applied => 7,
    }
}

impl Control {
    /// The message bytes (without the family's scheme).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + SHARED_LEN);
        match self {
            Self::Create { id, shared } => {
                out.push(OP_CREATE);
                out.extend_from_slice(&id.to_be_bytes());
                put_shared(&mut out, shared);
            }
            Self::Put { id, shared } => {
                out.push(OP_PUT);
                out.extend_from_slice(&id.to_be_bytes());
                put_shared(&mut out, shared);
            }
            Self::Claim { id, tag } => {
                out.push(OP_CLAIM);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&tag.0);
            }
        }
        out
    }

    /// Parses a message (without the family's scheme).
    pub fn decode(b: &[u8]) -> Result<Self, SyncError> {
        let (&op, rest) = b.split_first().ok_or(SyncError::Length)?;
        match op {
            OP_CREATE | OP_PUT | OP_CLAIM => {
                if rest.len() < 8 {
                    return Err(SyncError::Length);
                }
                let id = u64::from_be_bytes(array(&rest[..8])?);
                let rest = &rest[8..];
                Ok(match op {
                    OP_CREATE => Self::Create {
                        id,
                        shared: get_shared(rest)?,
                    },
                    OP_PUT => Self::Put {
                        id,
                        shared: get_shared(rest)?,
                    },
                    _ => Self::Claim {
                        id,
                        tag: HashedTag(array(rest)?),
                    },
                })
            }
            _ => Err(SyncError::Code),
        }
    }
}

impl Report {
    /// The report bytes (without the family's scheme).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        match self {
            Self::Reply { id, answer } => {
                out.push(REPORT_REPLY);
                out.extend_from_slice(&id.to_be_bytes());
                out.push(answer_byte(*answer));
            }
            Self::Consumed { tag } => {
                out.push(REPORT_CONSUMED);
                out.extend_from_slice(&tag.0);
            }
        }
        out
    }

    /// Parses a report (without the family's scheme).
    pub fn decode(b: &[u8]) -> Result<Self, SyncError> {
        let (&kind, rest) = b.split_first().ok_or(SyncError::Length)?;
        match kind {
            REPORT_REPLY => {
                if rest.len() != 9 {
                    return Err(SyncError::Length);
                }
                let answer = match rest[8] {
                    1 => Answer::Created,
                    2 => Answer::Exists,
                    3 => Answer::Full,
                    4 => Answer::Claimed,
                    5 => Answer::Consumed,
                    6 => Answer::Unknown,
                    7 => Answer::Applied,
                    _ => return Err(SyncError::Code),
                };
                Ok(Self::Reply {
                    id: u64::from_be_bytes(array(&rest[..8])?),
                    answer,
                })
            }
            REPORT_CONSUMED => Ok(Self::Consumed {
                tag: HashedTag(array(rest)?),
            }),
            _ => Err(SyncError::Code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> SharedTag {
        SharedTag {
            tag: HashedTag([7; 32]),
            owner: [9; 32],
            mode: TagMode::SingleShot,
            requested_duration_secs: 600,
            expires_at: 1_700_000_600,
            active: true,
            consumed: false,
        }
    }

    #[test]
    fn controls_and_reports_round_trip() {
        let s = shared();
        for c in [
            Control::Create { id: 1, shared: s },
            Control::Put {
                id: 0,
                shared: SharedTag {
                    mode: TagMode::LongTerm,
                    active: false,
                    consumed: true,
                    ..s
                },
            },
            Control::Claim {
                id: u64::MAX,
                tag: s.tag,
            },
        ] {
            assert_eq!(Control::decode(&c.encode()), Ok(c));
        }
        for a in [
            Answer::Created,
            Answer::Exists,
            Answer::Full,
            Answer::Claimed,
            Answer::Consumed,
            Answer::Unknown,
            Answer::Applied,
        ] {
            let r = Report::Reply { id: 42, answer: a };
            assert_eq!(Report::decode(&r.encode()), Ok(r));
        }
        let r = Report::Consumed { tag: s.tag };
        assert_eq!(Report::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn the_layout_is_fixed() {
        let bytes = Control::Put {
            id: 3,
            shared: shared(),
        }
        .encode();
        assert_eq!(bytes.len(), 1 + 8 + 82);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[1..9], &3u64.to_be_bytes());
        assert_eq!(bytes[8 + 65], 1, "mode byte: single-shot");
        assert_eq!(&bytes[8 + 66..8 + 74], &600u64.to_be_bytes());
        assert_eq!(bytes[8 + 82], 1, "flags: active");
        assert_eq!(
            Report::Reply {
                id: 1,
                answer: Answer::Claimed
            }
            .encode(),
            [1, 0, 0, 0, 0, 0, 0, 0, 1, 4]
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let good = Control::Create {
            id: 1,
            shared: shared(),
        }
        .encode();
        assert_eq!(Control::decode(&[]), Err(SyncError::Length));
        assert_eq!(
            Control::decode(&good[..good.len() - 1]),
            Err(SyncError::Length)
        );
        assert_eq!(
            Control::decode(&[good.clone(), vec![0]].concat()),
            Err(SyncError::Length)
        );
        let mut bad_mode = good.clone();
        bad_mode[1 + 8 + 64] = 3;
        assert_eq!(Control::decode(&bad_mode), Err(SyncError::Code));
        let mut bad_flags = good.clone();
        bad_flags[1 + 8 + 81] = 4;
        assert_eq!(Control::decode(&bad_flags), Err(SyncError::Code));
        assert_eq!(Control::decode(&[9]), Err(SyncError::Code));
        assert_eq!(Control::decode(&[3, 0, 0]), Err(SyncError::Length));
        assert_eq!(Report::decode(&[1, 0]), Err(SyncError::Length));
        assert_eq!(
            Report::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 8]),
            Err(SyncError::Code)
        );
        assert_eq!(Report::decode(&[2; 32]), Err(SyncError::Length));
        assert_eq!(Report::decode(&[]), Err(SyncError::Length));
    }
}
