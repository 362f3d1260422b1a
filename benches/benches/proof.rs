//! The park-proof path: parse, verify (HMAC-SHA256), and the replay cache at 100k entries.
#![forbid(unsafe_code)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tryst_engine::auth::{
    MacKey, Nonce, Operation, Proof, ReplayCache, Secret, parse_proof, proof_header, verify,
    verify_keyed,
};
use tryst_engine::target::RendezvousId;

const TS: u64 = 1_700_000_000;
const WINDOW: u64 = 60;

fn bench_proof(c: &mut Criterion) {
    let id = RendezvousId::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8").expect("valid id");
    let secret = Secret::new(b"bench secret, 32 bytes long....!".to_vec());
    let value = proof_header(&secret, Operation::Park, &id, TS, &[0xab; 16]);
    let proof = parse_proof(value.as_bytes()).expect("valid proof");
    verify(Some(&secret), Operation::Park, &id, &proof, TS, WINDOW).expect("verifies");

    let mut group = c.benchmark_group("proof");
    group.bench_function("parse", |b| {
        b.iter(|| parse_proof(black_box(value.as_bytes())))
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            verify(
                Some(&secret),
                Operation::Park,
                &id,
                black_box(&proof),
                TS,
                WINDOW,
            )
        })
    });
    group.bench_function("verify_unknown_id", |b| {
        b.iter(|| verify(None, Operation::Park, &id, black_box(&proof), TS, WINDOW))
    });
    // What a worker does: the key state made once per id when the secrets load.
    let key = MacKey::new(&secret);
    group.bench_function("verify_keyed", |b| {
        b.iter(|| {
            verify_keyed(
                Some(&key),
                Operation::Park,
                &id,
                black_box(&proof),
                TS,
                WINDOW,
            )
        })
    });
    group.bench_function("verify_keyed_unknown_id", |b| {
        b.iter(|| verify_keyed(None, Operation::Park, &id, black_box(&proof), TS, WINDOW))
    });
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let p = parse_proof(black_box(value.as_bytes()))?;
            verify(Some(&secret), Operation::Park, &id, &p, TS, WINDOW)
        })
    });
    group.finish();
}

/// A steady stream of fresh proofs at a rate that keeps about `entries` nonces alive:
/// each insertion also expires, on average, one old entry.
struct Stream {
    cache: ReplayCache,
    id: RendezvousId,
    proof: Proof,
    count: u64,
    per_second: u64,
}

impl Stream {
    fn new(entries: u64) -> Self {
        // Entries stamped `now` live for window + 1 seconds.
        let per_second = entries / (WINDOW + 1);
        let mut s = Self {
            cache: ReplayCache::new(2 * entries as usize, WINDOW),
            id: RendezvousId([7; 16]),
            proof: Proof {
                ts: TS,
                ts_leading_zeros: 0,
                nonce: Nonce::new(&[0; 8]).expect("8 bytes"),
                mac: [0; 32],
            },
            count: 0,
            per_second,
        };
        for _ in 0..2 * entries {
            s.insert().expect("fresh nonce, capacity to spare");
        }
        s
    }

    fn insert(&mut self) -> Result<(), tryst_engine::auth::ProofError> {
        self.count += 1;
        let now = TS + self.count / self.per_second;
        self.proof.ts = now;
        self.proof.nonce = Nonce::new(&self.count.to_le_bytes()).expect("8 bytes");
        self.cache.check_and_insert(&self.id, &self.proof, now)
    }
}

fn bench_replay(c: &mut Criterion) {
    let mut stream = Stream::new(100_000);
    let held = stream.cache.len();
    assert!(
        (90_000..=110_000).contains(&held),
        "steady state holds {held}"
    );
    let mut group = c.benchmark_group("replay_cache");
    group.bench_function("insert_at_100k", |b| b.iter(|| stream.insert()));
    // A clustered worker also takes the insertion's claim (its directory key).
    group.bench_function("insert_and_take_claim_at_100k", |b| {
        b.iter(|| {
            let inserted = stream.insert();
            let claim = stream
                .cache
                .take_claim(TS + stream.count / stream.per_second);
            (inserted, claim)
        })
    });
    group.finish();
    let held = stream.cache.len();
    assert!(
        (90_000..=110_000).contains(&held),
        "steady state holds {held}"
    );
}

criterion_group!(benches, bench_proof, bench_replay);
criterion_main!(benches);
