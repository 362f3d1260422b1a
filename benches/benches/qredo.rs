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
use tryst_relay::qredo::lf::{
    self, Interchange, Limits, Outcome, PROTOCOL_VERSION, Record, Request, Response, Value,
};
use tryst_relay::qredo::rendezvous::{RendezvousLimits, RendezvousTable};

const T0: u64 = 1_700_000_000_000;
const TAG: [u8; 32] = [0x11; 32];

fn request(op: &str, args: Vec<Value>) -> Request {
    Request {
        header: Interchange {
            protocol: PROTOCOL_VERSION,
            release: PROTOCOL_VERSION,
            return_channel: b"client-1".to_vec(),
            correlation: vec![7; 16],
            service: "Rendezvous".into(),
            operation: op.into(),
        },
        app_id: "com.example.chat".into(),
        app_secret: vec![0x5e; 8],
        args,
    }
}

/// A `RendezvousCreationInfo` as the SDK sends it (anonymous, single response, 600 s).
fn creation_info() -> Value {
    let owner = ed25519_dalek::SigningKey::from_bytes(&TAG);
    Value::Record(Record::new(
        "RendezvousCreationInfo",
        vec![
            ("durationSeconds", Value::Set(vec![Value::Int32(600)])),
            (
                "encryptedResponderInfo",
                Value::Record(Record::new(
                    "EncryptedResponderInfo",
                    vec![
                        ("authenticationCode", Value::Bytes(vec![0xaa; 32])),
                        (
                            "authenticationType",
                            Value::Record(Record::unit("RendezvousAnonymous")),
                        ),
                        ("value", Value::Bytes(vec![0x42; 120])),
                    ],
                )),
            ),
            ("hashedTag", Value::Quid(TAG)),
            (
                "ownershipPublicKey",
                Value::Bytes(owner.verifying_key().to_bytes().to_vec()),
            ),
            (
                "responseCountLimit",
                Value::Record(Record::unit("RendezvousUnlimitedResponses")),
            ),
        ],
    ))
}

fn response() -> Value {
    Value::Record(Record::new(
        "RendezvousResponse",
        vec![
            ("hashedTag", Value::Quid(TAG)),
            ("responderAuthenticationCode", Value::Bytes(vec![3; 32])),
            ("responderPublicKey", Value::Bytes(vec![4; 32])),
        ],
    ))
}

fn table() -> RendezvousTable {
    let mut t = RendezvousTable::new(RendezvousLimits {
        max_responses: usize::MAX,
        ..RendezvousLimits::default()
    });
    t.create(&creation_info(), T0).expect("created");
    t
}

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
