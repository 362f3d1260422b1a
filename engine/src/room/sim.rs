//! Seeded, replayable simulation of the room under virtual time.
//!
//! Each seed draws limits and a sequence of random operations (park, reach, remove a
//! live, stale or forged handle, advance or rewind time, expire, drain) over a few keys,
//! and [`Harness`] checks the room against a shadow model after every step: slots
//! conserved, each item paired at most once and never both paired and expired, nothing
//! outlives its deadline after `expire(now)`, FIFO per key, counts equal.
//!
//! Replay one seed: `TRYST_SIM_SEED=<seed> cargo test -p tryst-engine room::sim`
//! (`TRYST_SIM_STEPS` overrides the number of steps; `TRYST_SIM_SEEDS=<n>` runs seeds
//! `0..n` instead of the default 200, for longer soak runs).

use super::RoomLimits;
use super::check::{Harness, Op, Tally};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Duration;

const SEEDS: u64 = 200;
const STEPS: usize = 2_000;

/// Limits drawn per seed: small caps so every Full and eviction path is hit often.
fn limits(rng: &mut StdRng) -> RoomLimits {
    RoomLimits {
        max_parked: rng.gen_range(0..=12),
        max_parked_per_key: rng.gen_range(0..=4),
        max_waiting: rng.gen_range(0..=12),
        max_waiting_per_key: rng.gen_range(0..=4),
        client_wait: Duration::from_millis(rng.gen_range(0..=3_000)),
        park_ttl: if rng.gen_bool(0.5) {
            Some(Duration::from_millis(rng.gen_range(0..=5_000)))
        } else {
            None
        },
    }
}

fn op(rng: &mut StdRng, keys: u8) -> Op {
    match rng.gen_range(0..100) {
        0..=29 => Op::Park {
            key: rng.gen_range(0..keys),
        },
        30..=54 => Op::Reach {
            key: rng.gen_range(0..keys),
        },
        55..=64 => Op::Remove {
            pick: rng.gen_range(0..6),
        },
        65..=69 => Op::Remove { pick: rng.r#gen() },
        70..=71 => Op::RemoveForged {
            index: rng.gen_range(0..16),
            generation: rng.gen_range(0..4),
        },
        72..=84 => Op::Advance {
            millis: rng.gen_range(0..1_500),
        },
        85 => Op::Rewind {
            millis: rng.gen_range(0..1_000),
        },
        86..=98 => Op::Expire,
        _ => Op::Drain,
    }
}

/// Runs one seed for `steps` steps; returns the trace hash and the outcome tally. Panics
/// (after printing the seed and step) on the first disagreement.
fn run(seed: u64, steps: usize) -> (u64, Tally) {
    eprintln!("room sim: seed {seed} ({steps} steps); replay with TRYST_SIM_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = limits(&mut rng);
    let keys = rng.gen_range(1..=5);
    let mut harness = Harness::new(limits);
    for step in 0..steps {
        let op = op(&mut rng, keys);
        match catch_unwind(AssertUnwindSafe(|| harness.apply(op))) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => panic!(
                "room sim failed: seed {seed} step {step} op {op:?} limits {limits:?}: {msg}\n\
                 replay with TRYST_SIM_SEED={seed}"
            ),
            Err(panic) => {
                eprintln!("room sim panicked: seed {seed} step {step} op {op:?} limits {limits:?}");
                resume_unwind(panic)
            }
        }
    }
    (harness.trace_hash(), harness.tally())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn simulate_seeds() {
    let steps = env_u64("TRYST_SIM_STEPS").map_or(STEPS, |s| s as usize);
    match env_u64("TRYST_SIM_SEED") {
        Some(seed) => {
            run(seed, steps);
        }
        None => {
            let seeds = env_u64("TRYST_SIM_SEEDS").unwrap_or(SEEDS);
            let mut total = Tally::default();
            for seed in 0..seeds {
                total.add(&run(seed, steps).1);
            }
            eprintln!("room sim: {seeds} seeds x {steps} steps: {total:?}");
            // Not vacuous: every outcome happened many times.
            let counts = [
                total.paired_by_park,
                total.paired_by_reach,
                total.park_full,
                total.reach_full,
                total.evicted,
                total.removed,
                total.stale_removes,
                total.expired_servers,
                total.expired_clients,
                total.drained,
            ];
            assert!(counts.iter().all(|&c| c >= 100), "{total:?}");
        }
    }
}

#[test]
fn simulation_is_deterministic() {
    let seed = env_u64("TRYST_SIM_SEED").unwrap_or(0xdead_beef);
    let first = run(seed, STEPS).0;
    let second = run(seed, STEPS).0;
    assert_eq!(first, second, "seed {seed} replayed to a different trace");
    let other = run(seed.wrapping_add(1), STEPS).0;
    assert_ne!(first, other, "different seeds gave the same trace");
}
