//! `room_events`: sequences of waiting-room operations (park, reach, remove
//! live/stale/forged handles, time forwards and backwards, expire, drain) under
//! fuzzer-chosen limits, checked after every operation against the shadow model in
//! [`crate::room::check`].

use crate::room::RoomLimits;
use crate::room::check::{Harness, Op};
use arbitrary::Arbitrary;
use std::time::Duration;

/// Small limits, so caps, eviction and expiry are all reachable in a few operations.
#[derive(Debug, Arbitrary)]
pub struct Limits {
    /// Room-wide parked cap (modulo 32).
    pub max_parked: u8,
    /// Per-key parked cap (modulo 8).
    pub max_parked_per_key: u8,
    /// Room-wide waiting-client cap (modulo 32).
    pub max_waiting: u8,
    /// Per-key waiting-client cap (modulo 8).
    pub max_waiting_per_key: u8,
    /// How long a client waits, in milliseconds.
    pub client_wait_ms: u16,
    /// Optional parked-entry lifetime, in milliseconds.
    pub park_ttl_ms: Option<u16>,
}

/// One operation, as the fuzzer spells it (mapped onto [`Op`]).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum FuzzOp {
    /// A server parks under small key `key % 8`.
    Park {
        /// Small key number.
        key: u8,
    },
    /// A client reaches small key `key % 8`.
    Reach {
        /// Small key number.
        key: u8,
    },
    /// Removes a previously issued handle (live or stale).
    Remove {
        /// Distance from the newest issued handle (modulo).
        pick: u32,
    },
    /// Removes a handle that was never issued.
    RemoveForged {
        /// Slab index of the forged handle.
        index: u8,
        /// Generation of the forged handle.
        generation: u8,
    },
    /// Virtual time moves forward.
    Advance {
        /// By this many milliseconds.
        millis: u16,
    },
    /// Virtual time moves backwards.
    Rewind {
        /// By this many milliseconds.
        millis: u16,
    },
    /// `expire(now)`.
    Expire,
    /// `drain_all()`.
    Drain,
}

/// One structured input: limits, then a sequence of operations.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// Room limits.
    pub limits: Limits,
    /// Operations applied in order.
    pub ops: Vec<FuzzOp>,
}

/// Runs one decoded input, panicking with the step, operation and limits on the first
/// disagreement with the model.
pub fn run(input: Input) {
    let l = &input.limits;
    let limits = RoomLimits {
        max_parked: usize::from(l.max_parked % 32),
        max_parked_per_key: usize::from(l.max_parked_per_key % 8),
        max_waiting: usize::from(l.max_waiting % 32),
        max_waiting_per_key: usize::from(l.max_waiting_per_key % 8),
        client_wait: Duration::from_millis(u64::from(l.client_wait_ms)),
        park_ttl: l.park_ttl_ms.map(|ms| Duration::from_millis(u64::from(ms))),
    };
    let mut harness = Harness::new(limits);
    for (step, op) in input.ops.iter().enumerate() {
        let op = match *op {
            FuzzOp::Park { key } => Op::Park { key: key % 8 },
            FuzzOp::Reach { key } => Op::Reach { key: key % 8 },
            FuzzOp::Remove { pick } => Op::Remove { pick },
            FuzzOp::RemoveForged { index, generation } => Op::RemoveForged {
                index: u32::from(index),
                generation: u32::from(generation),
            },
            FuzzOp::Advance { millis } => Op::Advance {
                millis: u32::from(millis),
            },
            FuzzOp::Rewind { millis } => Op::Rewind {
                millis: u32::from(millis),
            },
            FuzzOp::Expire => Op::Expire,
            FuzzOp::Drain => Op::Drain,
        };
        if let Err(msg) = harness.apply(op) {
            panic!("step {step} {op:?} under {limits:?}: {msg}");
        }
    }
}
