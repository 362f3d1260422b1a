//! The cluster's per-reach paths on the supervisor (relay/src/cluster): the mesh
//! preamble made by the carrying node and verified by the holding node (HMAC-SHA256,
//! window, replay cache with 10,000 live nonces), and the choice of a holder from a
//! park record. One of each runs per cross-node reach.
#![forbid(unsafe_code)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use tryst_engine::route::Transport;
use tryst_relay::cluster::NodeInfo;
use tryst_relay::cluster::preamble::{Preamble, Verifier, encode};
use tryst_relay::cluster::reach::choose_holder;

const PSK: &[u8] = b"bench mesh key, 32 bytes long..!";
const NOW: u64 = 1_800_000_000;

fn preamble(n: u64) -> Preamble {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&n.to_le_bytes());
    Preamble {
        node: "node-b.eu-west".into(),
        transport: Transport::Tls,
        peer: Some("198.51.100.23:50312".parse().expect("address")),
        unix: NOW,
        nonce,
    }
}

fn bench_preamble(c: &mut Criterion) {
    let mut group = c.benchmark_group("mesh_preamble");
    let p = preamble(0);
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&p), PSK)));
    // A verifier already remembering 10,000 live nonces, as under load.
    let mut verifier = Verifier::new(PSK, 30, 1 << 16);
    for n in 1..=10_000 {
        verifier
            .verify(&encode(&preamble(n), PSK), NOW)
            .expect("verifies");
    }
    let mut next = 10_001u64;
    group.bench_function("verify_fresh_10k_live_nonces", |b| {
        b.iter_batched(
            || {
                next += 1;
                encode(&preamble(next), PSK)
            },
            |bytes| verifier.verify(black_box(&bytes), NOW),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_holder(c: &mut Criterion) {
    let mut live = BTreeMap::new();
    let mut fields = HashMap::new();
    for i in 0..8 {
        let name = format!("node-{i}");
        live.insert(
            name.clone(),
            NodeInfo {
                name: name.clone(),
                epoch: 1000 + i,
                mesh: "10.0.0.1:7401".parse().expect("address"),
            },
        );
        fields.insert(name, format!("{} {NOW}", 1000 + i));
    }
    c.bench_function("cluster_choose_holder_of_8", |b| {
        b.iter(|| choose_holder(black_box(&fields), "node-0", &live, NOW, 3))
    });
}

criterion_group!(benches, bench_preamble, bench_holder);
criterion_main!(benches);
