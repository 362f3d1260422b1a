//! The dead-drop's per-request proof work: decoding the claimer's public key PEM and
//! verifying its RSA-PSS (SHA-256, salt 32) ownership signature with `ring`, for a
//! 2048-bit key (what PyCryptodome clients generate). Every `/deposit` with a depositor
//! proof, `/retrieve` and `/ack` pays one verification.
#![forbid(unsafe_code)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tryst_relay::deaddrop::proof;

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

criterion_group!(benches, bench_proof);
criterion_main!(benches);
