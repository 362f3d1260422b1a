//! Request-head and CONNECT-target parsing: the per-connection cost before routing.
#![forbid(unsafe_code)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tryst_engine::auth::{Operation, Secret, proof_header};
use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
use tryst_engine::target::{Placement, RendezvousId, RendezvousKey, parse_connect_target};

const ID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

fn park_head() -> Vec<u8> {
    let id = RendezvousId::parse(ID).expect("valid id");
    let secret = Secret::new(b"bench secret".to_vec());
    let value = proof_header(&secret, Operation::Park, &id, 1_700_000_000, &[0xab; 16]);
    format!("CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n").into_bytes()
}

fn client_head() -> Vec<u8> {
    format!("CONNECT uuid:{ID} HTTP/1.1\r\nHost: relay.example:443\r\n\r\n").into_bytes()
}

fn sixty_headers() -> Vec<u8> {
    let mut v = b"GET /v1/channels/abc?wait=30 HTTP/1.1\r\n".to_vec();
    for i in 0..60 {
        v.extend_from_slice(format!("X-Header-{i}: some-typical-value-{i}\r\n").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v
}

fn bench_heads(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut group = c.benchmark_group("parse_head");
    for (name, buf) in [
        ("park_with_proof", park_head()),
        ("client", client_head()),
        ("sixty_headers", sixty_headers()),
    ] {
        assert!(
            matches!(parse_head(&buf, &limits), Ok(HeadStatus::Complete(_))),
            "{name}"
        );
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_head(black_box(&buf), &limits)));
    }
    // The cost of one call on an unfinished head (callers re-parse after each read).
    let park = park_head();
    let partial = &park[..park.len() - 2];
    group.throughput(Throughput::Bytes(partial.len() as u64));
    group.bench_function("park_partial", |b| {
        b.iter(|| parse_head(black_box(partial), &limits))
    });
    group.finish();
}

fn bench_target(c: &mut Criterion) {
    let target = format!("uuid:{ID}");
    let upper = target.to_uppercase().replace("UUID:", "uuid:");
    let mut group = c.benchmark_group("connect_target");
    group.bench_function("lower_case", |b| {
        b.iter(|| parse_connect_target(black_box(&target)))
    });
    group.bench_function("upper_case", |b| {
        b.iter(|| parse_connect_target(black_box(&upper)))
    });
    group.bench_function("unknown_scheme", |b| {
        b.iter(|| parse_connect_target(black_box("example.com:443")))
    });
    group.finish();
}

/// Worker placement (keyed SipHash-1-3 of the key), once per connection on the
/// accepting worker.
fn bench_owner(c: &mut Criterion) {
    let key = RendezvousKey::from(RendezvousId::parse(ID).unwrap());
    let placement = Placement::new(7, [0x5a; 16]);
    c.bench_function("owner/siphash13_7_workers", |b| {
        b.iter(|| black_box(&key).owner(black_box(&placement)))
    });
}

/// Bytes that can never start a request line (a TLS ClientHello on the plain port):
/// refused on the first read.
fn bench_not_http(c: &mut Criterion) {
    let hello = [
        0x16u8, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03,
    ];
    let limits = HeadLimits::default();
    c.bench_function("parse_head/tls_client_hello_refused", |b| {
        b.iter(|| parse_head(black_box(&hello), &limits))
    });
}

/// One pairing's heads through the relay's router (a park with a fresh proof and a
/// reach, each classified and routed), as `instr`'s `route_pairing_1k` counts them.
/// Each batch gets a new router and proofs, so no proof is ever a replay.
fn bench_route(c: &mut Criterion) {
    const PAIRINGS: usize = 64;
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(PAIRINGS as u64));
    group.bench_function("park_and_reach_heads", |b| {
        b.iter_batched(
            || tryst_benches::workloads::RouteHeads::with_iterations(PAIRINGS),
            |mut heads| assert_eq!(heads.run(), 2 * PAIRINGS),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_heads,
    bench_target,
    bench_owner,
    bench_not_http,
    bench_route
);
criterion_main!(benches);
