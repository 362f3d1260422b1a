//! Qredo's Lingua Franca RPC (`/services`): the codec on a `Rendezvous.create` request
//! (decode and encode), and `respond`, the signature-free hot path, both on the table
//! alone and as the whole RPC (decode the request, respond, encode the result). Goals
//! (issue #19): decode a create request in under 2 µs; 20,000 responds/s on one core.
//!
//! Run: `cargo bench -p tryst-benches --bench qredo`. Setup (building and signing the
//! inputs, creating the rendezvous) happens outside the measured closures.
#![forbid(unsafe_code)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tryst_benches::qredo::{T0, creation_info, request, response, table};
use tryst_relay::qredo::lf::{self, Limits, Outcome, Response};

fn bench_codec(c: &mut Criterion) {
    let req = request("create", vec![creation_info()]);
    let bytes = req.encode();
    let limits = Limits::default();
    assert_eq!(lf::decode_request(&bytes, &limits).expect("decodes"), req);
    let mut group = c.benchmark_group("qredo_lf");
    group.bench_function("decode_create_request", |b| {
        b.iter(|| lf::decode_request(black_box(&bytes), &limits))
    });
    group.bench_function("encode_create_request", |b| {
        b.iter(|| black_box(&req).encode())
    });
    group.finish();
}

fn bench_respond(c: &mut Criterion) {
    let mut group = c.benchmark_group("qredo_respond");
    let resp = response();
    group.bench_function("table", |b| {
        b.iter_batched(
            table,
            |mut t| t.respond(black_box(&resp), T0 + 1),
            BatchSize::SmallInput,
        )
    });
    let body = request("respond", vec![resp.clone()]).encode();
    let limits = Limits::default();
    group.bench_function("rpc_decode_respond_encode", |b| {
        b.iter_batched(
            table,
            |mut t| {
                let req = lf::decode_request(black_box(&body), &limits).expect("decodes");
                let (value, _) = t.respond(&req.args[0], T0 + 1).expect("answered");
                Response {
                    header: req.header,
                    outcome: Outcome::Success(vec![value]),
                }
                .encode()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_codec, bench_respond);
criterion_main!(benches);
