//! The waiting room: parked hidden-server connections and waiting clients, keyed by
//! rendezvous key. A pure state machine: it is handed `now`, returns outcomes, performs
//! no I/O and never reads the clock.
//!
//! Entries live in a `slab` behind generation-tagged [`EntryHandle`]s, so a stale handle
//! can never reach a reused slot. Each key has a FIFO of parked servers and a FIFO of
//! waiting clients; at most one of the two is non-empty at any time. Deadlines are kept
//! in insertion-ordered queues (every entry of one role has the same wait), swept by
//! [`Room::expire`], so there is no timer per entry.

use crate::target::RendezvousKey;
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
#[derive(Debug)]
pub struct Room<T> {
    _items: Vec<T>,
    _limits: RoomLimits,
}

impl<T> Room<T> {
    /// An empty room.
    pub fn new(limits: RoomLimits) -> Self {
        let _ = limits;
        todo!("implemented by the room work")
    }

    /// A hidden server parks `item` under `key` at `now`.
    pub fn park(&mut self, key: RendezvousKey, item: T, now: Instant) -> ParkOutcome<T> {
        let _ = (key, item, now);
        todo!("implemented by the room work")
    }

    /// A client asks for `key` at `now`.
    pub fn reach(&mut self, key: RendezvousKey, item: T, now: Instant) -> ReachOutcome<T> {
        let _ = (key, item, now);
        todo!("implemented by the room work")
    }

    /// Removes an entry (its peer hung up). `None` if the handle is stale.
    pub fn remove(&mut self, handle: EntryHandle) -> Option<T> {
        let _ = handle;
        todo!("implemented by the room work")
    }

    /// Removes every entry whose deadline is at or before `now`, appending them to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Expired<T>>) {
        let _ = (now, out);
        todo!("implemented by the room work")
    }

    /// The earliest pending deadline, if any (for the driver's timeout).
    pub fn next_deadline(&self) -> Option<Instant> {
        todo!("implemented by the room work")
    }

    /// Removes and returns every entry (shutdown).
    pub fn drain_all(&mut self) -> Vec<(Role, T)> {
        todo!("implemented by the room work")
    }

    /// Parked servers now.
    pub fn parked(&self) -> usize {
        todo!("implemented by the room work")
    }

    /// Waiting clients now.
    pub fn waiting(&self) -> usize {
        todo!("implemented by the room work")
    }

    /// Parked servers under `key`.
    pub fn parked_for(&self, key: &RendezvousKey) -> usize {
        let _ = key;
        todo!("implemented by the room work")
    }
}
