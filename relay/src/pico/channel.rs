//! The sans-IO core of the Pico Rendezvous Point: a bounded table of channels, each
//! holding at most one waiting party (a reader or a writer with its message).
//!
//! Every operation takes `now` and returns a decision; nothing here reads the clock or
//! does I/O. `W` is whatever the caller uses to answer a waiting party later (the async
//! adapter uses a `oneshot::Sender`). Waiting parties that are answered as a side effect
//! of an operation (channel expiry, DELETE) are appended to the caller's `out` list.
//!
//! States per channel (protocols.md §2.3): `Standby`, `Reading` (a GET waits), `Writing`
//! (a POST waits with its bytes). A channel expires a fixed time after its creation,
//! never extended by activity.

use hyper::body::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Limits of the channel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long one GET or POST waits for its peer (the released server: 40 s).
    pub wait: Duration,
    /// A channel is removed this long after its creation (the released server: 30 min).
    pub channel_ttl: Duration,
    /// Most channels at once; creating one more is refused.
    pub max_channels: usize,
    /// Most waiting parties at once (over all channels); one more is refused.
    pub max_waiting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(40),
            channel_ttl: Duration::from_secs(30 * 60),
            max_channels: 65_536,
            max_waiting: 256,
        }
    }
}

/// Identifies one waiting party, unique for the table's life.
pub type WaitId = u64;

/// What a waiting party is finally told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A reader gets a writer's message.
    Data(Bytes),
    /// A writer's message was handed to a reader (code 0).
    Written,
    /// The wait elapsed (code 2).
    TimedOut,
    /// The channel was deleted or expired (code -1).
    Closed,
}

/// Why an operation was refused. The channel is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A party of the same role is already waiting on the channel (the released server:
    /// 404).
    #[error("a party of the same role is already waiting on this channel")]
    Busy,
    /// The channel does not exist and the table is full.
    #[error("too many channels")]
    TooManyChannels,
    /// The request would wait and too many requests are waiting already.
    #[error("too many waiting requests")]
    TooManyWaiting,
}

/// The outcome of a GET.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<W> {
    /// No writer yet: the reader waits until `deadline` (or until answered).
    Parked {
        /// The reader's id (for [`Table::timer`] and [`Table::cancel`]).
        id: WaitId,
        /// When to call [`Table::timer`].
        deadline: Instant,
    },
    /// A writer was waiting: the reader gets `data`; the caller tells `writer` that its
    /// message was written.
    Delivered {
        /// The message.
        data: Bytes,
        /// The writer to answer with [`Notice::Written`].
        writer: W,
    },
}

/// The outcome of a POST.
#[derive(Debug, PartialEq, Eq)]
pub enum Write<W> {
    /// No reader yet: the writer waits with its message until `deadline`.
    Parked {
        /// The writer's id.
        id: WaitId,
        /// When to call [`Table::timer`].
        deadline: Instant,
    },
    /// A reader was waiting: the caller hands it the message ([`Notice::Data`]); if the
    /// reader is gone by then the writer is told code 1.
    Deliver {
        /// The waiting reader.
        reader: W,
    },
}

/// The outcome of a waiting party's timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// The party is answered with this notice now and no longer waits.
    Fired(Notice),
    /// Too early (the timer fired before the deadline): wait until this instant.
    NotYet(Instant),
    /// The party is no longer waiting here (it was answered meanwhile).
    Gone,
}

#[derive(Debug)]
enum Slot<W> {
    Standby,
    Reading {
        waiter: W,
        id: WaitId,
        deadline: Instant,
    },
    Writing {
        waiter: W,
        id: WaitId,
        deadline: Instant,
        data: Bytes,
    },
}

impl<W> Slot<W> {
    fn waiting_id(&self) -> Option<WaitId> {
        match self {
            Self::Standby => None,
            Self::Reading { id, .. } | Self::Writing { id, .. } => Some(*id),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Standby => None,
            Self::Reading { deadline, .. } | Self::Writing { deadline, .. } => Some(*deadline),
        }
    }

    fn into_waiter(self) -> Option<W> {
        match self {
            Self::Standby => None,
            Self::Reading { waiter, .. } | Self::Writing { waiter, .. } => Some(waiter),
        }
    }
}

#[derive(Debug)]
struct Channel<W> {
    generation: u64,
    expires: Instant,
    slot: Slot<W>,
}

/// The table of channels. See the module documentation.
#[derive(Debug)]
pub struct Table<W> {
    limits: Limits,
    channels: HashMap<Box<[u8]>, Channel<W>>,
    /// Channels in creation order (so in expiry order): (expiry, generation, name).
    /// Entries of channels deleted early stay until compacted or expired.
    expiry: VecDeque<(Instant, u64, Box<[u8]>)>,
    next: u64,
    waiting: usize,
}

/// `now + d`, or `now` when that instant is not representable.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

impl<W> Table<W> {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            channels: HashMap::new(),
            expiry: VecDeque::new(),
            next: 0,
            waiting: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Channels now.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Waiting parties now.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Removes `name`, answering its waiting party (if any) with [`Notice::Closed`].
    fn remove(&mut self, name: &[u8], out: &mut Vec<(W, Notice)>) {
        if let Some(ch) = self.channels.remove(name)
            && let Some(w) = ch.slot.into_waiter()
        {
            self.waiting -= 1;
            out.push((w, Notice::Closed));
        }
    }

    /// Removes every channel whose lifetime is over at `now`.
    pub fn purge(&mut self, now: Instant, out: &mut Vec<(W, Notice)>) {
        while let Some((at, generation, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            let generation = *generation;
            let Some((_, _, name)) = self.expiry.pop_front() else {
                break;
            };
            if self
                .channels
                .get(&name)
                .is_some_and(|c| c.generation == generation)
            {
                self.remove(&name, out);
            }
        }
    }

    /// Purges, then drops a channel found expired (only possible if `now` went back and
    /// forth), so the caller sees live channels only.
    fn prepare(&mut self, now: Instant, name: &[u8], out: &mut Vec<(W, Notice)>) {
        self.purge(now, out);
        if self.channels.get(name).is_some_and(|c| now >= c.expires) {
            self.remove(name, out);
        }
    }

    /// Creates `name` if missing (the caller checked the channel cap).
    fn create(&mut self, now: Instant, name: &[u8]) -> &mut Channel<W> {
        if !self.channels.contains_key(name) {
            let generation = self.next_id();
            let expires = after(now, self.limits.channel_ttl);
            if self.expiry.len() >= self.limits.max_channels.saturating_mul(2).max(16) {
                let live = &self.channels;
                self.expiry
                    .retain(|(_, g, n)| live.get(n).is_some_and(|c| c.generation == *g));
            }
            self.expiry.push_back((expires, generation, name.into()));
            self.channels.insert(
                name.into(),
                Channel {
                    generation,
                    expires,
                    slot: Slot::Standby,
                },
            );
        }
        // The entry was just ensured.
        self.channels
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("channel inserted above"))
    }

    /// Refuses what would need a new channel or a new waiting party over the caps.
    fn check_caps(&self, name: &[u8], parks: bool) -> Result<(), Refusal> {
        if !self.channels.contains_key(name) && self.channels.len() >= self.limits.max_channels {
            return Err(Refusal::TooManyChannels);
        }
        if parks && self.waiting >= self.limits.max_waiting {
            return Err(Refusal::TooManyWaiting);
        }
        Ok(())
    }

    /// A GET on `name` at `now`; `waiter` answers the reader if it has to wait.
    pub fn read(
        &mut self,
        now: Instant,
        name: &[u8],
        waiter: W,
        out: &mut Vec<(W, Notice)>,
    ) -> Result<Read<W>, Refusal> {
        self.prepare(now, name, out);
        let slot = self.channels.get(name).map(|c| &c.slot);
        match slot {
            Some(Slot::Reading { .. }) => Err(Refusal::Busy),
            Some(Slot::Writing { .. }) => {
                let ch = self.create(now, name);
                match std::mem::replace(&mut ch.slot, Slot::Standby) {
                    Slot::Writing {
                        waiter: w, data, ..
                    } => {
                        self.waiting -= 1;
                        Ok(Read::Delivered { data, writer: w })
                    }
                    _ => unreachable!("matched Writing above"),
                }
            }
            Some(Slot::Standby) | None => {
                self.check_caps(name, true)?;
                let id = self.next_id();
                let wait = self.limits.wait;
                let ch = self.create(now, name);
                let deadline = after(now, wait).min(ch.expires);
                ch.slot = Slot::Reading {
                    waiter,
                    id,
                    deadline,
                };
                self.waiting += 1;
                Ok(Read::Parked { id, deadline })
            }
        }
    }

    /// A POST of `data` on `name` at `now`; `waiter` answers the writer if it has to wait.
    pub fn write(
        &mut self,
        now: Instant,
        name: &[u8],
        data: Bytes,
        waiter: W,
        out: &mut Vec<(W, Notice)>,
    ) -> Result<Write<W>, Refusal> {
        self.prepare(now, name, out);
        let slot = self.channels.get(name).map(|c| &c.slot);
        match slot {
            Some(Slot::Writing { .. }) => Err(Refusal::Busy),
            Some(Slot::Reading { .. }) => {
                let ch = self.create(now, name);
                match std::mem::replace(&mut ch.slot, Slot::Standby) {
                    Slot::Reading { waiter: r, .. } => {
                        self.waiting -= 1;
                        Ok(Write::Deliver { reader: r })
                    }
                    _ => unreachable!("matched Reading above"),
                }
            }
            Some(Slot::Standby) | None => {
                self.check_caps(name, true)?;
                let id = self.next_id();
                let wait = self.limits.wait;
                let ch = self.create(now, name);
                let deadline = after(now, wait).min(ch.expires);
                ch.slot = Slot::Writing {
                    waiter,
                    id,
                    deadline,
                    data,
                };
                self.waiting += 1;
                Ok(Write::Parked { id, deadline })
            }
        }
    }

    /// A DELETE of `name` at `now`: the channel is removed and its waiting party (if
    /// any) is answered [`Notice::Closed`] through `out`. Deleting a channel that does
    /// not exist is not an error (the released server creates it, then closes it).
    pub fn delete(&mut self, now: Instant, name: &[u8], out: &mut Vec<(W, Notice)>) {
        self.prepare(now, name, out);
        self.remove(name, out);
    }

    /// The timer of waiting party `id` on `name` fired at `now`.
    pub fn timer(
        &mut self,
        now: Instant,
        name: &[u8],
        id: WaitId,
        out: &mut Vec<(W, Notice)>,
    ) -> Timer {
        let Some(ch) = self.channels.get_mut(name) else {
            self.purge(now, out);
            return Timer::Gone;
        };
        if ch.slot.waiting_id() != Some(id) {
            self.purge(now, out);
            return Timer::Gone;
        }
        if now >= ch.expires {
            if self.channels.remove(name).is_some() {
                // The party is answered by the return value; its handle is dropped.
                self.waiting -= 1;
            }
            self.purge(now, out);
            return Timer::Fired(Notice::Closed);
        }
        match ch.slot.deadline() {
            Some(deadline) if now < deadline => Timer::NotYet(deadline),
            _ => {
                ch.slot = Slot::Standby;
                self.waiting -= 1;
                self.purge(now, out);
                Timer::Fired(Notice::TimedOut)
            }
        }
    }

    /// Waiting party `id` on `name` went away (its connection closed): back to standby;
    /// a waiting writer's message is dropped. Returns its handle if it was still waiting.
    pub fn cancel(&mut self, name: &[u8], id: WaitId) -> Option<W> {
        let ch = self.channels.get_mut(name)?;
        if ch.slot.waiting_id() != Some(id) {
            return None;
        }
        self.waiting -= 1;
        std::mem::replace(&mut ch.slot, Slot::Standby).into_waiter()
    }

    /// Checks the internal bookkeeping; for tests and fuzzing. Panics on a mismatch.
    #[doc(hidden)]
    pub fn assert_consistent(&self) {
        let waiting = self
            .channels
            .values()
            .filter(|c| c.slot.waiting_id().is_some())
            .count();
        assert_eq!(waiting, self.waiting, "waiting count");
        assert!(self.waiting <= self.limits.max_waiting, "waiting cap");
        assert!(
            self.channels.len() <= self.limits.max_channels,
            "channel cap"
        );
        for (name, ch) in &self.channels {
            assert!(
                self.expiry
                    .iter()
                    .any(|(at, g, n)| *g == ch.generation && n == name && *at == ch.expires),
                "every channel has its expiry entry"
            );
            if let Some(d) = ch.slot.deadline() {
                assert!(d <= ch.expires, "a wait never outlives its channel");
            }
        }
        assert!(
            self.expiry.len() <= self.limits.max_channels.saturating_mul(2).max(16) + 1,
            "expiry queue bounded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            wait: Duration::from_secs(40),
            channel_ttl: Duration::from_secs(1800),
            max_channels: 4,
            max_waiting: 3,
        }
    }

    fn msg(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn standby_read_then_write_delivers_to_the_reader() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        let Ok(Read::Parked { id, deadline }) = t.read(t0, b"c", 1, &mut out) else {
            panic!("reader parks")
        };
        assert_eq!(deadline, t0 + Duration::from_secs(40));
        assert_eq!(t.waiting(), 1);
        assert_eq!(
            t.write(t0, b"c", msg("hi"), 2, &mut out),
            Ok(Write::Deliver { reader: 1 })
        );
        assert_eq!(t.waiting(), 0);
        // Back to standby: the reader's timer finds nothing.
        assert_eq!(t.timer(deadline, b"c", id, &mut out), Timer::Gone);
        assert!(out.is_empty());
        t.assert_consistent();
    }

    #[test]
    fn standby_write_then_read_delivers_the_exact_bytes() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        let body = Bytes::from((0..=255u8).collect::<Vec<_>>());
        assert!(matches!(
            t.write(t0, b"c", body.clone(), 7, &mut out),
            Ok(Write::Parked { .. })
        ));
        assert_eq!(
            t.read(t0, b"c", 8, &mut out),
            Ok(Read::Delivered {
                data: body,
                writer: 7
            })
        );
        // Standby again: the next write parks.
        assert!(matches!(
            t.write(t0, b"c", msg("x"), 9, &mut out),
            Ok(Write::Parked { .. })
        ));
        t.assert_consistent();
    }

    #[test]
    fn second_reader_or_writer_is_busy_and_the_first_keeps_waiting() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        assert!(t.read(t0, b"r", 1, &mut out).is_ok());
        assert_eq!(t.read(t0, b"r", 2, &mut out), Err(Refusal::Busy));
        assert!(t.write(t0, b"w", msg("a"), 3, &mut out).is_ok());
        assert_eq!(t.write(t0, b"w", msg("b"), 4, &mut out), Err(Refusal::Busy));
        assert_eq!(
            t.write(t0, b"r", msg("z"), 5, &mut out),
            Ok(Write::Deliver { reader: 1 })
        );
        assert_eq!(
            t.read(t0, b"w", 6, &mut out),
            Ok(Read::Delivered {
                data: msg("a"),
                writer: 3
            })
        );
        t.assert_consistent();
    }

    #[test]
    fn wait_elapses_with_timed_out_and_standby() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        let Ok(Write::Parked { id, deadline }) = t.write(t0, b"c", msg("m"), 1, &mut out) else {
            panic!()
        };
        let early = t0 + Duration::from_secs(10);
        assert_eq!(t.timer(early, b"c", id, &mut out), Timer::NotYet(deadline));
        assert_eq!(
            t.timer(deadline, b"c", id, &mut out),
            Timer::Fired(Notice::TimedOut)
        );
        assert_eq!(t.waiting(), 0);
        // The message was dropped: a reader now waits.
        assert!(matches!(
            t.read(deadline, b"c", 2, &mut out),
            Ok(Read::Parked { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn vanished_waiter_resets_the_slot_and_drops_the_message() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        let Ok(Write::Parked { id, .. }) = t.write(t0, b"c", msg("m"), 1, &mut out) else {
            panic!()
        };
        assert_eq!(t.cancel(b"c", id), Some(1));
        assert_eq!(t.cancel(b"c", id), None);
        assert!(matches!(
            t.read(t0, b"c", 2, &mut out),
            Ok(Read::Parked { .. })
        ));
        t.assert_consistent();
    }

    #[test]
    fn delete_closes_the_waiting_party_and_removes_the_channel() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        let Ok(Read::Parked { id, .. }) = t.read(t0, b"c", 1, &mut out) else {
            panic!()
        };
        t.delete(t0, b"c", &mut out);
        assert_eq!(out, vec![(1, Notice::Closed)]);
        assert_eq!((t.channels(), t.waiting()), (0, 0));
        assert_eq!(t.timer(t0, b"c", id, &mut out), Timer::Gone);
        // Deleting a missing channel is fine and creates nothing.
        out.clear();
        t.delete(t0, b"nothing", &mut out);
        assert!(out.is_empty());
        assert_eq!(t.channels(), 0);
        t.assert_consistent();
    }

    #[test]
    fn channels_expire_after_creation_not_after_use() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        assert!(t.write(t0, b"c", msg("a"), 1, &mut out).is_ok());
        let t1 = t0 + Duration::from_secs(1790);
        assert!(matches!(
            t.read(t1, b"c", 2, &mut out),
            Ok(Read::Delivered { .. })
        ));
        // A wait starting 10 s before expiry is cut short by it: code -1, not 2.
        let Ok(Read::Parked { id, deadline }) = t.read(t1, b"c", 3, &mut out) else {
            panic!()
        };
        assert_eq!(deadline, t0 + Duration::from_secs(1800));
        assert_eq!(
            t.timer(deadline, b"c", id, &mut out),
            Timer::Fired(Notice::Closed)
        );
        assert_eq!(t.channels(), 0);
        // Expired channels are purged by any later operation, answering their waiter.
        assert!(t.read(deadline, b"d", 4, &mut out).is_ok());
        let later = deadline + Duration::from_secs(1800);
        assert!(t.read(later, b"e", 5, &mut out).is_ok());
        assert_eq!(out, vec![(4, Notice::Closed)]);
        assert_eq!(t.channels(), 1);
        t.assert_consistent();
    }

    #[test]
    fn caps_refuse_new_channels_and_waiters_but_not_deliveries() {
        let t0 = Instant::now();
        let mut t = Table::new(limits());
        let mut out = Vec::new();
        for (i, name) in [b"a", b"b", b"c"].into_iter().enumerate() {
            assert!(t.read(t0, name, i as u32, &mut out).is_ok());
        }
        // Waiting cap (3) reached: a fourth party may not wait...
        assert_eq!(
            t.write(t0, b"d", msg("x"), 9, &mut out),
            Err(Refusal::TooManyWaiting)
        );
        assert_eq!(t.channels(), 3, "a refused request creates no channel");
        // ...but a write that completes a waiting read is served.
        assert_eq!(
            t.write(t0, b"a", msg("x"), 10, &mut out),
            Ok(Write::Deliver { reader: 0 })
        );
        assert!(t.read(t0, b"d", 11, &mut out).is_ok());
        // Channel cap (4) reached.
        t.delete(t0, b"d", &mut out);
        out.clear();
        assert!(t.read(t0, b"d", 12, &mut out).is_ok());
        assert_eq!(t.channels(), 4);
        assert_eq!(
            t.read(t0, b"e", 13, &mut out),
            Err(Refusal::TooManyChannels)
        );
        t.assert_consistent();
    }

    #[test]
    fn create_delete_churn_keeps_the_expiry_queue_bounded() {
        let t0 = Instant::now();
        let mut t: Table<u32> = Table::new(limits());
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            let name = i.to_be_bytes();
            assert!(t.read(t0, &name, i, &mut out).is_ok());
            t.delete(t0, &name, &mut out);
            t.assert_consistent();
        }
        assert_eq!(out.len(), 10_000);
    }

    #[test]
    fn fuzz_harnesses_on_seeded_random_inputs() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..300 {
            let len = rng.gen_range(0..300);
            let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            crate::fuzzing::pico_channel::channel_ops(&data);
            crate::fuzzing::pico_channel::request_path(&data);
            crate::fuzzing::pico_channel::requests(&data);
        }
    }
}
