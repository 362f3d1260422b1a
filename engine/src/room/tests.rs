//! Unit tests for every rule of the room.

use super::*;
use std::time::{Duration, Instant};

fn key(n: u8) -> RendezvousKey {
    RendezvousKey::uuid([n; 16])
}

fn limits() -> RoomLimits {
    RoomLimits {
        max_parked: 8,
        max_parked_per_key: 3,
        max_waiting: 8,
        max_waiting_per_key: 3,
        client_wait: Duration::from_secs(2),
        park_ttl: None,
    }
}

fn ok<T>(room: &Room<T>) {
    if let Err(msg) = room.check_invariants() {
        panic!("room invariant broken: {msg}");
    }
}

fn parked<T: std::fmt::Debug>(outcome: ParkOutcome<T>) -> EntryHandle {
    match outcome {
        ParkOutcome::Parked {
            handle,
            evicted: None,
        } => handle,
        other => panic!("expected a plain park, got {other:?}"),
    }
}

fn waiting<T: std::fmt::Debug>(outcome: ReachOutcome<T>) -> EntryHandle {
    match outcome {
        ReachOutcome::Waiting { handle } => handle,
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn expire_at<T>(room: &mut Room<T>, now: Instant) -> Vec<Expired<T>> {
    let mut out = Vec::new();
    room.expire(now, &mut out);
    ok(room);
    out
}

#[test]
fn reach_pairs_with_the_oldest_parked_server_in_fifo_order() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    for item in [1, 2, 3] {
        parked(room.park(key(1), item, now));
    }
    parked(room.park(key(2), 9, now));
    assert_eq!(room.parked(), 4);
    assert_eq!(room.parked_for(&key(1)), 3);
    for server in [1, 2, 3] {
        assert_eq!(
            room.reach(key(1), 100 + server, now),
            ReachOutcome::Paired {
                server,
                client: 100 + server
            }
        );
        ok(&room);
    }
    assert_eq!(room.parked_for(&key(1)), 0);
    assert_eq!(room.parked_for(&key(2)), 1);
    assert_eq!(room.parked(), 1);
    assert_eq!(room.waiting(), 0);
}

#[test]
fn park_pairs_with_the_oldest_waiting_client_in_fifo_order() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    for item in [1, 2, 3] {
        waiting(room.reach(key(1), item, now));
    }
    assert_eq!(room.waiting(), 3);
    assert_eq!(room.waiting_for(&key(1)), 3);
    assert_eq!(room.parked_for(&key(1)), 0);
    for client in [1, 2, 3] {
        assert_eq!(
            room.park(key(1), 100 + client, now),
            ParkOutcome::Paired {
                server: 100 + client,
                client
            }
        );
        ok(&room);
    }
    assert_eq!(room.waiting(), 0);
    assert_eq!(room.parked(), 0);
    assert_eq!(room.key_count(), 0);
}

#[test]
fn pairing_skips_removed_entries() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    let a = parked(room.park(key(1), 1, now));
    let b = parked(room.park(key(1), 2, now));
    parked(room.park(key(1), 3, now));
    assert_eq!(room.remove(b), Some(2));
    assert_eq!(room.remove(a), Some(1));
    ok(&room);
    assert_eq!(
        room.reach(key(1), 10, now),
        ReachOutcome::Paired {
            server: 3,
            client: 10
        }
    );
}

#[test]
fn park_is_refused_when_the_room_is_full() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_parked: 2,
        ..limits()
    });
    parked(room.park(key(1), 1, now));
    parked(room.park(key(2), 2, now));
    assert_eq!(room.park(key(3), 3, now), ParkOutcome::Full(3));
    // The total cap is checked before per-key eviction: a full room refuses even a key
    // that would evict.
    let mut room = Room::new(RoomLimits {
        max_parked: 2,
        max_parked_per_key: 2,
        ..limits()
    });
    parked(room.park(key(1), 1, now));
    parked(room.park(key(1), 2, now));
    assert_eq!(room.park(key(1), 3, now), ParkOutcome::Full(3));
    assert_eq!(room.parked(), 2);
    ok(&room);
}

#[test]
fn a_client_is_still_paired_when_the_parked_side_is_full() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_parked: 0,
        ..limits()
    });
    waiting(room.reach(key(1), 1, now));
    assert_eq!(
        room.park(key(1), 2, now),
        ParkOutcome::Paired {
            server: 2,
            client: 1
        }
    );
}

#[test]
fn per_key_cap_evicts_the_oldest_of_that_key() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    let first = parked(room.park(key(1), 1, now));
    parked(room.park(key(1), 2, now));
    parked(room.park(key(1), 3, now));
    parked(room.park(key(2), 20, now));
    let ParkOutcome::Parked { evicted, .. } = room.park(key(1), 4, now) else {
        panic!("expected a park");
    };
    assert_eq!(evicted, Some(1));
    assert_eq!(room.remove(first), None, "the evicted handle is stale");
    let ParkOutcome::Parked { evicted, .. } = room.park(key(1), 5, now) else {
        panic!("expected a park");
    };
    assert_eq!(evicted, Some(2));
    assert_eq!(room.parked_for(&key(1)), 3);
    assert_eq!(room.parked_for(&key(2)), 1);
    assert_eq!(room.parked(), 4);
    ok(&room);
    for server in [3, 4, 5] {
        assert!(matches!(
            room.reach(key(1), 0, now),
            ReachOutcome::Paired { server: s, .. } if s == server
        ));
    }
}

#[test]
fn per_key_cap_of_zero_refuses_every_park() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_parked_per_key: 0,
        ..limits()
    });
    assert_eq!(room.park(key(1), 1, now), ParkOutcome::Full(1));
    assert_eq!(room.parked(), 0);
    assert_eq!(room.key_count(), 0);
}

#[test]
fn reach_is_refused_over_the_total_and_per_key_caps() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_waiting: 3,
        max_waiting_per_key: 2,
        ..limits()
    });
    waiting(room.reach(key(1), 1, now));
    waiting(room.reach(key(1), 2, now));
    assert_eq!(room.reach(key(1), 3, now), ReachOutcome::Full(3));
    waiting(room.reach(key(2), 4, now));
    assert_eq!(room.reach(key(3), 5, now), ReachOutcome::Full(5));
    assert_eq!(room.waiting(), 3);
    assert_eq!(room.key_count(), 2, "a refused key leaves no map entry");
    ok(&room);
}

#[test]
fn a_server_still_pairs_when_the_waiting_side_is_full() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_waiting: 0,
        ..limits()
    });
    parked(room.park(key(1), 1, now));
    assert_eq!(
        room.reach(key(1), 2, now),
        ReachOutcome::Paired {
            server: 1,
            client: 2
        }
    );
    assert_eq!(room.reach(key(1), 3, now), ReachOutcome::Full(3));
}

#[test]
fn remove_frees_the_slot_at_once() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_parked: 1,
        ..limits()
    });
    let h = parked(room.park(key(1), 1, now));
    assert_eq!(room.park(key(2), 2, now), ParkOutcome::Full(2));
    assert_eq!(room.remove(h), Some(1));
    assert_eq!(room.parked(), 0);
    assert_eq!(room.key_count(), 0);
    parked(room.park(key(2), 2, now));
    ok(&room);
}

#[test]
fn stale_handles_are_ignored() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        park_ttl: Some(Duration::from_secs(1)),
        ..limits()
    });
    // Removed.
    let h = parked(room.park(key(1), 1, now));
    assert_eq!(room.remove(h), Some(1));
    assert_eq!(room.remove(h), None);
    // Slot reused: same index, new generation; the old handle does not reach it.
    let reused = parked(room.park(key(1), 2, now));
    assert_eq!(reused.index, h.index);
    assert_ne!(reused.generation, h.generation);
    assert_eq!(room.remove(h), None);
    assert_eq!(room.parked(), 1);
    // Expired.
    assert_eq!(expire_at(&mut room, now + Duration::from_secs(1)).len(), 1);
    assert_eq!(room.remove(reused), None);
    // Paired (the client side's handle).
    let c = waiting(room.reach(key(2), 3, now));
    assert!(matches!(
        room.park(key(2), 4, now),
        ParkOutcome::Paired { .. }
    ));
    assert_eq!(room.remove(c), None);
    // Paired (the server side's handle).
    let s = parked(room.park(key(3), 5, now));
    assert!(matches!(
        room.reach(key(3), 6, now),
        ReachOutcome::Paired { .. }
    ));
    assert_eq!(room.remove(s), None);
    // Drained.
    let d = parked(room.park(key(4), 7, now));
    assert_eq!(room.drain_all(), vec![(Role::Server, 7)]);
    assert_eq!(room.remove(d), None);
    // Forged.
    assert_eq!(
        room.remove(EntryHandle {
            index: u32::MAX,
            generation: 0
        }),
        None
    );
    assert_eq!(
        room.remove(EntryHandle {
            index: 12_345,
            generation: 7
        }),
        None
    );
    assert_eq!(room.parked() + room.waiting(), 0);
    ok(&room);
}

#[test]
fn a_stale_handle_never_removes_the_entry_reusing_its_slot() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    let old = waiting(room.reach(key(1), 1, now));
    assert_eq!(room.remove(old), Some(1));
    let new = parked(room.park(key(1), 2, now));
    assert_eq!(new.index, old.index);
    assert_eq!(room.remove(old), None);
    assert_eq!(room.parked_for(&key(1)), 1);
    assert_eq!(room.remove(new), Some(2));
}

#[test]
fn generation_wraps_without_panicking() {
    let now = Instant::now();
    let mut room = Room::new(limits());
    let h = parked(room.park(key(1), 1, now));
    assert_eq!(room.remove(h), Some(1));
    room.generations[h.index as usize] = u32::MAX;
    // Re-park at generation u32::MAX, then wrap to 0.
    let at_max = parked(room.park(key(1), 2, now));
    assert_eq!(at_max.generation, u32::MAX);
    assert_eq!(room.remove(at_max), Some(2));
    let wrapped = parked(room.park(key(1), 3, now));
    assert_eq!(wrapped.generation, 0);
    assert_eq!(room.remove(at_max), None);
    assert_eq!(room.remove(wrapped), Some(3));
    ok(&room);
}

#[test]
fn the_key_map_holds_only_keys_with_entries() {
    let now = Instant::now();
    let mut room = Room::new(RoomLimits {
        park_ttl: Some(Duration::from_secs(5)),
        ..limits()
    });
    for n in 0..200u8 {
        let h = parked(room.park(key(n), n, now));
        if n % 2 == 0 {
            room.remove(h);
        } else {
            room.reach(key(n), n, now);
        }
    }
    assert_eq!(room.key_count(), 0);
    for n in 0..4u8 {
        waiting(room.reach(key(n), n, now));
    }
    assert_eq!(room.key_count(), 4);
    assert_eq!(expire_at(&mut room, now + Duration::from_secs(2)).len(), 4);
    assert_eq!(room.key_count(), 0);
    ok(&room);
}

#[test]
fn a_deadline_equal_to_now_expires() {
    let t0 = Instant::now();
    let wait = Duration::from_secs(2);
    let mut room = Room::new(limits());
    waiting(room.reach(key(1), 1, t0));
    assert_eq!(room.next_deadline(), Some(t0 + wait));
    assert!(expire_at(&mut room, t0 + wait - Duration::from_nanos(1)).is_empty());
    assert_eq!(room.waiting(), 1);
    assert_eq!(
        expire_at(&mut room, t0 + wait),
        vec![Expired {
            role: Role::Client,
            item: 1
        }]
    );
    assert_eq!(room.waiting(), 0);
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn parked_servers_expire_only_with_a_ttl() {
    let t0 = Instant::now();
    let mut room = Room::new(limits());
    parked(room.park(key(1), 1, t0));
    assert_eq!(room.next_deadline(), None);
    assert!(expire_at(&mut room, t0 + Duration::from_secs(86_400)).is_empty());
    assert_eq!(room.parked(), 1);

    let ttl = Duration::from_secs(30);
    let mut room = Room::new(RoomLimits {
        park_ttl: Some(ttl),
        ..limits()
    });
    parked(room.park(key(1), 1, t0));
    parked(room.park(key(1), 2, t0 + Duration::from_secs(1)));
    assert_eq!(room.next_deadline(), Some(t0 + ttl));
    assert_eq!(
        expire_at(&mut room, t0 + ttl),
        vec![Expired {
            role: Role::Server,
            item: 1
        }]
    );
    assert_eq!(room.parked_for(&key(1)), 1);
    assert_eq!(
        room.next_deadline(),
        Some(t0 + ttl + Duration::from_secs(1))
    );
}

#[test]
fn expire_returns_servers_then_clients_each_oldest_first() {
    let t0 = Instant::now();
    let mut room = Room::new(RoomLimits {
        park_ttl: Some(Duration::from_secs(1)),
        client_wait: Duration::from_secs(1),
        ..limits()
    });
    waiting(room.reach(key(1), 10, t0));
    parked(room.park(key(2), 20, t0));
    waiting(room.reach(key(3), 11, t0 + Duration::from_millis(1)));
    parked(room.park(key(4), 21, t0 + Duration::from_millis(2)));
    parked(room.park(key(2), 22, t0 + Duration::from_millis(3)));
    let got = expire_at(&mut room, t0 + Duration::from_secs(10));
    let got: Vec<_> = got.into_iter().map(|e| (e.role, e.item)).collect();
    assert_eq!(
        got,
        vec![
            (Role::Server, 20),
            (Role::Server, 21),
            (Role::Server, 22),
            (Role::Client, 10),
            (Role::Client, 11),
        ]
    );
    assert_eq!(room.key_count(), 0);
}

#[test]
fn next_deadline_skips_removed_and_paired_entries() {
    let t0 = Instant::now();
    let mut room = Room::new(RoomLimits {
        park_ttl: Some(Duration::from_secs(10)),
        client_wait: Duration::from_secs(2),
        ..limits()
    });
    let a = waiting(room.reach(key(1), 1, t0));
    waiting(room.reach(key(2), 2, t0 + Duration::from_secs(1)));
    waiting(room.reach(key(3), 3, t0 + Duration::from_secs(2)));
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(2)));
    room.remove(a);
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(3)));
    assert!(matches!(
        room.park(key(2), 9, t0),
        ParkOutcome::Paired { .. }
    ));
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(4)));
    let s = parked(room.park(key(4), 4, t0));
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(4)));
    let c = waiting(room.reach(key(5), 5, t0 + Duration::from_secs(10)));
    room.remove(room.deadlines[1].front().map(|&(_, h)| h).unwrap());
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(10)));
    room.remove(s);
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(12)));
    room.remove(c);
    assert_eq!(room.next_deadline(), None);
    ok(&room);
}

#[test]
fn a_clock_going_backwards_keeps_exact_deadlines() {
    let t0 = Instant::now();
    let t = |s: u64| t0 + Duration::from_secs(s);
    let mut room = Room::new(limits());
    waiting(room.reach(key(1), 1, t(10)));
    waiting(room.reach(key(2), 2, t(5)));
    waiting(room.reach(key(3), 3, t(7)));
    waiting(room.reach(key(4), 4, t(5)));
    ok(&room);
    assert_eq!(room.next_deadline(), Some(t(7)));
    let items = |v: Vec<Expired<i32>>| v.into_iter().map(|e| e.item).collect::<Vec<_>>();
    assert_eq!(items(expire_at(&mut room, t(7))), vec![2, 4]);
    assert_eq!(items(expire_at(&mut room, t(3))), Vec::<i32>::new());
    assert_eq!(items(expire_at(&mut room, t(9))), vec![3]);
    assert_eq!(items(expire_at(&mut room, t(12))), vec![1]);
}

#[test]
fn an_unrepresentable_deadline_never_expires() {
    let t0 = Instant::now();
    let mut room = Room::new(RoomLimits {
        client_wait: Duration::MAX,
        park_ttl: Some(Duration::MAX),
        ..limits()
    });
    waiting(room.reach(key(1), 1, t0));
    parked(room.park(key(2), 2, t0));
    assert_eq!(room.next_deadline(), None);
    assert!(expire_at(&mut room, t0 + Duration::from_secs(1 << 40)).is_empty());
    assert_eq!(room.waiting() + room.parked(), 2);
}

#[test]
fn stale_deadline_elements_stay_bounded() {
    let t0 = Instant::now();
    let mut room = Room::new(RoomLimits {
        max_parked: 1_000,
        max_waiting: 1_000,
        park_ttl: Some(Duration::from_secs(60)),
        ..limits()
    });
    // A long-lived head in each queue keeps eager head-popping from helping: only
    // compaction can bound the stale elements behind it.
    parked(room.park(key(0), 0, t0));
    waiting(room.reach(key(1), 0, t0));
    let mut max_len = [0usize; 2];
    for i in 0..20_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        let s = parked(room.park(key(2), i, now));
        let c = waiting(room.reach(key(3), i, now));
        assert_eq!(room.remove(s), Some(i));
        assert_eq!(room.remove(c), Some(i));
        for role in [Role::Server, Role::Client] {
            let len = room.deadline_queue_len(role);
            assert!(len <= 2 + DEADLINE_SLACK, "{role:?} queue grew to {len}");
            max_len[role_index(role)] = max_len[role_index(role)].max(len);
        }
    }
    // And it did hold stale elements at times (the laziness is real).
    assert!(max_len.iter().all(|&l| l > 2), "{max_len:?}");
    ok(&room);
    // Same with many live entries: the bound scales with the live count.
    let mut handles = Vec::new();
    for i in 0..500u32 {
        handles.push(waiting(room.reach(key(10 + (i % 200) as u8), i, t0)));
    }
    for h in handles.into_iter().skip(1) {
        room.remove(h);
        let len = room.deadline_queue_len(Role::Client);
        assert!(len <= 2 * room.waiting() + DEADLINE_SLACK);
    }
    ok(&room);
}

#[test]
fn drain_all_empties_the_room() {
    let t0 = Instant::now();
    let mut room = Room::new(RoomLimits {
        park_ttl: Some(Duration::from_secs(1)),
        ..limits()
    });
    let s = parked(room.park(key(1), 1, t0));
    parked(room.park(key(1), 2, t0));
    waiting(room.reach(key(2), 3, t0));
    let mut all = room.drain_all();
    all.sort_by_key(|&(_, item)| item);
    assert_eq!(
        all,
        vec![(Role::Server, 1), (Role::Server, 2), (Role::Client, 3)]
    );
    assert_eq!((room.parked(), room.waiting(), room.key_count()), (0, 0, 0));
    assert_eq!(room.next_deadline(), None);
    assert!(expire_at(&mut room, t0 + Duration::from_secs(9)).is_empty());
    assert_eq!(room.remove(s), None);
    // Reusable afterwards; the old handle does not reach the reused slot.
    let again = parked(room.park(key(1), 4, t0));
    assert_eq!(again.index, s.index);
    assert_eq!(room.remove(s), None);
    assert_eq!(room.drain_all(), vec![(Role::Server, 4)]);
    assert!(room.drain_all().is_empty());
}

#[test]
fn zero_waits_expire_immediately() {
    let t0 = Instant::now();
    let mut room = Room::new(RoomLimits {
        client_wait: Duration::ZERO,
        park_ttl: Some(Duration::ZERO),
        ..limits()
    });
    waiting(room.reach(key(1), 1, t0));
    parked(room.park(key(2), 2, t0));
    assert_eq!(room.next_deadline(), Some(t0));
    assert_eq!(expire_at(&mut room, t0).len(), 2);
}

#[test]
fn expiry_keeps_the_stale_bound_when_live_entries_leave() {
    let t0 = Instant::now();
    let t = |ms: u64| t0 + Duration::from_millis(ms);
    let mut room = Room::new(RoomLimits {
        max_waiting: 100,
        max_waiting_per_key: 100,
        ..limits()
    });
    // Early live entries, then a late live one, then stale elements, then late live ones:
    // expiring the early ones must not leave the stale elements over the bound.
    for i in 0..10 {
        waiting(room.reach(key(1), i, t(i)));
    }
    waiting(room.reach(key(2), 100, t(1_000)));
    let stale: Vec<_> = (0..20)
        .map(|i| waiting(room.reach(key(3), 200 + i, t(1_000))))
        .collect();
    for i in 0..10 {
        waiting(room.reach(key(4), 300 + i, t(1_000)));
    }
    for h in stale {
        room.remove(h);
        ok(&room);
    }
    assert_eq!(expire_at(&mut room, t(2_009)).len(), 10);
    assert!(room.deadline_queue_len(Role::Client) <= 2 * room.waiting() + DEADLINE_SLACK);
    assert_eq!(room.next_deadline(), Some(t(3_000)));
}

#[test]
fn presence_records_only_the_zero_one_transitions_of_parked_keys() {
    let now = Instant::now();
    let mut room: Room<u32> = Room::new(limits());
    // Off by default: nothing is recorded.
    parked(room.park(key(9), 0, now));
    let mut out = Vec::new();
    room.take_presence(&mut out);
    assert!(out.is_empty());

    room.track_presence();
    let a = parked(room.park(key(1), 1, now));
    parked(room.park(key(1), 2, now));
    // A waiting client for another key is no presence.
    waiting(room.reach(key(2), 3, now));
    room.take_presence(&mut out);
    assert_eq!(out, [(key(1), true)]);
    out.clear();
    // Pairing takes the oldest; one is still parked.
    assert!(matches!(
        room.reach(key(1), 4, now),
        ReachOutcome::Paired { .. }
    ));
    room.take_presence(&mut out);
    assert!(out.is_empty());
    // The last one leaves by hang-up: 1 -> 0.
    assert_eq!(room.remove(a), None, "a paired first (FIFO)");
    let mut taken = Vec::new();
    room.take_parked(&key(1), &mut taken);
    room.take_presence(&mut out);
    assert_eq!(out, [(key(1), false)]);
    let mut keys: Vec<_> = room.parked_keys().copied().collect();
    keys.sort();
    assert_eq!(keys, [key(9)]);
    let h = EntryHandle {
        index: 7,
        generation: 3,
    };
    assert_eq!(EntryHandle::from_bits(h.to_bits()), h);
}
