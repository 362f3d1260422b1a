//! Sequences of waiting-room operations (park, reach, remove live/stale/forged handles,
//! time forwards and backwards, expire, drain) under fuzzer-chosen limits, checked after
//! every operation against the shadow model in `tryst_engine::room::check`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tryst_engine::room::RoomLimits;
use tryst_engine::room::check::{Harness, Op};

/// Small limits, so caps, eviction and expiry are all reachable in a few operations.
#[derive(Debug, Arbitrary)]
struct Limits {
    max_parked: u8,
    max_parked_per_key: u8,
    max_waiting: u8,
    max_waiting_per_key: u8,
    client_wait_ms: u16,
    park_ttl_ms: Option<u16>,
}

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    Park { key: u8 },
    Reach { key: u8 },
    Remove { pick: u32 },
    RemoveForged { index: u8, generation: u8 },
    Advance { millis: u16 },
    Rewind { millis: u16 },
    Expire,
    Drain,
}

#[derive(Debug, Arbitrary)]
struct Input {
    limits: Limits,
    ops: Vec<FuzzOp>,
}

fuzz_target!(|input: Input| {
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
});
