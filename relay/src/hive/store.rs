//! The publication store: sans-IO (every call takes `now`), bounded per workspace and
//! in total, keyed by the raw (workspace, device) bytes.
//!
//! Replacement rule for one (workspace, device), comparing `publishedAt` at full
//! (nanosecond) precision with the stored *fresh* publication:
//! - newer: replaces it;
//! - older: refused ([`InsertError::Older`], 409), the stored one stays;
//! - equal and byte-identical body: accepted as a no-op ([`Inserted::Unchanged`]; this is
//!   what ends mirroring loops);
//! - equal but a different body: refused ([`InsertError::SameTime`], 409): the first one
//!   seen wins, so two relays never flip-flop between two versions.
//!
//! An expired publication is gone: it is evicted and anything fresh may take its place.
//! Every stored or replacing publication gets the next sequence number, which the
//! federation export ([`PublicationStore::since`]) pages by.

use super::verify::VerifiedPublication;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Caps of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most publications (devices) per workspace.
    pub max_per_workspace: usize,
    /// Most publications in total.
    pub max_total: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_per_workspace: 256,
            max_total: 65_536,
        }
    }
}

/// How an accepted publication changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// First fresh publication of this device.
    New,
    /// It replaced an older one.
    Replaced,
    /// The identical publication was already stored.
    Unchanged,
}

impl Inserted {
    /// Whether the store changed (federation pushes only such publications).
    pub fn changed(self) -> bool {
        !matches!(self, Self::Unchanged)
    }
}

/// Why a verified publication was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// A newer publication of this device is stored (409).
    #[error("a newer publication of this device is stored")]
    Older,
    /// A different publication with the same publishedAt is stored (409).
    #[error("a different publication with the same publishedAt is stored")]
    SameTime,
    /// It has already expired (400).
    #[error("publication already expired")]
    Expired,
    /// The workspace is at its cap even after evicting expired ones (503).
    #[error("workspace publication cap reached")]
    WorkspaceFull,
    /// The store is at its total cap even after evicting expired ones (503).
    #[error("publication store full")]
    StoreFull,
}

impl InsertError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Self::Older | Self::SameTime => 409,
            Self::Expired => 400,
            Self::WorkspaceFull | Self::StoreFull => 503,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    publication: Arc<VerifiedPublication>,
    seq: u64,
}

/// The publications, by workspace then device.
#[derive(Debug)]
pub struct PublicationStore {
    limits: StoreLimits,
    workspaces: HashMap<[u8; 16], BTreeMap<[u8; 16], Entry>>,
    total: usize,
    next_seq: u64,
}

impl PublicationStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            workspaces: HashMap::new(),
            total: 0,
            next_seq: 1,
        }
    }

    /// Publications held (fresh or not yet evicted).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The last sequence number handed out (0 before the first insert).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Stores `p` under the replacement rule and the caps (module docs).
    pub fn insert(&mut self, p: VerifiedPublication, now: i64) -> Result<Inserted, InsertError> {
        if !p.is_fresh(now) {
            return Err(InsertError::Expired);
        }
        let mut replacing = false;
        if let Some(devices) = self.workspaces.get(&p.workspace)
            && let Some(old) = devices.get(&p.device)
            && old.publication.is_fresh(now)
        {
            let old = &old.publication;
            match p.published_at().cmp(&old.published_at()) {
                std::cmp::Ordering::Less => return Err(InsertError::Older),
                std::cmp::Ordering::Equal if old.body == p.body => {
                    return Ok(Inserted::Unchanged);
                }
                std::cmp::Ordering::Equal => return Err(InsertError::SameTime),
                std::cmp::Ordering::Greater => replacing = true,
            }
        }
        if !replacing {
            self.make_room(&p.workspace, &p.device, now)?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry {
            publication: Arc::new(p),
            seq,
        };
        let devices = self
            .workspaces
            .entry(entry.publication.workspace)
            .or_default();
        if devices.insert(entry.publication.device, entry).is_none() {
            self.total += 1;
        }
        Ok(if replacing {
            Inserted::Replaced
        } else {
            Inserted::New
        })
    }

    /// Frees a slot for a new (workspace, device): drops its own expired entry, then
    /// expired entries of the workspace or the whole store when at a cap.
    fn make_room(&mut self, ws: &[u8; 16], device: &[u8; 16], now: i64) -> Result<(), InsertError> {
        if let Some(devices) = self.workspaces.get_mut(ws)
            && devices.remove(device).is_some()
        {
            self.total -= 1;
        }
        let in_ws = self.workspaces.get(ws).map_or(0, BTreeMap::len);
        if in_ws >= self.limits.max_per_workspace {
            if let Some(devices) = self.workspaces.get_mut(ws) {
                let before = devices.len();
                devices.retain(|_, e| e.publication.is_fresh(now));
                self.total -= before - devices.len();
            }
            if self.workspaces.get(ws).map_or(0, BTreeMap::len) >= self.limits.max_per_workspace {
                return Err(InsertError::WorkspaceFull);
            }
        }
        if self.total >= self.limits.max_total {
            self.evict_expired(now);
            if self.total >= self.limits.max_total {
                return Err(InsertError::StoreFull);
            }
        }
        Ok(())
    }

    /// Drops every expired publication; returns how many.
    pub fn evict_expired(&mut self, now: i64) -> usize {
        let before = self.total;
        self.workspaces.retain(|_, devices| {
            devices.retain(|_, e| e.publication.is_fresh(now));
            !devices.is_empty()
        });
        self.total = self.workspaces.values().map(BTreeMap::len).sum();
        before - self.total
    }

    /// The fresh publication of (workspace, device).
    pub fn get(
        &self,
        ws: &[u8; 16],
        device: &[u8; 16],
        now: i64,
    ) -> Option<Arc<VerifiedPublication>> {
        let e = self.workspaces.get(ws)?.get(device)?;
        e.publication
            .is_fresh(now)
            .then(|| Arc::clone(&e.publication))
    }

    /// Every fresh publication of `ws`, by device bytes.
    pub fn workspace(&self, ws: &[u8; 16], now: i64) -> Vec<Arc<VerifiedPublication>> {
        self.workspaces.get(ws).map_or_else(Vec::new, |devices| {
            devices
                .values()
                .filter(|e| e.publication.is_fresh(now))
                .map(|e| Arc::clone(&e.publication))
                .collect()
        })
    }

    /// The federation export: up to `limit` fresh publications stored after sequence
    /// number `since`, in sequence order, and the cursor to ask with next. A `since`
    /// beyond [`PublicationStore::last_seq`] (the peer restarted) starts from 0.
    pub fn since(
        &self,
        since: u64,
        limit: usize,
        now: i64,
    ) -> (Vec<Arc<VerifiedPublication>>, u64) {
        let since = if since > self.last_seq() { 0 } else { since };
        let mut found: Vec<&Entry> = self
            .workspaces
            .values()
            .flat_map(BTreeMap::values)
            .filter(|e| e.seq > since && e.publication.is_fresh(now))
            .collect();
        found.sort_unstable_by_key(|e| e.seq);
        let limit = limit.max(1);
        let next = match found.get(limit - 1) {
            Some(e) => e.seq,
            _ => self.last_seq(),
        };
        found.truncate(limit);
        let publications = found.iter().map(|e| Arc::clone(&e.publication)).collect();
        (publications, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(
        ws: u8,
        device: u8,
        at: i64,
        nanos: u32,
        ttl: i64,
        tag: &str,
    ) -> VerifiedPublication {
        VerifiedPublication {
            workspace: [ws; 16],
            device: [device; 16],
            account: [0; 16],
            signing_key: [0; 32],
            published_at_unix: at,
            expires_at_unix: at + ttl,
            body: format!("{{\"t\":\"{tag}\"}}").into_bytes(),
            published_at_nanos: nanos,
        }
    }

    #[test]
    fn older_never_replaces_newer() {
        let mut s = PublicationStore::new(StoreLimits::default());
        assert_eq!(
            s.insert(publication(1, 1, 100, 0, 90, "a"), 100),
            Ok(Inserted::New)
        );
        assert_eq!(
            s.insert(publication(1, 1, 99, 999_999_999, 90, "old"), 100),
            Err(InsertError::Older)
        );
        assert_eq!(
            s.get(&[1; 16], &[1; 16], 100).unwrap().body,
            b"{\"t\":\"a\"}"
        );
        // Same time: identical is a no-op, different is refused; the first stays.
        assert_eq!(
            s.insert(publication(1, 1, 100, 0, 90, "a"), 101),
            Ok(Inserted::Unchanged)
        );
        assert_eq!(
            s.insert(publication(1, 1, 100, 0, 90, "b"), 101),
            Err(InsertError::SameTime)
        );
        assert_eq!(
            s.get(&[1; 16], &[1; 16], 101).unwrap().body,
            b"{\"t\":\"a\"}"
        );
        // Newer by a nanosecond replaces.
        assert_eq!(
            s.insert(publication(1, 1, 100, 1, 90, "c"), 101),
            Ok(Inserted::Replaced)
        );
        assert_eq!(
            s.get(&[1; 16], &[1; 16], 101).unwrap().body,
            b"{\"t\":\"c\"}"
        );
        assert_eq!(s.len(), 1);
        // Once expired, an older-dated but fresh one may take its place.
        let mut s = PublicationStore::new(StoreLimits::default());
        s.insert(publication(1, 1, 100, 0, 10, "short"), 100)
            .unwrap();
        assert_eq!(s.get(&[1; 16], &[1; 16], 110), None);
        assert_eq!(
            s.insert(publication(1, 1, 95, 0, 300, "x"), 110),
            Ok(Inserted::New)
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn expiry_and_lookup() {
        let mut s = PublicationStore::new(StoreLimits::default());
        assert_eq!(
            s.insert(publication(1, 1, 100, 0, 10, "a"), 110),
            Err(InsertError::Expired)
        );
        s.insert(publication(1, 1, 100, 0, 10, "a"), 100).unwrap();
        s.insert(publication(1, 2, 100, 0, 20, "b"), 100).unwrap();
        s.insert(publication(2, 1, 100, 0, 20, "c"), 100).unwrap();
        assert_eq!(s.workspace(&[1; 16], 105).len(), 2);
        assert_eq!(s.workspace(&[1; 16], 110).len(), 1);
        assert!(s.get(&[1; 16], &[1; 16], 109).is_some());
        assert!(s.get(&[1; 16], &[1; 16], 110).is_none());
        assert_eq!(s.evict_expired(110), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.evict_expired(120), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn caps_evict_expired_first_then_refuse() {
        let limits = StoreLimits {
            max_per_workspace: 2,
            max_total: 3,
        };
        let mut s = PublicationStore::new(limits);
        s.insert(publication(1, 1, 100, 0, 10, "a"), 100).unwrap();
        s.insert(publication(1, 2, 100, 0, 100, "b"), 100).unwrap();
        assert_eq!(
            s.insert(publication(1, 3, 100, 0, 100, "c"), 105),
            Err(InsertError::WorkspaceFull)
        );
        // Replacing within a full workspace is fine.
        assert_eq!(
            s.insert(publication(1, 2, 101, 0, 100, "b2"), 105),
            Ok(Inserted::Replaced)
        );
        // Device 1 expired at 110: its slot is reclaimed.
        assert_eq!(
            s.insert(publication(1, 3, 110, 0, 100, "c"), 110),
            Ok(Inserted::New)
        );
        s.insert(publication(2, 1, 110, 0, 100, "d"), 110).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.insert(publication(3, 1, 110, 0, 100, "e"), 110),
            Err(InsertError::StoreFull)
        );
        assert_eq!(InsertError::StoreFull.status(), 503);
        // After they expire there is room again.
        assert_eq!(
            s.insert(publication(3, 1, 300, 0, 100, "e"), 300),
            Ok(Inserted::New)
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn export_pages_by_sequence() {
        let mut s = PublicationStore::new(StoreLimits::default());
        for d in 1..=5 {
            s.insert(publication(1, d, 100, 0, 100, "x"), 100).unwrap();
        }
        let (page, next) = s.since(0, 2, 100);
        assert_eq!(page.iter().map(|p| p.device[0]).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(next, 2);
        let (page, next) = s.since(next, 10, 100);
        assert_eq!(
            page.iter().map(|p| p.device[0]).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(next, 5);
        let (page, next) = s.since(next, 10, 100);
        assert!(page.is_empty());
        assert_eq!(next, 5);
        // A replacement gets a new sequence number and shows up again.
        s.insert(publication(1, 2, 101, 0, 100, "y"), 100).unwrap();
        let (page, next) = s.since(5, 10, 100);
        assert_eq!(page.len(), 1);
        assert_eq!(next, 6);
        // A cursor from the future (peer restarted) starts over.
        let (page, _) = s.since(99, 10, 100);
        assert_eq!(page.len(), 5);
    }
}
