//! Waiting-room benchmarks at 10^5 entries: park, pair (reach), expire, remove by handle;
//! and a worker's whole per-connection park path through its own tables
//! (`worker_tables`), with the room reserved for its budget or grown from empty.
//!
//! Each "100k" benchmark builds its room in untimed setup and times one pass over
//! 100,000 entries; throughput is reported per entry.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tryst_engine::room::{EntryHandle, Expired, ParkOutcome, ReachOutcome, Room, RoomLimits};
use tryst_engine::target::RendezvousKey;

const ENTRIES: u32 = 100_000;
const KEYS: u32 = 10_000;

fn key(n: u32) -> RendezvousKey {
    let mut bytes = [0x7e; 16];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    RendezvousKey::uuid(bytes)
}

fn limits() -> RoomLimits {
    RoomLimits {
        max_parked: ENTRIES as usize,
        max_parked_per_key: 16,
        max_waiting: ENTRIES as usize,
        max_waiting_per_key: 1024,
        client_wait: Duration::from_secs(2),
        park_ttl: Some(Duration::from_secs(60)),
    }
}

/// A room holding `ENTRIES` parked servers spread evenly over `KEYS` keys, and their
/// handles.
fn full_room(now: Instant) -> (Room<u64>, Vec<EntryHandle>) {
    let mut room = Room::new(limits());
    let mut handles = Vec::with_capacity(ENTRIES as usize);
    for i in 0..ENTRIES {
        match room.park(key(i % KEYS), u64::from(i), now) {
            ParkOutcome::Parked { handle, .. } => handles.push(handle),
            other => panic!("setup park failed: {other:?}"),
        }
    }
    (room, handles)
}

/// A deterministic shuffle (xorshift-driven Fisher-Yates) so removals hit the slab and
/// the key lists in no convenient order.
fn shuffle<T>(items: &mut [T]) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn bench_room(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("room");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(ENTRIES)));

    group.bench_function("park_100k_over_10k_keys", |b| {
        b.iter_batched(
            || Room::new(limits()),
            |mut room| {
                for i in 0..ENTRIES {
                    black_box(room.park(key(i % KEYS), u64::from(i), now));
                }
                room
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("reach_pairs_100k_from_full_room", |b| {
        b.iter_batched(
            || full_room(now).0,
            |mut room| {
                for i in 0..ENTRIES {
                    match room.reach(key(i % KEYS), u64::from(i), now) {
                        ReachOutcome::Paired { server, .. } => {
                            black_box(server);
                        }
                        other => panic!("expected a pair, got {other:?}"),
                    }
                }
                room
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("expire_100k", |b| {
        b.iter_batched(
            || {
                let mut room = Room::new(limits());
                for i in 0..ENTRIES {
                    let outcome = room.reach(key(i % KEYS), u64::from(i), now);
                    assert!(matches!(outcome, ReachOutcome::Waiting { .. }));
                }
                (room, Vec::<Expired<u64>>::with_capacity(ENTRIES as usize))
            },
            |(mut room, mut out)| {
                room.expire(now + Duration::from_secs(2), &mut out);
                assert_eq!(out.len(), ENTRIES as usize);
                (room, out)
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("remove_100k_by_handle_shuffled", |b| {
        b.iter_batched(
            || {
                let (room, mut handles) = full_room(now);
                shuffle(&mut handles);
                (room, handles)
            },
            |(mut room, handles)| {
                for handle in &handles {
                    black_box(room.remove(*handle));
                }
                room
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    // Steady state at 100k: one operation against a full room, which is kept full.
    let mut group = c.benchmark_group("room_at_100k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("reach_pair_then_repark", |b| {
        let (mut room, _) = full_room(now);
        let mut i = 0u32;
        b.iter(|| {
            let k = key(i % KEYS);
            i = i.wrapping_add(1);
            let paired = room.reach(k, 0, now);
            black_box(&paired);
            if let ReachOutcome::Paired { server, .. } = paired {
                black_box(room.park(k, server, now));
            }
        });
    });
    group.bench_function("remove_then_repark", |b| {
        let (mut room, mut handles) = full_room(now);
        shuffle(&mut handles);
        let mut i = 0usize;
        b.iter(|| {
            let at = i % handles.len();
            i = i.wrapping_add(1);
            if let Some(item) = room.remove(handles[at]) {
                let k = key((item % u64::from(KEYS)) as u32);
                if let ParkOutcome::Parked { handle, .. } = room.park(k, item, now) {
                    handles[at] = handle;
                }
            }
        });
    });
    group.bench_function("next_deadline", |b| {
        let (room, _) = full_room(now);
        b.iter(|| black_box(room.next_deadline()));
    });
    group.finish();
}

/// A worker's per-connection path for a hidden server that connects and parks: socket
/// table insert, head deadline, head receive, split, room park, through
/// `tryst_engine::driver::footprint::simulate` (the worker's own tables and head step,
/// without a ring). Per connection; the reserved-vs-grown room is compared too.
fn bench_worker_tables(c: &mut Criterion) {
    use tryst_engine::driver::EngineConfig;
    use tryst_engine::driver::footprint::{Stage, simulate};
    let now = Instant::now();
    let n = ENTRIES as usize;
    let cfg = EngineConfig {
        max_sockets_per_worker: n,
        max_parked_per_worker: n,
        max_waiting_per_worker: n,
        ..EngineConfig::default()
    };
    let mut group = c.benchmark_group("worker_tables");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(ENTRIES)));
    group.bench_function("accept_read_park_100k", |b| {
        b.iter(|| black_box(simulate(&cfg, n, Stage::Parked, now)));
    });
    group.bench_function("room_park_100k_distinct_keys_reserved", |b| {
        b.iter_batched(
            || Room::with_capacity(limits(), n),
            |mut room| {
                for i in 0..ENTRIES {
                    black_box(room.park(key(i), u64::from(i), now));
                }
                room
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("room_park_100k_distinct_keys_grown", |b| {
        b.iter_batched(
            || Room::new(limits()),
            |mut room| {
                for i in 0..ENTRIES {
                    black_box(room.park(key(i), u64::from(i), now));
                }
                room
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_room, bench_worker_tables);
criterion_main!(benches);
