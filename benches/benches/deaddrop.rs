//! The dead-drop's per-request work.
//!
//! - `deaddrop_proof`: decoding the claimer's public key PEM and verifying its RSA-PSS
//!   (SHA-256, salt 32) ownership signature with `ring`, for a 2048-bit key (what
//!   PyCryptodome clients generate). Every `/deposit` with a depositor proof,
//!   `/retrieve` and `/ack` pays one verification.
//! - `deaddrop_deposit`: a `/deposit` of a 1 KiB INTERCOM message as the relay handles
//!   it after the body is read: the body checked in upstream's order (JSON, the
//!   HiveMessage envelope, the mailbox hash), then stored by the redb store as one
//!   group-commit transaction of 1 or 8 deposits (fsync included: these depend on the
//!   disk and its load as much as on the code).
//! - `deaddrop_drain`: a delete-on-read `/retrieve` of a mailbox holding 2000 such
//!   messages: the redb store's transaction (each record read once as it is removed
//!   from the store's five trees, commit and fsync included), and the JSON body of the
//!   2000 payloads.
#![forbid(unsafe_code)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tryst_relay::deaddrop::request::{Action, Checker, retrieved_body};
use tryst_relay::deaddrop::store::{
    Delivered, NewMessage, Op, Outcome, RedbStore, Store as _, StoreLimits,
};
use tryst_relay::deaddrop::{DeadDropConfig, proof};

const CLIENT_PEM: &str = include_str!("../../relay/tests/fixtures/deaddrop/client-pub.pem");
/// Signed over `ownership_message(CLIENT_PEM, "", TS)`.
const SIG_B64: &str = include_str!("../../relay/tests/fixtures/deaddrop/sig-salt32.b64");
const TS: i64 = 1_700_000_000;

fn bench_proof(c: &mut Criterion) {
    proof::verify(CLIENT_PEM, "", TS, SIG_B64, TS).expect("fixture verifies");
    let mut group = c.benchmark_group("deaddrop_proof");
    group.bench_function("parse_public_key_2048", |b| {
        b.iter(|| proof::parse_public_key(black_box(CLIENT_PEM)))
    });
    group.bench_function("verify_rsa_pss_2048", |b| {
        b.iter(|| proof::verify(black_box(CLIENT_PEM), "", TS, black_box(SIG_B64), TS))
    });
    group.finish();
}

/// A deposit body as `relay/examples/deaddrop_bench.rs` sends it: a 1 KiB ciphertext
/// in an INTERCOM HiveMessage, serialised into the `payload` string.
fn deposit_body() -> String {
    let escaped_pem = CLIENT_PEM.replace('\n', "\\n");
    let inner = format!(
        r#"{{\"msg_type\": \"intercom\", \"payload\": {{\"ciphertext\": \"{}\", \"n\": 1}}, \"metadata\": {{}}, \"route\": []}}"#,
        "x".repeat(1024)
    );
    format!(r#"{{"payload": "{inner}", "target_pubkey": "{escaped_pem}"}}"#)
}

/// The benches' clock, Unix milliseconds.
const NOW_MS: u64 = 1_700_000_000_000;
/// Store caps the benches never reach.
const UNCAPPED: StoreLimits = StoreLimits {
    max_pending: u64::MAX,
    max_mailboxes: u64::MAX,
    max_bytes: u64::MAX,
};

/// The relay's `/deposit` check with no rate limit (its config in `dir`).
fn unlimited_checker(dir: &std::path::Path) -> Checker {
    let mut config = DeadDropConfig::in_dir(dir);
    config.rate_limit = usize::MAX;
    Checker::new(&config, "relay".into())
}

/// `body` checked as a `/deposit`: a message with a fresh deposit id.
fn checked_deposit(checker: &Checker, body: &str) -> NewMessage {
    match checker.check("/deposit", body.as_bytes(), None, NOW_MS) {
        Ok(Action::Deposit(m)) => m,
        other => panic!("the bench body is refused: {other:?}"),
    }
}

fn bench_deposit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let checker = unlimited_checker(dir.path());
    let body = deposit_body();
    let deposit = || checked_deposit(&checker, &body);
    deposit();

    let mut group = c.benchmark_group("deaddrop_deposit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_1k_body", |b| {
        b.iter(|| checker.check("/deposit", black_box(body.as_bytes()), None, NOW_MS))
    });
    let mut store = RedbStore::open(&dir.path().join("bench.redb"), UNCAPPED).expect("store");
    for n in [1u64, 8] {
        group.throughput(Throughput::Elements(n));
        group.bench_function(format!("redb_commit_{n}"), |b| {
            b.iter_batched(
                || (0..n).map(|_| Op::Deposit(deposit())).collect::<Vec<_>>(),
                |ops| store.apply(&ops).expect("commit"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Messages in the drained mailbox: what `deaddrop_bench`'s first retrieve takes.
const DRAIN: usize = 2000;

fn bench_drain(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let checker = unlimited_checker(dir.path());
    let body = deposit_body();
    let deposits = || -> Vec<Op> {
        (0..DRAIN)
            .map(|_| Op::Deposit(checked_deposit(&checker, &body)))
            .collect()
    };
    // Both the setup (deposits) and the routine (the drain) write to it.
    let store = std::cell::RefCell::new(
        RedbStore::open(&dir.path().join("drain.redb"), UNCAPPED).expect("store"),
    );
    let take = |ops: &[Op]| -> Op {
        let Some(Op::Deposit(m)) = ops.first() else {
            unreachable!("deposits() makes deposits")
        };
        Op::Take {
            mailbox: m.mailbox,
            now: NOW_MS / 1000,
            delete: true,
        }
    };

    let mut group = c.benchmark_group("deaddrop_drain");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DRAIN as u64));
    group.bench_function("redb_take_2000", |b| {
        b.iter_batched(
            || {
                let ops = deposits();
                let take = take(&ops);
                store.borrow_mut().apply(&ops).expect("deposits");
                take
            },
            |take| match store.borrow_mut().apply(&[take]).expect("take").pop() {
                Some(Outcome::Messages(m)) => assert_eq!(m.len(), DRAIN),
                other => panic!("not a drain: {other:?}"),
            },
            BatchSize::PerIteration,
        )
    });
    let ops = deposits();
    let take = take(&ops);
    store.borrow_mut().apply(&ops).expect("deposits");
    let messages: Vec<Delivered> = match store.borrow_mut().apply(&[take]).expect("take").pop() {
        Some(Outcome::Messages(m)) => m,
        other => panic!("not a drain: {other:?}"),
    };
    group.bench_function("retrieve_body_2000", |b| {
        b.iter(|| retrieved_body(black_box(&messages), false).expect("serializes"))
    });
    group.finish();
}

criterion_group!(benches, bench_proof, bench_deposit, bench_drain);
criterion_main!(benches);
