//! Checking harness for the room, shared by the seeded simulation (`room::sim`) and the
//! `room_events` fuzz target: a [`Room`] driven side by side with a simple shadow model
//! under virtual time, compared after every operation. Built only for tests and under
//! `cfg(fuzzing)`; not part of the engine's API.

use super::{
    DEADLINE_SLACK, EntryHandle, Expired, NIL, ParkOutcome, ReachOutcome, Role, Room, RoomLimits,
    is_live, role_index,
};
use crate::target::RendezvousKey;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// One operation on the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A server parks under small key `key`.
    Park {
        /// Small key number, mapped to a [`RendezvousKey`].
        key: u8,
    },
    /// A client reaches small key `key`.
    Reach {
        /// Small key number, mapped to a [`RendezvousKey`].
        key: u8,
    },
    /// Removes the handle `pick` places (modulo) before the newest among every handle
    /// ever issued: live or stale.
    Remove {
        /// Distance from the newest issued handle.
        pick: u32,
    },
    /// Removes a handle that was never issued (made up from `index` and `generation`).
    RemoveForged {
        /// Slab index of the forged handle.
        index: u32,
        /// Generation of the forged handle.
        generation: u32,
    },
    /// Virtual time moves forward.
    Advance {
        /// By this many milliseconds.
        millis: u32,
    },
    /// Virtual time moves backwards (a misbehaving caller); saturates at the base.
    Rewind {
        /// By this many milliseconds.
        millis: u32,
    },
    /// `expire(now)`.
    Expire,
    /// `drain_all()`.
    Drain,
}

/// What finally happened to an item. Each item has at most one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Paired,
    Expired,
    Removed,
    Evicted,
    Refused,
    Drained,
}

/// A live entry as the model sees it.
#[derive(Debug, Clone, Copy)]
struct ModelEntry {
    item: u64,
    handle: EntryHandle,
    /// Virtual deadline (offset from the base instant).
    deadline: Option<Duration>,
}

/// Per key: parked servers and waiting clients, oldest first.
#[derive(Debug, Default)]
struct ModelKey {
    servers: VecDeque<ModelEntry>,
    clients: VecDeque<ModelEntry>,
}

/// How often each outcome happened, to show a run is not vacuous.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Pairs made by a park.
    pub paired_by_park: u64,
    /// Pairs made by a reach.
    pub paired_by_reach: u64,
    /// Parks refused as full.
    pub park_full: u64,
    /// Reaches refused as full.
    pub reach_full: u64,
    /// Per-key evictions.
    pub evicted: u64,
    /// Removes that found their entry.
    pub removed: u64,
    /// Removes with a stale or forged handle.
    pub stale_removes: u64,
    /// Entries expired (servers).
    pub expired_servers: u64,
    /// Entries expired (clients).
    pub expired_clients: u64,
    /// Entries drained.
    pub drained: u64,
}

impl Tally {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.paired_by_park += other.paired_by_park;
        self.paired_by_reach += other.paired_by_reach;
        self.park_full += other.park_full;
        self.reach_full += other.reach_full;
        self.evicted += other.evicted;
        self.removed += other.removed;
        self.stale_removes += other.stale_removes;
        self.expired_servers += other.expired_servers;
        self.expired_clients += other.expired_clients;
        self.drained += other.drained;
    }
}

/// The room and its shadow model.
#[derive(Debug)]
pub struct Harness {
    room: Room<u64>,
    limits: RoomLimits,
    base: Instant,
    /// Virtual time: offset from `base`.
    now: Duration,
    model: BTreeMap<u8, ModelKey>,
    handles: Vec<EntryHandle>,
    fates: HashMap<u64, Fate>,
    next_item: u64,
    /// Keys ever used, to check `parked_for`/`waiting_for` on them all.
    keys_seen: HashSet<u8>,
    trace: DefaultHasher,
    tally: Tally,
}

/// The rendezvous key for small key number `key`.
pub fn key_of(key: u8) -> RendezvousKey {
    let mut bytes = [0x5a; 16];
    bytes[0] = key;
    RendezvousKey::uuid(bytes)
}

impl Harness {
    /// A fresh room with `limits` at virtual time zero.
    pub fn new(limits: RoomLimits) -> Self {
        Self {
            room: Room::new(limits),
            limits,
            base: Instant::now(),
            now: Duration::ZERO,
            model: BTreeMap::new(),
            handles: Vec::new(),
            fates: HashMap::new(),
            next_item: 0,
            keys_seen: HashSet::new(),
            trace: DefaultHasher::new(),
            tally: Tally::default(),
        }
    }

    /// A hash of every operation and outcome so far (for determinism checks). Holds no
    /// wall-clock instants: only virtual offsets, items and handles.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    /// Outcome counts so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Live entries in the model.
    pub fn live(&self) -> usize {
        self.model
            .values()
            .map(|k| k.servers.len() + k.clients.len())
            .sum()
    }

    /// The room under test (read-only).
    pub fn room(&self) -> &Room<u64> {
        &self.room
    }

    /// Applies `op` to room and model, then checks every invariant.
    pub fn apply(&mut self, op: Op) -> Result<(), String> {
        op.hash(&mut self.trace);
        match op {
            Op::Park { key } => self.park(key)?,
            Op::Reach { key } => self.reach(key)?,
            Op::Remove { pick } => {
                if !self.handles.is_empty() {
                    let back = pick as usize % self.handles.len();
                    let handle = self.handles[self.handles.len() - 1 - back];
                    self.remove(handle)?;
                }
            }
            Op::RemoveForged { index, generation } => {
                let handle = EntryHandle { index, generation };
                self.remove(handle)?;
            }
            Op::Advance { millis } => {
                self.now = self
                    .now
                    .saturating_add(Duration::from_millis(millis.into()));
            }
            Op::Rewind { millis } => {
                self.now = self
                    .now
                    .saturating_sub(Duration::from_millis(millis.into()));
            }
            Op::Expire => self.expire()?,
            Op::Drain => self.drain()?,
        }
        self.check()
    }

    fn instant(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    fn fate(&mut self, item: u64, fate: Fate) -> Result<(), String> {
        if let Some(old) = self.fates.insert(item, fate) {
            return Err(format!("item {item} got fate {fate:?} after {old:?}"));
        }
        Ok(())
    }

    fn new_item(&mut self) -> u64 {
        let item = self.next_item;
        self.next_item += 1;
        item
    }

    fn new_handle(&mut self, handle: EntryHandle) -> Result<(), String> {
        let clash = self
            .model
            .values()
            .flat_map(|k| k.servers.iter().chain(&k.clients))
            .any(|e| e.handle == handle);
        if clash {
            return Err(format!("new handle {handle:?} equals a live one"));
        }
        self.handles.push(handle);
        Ok(())
    }

    fn park(&mut self, key: u8) -> Result<(), String> {
        self.keys_seen.insert(key);
        let item = self.new_item();
        let now = self.instant(self.now);
        let got = self.room.park(key_of(key), item, now);
        outcome_hash(&got, &mut self.trace);
        let parked = self.model_parked();
        let limits = self.limits;
        let mk = self.model.entry(key).or_default();
        if let Some(client) = mk.clients.pop_front() {
            let want = ParkOutcome::Paired {
                server: item,
                client: client.item,
            };
            if got != want {
                return Err(format!("park {key}: got {got:?}, want {want:?}"));
            }
            self.tally.paired_by_park += 1;
            self.fate(item, Fate::Paired)?;
            return self.fate(client.item, Fate::Paired);
        }
        if parked >= limits.max_parked || limits.max_parked_per_key == 0 {
            let want = ParkOutcome::Full(item);
            if got != want {
                return Err(format!("park {key}: got {got:?}, want {want:?}"));
            }
            self.tally.park_full += 1;
            return self.fate(item, Fate::Refused);
        }
        let evicted = if mk.servers.len() >= limits.max_parked_per_key {
            mk.servers.pop_front().map(|e| e.item)
        } else {
            None
        };
        let ParkOutcome::Parked {
            handle,
            evicted: got_evicted,
        } = got
        else {
            return Err(format!("park {key}: got {got:?}, want Parked"));
        };
        if got_evicted != evicted {
            return Err(format!(
                "park {key}: evicted {got_evicted:?}, want {evicted:?}"
            ));
        }
        if let Some(evicted) = evicted {
            self.tally.evicted += 1;
            self.fate(evicted, Fate::Evicted)?;
        }
        self.new_handle(handle)?;
        let deadline = limits.park_ttl.map(|ttl| self.now + ttl);
        let mk = self.model.entry(key).or_default();
        mk.servers.push_back(ModelEntry {
            item,
            handle,
            deadline,
        });
        Ok(())
    }

    fn reach(&mut self, key: u8) -> Result<(), String> {
        self.keys_seen.insert(key);
        let item = self.new_item();
        let now = self.instant(self.now);
        let got = self.room.reach(key_of(key), item, now);
        outcome_hash(&got, &mut self.trace);
        let waiting = self.model_waiting();
        let limits = self.limits;
        let mk = self.model.entry(key).or_default();
        if let Some(server) = mk.servers.pop_front() {
            let want = ReachOutcome::Paired {
                server: server.item,
                client: item,
            };
            if got != want {
                return Err(format!("reach {key}: got {got:?}, want {want:?}"));
            }
            self.tally.paired_by_reach += 1;
            self.fate(item, Fate::Paired)?;
            return self.fate(server.item, Fate::Paired);
        }
        if waiting >= limits.max_waiting || mk.clients.len() >= limits.max_waiting_per_key {
            let want = ReachOutcome::Full(item);
            if got != want {
                return Err(format!("reach {key}: got {got:?}, want {want:?}"));
            }
            self.tally.reach_full += 1;
            return self.fate(item, Fate::Refused);
        }
        let ReachOutcome::Waiting { handle } = got else {
            return Err(format!("reach {key}: got {got:?}, want Waiting"));
        };
        self.new_handle(handle)?;
        let deadline = Some(self.now + limits.client_wait);
        let mk = self.model.entry(key).or_default();
        mk.clients.push_back(ModelEntry {
            item,
            handle,
            deadline,
        });
        Ok(())
    }

    fn remove(&mut self, handle: EntryHandle) -> Result<(), String> {
        let got = self.room.remove(handle);
        got.hash(&mut self.trace);
        let mut want = None;
        for mk in self.model.values_mut() {
            for queue in [&mut mk.servers, &mut mk.clients] {
                if let Some(at) = queue.iter().position(|e| e.handle == handle) {
                    want = queue.remove(at).map(|e| e.item);
                }
            }
        }
        if got != want {
            return Err(format!("remove {handle:?}: got {got:?}, want {want:?}"));
        }
        match want {
            Some(item) => {
                self.tally.removed += 1;
                self.fate(item, Fate::Removed)
            }
            None => {
                self.tally.stale_removes += 1;
                Ok(())
            }
        }
    }

    fn expire(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut got = Vec::new();
        self.room.expire(self.instant(now), &mut got);
        for e in &got {
            (role_index(e.role), e.item).hash(&mut self.trace);
        }
        // Servers first, then clients; each by deadline, ties in arrival order (item
        // numbers grow with arrival).
        let mut servers = Vec::new();
        let mut clients = Vec::new();
        for mk in self.model.values_mut() {
            for (queue, out) in [
                (&mut mk.servers, &mut servers),
                (&mut mk.clients, &mut clients),
            ] {
                queue.retain(|e| match e.deadline {
                    Some(d) if d <= now => {
                        out.push((d, e.item));
                        false
                    }
                    _ => true,
                });
            }
        }
        servers.sort_unstable();
        clients.sort_unstable();
        let want: Vec<Expired<u64>> = servers
            .iter()
            .map(|&(_, item)| Expired {
                role: Role::Server,
                item,
            })
            .chain(clients.iter().map(|&(_, item)| Expired {
                role: Role::Client,
                item,
            }))
            .collect();
        if got != want {
            return Err(format!("expire at {now:?}: got {got:?}, want {want:?}"));
        }
        self.tally.expired_servers += servers.len() as u64;
        self.tally.expired_clients += clients.len() as u64;
        for e in want {
            self.fate(e.item, Fate::Expired)?;
        }
        if let Some(next) = self.room.next_deadline()
            && next <= self.instant(now)
        {
            return Err(format!("after expire at {now:?} next deadline is {next:?}"));
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), String> {
        let mut got = self.room.drain_all();
        got.sort_unstable_by_key(|&(role, item)| (item, role_index(role)));
        for &(role, item) in &got {
            (role_index(role), item).hash(&mut self.trace);
        }
        let mut want: Vec<(Role, u64)> = Vec::new();
        for mk in std::mem::take(&mut self.model).into_values() {
            want.extend(mk.servers.iter().map(|e| (Role::Server, e.item)));
            want.extend(mk.clients.iter().map(|e| (Role::Client, e.item)));
        }
        want.sort_unstable_by_key(|&(role, item)| (item, role_index(role)));
        if got != want {
            return Err(format!("drain: got {got:?}, want {want:?}"));
        }
        self.tally.drained += want.len() as u64;
        for (_, item) in want {
            self.fate(item, Fate::Drained)?;
        }
        Ok(())
    }

    fn model_parked(&self) -> usize {
        self.model.values().map(|k| k.servers.len()).sum()
    }

    fn model_waiting(&self) -> usize {
        self.model.values().map(|k| k.clients.len()).sum()
    }

    /// Every invariant, room against model and the room's own structure.
    pub fn check(&self) -> Result<(), String> {
        let (parked, waiting) = (self.model_parked(), self.model_waiting());
        if self.room.parked() != parked || self.room.waiting() != waiting {
            return Err(format!(
                "counts: room {}/{}, model {parked}/{waiting}",
                self.room.parked(),
                self.room.waiting()
            ));
        }
        if self.room.slots.len() != parked + waiting {
            return Err(format!(
                "slots not conserved: {} live slots, {} entries",
                self.room.slots.len(),
                parked + waiting
            ));
        }
        for &key in &self.keys_seen {
            let (servers, clients) = self
                .model
                .get(&key)
                .map_or((0, 0), |k| (k.servers.len(), k.clients.len()));
            if servers > 0 && clients > 0 {
                return Err(format!("model key {key} has servers and clients"));
            }
            let rk = key_of(key);
            if self.room.parked_for(&rk) != servers || self.room.waiting_for(&rk) != clients {
                return Err(format!(
                    "key {key}: room {}/{}, model {servers}/{clients}",
                    self.room.parked_for(&rk),
                    self.room.waiting_for(&rk)
                ));
            }
        }
        // Every live handle is live in the room, holding the model's item.
        for mk in self.model.values() {
            for e in mk.servers.iter().chain(&mk.clients) {
                if !is_live(&self.room.slots, &self.room.generations, e.handle) {
                    return Err(format!("{:?} of item {} is not live", e.handle, e.item));
                }
                let item = self.room.slots.get(e.handle.index as usize).map(|s| s.item);
                if item != Some(e.item) {
                    return Err(format!("{:?} holds {item:?}, want {}", e.handle, e.item));
                }
            }
        }
        let want_next = self
            .model
            .values()
            .flat_map(|k| k.servers.iter().chain(&k.clients))
            .filter_map(|e| e.deadline)
            .min()
            .map(|d| self.instant(d));
        if self.room.next_deadline() != want_next {
            return Err(format!(
                "next_deadline {:?}, want {want_next:?}",
                self.room.next_deadline()
            ));
        }
        self.room.check_invariants()
    }
}

fn outcome_hash<O: Debug>(outcome: &O, hasher: &mut DefaultHasher) {
    format!("{outcome:?}").hash(hasher);
}

impl<T> Room<T> {
    /// The room's structural invariants: intrusive lists well formed, one role per key,
    /// no empty key entries, caps held, counts right, deadline queues sorted with a live
    /// head, no duplicate live handle, bounded stale elements.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0usize;
        let (mut servers, mut clients) = (0usize, 0usize);
        for (key, queue) in &self.keys {
            if queue.len == 0 {
                return Err(format!("{key:?}: empty queue kept in the key map"));
            }
            let cap = match queue.role {
                Role::Server => self.limits.max_parked_per_key,
                Role::Client => self.limits.max_waiting_per_key,
            };
            if queue.len as usize > cap {
                return Err(format!("{key:?}: {} entries over the cap {cap}", queue.len));
            }
            let mut prev = NIL;
            let mut at = queue.head;
            let mut n = 0usize;
            while at != NIL {
                let Some(slot) = self.slots.get(at as usize) else {
                    return Err(format!("{key:?}: list names vacant slot {at}"));
                };
                if slot.key != *key || slot.role != queue.role || slot.prev != prev {
                    return Err(format!("{key:?}: slot {at} has wrong key, role or prev"));
                }
                n += 1;
                if n > self.slots.len() {
                    return Err(format!("{key:?}: list has a cycle"));
                }
                prev = at;
                at = slot.next;
            }
            if n != queue.len as usize || queue.tail != prev {
                return Err(format!("{key:?}: len {} but {n} linked", queue.len));
            }
            seen += n;
            match queue.role {
                Role::Server => servers += n,
                Role::Client => clients += n,
            }
        }
        if seen != self.slots.len() || servers != self.parked || clients != self.waiting {
            return Err(format!(
                "{seen} linked of {} slots; {servers}/{clients} vs counts {}/{}",
                self.slots.len(),
                self.parked,
                self.waiting
            ));
        }
        if self.parked > self.limits.max_parked || self.waiting > self.limits.max_waiting {
            return Err("total cap exceeded".into());
        }
        for role in [Role::Server, Role::Client] {
            let queue = &self.deadlines[role_index(role)];
            let live_count = match role {
                Role::Server => self.parked,
                Role::Client => self.waiting,
            };
            if queue.len() > 2 * live_count + DEADLINE_SLACK {
                return Err(format!(
                    "{role:?} deadline queue holds {} for {live_count} live",
                    queue.len()
                ));
            }
            if let Some(&(_, head)) = queue.front()
                && !is_live(&self.slots, &self.generations, head)
            {
                return Err(format!("{role:?} deadline queue has a stale head"));
            }
            let mut live_handles = HashSet::new();
            let mut last = None;
            for &(deadline, handle) in queue {
                if last.is_some_and(|l| l > deadline) {
                    return Err(format!("{role:?} deadline queue not sorted"));
                }
                last = Some(deadline);
                if is_live(&self.slots, &self.generations, handle) {
                    let slot_role = self.slots.get(handle.index as usize).map(|s| s.role);
                    if slot_role != Some(role) || !live_handles.insert(handle) {
                        return Err(format!("{role:?} deadline queue: bad {handle:?}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Elements (live and stale) in the deadline queue of `role`.
    pub fn deadline_queue_len(&self, role: Role) -> usize {
        self.deadlines[role_index(role)].len()
    }

    /// Keys with at least one entry.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}
