//! The tag table of one owner worker: which hashed tags are published, by which
//! ownership key, in which mode and until when. A pure state machine: every call takes
//! `now` (unix seconds); nothing here does I/O or reads the clock.
//!
//! Lifecycle of an entry:
//!
//! ```text
//!   (absent) --first valid park--> Live --duration elapsed--> Expired ─┐
//!                                   │                                  ├─> (dropped after
//!                                   └─single-shot responder--> Consumed┘    the tombstone
//!                                                                           time, or when
//!                                                                           the table is full)
//! ```
//!
//! Responders are answered 404 unless the entry is Live. Parks are answered 410 for an
//! Expired entry and for a Consumed one once its publisher grace (the client wait, so
//! that the winning responder can still be paired if no publisher was parked) is over.
//! Dead entries (tombstones) count against the cap; when the table is full they are
//! dropped, oldest death first, before a new tag is refused with 503.

use super::kdf::HashedTag;
use super::sync::{Answer, SharedTag};
use super::wire::{CreateOptions, TagMode, TagProof, park_message};
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeSet, HashMap, VecDeque};
use tryst_engine::auth::{Nonce, Proof, ReplayCache};
use tryst_engine::reject::Rejection;
use tryst_engine::target::{KeySpace, RendezvousId, RendezvousKey};

/// Limits and windows of a [`TagTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagLimits {
    /// Most entries (live tags and tombstones) per owner worker.
    pub max_tags: usize,
    /// Longest duration a tag may have, seconds; longer requests are capped, and a tag
    /// created without `Tag-Duration` gets this.
    pub max_duration_secs: u64,
    /// Accepted `|now - ts|` of a park proof, seconds.
    pub proof_window_secs: u64,
    /// After a single-shot tag is consumed, parks are still accepted this long (seconds)
    /// so that the winning responder can be paired.
    pub publisher_grace_secs: u64,
    /// Capacity of the replay cache (nonces within the window).
    pub replay_capacity: usize,
}

impl Default for TagLimits {
    fn default() -> Self {
        Self {
            max_tags: 100_000,
            max_duration_secs: 24 * 3600,
            proof_window_secs: 60,
            publisher_grace_secs: 2,
            replay_capacity: 1 << 18,
        }
    }
}

/// The room key of a hashed tag (in [`KeySpace::Tag`]).
pub fn room_key(tag: &HashedTag) -> RendezvousKey {
    RendezvousKey::derived(KeySpace::Tag, &tag.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    Consumed { at: u64 },
    Expired,
}

#[derive(Debug, Clone)]
struct Entry {
    owner: VerifyingKey,
    mode: TagMode,
    /// The duration as requested (before the cap), or the maximum when none was given:
    /// later parks naming another value conflict.
    requested_duration: u64,
    expires_at: u64,
    state: State,
    /// When the entry became a tombstone (Consumed or Expired).
    died_at: Option<u64>,
    /// Created or updated over `/services` ([`TagTable::share`]): its consumption by a
    /// tunnel responder is reported to the supervisor.
    shared: bool,
}

impl Entry {
    /// Marks the entry Expired if its time is up; true when this call killed it.
    fn refresh(&mut self, now: u64) -> bool {
        if self.state == State::Live && now >= self.expires_at {
            self.state = State::Expired;
            self.died_at = Some(now);
            return true;
        }
        false
    }
}

/// The tag table (see the module docs).
#[derive(Debug)]
pub struct TagTable {
    limits: TagLimits,
    entries: HashMap<HashedTag, Entry>,
    /// (time, tag): when an entry may have to evict its parked connections.
    deadlines: BTreeSet<(u64, HashedTag)>,
    /// Tombstones in order of death: (died_at, tag).
    tombstones: VecDeque<(u64, HashedTag)>,
    replay: ReplayCache,
    /// Room key → tag of the single-shot entries created here (for
    /// [`TagTable::moved_away`]); pruned of gone entries when it doubles the table.
    by_room: HashMap<RendezvousKey, HashedTag>,
}

/// What an accepted park means for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    /// The tag's mode (single-shot parks replace, long-term parks queue).
    pub mode: TagMode,
    /// True when this park created the tag.
    pub created: bool,
}

impl TagTable {
    /// An empty table.
    pub fn new(limits: TagLimits) -> Self {
        Self {
            replay: ReplayCache::new(limits.replay_capacity, limits.proof_window_secs)
                .scoped("tag"),
            limits,
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
            tombstones: VecDeque::new(),
            by_room: HashMap::new(),
        }
    }

    /// Another node took single-shot `key` over with a newer park (its replace
    /// announcement; the publisher parked here is closed): a live, unshared single-shot
    /// entry is forgotten, so a responder here gets what a node without the tag gives
    /// (in a cluster: carried to the node that has it) instead of consuming the tag for
    /// a publisher that is gone.
    pub fn moved_away(&mut self, key: &RendezvousKey, now: u64) {
        let Some(tag) = self.by_room.remove(key) else {
            return;
        };
        self.refresh(&tag, now);
        if self
            .entries
            .get(&tag)
            .is_some_and(|e| e.mode == TagMode::SingleShot && e.state == State::Live && !e.shared)
        {
            self.entries.remove(&tag);
        }
    }

    /// The same table in a worker that started at `started_unix`: proofs stamped at or
    /// before that second are refused as replays, since an earlier worker may have
    /// accepted them (see `ReplayCache::started_at`).
    #[must_use]
    pub fn started_at(mut self, started_unix: u64) -> Self {
        self.replay = self.replay.started_at(started_unix);
        self
    }

    /// Entries held (live tags and tombstones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `tag` is published (Live and not expired) at `now`.
    pub fn is_live(&self, tag: &HashedTag, now: u64) -> bool {
        self.entries
            .get(tag)
            .is_some_and(|e| e.state == State::Live && now < e.expires_at)
    }

    /// Refreshes `tag`'s entry at `now`, recording a new tombstone.
    fn refresh(&mut self, tag: &HashedTag, now: u64) {
        if let Some(e) = self.entries.get_mut(tag)
            && e.refresh(now)
        {
            self.tombstones.push_back((now, *tag));
        }
    }

    /// A publisher's park: verifies the ownership proof and applies the creation
    /// options. Check order: owner-key mismatch (403), timestamp window (403), signature
    /// (403), consumed or expired (410), conflicting options (409), table full (503),
    /// replay (403, or 503 when the replay cache is full).
    pub fn park(
        &mut self,
        tag: &HashedTag,
        proof: &TagProof,
        options: &CreateOptions,
        now: u64,
    ) -> Result<Parked, Rejection> {
        self.refresh(tag, now);
        let existing = self.entries.get(tag);
        let key = match existing {
            Some(e) => {
                if options.owner_key.is_some_and(|k| k != e.owner) {
                    return Err(Rejection::OwnerKeyMismatch);
                }
                e.owner
            }
            None => options
                .owner_key
                .unwrap_or_else(|| tag.derived_public_key()),
        };
        if proof.ts.abs_diff(now) > self.limits.proof_window_secs {
            return Err(Rejection::StaleTimestamp);
        }
        let message = park_message(tag, proof.ts, &proof.nonce, options);
        if crate::ed25519::verify_with(&key, &message, &proof.sig).is_err() {
            return Err(Rejection::BadProof);
        }
        let requested = options
            .duration_secs
            .unwrap_or(self.limits.max_duration_secs);
        if let Some(e) = existing {
            match e.state {
                State::Live => {}
                State::Consumed { at }
                    if now < at.saturating_add(self.limits.publisher_grace_secs) => {}
                State::Consumed { .. } | State::Expired => return Err(Rejection::TagGone),
            }
            if options.mode.is_some_and(|m| m != e.mode)
                || options
                    .duration_secs
                    .is_some_and(|d| d != e.requested_duration)
            {
                return Err(Rejection::TagConflict);
            }
        } else if self.entries.len() >= self.limits.max_tags {
            self.drop_tombstones_for_room(now);
            if self.entries.len() >= self.limits.max_tags {
                return Err(Rejection::TagTableFull);
            }
        }
        let replay_id = RendezvousId(*room_key(tag).bytes());
        let replay_proof = Proof {
            ts: proof.ts,
            ts_leading_zeros: 0,
            // 16 to 32 bytes (`wire::NONCE_BYTES`), within a native nonce's 8 to 32.
            nonce: Nonce::new(&proof.nonce).ok_or(Rejection::MalformedProof)?,
            mac: [0; 32],
        };
        self.replay
            .check_and_insert(&replay_id, &replay_proof, now)
            .map_err(Rejection::from)?;
        if let Some(e) = self.entries.get(tag) {
            return Ok(Parked {
                mode: e.mode,
                created: false,
            });
        }
        let mode = options.mode.unwrap_or(TagMode::LongTerm);
        if mode == TagMode::SingleShot {
            if self.by_room.len() >= 2 * self.entries.len().max(64) {
                let entries = &self.entries;
                self.by_room.retain(|_, t| entries.contains_key(t));
            }
            self.by_room.insert(room_key(tag), *tag);
        }
        let expires_at = now.saturating_add(requested.min(self.limits.max_duration_secs));
        self.entries.insert(
            *tag,
            Entry {
                owner: key,
                mode,
                requested_duration: requested,
                expires_at,
                state: State::Live,
                died_at: None,
                shared: false,
            },
        );
        self.deadlines.insert((expires_at, *tag));
        Ok(Parked {
            mode,
            created: true,
        })
    }

    /// A responder: `Ok(mode)` if the tag is published; a single-shot tag is consumed by
    /// this call (every later responder gets 404). Otherwise [`Rejection::UnknownTag`].
    pub fn respond(&mut self, tag: &HashedTag, now: u64) -> Result<TagMode, Rejection> {
        self.refresh(tag, now);
        let Some(e) = self.entries.get_mut(tag) else {
            return Err(Rejection::UnknownTag);
        };
        if e.state != State::Live {
            return Err(Rejection::UnknownTag);
        }
        if e.mode == TagMode::SingleShot {
            e.state = State::Consumed { at: now };
            e.died_at = Some(now);
            self.tombstones.push_back((now, *tag));
            self.deadlines
                .insert((now.saturating_add(self.limits.publisher_grace_secs), *tag));
        }
        Ok(e.mode)
    }

    /// Undoes a single-shot consumption made at `now` (the responder was refused
    /// because the consumption could not be claimed cluster-wide): the tag is Live
    /// again if it has not expired meanwhile. The stale tombstone and deadline entries
    /// left behind are harmless (both re-check the state).
    pub fn unconsume(&mut self, tag: &HashedTag, now: u64) {
        if let Some(e) = self.entries.get_mut(tag)
            && matches!(e.state, State::Consumed { .. })
            && now < e.expires_at
        {
            e.state = State::Live;
            e.died_at = None;
        }
    }

    /// The park proof's cluster-wide replay claim (see `ReplayCache::take_claim`).
    pub fn take_replay_claim(&mut self, now: u64) -> Option<tryst_engine::claim::Claim> {
        self.replay.take_claim(now)
    }

    /// The longest a tag entry lives (live, then as a tombstone), seconds: how long a
    /// single-shot consumption is remembered cluster-wide.
    pub fn max_duration_secs(&self) -> u64 {
        self.limits.max_duration_secs
    }

    /// Whether `tag` is held as a tag shared with `/services` (see [`TagTable::share`]).
    pub fn is_shared(&self, tag: &HashedTag) -> bool {
        self.entries.get(tag).is_some_and(|e| e.shared)
    }

    /// Applies the supervisor's view of a tag created over `/services` (see
    /// [`super::sync`]). With `create`, a live tag already held (created by a
    /// `CONNECT tag:` park) is left alone: [`Answer::Exists`]. Otherwise the entry takes
    /// the given owner, mode, duration and expiry; it is Live when `active` and not yet
    /// expired, Consumed when `consumed` or when an update finds it consumed already
    /// (a single-shot tag whose response is taken stays so), else Expired. `Ok(true)` when it is not Live (its parked publishers must
    /// be closed now). [`Answer::Full`] when a new entry finds no room (after dropping
    /// tombstones), `Err(Answer::Unknown)` for an owner key that is not a strong
    /// Ed25519 key (the supervisor checked it; only a bug gets here).
    pub fn share(&mut self, s: &SharedTag, create: bool, now: u64) -> Result<bool, Answer> {
        let owner = crate::ed25519::strict_key(&s.owner).map_err(|_| Answer::Unknown)?;
        self.refresh(&s.tag, now);
        match self.entries.get(&s.tag) {
            Some(e) if create && e.state == State::Live => return Err(Answer::Exists),
            Some(_) => {}
            None => {
                if self.entries.len() >= self.limits.max_tags {
                    self.drop_tombstones_for_room(now);
                    if self.entries.len() >= self.limits.max_tags {
                        return Err(Answer::Full);
                    }
                }
            }
        }
        let previous = self.entries.get(&s.tag).map(|e| e.state);
        // Consumption is the worker's to decide: an update never revives a consumed
        // tag (the supervisor may not have heard of the consumption yet); a new
        // creation starts afresh.
        let state = match previous {
            Some(State::Consumed { at }) if s.consumed || !create => State::Consumed { at },
            // Consumed elsewhere: no publisher grace is owed here.
            _ if s.consumed => State::Consumed { at: 0 },
            _ if s.active && now < s.expires_at => State::Live,
            _ => State::Expired,
        };
        let died_at = match state {
            State::Live => None,
            _ => Some(now),
        };
        self.entries.insert(
            s.tag,
            Entry {
                owner,
                mode: s.mode,
                requested_duration: s.requested_duration_secs,
                expires_at: s.expires_at,
                state,
                died_at,
                shared: true,
            },
        );
        if state == State::Live {
            self.deadlines.insert((s.expires_at, s.tag));
        } else {
            self.tombstones.push_back((now, s.tag));
        }
        Ok(state != State::Live)
    }

    /// An RPC responder's claim on a shared single-shot tag (see [`super::sync`]): the
    /// same check and consumption as a tunnel responder's [`TagTable::respond`], so that
    /// exactly one responder wins whichever way each came. [`Answer::Claimed`] for the
    /// winner, [`Answer::Consumed`] when the tag's response is taken, else
    /// [`Answer::Unknown`].
    pub fn claim(&mut self, tag: &HashedTag, now: u64) -> Answer {
        self.refresh(tag, now);
        match self.entries.get(tag).map(|e| e.state) {
            Some(State::Consumed { .. }) => Answer::Consumed,
            Some(State::Live) => match self.respond(tag, now) {
                Ok(_) => Answer::Claimed,
                Err(_) => Answer::Unknown,
            },
            _ => Answer::Unknown,
        }
    }

    /// Room keys whose parked connections must be closed at `now` (expired tags, and
    /// consumed ones past their publisher grace), appended to `out`; also drops
    /// tombstones older than the maximum duration.
    pub fn evictions(&mut self, now: u64, out: &mut Vec<RendezvousKey>) {
        while let Some(&(at, tag)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.refresh(&tag, now);
            let Some(e) = self.entries.get(&tag) else {
                continue;
            };
            let dead = match e.state {
                State::Live => false,
                State::Expired => true,
                State::Consumed { at } => {
                    now >= at.saturating_add(self.limits.publisher_grace_secs)
                        || now >= e.expires_at
                }
            };
            if dead {
                out.push(room_key(&tag));
            }
        }
        while let Some(&(died, tag)) = self.tombstones.front() {
            if now < died.saturating_add(self.limits.max_duration_secs) {
                break;
            }
            self.tombstones.pop_front();
            self.remove_if_dead_since(&tag, died);
        }
    }

    /// Drops tombstones, oldest death first, until there is room for one entry.
    fn drop_tombstones_for_room(&mut self, now: u64) {
        // Entries whose time is up but that nobody touched yet become tombstones first.
        let due: Vec<HashedTag> = self
            .deadlines
            .range(..=(now, HashedTag([0xff; 32])))
            .map(|(_, tag)| *tag)
            .collect();
        for tag in due {
            self.refresh(&tag, now);
        }
        while self.entries.len() >= self.limits.max_tags {
            let Some((died, tag)) = self.tombstones.pop_front() else {
                return;
            };
            self.remove_if_dead_since(&tag, died);
        }
    }

    fn remove_if_dead_since(&mut self, tag: &HashedTag, died: u64) {
        if self
            .entries
            .get(tag)
            .is_some_and(|e| e.state != State::Live && e.died_at == Some(died))
        {
            self.entries.remove(tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::kdf::hashed_tag;
    use ed25519_dalek::{Signer as _, SigningKey};

    const NOW: u64 = 1_700_000_000;

    fn limits() -> TagLimits {
        TagLimits {
            max_tags: 4,
            max_duration_secs: 3600,
            proof_window_secs: 60,
            publisher_grace_secs: 2,
            replay_capacity: 1000,
        }
    }

    fn proof_by(
        key: &SigningKey,
        tag: &HashedTag,
        ts: u64,
        nonce_seed: u8,
        options: &CreateOptions,
    ) -> TagProof {
        let nonce = vec![nonce_seed; 16];
        let sig = key.sign(&park_message(tag, ts, &nonce, options)).to_bytes();
        TagProof { ts, nonce, sig }
    }

    /// Parks with the derived key and a fresh nonce per `seed`.
    fn park(
        t: &mut TagTable,
        tag: &HashedTag,
        seed: u8,
        o: &CreateOptions,
        now: u64,
    ) -> Result<Parked, Rejection> {
        let p = proof_by(&tag.derived_signing_key(), tag, now, seed, o);
        t.park(tag, &p, o, now)
    }

    fn single_shot(duration: Option<u64>) -> CreateOptions {
        CreateOptions {
            mode: Some(TagMode::SingleShot),
            duration_secs: duration,
            owner_key: None,
        }
    }

    #[test]
    fn a_single_shot_tag_replaced_on_another_node_is_forgotten_here() {
        let mut t = TagTable::new(limits());
        let (one, long) = (hashed_tag("", "moved"), hashed_tag("", "stays"));
        park(&mut t, &one, 1, &single_shot(None), NOW).unwrap();
        park(&mut t, &long, 2, &CreateOptions::default(), NOW).unwrap();
        t.moved_away(&room_key(&long), NOW);
        assert_eq!(
            t.respond(&long, NOW),
            Ok(TagMode::LongTerm),
            "long-term: kept"
        );
        t.moved_away(&room_key(&one), NOW);
        assert_eq!(t.respond(&one, NOW), Err(Rejection::UnknownTag));
        assert_eq!(t.len(), 1, "only the long-term entry");
        // Parked here again later: a new entry.
        assert!(
            park(&mut t, &one, 3, &single_shot(None), NOW + 1)
                .unwrap()
                .created
        );
        // A consumed one is no longer live: its tombstone stays.
        assert_eq!(t.respond(&one, NOW + 1), Ok(TagMode::SingleShot));
        t.moved_away(&room_key(&one), NOW + 1);
        assert_eq!(t.respond(&one, NOW + 1), Err(Rejection::UnknownTag));
        assert_eq!(
            park(&mut t, &one, 4, &single_shot(None), NOW + 5),
            Err(Rejection::TagGone)
        );
    }

    #[test]
    fn unknown_tags_are_404_for_responders() {
        let mut t = TagTable::new(limits());
        assert_eq!(
            t.respond(&hashed_tag("", "nope"), NOW),
            Err(Rejection::UnknownTag)
        );
    }

    #[test]
    fn single_shot_first_responder_consumes() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "one");
        assert_eq!(
            park(&mut t, &tag, 1, &single_shot(None), NOW),
            Ok(Parked {
                mode: TagMode::SingleShot,
                created: true
            })
        );
        assert_eq!(t.respond(&tag, NOW), Ok(TagMode::SingleShot));
        assert_eq!(t.respond(&tag, NOW), Err(Rejection::UnknownTag));
        // Within the publisher grace a park is still accepted (the winner may be waiting).
        assert_eq!(
            park(&mut t, &tag, 2, &CreateOptions::default(), NOW + 1).map(|p| p.mode),
            Ok(TagMode::SingleShot)
        );
        let mut out = Vec::new();
        t.evictions(NOW + 1, &mut out);
        assert!(out.is_empty());
        t.evictions(NOW + 2, &mut out);
        assert_eq!(out, vec![room_key(&tag)]);
        assert_eq!(
            park(&mut t, &tag, 3, &CreateOptions::default(), NOW + 2),
            Err(Rejection::TagGone)
        );
        assert_eq!(t.respond(&tag, NOW + 2), Err(Rejection::UnknownTag));
    }

    #[test]
    fn long_term_serves_every_responder_until_expiry() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "many");
        let o = CreateOptions {
            duration_secs: Some(100),
            ..CreateOptions::default()
        };
        assert_eq!(
            park(&mut t, &tag, 1, &o, NOW).map(|p| p.mode),
            Ok(TagMode::LongTerm)
        );
        for i in 0..50 {
            assert_eq!(t.respond(&tag, NOW + i), Ok(TagMode::LongTerm));
        }
        assert!(t.is_live(&tag, NOW + 99));
        let mut out = Vec::new();
        t.evictions(NOW + 99, &mut out);
        assert!(out.is_empty());
        assert_eq!(t.respond(&tag, NOW + 100), Err(Rejection::UnknownTag));
        assert_eq!(
            park(&mut t, &tag, 2, &o, NOW + 100),
            Err(Rejection::TagGone)
        );
        t.evictions(NOW + 100, &mut out);
        assert_eq!(out, vec![room_key(&tag)]);
        // The tombstone stays for the maximum duration, then the tag may be created anew.
        out.clear();
        t.evictions(NOW + 100 + 3599, &mut out);
        assert_eq!(t.len(), 1);
        t.evictions(NOW + 100 + 3600, &mut out);
        assert!(t.is_empty());
        assert!(out.is_empty());
        let later = NOW + 100 + 3600;
        assert_eq!(
            park(&mut t, &tag, 3, &o, later).map(|p| p.created),
            Ok(true)
        );
    }

    #[test]
    fn durations_are_capped_and_default_to_the_maximum() {
        let mut t = TagTable::new(limits());
        let capped = hashed_tag("", "capped");
        let o = CreateOptions {
            duration_secs: Some(1_000_000),
            ..CreateOptions::default()
        };
        park(&mut t, &capped, 1, &o, NOW).unwrap();
        assert!(t.is_live(&capped, NOW + 3599));
        assert!(!t.is_live(&capped, NOW + 3600));
        let default = hashed_tag("", "default");
        park(&mut t, &default, 1, &CreateOptions::default(), NOW).unwrap();
        assert!(t.is_live(&default, NOW + 3599));
        assert!(!t.is_live(&default, NOW + 3600));
        // The capped request is still what later parks must repeat (or omit).
        assert!(park(&mut t, &capped, 2, &o, NOW + 1).is_ok());
        let other = CreateOptions {
            duration_secs: Some(3600),
            ..CreateOptions::default()
        };
        assert_eq!(
            park(&mut t, &capped, 3, &other, NOW + 1),
            Err(Rejection::TagConflict)
        );
    }

    #[test]
    fn conflicting_options_on_later_parks() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "c");
        park(&mut t, &tag, 1, &single_shot(Some(60)), NOW).unwrap();
        assert_eq!(
            park(
                &mut t,
                &tag,
                2,
                &CreateOptions {
                    mode: Some(TagMode::LongTerm),
                    ..CreateOptions::default()
                },
                NOW
            ),
            Err(Rejection::TagConflict)
        );
        assert_eq!(
            park(&mut t, &tag, 3, &single_shot(Some(61)), NOW),
            Err(Rejection::TagConflict)
        );
        assert!(park(&mut t, &tag, 4, &single_shot(Some(60)), NOW).is_ok());
        assert!(park(&mut t, &tag, 5, &CreateOptions::default(), NOW).is_ok());
    }

    #[test]
    fn registered_owner_keys() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "registered");
        let owner = SigningKey::from_bytes(&[42; 32]);
        let o = CreateOptions {
            owner_key: Some(owner.verifying_key()),
            ..CreateOptions::default()
        };
        // The registering park must be signed by the key it registers.
        let p = proof_by(&tag.derived_signing_key(), &tag, NOW, 1, &o);
        assert_eq!(t.park(&tag, &p, &o, NOW), Err(Rejection::BadProof));
        let p = proof_by(&owner, &tag, NOW, 2, &o);
        assert_eq!(t.park(&tag, &p, &o, NOW).map(|p| p.created), Ok(true));
        // Later parks: signed by the registered key, with or without repeating it.
        let none = CreateOptions::default();
        let p = proof_by(&owner, &tag, NOW, 3, &none);
        assert!(t.park(&tag, &p, &none, NOW).is_ok());
        // The derived key no longer works.
        let p = proof_by(&tag.derived_signing_key(), &tag, NOW, 4, &none);
        assert_eq!(t.park(&tag, &p, &none, NOW), Err(Rejection::BadProof));
        // Registering another key (even correctly signed by it) is refused.
        let other = SigningKey::from_bytes(&[43; 32]);
        let o2 = CreateOptions {
            owner_key: Some(other.verifying_key()),
            ..CreateOptions::default()
        };
        let p = proof_by(&other, &tag, NOW, 5, &o2);
        assert_eq!(t.park(&tag, &p, &o2, NOW), Err(Rejection::OwnerKeyMismatch));
        // A tag created with the derived key cannot be taken over either.
        let derived = hashed_tag("", "derived");
        park(&mut t, &derived, 1, &none, NOW).unwrap();
        let p = proof_by(&other, &derived, NOW, 6, &o2);
        assert_eq!(
            t.park(&derived, &p, &o2, NOW),
            Err(Rejection::OwnerKeyMismatch)
        );
    }

    #[test]
    fn bad_signatures_stale_timestamps_and_replays() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "proofs");
        let o = CreateOptions::default();
        let good = proof_by(&tag.derived_signing_key(), &tag, NOW, 1, &o);
        let mut flipped = good.clone();
        flipped.sig[0] ^= 1;
        assert_eq!(t.park(&tag, &flipped, &o, NOW), Err(Rejection::BadProof));
        // Signed for another tag.
        let other = hashed_tag("", "other");
        let wrong_tag = proof_by(&other.derived_signing_key(), &other, NOW, 1, &o);
        assert_eq!(t.park(&tag, &wrong_tag, &o, NOW), Err(Rejection::BadProof));
        // Options are signed: the same proof with other options fails.
        assert_eq!(
            t.park(&tag, &good, &single_shot(None), NOW),
            Err(Rejection::BadProof)
        );
        assert_eq!(
            t.park(&tag, &good, &o, NOW + 61),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(
            t.park(&tag, &good, &o, NOW - 61),
            Err(Rejection::StaleTimestamp)
        );
        assert!(t.is_empty(), "refused parks create nothing");
        assert!(t.park(&tag, &good, &o, NOW + 60).is_ok());
        assert_eq!(
            t.park(&tag, &good, &o, NOW + 60),
            Err(Rejection::ReplayedNonce)
        );
        // A non-canonical signature (s >= L) is refused by strict verification.
        let mut high_s = proof_by(&tag.derived_signing_key(), &tag, NOW, 9, &o);
        high_s.sig[63] |= 0xf0;
        assert_eq!(t.park(&tag, &high_s, &o, NOW), Err(Rejection::BadProof));
    }

    #[test]
    fn full_replay_cache_refuses() {
        let mut t = TagTable::new(TagLimits {
            replay_capacity: 1,
            ..limits()
        });
        let tag = hashed_tag("", "r");
        park(&mut t, &tag, 1, &CreateOptions::default(), NOW).unwrap();
        assert_eq!(
            park(&mut t, &tag, 2, &CreateOptions::default(), NOW),
            Err(Rejection::ReplayCacheFull)
        );
    }

    #[test]
    fn full_table_drops_tombstones_then_refuses() {
        let mut t = TagTable::new(limits());
        let o = CreateOptions::default();
        let tags: Vec<HashedTag> = (0..6).map(|i| hashed_tag("", &format!("t{i}"))).collect();
        park(&mut t, &tags[0], 1, &single_shot(None), NOW).unwrap();
        park(
            &mut t,
            &tags[1],
            1,
            &CreateOptions {
                duration_secs: Some(10),
                ..o
            },
            NOW,
        )
        .unwrap();
        park(&mut t, &tags[2], 1, &o, NOW).unwrap();
        park(&mut t, &tags[3], 1, &o, NOW).unwrap();
        assert_eq!(
            park(&mut t, &tags[4], 1, &o, NOW),
            Err(Rejection::TagTableFull)
        );
        // Consume tags[0]: its tombstone makes room.
        t.respond(&tags[0], NOW).unwrap();
        assert_eq!(
            park(&mut t, &tags[4], 2, &o, NOW).map(|p| p.created),
            Ok(true)
        );
        assert_eq!(t.respond(&tags[0], NOW), Err(Rejection::UnknownTag));
        assert_eq!(
            park(&mut t, &tags[5], 1, &o, NOW + 5),
            Err(Rejection::TagTableFull)
        );
        // tags[1] expires untouched at NOW + 10; a full table notices and drops it.
        assert_eq!(
            park(&mut t, &tags[5], 2, &o, NOW + 10).map(|p| p.created),
            Ok(true)
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.respond(&tags[1], NOW + 10), Err(Rejection::UnknownTag));
    }

    fn shared_by(tag: &HashedTag, key: &SigningKey, mode: TagMode) -> SharedTag {
        SharedTag {
            tag: *tag,
            owner: key.verifying_key().to_bytes(),
            mode,
            requested_duration_secs: 600,
            expires_at: NOW + 600,
            active: true,
            consumed: false,
        }
    }

    #[test]
    fn a_shared_tag_takes_the_rpc_owner_and_one_claim_or_responder_wins() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "shared");
        let owner = SigningKey::from_bytes(&[42; 32]);
        let s = shared_by(&tag, &owner, TagMode::SingleShot);
        assert_eq!(t.share(&s, true, NOW), Ok(false));
        assert!(t.is_shared(&tag) && t.is_live(&tag, NOW));
        // Parks are checked against the shared owner key, not the derived one.
        assert_eq!(
            park(&mut t, &tag, 1, &CreateOptions::default(), NOW),
            Err(Rejection::BadProof)
        );
        let o = CreateOptions::default();
        let p = proof_by(&owner, &tag, NOW, 2, &o);
        assert_eq!(
            t.park(&tag, &p, &o, NOW).map(|p| p.mode),
            Ok(TagMode::SingleShot)
        );
        // A second create of a live tag is refused; an update is applied.
        assert_eq!(t.share(&s, true, NOW), Err(Answer::Exists));
        // The first claim wins; later claims and responders see it consumed.
        assert_eq!(t.claim(&tag, NOW), Answer::Claimed);
        assert_eq!(t.claim(&tag, NOW), Answer::Consumed);
        assert_eq!(t.respond(&tag, NOW), Err(Rejection::UnknownTag));
        // An update (e.g. `activate`) does not revive a consumed tag.
        assert_eq!(t.share(&s, false, NOW + 1), Ok(true));
        assert_eq!(t.claim(&tag, NOW + 1), Answer::Consumed);
        // A tunnel responder consuming first makes the claim lose.
        let other = hashed_tag("", "shared-2");
        t.share(&shared_by(&other, &owner, TagMode::SingleShot), true, NOW)
            .unwrap();
        assert_eq!(t.respond(&other, NOW), Ok(TagMode::SingleShot));
        assert_eq!(t.claim(&other, NOW), Answer::Consumed);
        assert_eq!(t.claim(&hashed_tag("", "none"), NOW), Answer::Unknown);
    }

    #[test]
    fn deactivating_a_shared_tag_retires_it_and_activating_revives_it() {
        let mut t = TagTable::new(limits());
        let tag = hashed_tag("", "toggle");
        let key = tag.derived_signing_key();
        let mut s = shared_by(&tag, &key, TagMode::LongTerm);
        t.share(&s, true, NOW).unwrap();
        s.active = false;
        assert_eq!(t.share(&s, false, NOW), Ok(true), "parks are evicted");
        assert_eq!(t.respond(&tag, NOW), Err(Rejection::UnknownTag));
        assert_eq!(
            park(&mut t, &tag, 1, &CreateOptions::default(), NOW),
            Err(Rejection::TagGone)
        );
        assert_eq!(t.claim(&tag, NOW), Answer::Unknown);
        s.active = true;
        assert_eq!(t.share(&s, false, NOW + 1), Ok(false));
        assert_eq!(t.respond(&tag, NOW + 1), Ok(TagMode::LongTerm));
        // A creation finding a dead entry starts afresh; an expired one too.
        s.expires_at = NOW + 2;
        t.share(&s, false, NOW + 1).unwrap();
        assert!(!t.is_live(&tag, NOW + 2));
        s.expires_at = NOW + 600;
        assert_eq!(t.share(&s, true, NOW + 2), Ok(false));
        // A consumed state sent by the supervisor needs no publisher grace.
        s.consumed = true;
        assert_eq!(t.share(&s, false, NOW + 3), Ok(true));
        assert_eq!(
            park(&mut t, &tag, 2, &CreateOptions::default(), NOW + 3),
            Err(Rejection::TagGone)
        );
    }

    #[test]
    fn a_shared_tag_needs_room_and_a_strong_key() {
        let mut t = TagTable::new(limits());
        let key = SigningKey::from_bytes(&[1; 32]);
        for i in 0..4u8 {
            let tag = hashed_tag("", &i.to_string());
            t.share(&shared_by(&tag, &key, TagMode::LongTerm), true, NOW)
                .unwrap();
        }
        let fifth = shared_by(&hashed_tag("", "5"), &key, TagMode::LongTerm);
        assert_eq!(t.share(&fifth, true, NOW), Err(Answer::Full));
        assert_eq!(t.share(&fifth, false, NOW), Err(Answer::Full));
        let weak = SharedTag {
            owner: [0; 32],
            ..fifth
        };
        assert_eq!(t.share(&weak, true, NOW), Err(Answer::Unknown));
        assert_eq!(t.len(), 4);
    }
}
