//! instr: fixed, deterministic workloads for the instruction-count regression gate.
//!
//! `instr <scenario>` builds the scenario's inputs, then runs its workload once inside
//! [`measured`], the only function whose instructions `scripts/bench-gate.sh` counts
//! (`valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*instr::measured*'`).
//! Setup (building heads, signing proofs, filling rooms) happens outside it. `instr list`
//! prints the scenario names, one a line.
//!
//! Determinism: every input is a constant or comes from a fixed-seed xorshift; the
//! measured part never reads the clock (the room's `Instant` is taken once during setup
//! and only offsets of it are used). The only run-to-run variation left is std's
//! randomly seeded `HashMap` hashing inside the room and the replay caches (and the
//! Hive mailbox table and publication store, and the tag table), which changes probe
//! sequences, not the amount of work; see docs/performance.md for the measured spread.
//! The Hive and tag scenarios use the fixed Ed25519 keys of `tryst_benches::fixtures`;
//! Ed25519 signing is deterministic, so their inputs are identical on every run.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tryst_benches::workloads;
use tryst_engine::auth::{
    MacKey, Nonce, Operation, Proof, ReplayCache, Secret, parse_proof, proof_header, verify_keyed,
};
use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
use tryst_engine::room::{Expired, ParkOutcome, ReachOutcome, Room, RoomLimits};
use tryst_engine::target::{RendezvousId, RendezvousKey, parse_connect_target};

const ID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const TS: u64 = 1_700_000_000;
const WINDOW: u64 = 60;
const SECRET: &[u8; 32] = b"instr secret, 32 bytes long....!";
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Head and target parses per run.
const PARSE_ITERATIONS: usize = 10_000;
/// `parse_proof` + `verify_keyed` pairs per run.
const PROOF_ITERATIONS: usize = 1_000;
/// Entries in the replay cache and the room.
const ENTRIES: u32 = 100_000;
/// Distinct keys the room's entries are spread over.
const KEYS: u32 = 10_000;

/// The scenarios, in the order the gate runs them, with what each measures.
const SCENARIOS: &[(&str, &str)] = &[
    (
        "head_parse",
        "10,000 x parse_head of a park head with proof",
    ),
    (
        "connect_target",
        "10,000 x parse_connect_target of uuid:<id>",
    ),
    (
        "proof_verify",
        "1,000 x parse_proof + verify_keyed (HMAC-SHA256, key state made once)",
    ),
    (
        "route_pairing_1k",
        "1,000 x (park head with proof + reach head), classify + route by the relay's router",
    ),
    (
        "replay_insert_100k",
        "fill a replay cache with 100,000 fresh nonces",
    ),
    (
        "room_park_100k",
        "park 100,000 entries over 10,000 keys (seeded order)",
    ),
    (
        "room_pair_100k",
        "100,000 reaches against a full room (seeded keys)",
    ),
    (
        "room_expire_100k",
        "expire a room of 100,000 parked entries",
    ),
    (
        "hive_verify_1k",
        "1,000 x verify_publication (JSON, preimage, strict Ed25519; 2 candidates)",
    ),
    (
        "hive_drain_proof_1k",
        "1,000 x Hive-Drain parse_proof + check_proof (strict Ed25519)",
    ),
    (
        "hive_forward_1k",
        "1,000 x forward mailbox append of a 1 KiB frame + drain",
    ),
    (
        "hive_store_insert_10k",
        "insert 10,000 publications (40 workspaces x 250 devices)",
    ),
    (
        "tag_park_verify_1k",
        "1,000 x tag proof parse + table park (strict Ed25519, replay cache)",
    ),
    (
        "qredo_decode_create_1k",
        "1,000 x lf::decode_request of a Rendezvous.create request",
    ),
    (
        "qredo_encode_result_1k",
        "1,000 x encode of a respond's result (RendezvousResponseRegistered)",
    ),
    (
        "qredo_respond_1k",
        "1,000 x decode a respond request + RendezvousTable::respond + encode the result",
    ),
];

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    match arg.as_str() {
        "list" => {
            for (name, _) in SCENARIOS {
                println!("{name}");
            }
        }
        "describe" => {
            for (name, what) in SCENARIOS {
                println!("{name}\t{what}");
            }
        }
        "head_parse" => head_parse(),
        "connect_target" => connect_target(),
        "proof_verify" => proof_verify(),
        "route_pairing_1k" => route_pairing(),
        "replay_insert_100k" => replay_insert(),
        "room_park_100k" => room_park(),
        "room_pair_100k" => room_pair(),
        "room_expire_100k" => room_expire(),
        "hive_verify_1k" => hive_verify(),
        "hive_drain_proof_1k" => hive_drain_proof(),
        "hive_forward_1k" => hive_forward(),
        "hive_store_insert_10k" => hive_store_insert(),
        "tag_park_verify_1k" => tag_park_verify(),
        "qredo_decode_create_1k" => qredo_decode_create(),
        "qredo_encode_result_1k" => qredo_encode_result(),
        "qredo_respond_1k" => qredo_respond(),
        other => {
            eprintln!("instr: unknown scenario `{other}`; `instr list` names them");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// Runs `work` once. The gate counts instructions only inside this function (and what
/// it calls), so it must never be inlined.
#[inline(never)]
fn measured<R>(work: impl FnOnce() -> R) -> R {
    black_box(work())
}

/// A fixed-seed xorshift64 stream.
struct XorShift(u64);

impl XorShift {
    fn next_below(&mut self, n: u32) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % u64::from(n)) as u32
    }
}

fn id() -> RendezvousId {
    RendezvousId::parse(ID).expect("constant id is valid")
}

fn head_parse() {
    let secret = Secret::new(SECRET.to_vec());
    let value = proof_header(&secret, Operation::Park, &id(), TS, &[0xab; 16]);
    let head = format!("CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n");
    let head = head.as_bytes();
    let limits = HeadLimits::default();
    assert!(matches!(
        parse_head(head, &limits),
        Ok(HeadStatus::Complete(_))
    ));
    let complete = measured(|| {
        (0..PARSE_ITERATIONS)
            .filter(|_| {
                matches!(
                    parse_head(black_box(head), &limits),
                    Ok(HeadStatus::Complete(_))
                )
            })
            .count()
    });
    assert_eq!(complete, PARSE_ITERATIONS);
}

fn connect_target() {
    let target = format!("uuid:{ID}");
    let ok = measured(|| {
        (0..PARSE_ITERATIONS)
            .filter(|_| parse_connect_target(black_box(&target)).is_ok())
            .count()
    });
    assert_eq!(ok, PARSE_ITERATIONS);
}

fn proof_verify() {
    let secret = Secret::new(SECRET.to_vec());
    let id = id();
    let value = proof_header(&secret, Operation::Park, &id, TS, &[0xab; 16]);
    // As a worker does: the id's key state is made when the secrets load, not per proof.
    let key = MacKey::new(&secret);
    let ok = measured(|| {
        (0..PROOF_ITERATIONS)
            .filter(|_| {
                parse_proof(black_box(value.as_bytes())).is_ok_and(|proof| {
                    verify_keyed(Some(&key), Operation::Park, &id, &proof, TS, WINDOW).is_ok()
                })
            })
            .count()
    });
    assert_eq!(ok, PROOF_ITERATIONS);
}

fn route_pairing() {
    let mut w = workloads::RouteHeads::new();
    assert_eq!(measured(|| w.run()), 2 * workloads::ITERATIONS);
}

fn replay_insert() {
    let id = id();
    // Nonces are prepared outside the measured part; each is a distinct counter value.
    let proofs: Vec<Proof> = (0..u64::from(ENTRIES))
        .map(|n| Proof {
            ts: TS,
            ts_leading_zeros: 0,
            nonce: Nonce::new(&n.to_le_bytes()).expect("8 bytes"),
            mac: [0; 32],
        })
        .collect();
    let mut cache = ReplayCache::new(ENTRIES as usize, WINDOW);
    let ok = measured(|| {
        proofs
            .iter()
            .filter(|p| cache.check_and_insert(&id, p, TS).is_ok())
            .count()
    });
    assert_eq!(ok, ENTRIES as usize);
    assert_eq!(cache.len(), ENTRIES as usize);
}

fn key(n: u32) -> RendezvousKey {
    let mut bytes = [0x7e; 16];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    RendezvousKey::uuid(bytes)
}

fn limits() -> RoomLimits {
    RoomLimits {
        max_parked: ENTRIES as usize,
        // Above the busiest key of the seeded spread (mean 10 per key), so nothing is evicted
        // and the room really holds ENTRIES entries.
        max_parked_per_key: 64,
        max_waiting: ENTRIES as usize,
        max_waiting_per_key: 1024,
        client_wait: Duration::from_secs(2),
        park_ttl: Some(Duration::from_secs(60)),
    }
}

/// Keys for `ENTRIES` operations in a seeded order, computed outside the measured part.
fn seeded_keys(seed: u64) -> Vec<RendezvousKey> {
    let mut rng = XorShift(seed);
    (0..ENTRIES).map(|_| key(rng.next_below(KEYS))).collect()
}

/// A room with `ENTRIES` parked entries, parked in `keys` order.
/// Returns how many were parked without evicting another entry.
fn park_all(room: &mut Room<u32>, keys: &[RendezvousKey], now: Instant) -> usize {
    keys.iter()
        .zip(0..)
        .filter(|(k, i)| {
            matches!(
                room.park(**k, *i, now),
                ParkOutcome::Parked { evicted: None, .. }
            )
        })
        .count()
}

fn room_park() {
    let now = Instant::now();
    let keys = seeded_keys(SEED);
    let mut room = Room::new(limits());
    let parked = measured(|| park_all(&mut room, &keys, now));
    assert_eq!(parked, ENTRIES as usize);
    black_box(room.parked());
}

fn room_pair() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    park_all(&mut room, &seeded_keys(SEED), now);
    let held = room.parked();
    assert_eq!(held, ENTRIES as usize);
    // A second seeded sequence: most reaches pair, some find their key empty and wait.
    let reach_keys = seeded_keys(SEED ^ 0x5555_5555_5555_5555);
    let paired = measured(|| {
        reach_keys
            .iter()
            .zip(0..)
            .filter(|(k, i)| matches!(room.reach(**k, *i, now), ReachOutcome::Paired { .. }))
            .count()
    });
    assert!(paired > 0 && paired <= held, "paired {paired} of {held}");
}

fn room_expire() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    park_all(&mut room, &seeded_keys(SEED), now);
    let held = room.parked();
    assert_eq!(held, ENTRIES as usize);
    let mut out: Vec<Expired<u32>> = Vec::with_capacity(ENTRIES as usize);
    measured(|| room.expire(now + Duration::from_secs(61), &mut out));
    assert_eq!(out.len(), held);
    assert_eq!(room.parked(), 0);
}

// The Hive, tag and Qredo workloads live in `tryst_benches::workloads` (prepared there, run
// here inside `measured`): keeping their code out of this crate keeps this binary's
// code generation, and so the counts of the scenarios above, as they were.

fn hive_verify() {
    let w = workloads::HiveVerify::new();
    assert_eq!(measured(|| w.run()), workloads::ITERATIONS);
}

fn hive_drain_proof() {
    let w = workloads::HiveDrainProof::new();
    assert_eq!(measured(|| w.run()), workloads::ITERATIONS);
}

fn hive_forward() {
    let mut w = workloads::HiveForward::new();
    assert_eq!(measured(|| w.run()), workloads::ITERATIONS * 1024);
    assert!(w.is_empty());
}

fn hive_store_insert() {
    let mut w = workloads::HiveStoreInsert::new();
    assert_eq!(measured(|| w.run()), workloads::STORE_DEVICES);
    assert_eq!(w.stored(), workloads::STORE_DEVICES);
}

fn tag_park_verify() {
    let mut w = workloads::TagParkVerify::new();
    assert_eq!(measured(|| w.run()), workloads::ITERATIONS);
}

fn qredo_decode_create() {
    let w = workloads::QredoDecodeCreate::new();
    assert_eq!(measured(|| w.run()), workloads::ITERATIONS);
}

fn qredo_encode_result() {
    let w = workloads::QredoEncodeResult::new();
    assert_eq!(
        measured(|| w.run()),
        workloads::ITERATIONS * w.encoded_len()
    );
}

fn qredo_respond() {
    let mut w = workloads::QredoRespond::new();
    assert_eq!(measured(|| w.run()), workloads::ITERATIONS);
}
