//! The hot paths of tryst-relay's scheme families: Hive (publication verify, drain
//! proof, forward mailboxes, publication store) and tag (target and proof parsing, the
//! table's park and respond). Plus one off-path figure: the tag KDF that `tryst tag`
//! runs (PBKDF2, 10,000 iterations; the relay never runs it per request).
//!
//! Inputs are fixed (see `tryst_benches::fixtures`); signing and other setup happen
//! outside the measured closures (`iter_batched` where each iteration needs a fresh
//! input, such as a never-seen nonce).
#![forbid(unsafe_code)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tryst_benches::fixtures::{
    DEVICE, T0, TAG, WORKSPACE, device_key, drain_header, nonce, numbered, publication, stored,
    tag_proof_header,
};
use tryst_relay::hive::forward::{
    DRAIN_DOMAIN, DRAIN_SCHEME, ForwardLimits, Mailboxes, ReplayCache, check_proof, parse_proof,
};
use tryst_relay::hive::store::{Inserted, PublicationStore, StoreLimits};
use tryst_relay::hive::verify::{PublicationPolicy, verify_publication};
use tryst_relay::tag::kdf::hashed_tag;
use tryst_relay::tag::table::{TagLimits, TagTable};
use tryst_relay::tag::wire::{self, CreateOptions, TagMode};

const WINDOW: i64 = 60;
/// Devices in the publication-store benches.
const DEVICES: u32 = 10_000;
/// Devices per workspace there (the default per-workspace cap is 256).
const PER_WORKSPACE: u32 = 250;
/// Size of a forwarded frame.
const FRAME: usize = 1024;

fn bench_hive_verify(c: &mut Criterion) {
    let policy = PublicationPolicy::default();
    let mut group = c.benchmark_group("hive_verify");
    for n in [1, 16] {
        let body = publication(n);
        verify_publication(&body, T0, &policy).expect("fixture verifies");
        group.bench_function(format!("publication_{n}_candidates"), |b| {
            b.iter(|| verify_publication(black_box(&body), T0, &policy))
        });
    }
    group.finish();
}

fn bench_drain_proof(c: &mut Criterion) {
    let key = device_key().verifying_key().to_bytes();
    let header = drain_header(T0 as u64, &nonce(1));
    let proof = parse_proof(&header, DRAIN_SCHEME).expect("fixture parses");
    check_proof(
        &proof,
        DRAIN_DOMAIN,
        &key,
        (&WORKSPACE, &DEVICE),
        T0,
        WINDOW,
    )
    .expect("checks");

    let mut group = c.benchmark_group("hive_drain_proof");
    group.bench_function("parse", |b| {
        b.iter(|| parse_proof(black_box(&header), DRAIN_SCHEME))
    });
    group.bench_function("parse_and_check", |b| {
        b.iter(|| {
            let p = parse_proof(black_box(&header), DRAIN_SCHEME)?;
            check_proof(&p, DRAIN_DOMAIN, &key, (&WORKSPACE, &DEVICE), T0, WINDOW)
        })
    });
    // The replay cache under a steady stream of fresh nonces: the clock advances one
    // second every 500 proofs, so about 30,000 nonces are within the window; the cache's
    // default cap (65,536) is reached now and then and swept of expired entries.
    let mut cache = ReplayCache::new(ForwardLimits::default().max_nonces);
    let mut count = 0u64;
    group.bench_function("replay_insert", |b| {
        b.iter(|| {
            count += 1;
            let now = T0 + (count / 500) as i64;
            let r =
                cache.check_and_insert((WORKSPACE, DEVICE), nonce(count), now as u64, now, WINDOW);
            assert!(r.is_ok());
        })
    });
    group.finish();
}

fn bench_forward(c: &mut Criterion) {
    // 1,000 other mailboxes exist (an empty append creates one), so the table is not
    // trivially small.
    let mut boxes = Mailboxes::new(ForwardLimits::default());
    for n in 0..1_000 {
        boxes
            .append((WORKSPACE, numbered(n, 0xd0)), Vec::new(), T0)
            .expect("room for 1,000 mailboxes");
    }
    let key = (WORKSPACE, DEVICE);
    let frame = vec![0x5a; FRAME];

    let mut group = c.benchmark_group("hive_forward");
    group.bench_function("append_drain_1KiB", |b| {
        b.iter_batched(
            || frame.clone(),
            |f| {
                boxes.append(key, f, T0).expect("within limits");
                boxes.take(&key, T0)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("append16_drain_1KiB", |b| {
        b.iter_batched(
            || vec![frame.clone(); 16],
            |frames| {
                for f in frames {
                    boxes.append(key, f, T0).expect("within limits");
                }
                boxes.take(&key, T0)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// (workspace, device) of store entry `n`.
fn store_key(n: u32) -> ([u8; 16], [u8; 16]) {
    (numbered(n / PER_WORKSPACE, 0x0b), numbered(n, 0xa1))
}

fn bench_store(c: &mut Criterion) {
    let body = publication(2);
    let mut store = PublicationStore::new(StoreLimits::default());
    for n in 0..DEVICES {
        let (ws, device) = store_key(n);
        let inserted = store.insert(stored(ws, device, 0, &body), T0);
        assert_eq!(inserted, Ok(Inserted::New));
    }
    assert_eq!(store.len(), DEVICES as usize);

    let mut group = c.benchmark_group("hive_store_10k");
    // A device republishes (a newer publishedAt replaces its stored publication).
    let mut count = 0u32;
    group.bench_function("insert_replace", |b| {
        b.iter_batched(
            || {
                count += 1;
                let (ws, device) = store_key(count % DEVICES);
                stored(ws, device, count, &body)
            },
            |p| {
                let r = store.insert(p, T0);
                assert_eq!(r, Ok(Inserted::Replaced));
            },
            BatchSize::SmallInput,
        )
    });
    let mut n = 0u32;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            n = (n + 7) % DEVICES;
            let (ws, device) = store_key(n);
            store.get(black_box(&ws), black_box(&device), T0).is_some()
        })
    });
    group.finish();
    assert_eq!(store.len(), DEVICES as usize);
}

fn bench_tag(c: &mut Criterion) {
    let target = TAG.target();
    let now = T0 as u64;
    let header = tag_proof_header(now, &nonce(0), &CreateOptions::default());

    let mut group = c.benchmark_group("tag");
    group.bench_function("target_parse", |b| {
        b.iter(|| wire::parse_target(black_box(&target)))
    });
    group.bench_function("proof_parse", |b| {
        b.iter(|| wire::parse_proof(black_box(header.as_bytes())))
    });

    // Parks of a publisher on its existing long-term tag: proof parse, strict Ed25519
    // verification against the stored owner key, replay cache. Each iteration gets a
    // fresh nonce signed in the (unmeasured) setup; the clock advances one second every
    // 1,000 parks so the replay cache holds about 61,000 nonces, far below its cap.
    let mut table = TagTable::new(TagLimits::default());
    let options = CreateOptions {
        mode: Some(TagMode::LongTerm),
        ..CreateOptions::default()
    };
    let first =
        wire::parse_proof(tag_proof_header(now, &nonce(0), &options).as_bytes()).expect("parses");
    assert!(
        table
            .park(&TAG, &first, &options, now)
            .expect("creates")
            .created
    );
    let mut count = 0u64;
    group.bench_function("park_verify", |b| {
        b.iter_batched(
            || {
                count += 1;
                let at = now + count / 1_000;
                (
                    tag_proof_header(at, &nonce(count), &CreateOptions::default()),
                    at,
                )
            },
            |(header, at)| {
                let proof = wire::parse_proof(header.as_bytes()).expect("parses");
                let parked = table.park(&TAG, &proof, &CreateOptions::default(), at);
                assert!(parked.is_ok_and(|p| !p.created));
            },
            BatchSize::SmallInput,
        )
    });
    let at = now + count / 1_000;
    group.bench_function("respond_long_term", |b| {
        b.iter(|| table.respond(black_box(&TAG), at))
    });
    group.finish();

    // Not a relay hot path: what `tryst tag` (the CLI) pays once per tag.
    let mut group = c.benchmark_group("tag_cli");
    group.sample_size(10);
    group.bench_function("kdf_hashed_tag_pbkdf2_10k", |b| {
        b.iter(|| hashed_tag(black_box("bench-app"), black_box("bench-tag")))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_hive_verify,
    bench_drain_proof,
    bench_forward,
    bench_store,
    bench_tag
);
criterion_main!(benches);
