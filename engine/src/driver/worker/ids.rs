//! The worker's typed ids: socket slots, tunnel slots and TLS-front slots, the tables
//! they index, and the `user_data` every ring entry carries. No number in the worker is
//! both a socket and a tunnel, and the only arithmetic on ids (a tunnel direction's slot,
//! the `user_data` bit fields) is here, with unit tests.

use super::decide::Side;
use slab::Slab;
use std::marker::PhantomData;

/// An id that is a slot in an [`IdSlab`].
pub(super) trait Id: Copy {
    /// The id of slot `slot`.
    fn from_slot(slot: usize) -> Self;
    /// Its slot.
    fn slot(self) -> usize;
}

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        pub(super) struct $name(usize);

        impl Id for $name {
            fn from_slot(slot: usize) -> Self {
                Self(slot)
            }
            fn slot(self) -> usize {
                self.0
            }
        }
    };
}

id!(
    /// A socket's slot in the socket table.
    SockId
);
id!(
    /// A tunnel's slot in the tunnel table.
    TunnelId
);
id!(
    /// A TLS front's slot in the front table.
    FrontId
);

/// A slab indexed by one kind of id only.
#[derive(Debug)]
pub(super) struct IdSlab<I, T> {
    slab: Slab<T>,
    id: PhantomData<I>,
}

impl<I: Id, T> IdSlab<I, T> {
    /// An empty table with room for `capacity` entries before it grows.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            slab: Slab::with_capacity(capacity),
            id: PhantomData,
        }
    }

    /// Adds `value`; its id.
    pub(super) fn insert(&mut self, value: T) -> I {
        I::from_slot(self.slab.insert(value))
    }

    pub(super) fn get(&self, id: I) -> Option<&T> {
        self.slab.get(id.slot())
    }

    pub(super) fn get_mut(&mut self, id: I) -> Option<&mut T> {
        self.slab.get_mut(id.slot())
    }

    pub(super) fn contains(&self, id: I) -> bool {
        self.slab.contains(id.slot())
    }

    /// Removes and returns the entry; panics if `id` is vacant (as [`Slab::remove`]).
    pub(super) fn remove(&mut self, id: I) -> T {
        self.slab.remove(id.slot())
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub(super) fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (I, &T)> {
        self.slab.iter().map(|(slot, v)| (I::from_slot(slot), v))
    }

    /// Every id in the table, collected (for loops that remove as they go).
    pub(super) fn ids(&self) -> Vec<I> {
        self.slab
            .iter()
            .map(|(slot, _)| I::from_slot(slot))
            .collect()
    }
}

impl<I: Id, T> std::ops::Index<I> for IdSlab<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        &self.slab[id.slot()]
    }
}

impl<I: Id, T> std::ops::IndexMut<I> for IdSlab<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        &mut self.slab[id.slot()]
    }
}

/// Most generations before they wrap (24 bits of `user_data`).
const GENERATION_MASK: u32 = 0xff_ffff;

/// The generation of every slot a table ever used: bumped when a slot's occupant goes,
/// so a completion that names the old occupant is recognised as stale.
#[derive(Debug)]
pub(super) struct Generations<I> {
    gens: Vec<u32>,
    id: PhantomData<I>,
}

impl<I: Id> Generations<I> {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            gens: Vec::with_capacity(capacity),
            id: PhantomData,
        }
    }

    /// Makes room for `id` (a slot seen for the first time starts at generation 0).
    pub(super) fn track(&mut self, id: I) {
        if self.gens.len() <= id.slot() {
            self.gens.resize(id.slot() + 1, 0);
        }
    }

    /// The current generation of `id` (0 for a slot never tracked).
    pub(super) fn get(&self, id: I) -> u32 {
        self.gens.get(id.slot()).copied().unwrap_or(0)
    }

    /// Whether `generation` is the current one of a tracked `id`.
    pub(super) fn is_current(&self, id: I, generation: u32) -> bool {
        self.gens.get(id.slot()) == Some(&generation)
    }

    /// Retires the current occupant of `id`.
    pub(super) fn bump(&mut self, id: I) {
        if let Some(g) = self.gens.get_mut(id.slot()) {
            *g = g.wrapping_add(1) & GENERATION_MASK;
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.gens.capacity()
    }
}

/// What a completion is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// Nothing to do (poll removals, cancellations).
    Ignore = 0,
    /// A multishot accept; the slot is the listener's index.
    Accept = 1,
    /// A socket's read-role poll.
    PollRead = 2,
    /// A socket's write-role poll.
    PollWrite = 3,
    /// The worker's inbox is readable.
    Inbox = 4,
    /// A hand-off socket is writable again; the slot is the receiving worker.
    PeerWritable = 5,
    /// A splice from a socket into a direction's pipe.
    SpliceIn = 6,
    /// A splice from a direction's pipe to its destination socket.
    SpliceOut = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Accept,
            2 => Self::PollRead,
            3 => Self::PollWrite,
            4 => Self::Inbox,
            5 => Self::PeerWritable,
            6 => Self::SpliceIn,
            7 => Self::SpliceOut,
            _ => Self::Ignore,
        }
    }
}

/// One direction of one tunnel, as carried in the slot field of a splice completion's
/// `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DirSlot {
    pub(super) tunnel: TunnelId,
    pub(super) side: Side,
}

impl DirSlot {
    /// The slot number put in `user_data`: `tunnel * 2 + side`.
    pub(super) fn encode(self) -> usize {
        self.tunnel.slot() * 2 + self.side.index()
    }

    /// The direction a slot number names.
    pub(super) fn decode(slot: usize) -> Self {
        Self {
            tunnel: TunnelId(slot / 2),
            side: if slot.is_multiple_of(2) {
                Side::Client
            } else {
                Side::Server
            },
        }
    }
}

/// The `user_data` of a ring entry: kind (8 bits) | generation (24 bits) | slot (32
/// bits). The slot is a listener index, a socket, a tunnel direction or a peer worker,
/// by kind; the generation is that of the socket or tunnel slot (0 for the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UserData {
    pub(super) kind: Kind,
    pub(super) generation: u32,
    pub(super) slot: usize,
}

impl UserData {
    /// For entries whose completion is ignored.
    pub(super) const IGNORE: u64 = 0;

    /// A completion of `kind` for slot `slot` (a listener or a peer worker index).
    pub(super) fn plain(kind: Kind, slot: usize) -> u64 {
        Self {
            kind,
            generation: 0,
            slot,
        }
        .encode()
    }

    /// A poll of socket `sock` at `generation`.
    pub(super) fn sock(kind: Kind, generation: u32, sock: SockId) -> u64 {
        Self {
            kind,
            generation,
            slot: sock.slot(),
        }
        .encode()
    }

    /// A splice of a tunnel direction at the tunnel's `generation`.
    pub(super) fn splice(kind: Kind, generation: u32, dir: DirSlot) -> u64 {
        Self {
            kind,
            generation,
            slot: dir.encode(),
        }
        .encode()
    }

    pub(super) fn encode(self) -> u64 {
        ((self.kind as u64) << 56)
            | ((u64::from(self.generation) & u64::from(GENERATION_MASK)) << 32)
            | (self.slot as u64 & 0xffff_ffff)
    }

    pub(super) fn decode(ud: u64) -> Self {
        Self {
            kind: Kind::from_u8((ud >> 56) as u8),
            generation: ((ud >> 32) & u64::from(GENERATION_MASK)) as u32,
            slot: (ud & 0xffff_ffff) as usize,
        }
    }

    /// The socket a poll completion names.
    pub(super) fn sock_id(self) -> SockId {
        SockId(self.slot)
    }

    /// The tunnel direction a splice completion names.
    pub(super) fn dir(self) -> DirSlot {
        DirSlot::decode(self.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [Side; 2] = [Side::Client, Side::Server];

    #[test]
    fn direction_slots_round_trip_and_match_the_old_numbering() {
        for t in [0usize, 1, 7, 1 << 20] {
            for side in BOTH {
                let slot = DirSlot {
                    tunnel: TunnelId(t),
                    side,
                };
                assert_eq!(slot.encode(), t * 2 + side.index());
                assert_eq!(DirSlot::decode(slot.encode()), slot);
            }
        }
    }

    #[test]
    fn user_data_round_trips_every_kind_and_keeps_the_old_layout() {
        let kinds = [
            Kind::Ignore,
            Kind::Accept,
            Kind::PollRead,
            Kind::PollWrite,
            Kind::Inbox,
            Kind::PeerWritable,
            Kind::SpliceIn,
            Kind::SpliceOut,
        ];
        for kind in kinds {
            for (generation, slot) in [(0u32, 0usize), (1, 1), (0xff_ffff, 0xffff_ffff), (7, 12345)]
            {
                let ud = UserData {
                    kind,
                    generation,
                    slot,
                };
                let raw = ud.encode();
                assert_eq!(
                    raw,
                    ((kind as u64) << 56) | (u64::from(generation) << 32) | slot as u64
                );
                assert_eq!(UserData::decode(raw), ud);
            }
        }
        assert_eq!(UserData::decode(UserData::IGNORE).kind, Kind::Ignore);
        assert_eq!(
            UserData::decode(u64::MAX).kind,
            Kind::Ignore,
            "an unknown kind is ignored"
        );
        let dir = DirSlot {
            tunnel: TunnelId(5),
            side: Side::Server,
        };
        assert_eq!(
            UserData::decode(UserData::splice(Kind::SpliceOut, 3, dir)).dir(),
            dir
        );
        assert_eq!(
            UserData::decode(UserData::sock(Kind::PollRead, 3, SockId(9))).sock_id(),
            SockId(9)
        );
    }

    #[test]
    fn generations_wrap_at_24_bits_and_mark_old_occupants_stale() {
        let mut g: Generations<SockId> = Generations::with_capacity(0);
        let s = SockId(3);
        assert!(!g.is_current(s, 0), "an untracked slot has no occupant");
        g.track(s);
        assert!(g.is_current(s, 0));
        g.bump(s);
        assert!(!g.is_current(s, 0) && g.is_current(s, 1));
        for _ in 0..GENERATION_MASK {
            g.bump(s);
        }
        assert_eq!(g.get(s), 0, "wraps within the 24 bits user_data carries");
    }

    #[test]
    fn id_slabs_hand_out_typed_ids() {
        let mut t: IdSlab<TunnelId, &str> = IdSlab::with_capacity(2);
        let a = t.insert("a");
        let b = t.insert("b");
        assert_ne!(a, b);
        assert_eq!((t[a], t[b], t.len()), ("a", "b", 2));
        assert_eq!(t.remove(a), "a");
        assert!(!t.contains(a) && t.contains(b));
        assert_eq!(t.ids(), vec![b]);
        assert_eq!(
            t.insert("c"),
            a,
            "a freed slot is reused (hence generations)"
        );
    }
}
