//! The waiting room: parked hidden-server connections and waiting clients, keyed by
//! rendezvous key. A pure state machine: it is handed `now`, returns outcomes, performs
//! no I/O and never reads the clock.
//!
//! Entries live in a `slab` behind generation-tagged [`EntryHandle`]s, so a stale handle
//! (removed, expired, paired, evicted, drained) never reaches a reused slot (short of one
//! slot being reused 2^32 times while the handle is kept). Each key has a FIFO of parked
//! servers or a FIFO of waiting clients, never both at once: an intrusive doubly-linked
//! list through the slab, so removing any entry is O(1), and a key with no entries has
//! no map entry. Deadlines are kept in one queue per role in arrival order (every entry
//! of a role has the same wait), swept by [`Room::expire`], so there is no timer per
//! entry. No call panics, whatever the sequence of calls.
//!
//! States and transitions are described in `room/LIFECYCLE.md`.

use crate::target::RendezvousKey;
use slab::Slab;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Caps and waits for the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Most parked server connections in total; a park beyond it is refused.
    pub max_parked: usize,
    /// Most parked connections per key; a park beyond it evicts the oldest of that key.
    pub max_parked_per_key: usize,
    /// Most waiting clients in total; a client beyond it is refused.
    pub max_waiting: usize,
    /// Most waiting clients per key; a client beyond it is refused.
    pub max_waiting_per_key: usize,
    /// How long a client waits for a server to park before it expires.
    pub client_wait: Duration,
    /// How long a server stays parked before it expires (`None`: until it hangs up).
    pub park_ttl: Option<Duration>,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_parked: 100_000,
            max_parked_per_key: 16,
            max_waiting: 100_000,
            max_waiting_per_key: 1024,
            client_wait: Duration::from_secs(2),
            park_ttl: None,
        }
    }
}

/// A generation-tagged reference to a room entry. Stale handles are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryHandle {
    index: u32,
    generation: u32,
}

impl EntryHandle {
    /// The handle as one number (to name an entry in a message and check it on return:
    /// a stale one stays stale).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    /// [`EntryHandle::to_bits`] read back.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            index: (bits >> 32) as u32,
            generation: bits as u32,
        }
    }
}

/// Which side an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A parked hidden-server connection.
    Server,
    /// A client waiting for a server.
    Client,
}

/// Result of [`Room::park`].
#[derive(Debug, PartialEq, Eq)]
pub enum ParkOutcome<T> {
    /// Parked; `evicted` is the oldest entry of the key when the per-key cap was hit
    /// (the caller closes it).
    Parked {
        /// Handle of the new entry.
        handle: EntryHandle,
        /// The evicted oldest parked entry of this key, if any.
        evicted: Option<T>,
    },
    /// A client was waiting: pair them now (the server is not stored).
    Paired {
        /// The parking server, handed back.
        server: T,
        /// The oldest waiting client of the key.
        client: T,
    },
    /// The room is full; the item is handed back to be refused.
    Full(T),
}

/// Result of [`Room::reach`].
#[derive(Debug, PartialEq, Eq)]
pub enum ReachOutcome<T> {
    /// A server was parked: pair them now (the client is not stored).
    Paired {
        /// The oldest parked server of the key.
        server: T,
        /// The arriving client, handed back.
        client: T,
    },
    /// No server parked: the client waits until `client_wait` passes.
    Waiting {
        /// Handle of the waiting entry.
        handle: EntryHandle,
    },
    /// Too many clients waiting; the item is handed back to be refused.
    Full(T),
}

/// An entry whose deadline passed, removed by [`Room::expire`].
#[derive(Debug, PartialEq, Eq)]
pub struct Expired<T> {
    /// Which side it was.
    pub role: Role,
    /// The item.
    pub item: T,
}

/// The waiting room. See the module docs.
///
/// # Time
///
/// `now` is whatever the caller says it is; the room never reads the clock. It is meant
/// to be non-decreasing across calls. A `now` that goes backwards never panics and keeps
/// exact semantics (every deadline is `now + wait` of the call that created it, and
/// [`Room::expire`] removes exactly the entries whose deadline is `<= now`), but such an
/// entry is inserted into its deadline queue by binary search and a shift, O(n) instead
/// of O(1). A deadline that does not fit in an [`Instant`] means "never expires".
#[derive(Debug)]
pub struct Room<T> {
    limits: RoomLimits,
    /// The entries; an entry's slab key is its handle's `index`.
    slots: Slab<Slot<T>>,
    /// Current generation of every slab index ever used; bumped when a slot is vacated.
    generations: Vec<u32>,
    /// Per key, the FIFO of entries (all of one role). A key with no entries has no
    /// map entry.
    keys: HashMap<RendezvousKey, KeyQueue>,
    /// Per role (see [`role_index`]), `(deadline, handle)` sorted by deadline, ties in
    /// arrival order. May hold stale handles (lazy deletion) but never a stale head, and
    /// never more than `2 * live + DEADLINE_SLACK` elements.
    deadlines: [VecDeque<(Instant, EntryHandle)>; 2],
    parked: usize,
    waiting: usize,
    /// With [`Room::track_presence`]: every key whose parked count went 0 → 1 (`true`)
    /// or 1 → 0 (`false`), in order, until [`Room::take_presence`].
    presence: Option<Vec<(RendezvousKey, bool)>>,
}

/// "No entry" in the intrusive per-key lists. Never a valid index: the room refuses to
/// grow the slab to it.
const NIL: u32 = u32::MAX;

/// Stale handles a deadline queue may hold beyond twice its live entries before it is
/// compacted. Small under test and fuzzing so the simulation's small rooms compact often.
const DEADLINE_SLACK: usize = if cfg!(any(test, fuzzing)) { 2 } else { 32 };

/// The layout of a `slab` element (`slab::Entry`, which is private): the same enum, so
/// the same size. Used only to account for the slab's bytes ([`Room::table_bytes`]).
#[allow(dead_code, reason = "never built; only its size is taken")]
pub(crate) enum SlabEntry<T> {
    Vacant(usize),
    Occupied(T),
}

/// One room entry: the caller's item plus its place in its key's FIFO.
#[derive(Debug)]
struct Slot<T> {
    item: T,
    key: RendezvousKey,
    role: Role,
    /// Older neighbour in the key's FIFO, or [`NIL`].
    prev: u32,
    /// Younger neighbour in the key's FIFO, or [`NIL`].
    next: u32,
}

/// A key's FIFO: an intrusive doubly-linked list through [`Slot::prev`]/[`Slot::next`].
/// Since a key never has servers and clients at once, one list with a role suffices.
#[derive(Debug)]
struct KeyQueue {
    role: Role,
    /// Oldest entry.
    head: u32,
    /// Youngest entry.
    tail: u32,
    /// Entries in the list; never more than the slab's index space (below [`NIL`]), so
    /// `u32` suffices and keeps a map entry at 36 bytes instead of 48.
    len: u32,
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Server => 0,
        Role::Client => 1,
    }
}

/// Whether `handle` names a live entry.
fn is_live<T>(slots: &Slab<Slot<T>>, generations: &[u32], handle: EntryHandle) -> bool {
    let index = handle.index as usize;
    slots.contains(index) && generations.get(index) == Some(&handle.generation)
}

impl<T> Room<T> {
    /// An empty room.
    pub fn new(limits: RoomLimits) -> Self {
        Self::with_capacity(limits, 0)
    }

    /// An empty room whose tables (entry slab, generations, per-key index) hold
    /// `capacity` entries without growing. A room filled by doubling copies each table
    /// into one twice its size, so its high-water mark is up to three times what it
    /// keeps; reserving the known budget up front avoids that. The reserved slab and
    /// generations are only address space until entries are written to them; the key
    /// index touches one control byte per bucket. The deadline queues are not reserved:
    /// they hold waiting clients (and servers only with a `park_ttl`).
    pub fn with_capacity(limits: RoomLimits, capacity: usize) -> Self {
        Self {
            limits,
            slots: Slab::with_capacity(capacity),
            generations: Vec::with_capacity(capacity),
            keys: HashMap::with_capacity(capacity),
            deadlines: [VecDeque::new(), VecDeque::new()],
            parked: 0,
            waiting: 0,
            presence: None,
        }
    }

    /// From now on, records every key whose parked count goes 0 → 1 or 1 → 0 (the
    /// cluster directory publishes which node holds which key). Off by default: a single
    /// node records nothing.
    pub fn track_presence(&mut self) {
        self.presence.get_or_insert_with(Vec::new);
    }

    /// Moves the presence changes recorded since the last call to `out` (in order;
    /// `true`: the key has parked servers now, `false`: it has none).
    pub fn take_presence(&mut self, out: &mut Vec<(RendezvousKey, bool)>) {
        if let Some(p) = &mut self.presence {
            out.append(p);
        }
    }

    /// Every key with parked servers now (a full re-sync of presence).
    pub fn parked_keys(&self) -> impl Iterator<Item = &RendezvousKey> {
        self.keys
            .iter()
            .filter(|(_, q)| q.role == Role::Server && q.len > 0)
            .map(|(k, _)| k)
    }

    /// Bytes the room's tables have allocated, by table: the entry slab, the generations,
    /// the per-key index (a SwissTable: one slot plus one control byte per bucket, and
    /// a group of trailing control bytes) and the two deadline queues. Computed from
    /// capacities and element sizes; `parked_mem` checks the sum against a counting
    /// allocator.
    pub fn table_bytes(&self) -> [(&'static str, usize); 4] {
        let buckets = match self.keys.capacity() {
            0 => 0,
            c if c < 8 => (c + 1).next_power_of_two(),
            c => (c * 8 / 7).next_power_of_two(),
        };
        let key_index = if buckets == 0 {
            0
        } else {
            buckets * (size_of::<(RendezvousKey, KeyQueue)>() + 1) + 16
        };
        let deadlines: usize = self
            .deadlines
            .iter()
            .map(|q| q.capacity() * size_of::<(Instant, EntryHandle)>())
            .sum();
        [
            (
                "room entry slab",
                self.slots.capacity() * size_of::<SlabEntry<Slot<T>>>(),
            ),
            (
                "room generations",
                self.generations.capacity() * size_of::<u32>(),
            ),
            ("room key index", key_index),
            ("room deadline queues", deadlines),
        ]
    }

    /// The limits the room was built with.
    pub fn limits(&self) -> &RoomLimits {
        &self.limits
    }

    /// A hidden server parks `item` under `key` at `now`.
    ///
    /// In order: if a client waits for `key`, the server pairs with the oldest of them
    /// and is not stored. Otherwise, if `max_parked` servers are parked (or
    /// `max_parked_per_key` is 0), the item is handed back as [`ParkOutcome::Full`].
    /// Otherwise, if the key already has `max_parked_per_key` servers, its oldest is
    /// evicted and returned beside the new entry's handle. A parked entry expires at
    /// `now + park_ttl` when `park_ttl` is set.
    pub fn park(&mut self, key: RendezvousKey, item: T, now: Instant) -> ParkOutcome<T> {
        if let Some(client) = self.take_oldest(&key, Role::Client) {
            return ParkOutcome::Paired {
                server: item,
                client,
            };
        }
        if self.parked >= self.limits.max_parked
            || self.limits.max_parked_per_key == 0
            || !self.has_index_room()
        {
            return ParkOutcome::Full(item);
        }
        let evicted = if self.len_for(&key, Role::Server) >= self.limits.max_parked_per_key {
            self.take_oldest(&key, Role::Server)
        } else {
            None
        };
        let deadline = self.limits.park_ttl.and_then(|ttl| now.checked_add(ttl));
        match self.insert(key, Role::Server, item, deadline) {
            Ok(handle) => ParkOutcome::Parked { handle, evicted },
            // Unreachable: `has_index_room` held and an eviction only frees a slot.
            Err(item) => ParkOutcome::Full(item),
        }
    }

    /// Removes every server parked under `key`, oldest first, appending them to `out`
    /// (a park that replaces the previous ones, node-rendezvous style).
    pub fn take_parked(&mut self, key: &RendezvousKey, out: &mut Vec<T>) {
        while let Some(item) = self.take_oldest(key, Role::Server) {
            out.push(item);
        }
    }

    /// A client asks for `key` at `now`.
    ///
    /// If a server is parked under `key`, the client pairs with the oldest of them and is
    /// not stored. Otherwise, if `max_waiting` clients wait in total or
    /// `max_waiting_per_key` wait for `key`, the item is handed back as
    /// [`ReachOutcome::Full`]. Otherwise the client waits until `now + client_wait`.
    pub fn reach(&mut self, key: RendezvousKey, item: T, now: Instant) -> ReachOutcome<T> {
        if let Some(server) = self.take_oldest(&key, Role::Server) {
            return ReachOutcome::Paired {
                server,
                client: item,
            };
        }
        if self.waiting >= self.limits.max_waiting
            || self.len_for(&key, Role::Client) >= self.limits.max_waiting_per_key
        {
            return ReachOutcome::Full(item);
        }
        let deadline = now.checked_add(self.limits.client_wait);
        match self.insert(key, Role::Client, item, deadline) {
            Ok(handle) => ReachOutcome::Waiting { handle },
            Err(item) => ReachOutcome::Full(item),
        }
    }

    /// Removes an entry (its peer hung up). `None` if the handle is stale.
    ///
    /// O(1) amortised: the entry leaves its key's FIFO at once and its slot is free for
    /// the next park or reach.
    pub fn remove(&mut self, handle: EntryHandle) -> Option<T> {
        if !is_live(&self.slots, &self.generations, handle) {
            return None;
        }
        let slot = self.take(handle.index)?;
        self.settle(slot.role);
        Some(slot.item)
    }

    /// Removes every entry whose deadline is at or before `now`, appending them to `out`.
    ///
    /// Order: parked servers first, then waiting clients; within a role by deadline, ties
    /// in arrival order. Amortised O(1) per removed entry.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Expired<T>>) {
        for role in [Role::Server, Role::Client] {
            let r = role_index(role);
            while let Some(&(deadline, handle)) = self.deadlines[r].front() {
                if !is_live(&self.slots, &self.generations, handle) {
                    self.deadlines[r].pop_front();
                    continue;
                }
                if deadline > now {
                    break;
                }
                self.deadlines[r].pop_front();
                if let Some(slot) = self.take(handle.index) {
                    out.push(Expired {
                        role: slot.role,
                        item: slot.item,
                    });
                }
            }
            // Fewer live entries now: stale elements behind the new head may need
            // compacting to keep the bound.
            self.settle(role);
        }
    }

    /// The earliest pending deadline, if any (for the driver's timeout). O(1): the head
    /// of each deadline queue is always live.
    pub fn next_deadline(&self) -> Option<Instant> {
        let server = self.deadlines[0].front().map(|&(d, _)| d);
        let client = self.deadlines[1].front().map(|&(d, _)| d);
        match (server, client) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes and returns every entry (shutdown), in no particular order. Every handle
    /// handed out before becomes stale.
    pub fn drain_all(&mut self) -> Vec<(Role, T)> {
        for (index, _) in self.slots.iter() {
            if let Some(generation) = self.generations.get_mut(index) {
                *generation = generation.wrapping_add(1);
            }
        }
        let out = self.slots.drain().map(|s| (s.role, s.item)).collect();
        self.keys.clear();
        for queue in &mut self.deadlines {
            queue.clear();
        }
        self.parked = 0;
        self.waiting = 0;
        out
    }

    /// Parked servers now.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Waiting clients now.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Parked servers under `key`.
    pub fn parked_for(&self, key: &RendezvousKey) -> usize {
        self.len_for(key, Role::Server)
    }

    /// Waiting clients for `key`.
    pub fn waiting_for(&self, key: &RendezvousKey) -> usize {
        self.len_for(key, Role::Client)
    }

    /// Entries of `role` queued under `key`.
    fn len_for(&self, key: &RendezvousKey, role: Role) -> usize {
        match self.keys.get(key) {
            Some(queue) if queue.role == role => queue.len as usize,
            _ => 0,
        }
    }

    /// Whether the slab can take one more entry without its index reaching [`NIL`].
    fn has_index_room(&self) -> bool {
        u32::try_from(self.slots.vacant_key()).is_ok_and(|index| index != NIL)
    }

    /// Appends a new entry to `key`'s FIFO (the caller made sure the key holds no entry of
    /// the other role) and to its role's deadline queue. `Err` hands the item back when
    /// the slab index space is exhausted.
    fn insert(
        &mut self,
        key: RendezvousKey,
        role: Role,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<EntryHandle, T> {
        let vacant = self.slots.vacant_key();
        let index = match u32::try_from(vacant) {
            Ok(index) if index != NIL => index,
            _ => return Err(item),
        };
        if self.generations.len() <= vacant {
            self.generations.resize(vacant + 1, 0);
        }
        let generation = self.generations.get(vacant).copied().unwrap_or(0);
        let queue = self.keys.entry(key).or_insert(KeyQueue {
            role,
            head: NIL,
            tail: NIL,
            len: 0,
        });
        debug_assert!(queue.role == role && queue.len > 0 || queue.len == 0);
        queue.role = role;
        let prev = queue.tail;
        let inserted = self.slots.insert(Slot {
            item,
            key,
            role,
            prev,
            next: NIL,
        });
        debug_assert_eq!(inserted, vacant);
        match self.slots.get_mut(prev as usize) {
            Some(older) if prev != NIL => older.next = index,
            _ => queue.head = index,
        }
        queue.tail = index;
        queue.len += 1;
        if role == Role::Server
            && queue.len == 1
            && let Some(p) = &mut self.presence
        {
            p.push((key, true));
        }
        match role {
            Role::Server => self.parked += 1,
            Role::Client => self.waiting += 1,
        }
        let handle = EntryHandle { index, generation };
        if let Some(deadline) = deadline {
            let queue = &mut self.deadlines[role_index(role)];
            match queue.back() {
                Some(&(last, _)) if last > deadline => {
                    // `now` went backwards: keep the queue sorted (see the type docs).
                    let at = queue.partition_point(|&(d, _)| d <= deadline);
                    queue.insert(at, (deadline, handle));
                }
                _ => queue.push_back((deadline, handle)),
            }
        }
        Ok(handle)
    }

    /// Removes and returns the oldest entry of `role` under `key`, if any, keeping the
    /// deadline queue tidy.
    fn take_oldest(&mut self, key: &RendezvousKey, role: Role) -> Option<T> {
        let head = match self.keys.get(key) {
            Some(queue) if queue.role == role => queue.head,
            _ => return None,
        };
        let slot = self.take(head)?;
        self.settle(role);
        Some(slot.item)
    }

    /// Removes slot `index` from the slab and its key's FIFO, bumps its generation and
    /// the counts. Leaves its deadline-queue element behind (see [`Self::settle`]).
    fn take(&mut self, index: u32) -> Option<Slot<T>> {
        let slot = self.slots.try_remove(index as usize)?;
        if let Some(generation) = self.generations.get_mut(index as usize) {
            *generation = generation.wrapping_add(1);
        }
        if let Some(older) = self.slots.get_mut(slot.prev as usize) {
            older.next = slot.next;
        }
        if let Some(younger) = self.slots.get_mut(slot.next as usize) {
            younger.prev = slot.prev;
        }
        if let MapEntry::Occupied(mut entry) = self.keys.entry(slot.key) {
            let queue = entry.get_mut();
            if queue.head == index {
                queue.head = slot.next;
            }
            if queue.tail == index {
                queue.tail = slot.prev;
            }
            queue.len = queue.len.saturating_sub(1);
            if queue.len == 0 {
                entry.remove();
                if slot.role == Role::Server
                    && let Some(p) = &mut self.presence
                {
                    p.push((slot.key, false));
                }
            }
        }
        match slot.role {
            Role::Server => self.parked = self.parked.saturating_sub(1),
            Role::Client => self.waiting = self.waiting.saturating_sub(1),
        }
        Some(slot)
    }

    /// After an entry of `role` left other than through [`Room::expire`]: drops stale
    /// heads of the role's deadline queue (so its head is live) and compacts the queue
    /// once stale elements outnumber live ones by [`DEADLINE_SLACK`]. Amortised O(1).
    fn settle(&mut self, role: Role) {
        let live = match role {
            Role::Server => self.parked,
            Role::Client => self.waiting,
        };
        let (slots, generations) = (&self.slots, &self.generations);
        let queue = &mut self.deadlines[role_index(role)];
        while let Some(&(_, handle)) = queue.front() {
            if is_live(slots, generations, handle) {
                break;
            }
            queue.pop_front();
        }
        if queue.len() > live.saturating_mul(2).saturating_add(DEADLINE_SLACK) {
            queue.retain(|&(_, handle)| is_live(slots, generations, handle));
        }
    }
}

#[cfg(any(test, fuzzing))]
pub mod check;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
