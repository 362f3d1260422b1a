//! Per-client deposit rate limiting and the proof replay cache, sans-IO (callers pass
//! `now`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

/// A sliding-window limit: at most `limit` admitted events per `window_ms` per client.
/// Clients whose address is unknown share one bucket (`None`).
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window_ms: u64,
    max_clients: usize,
    clients: HashMap<Option<IpAddr>, VecDeque<u64>>,
}

impl RateLimiter {
    /// A limiter admitting `limit` events per `window_ms`, tracking at most `max_clients`
    /// clients at once (beyond that, new clients are refused until old windows lapse).
    pub fn new(limit: usize, window_ms: u64, max_clients: usize) -> Self {
        Self {
            limit,
            window_ms: window_ms.max(1),
            max_clients: max_clients.max(1),
            clients: HashMap::new(),
        }
    }

    /// Admits one event for `client` at `now_ms`, or returns the whole seconds to wait.
    pub fn check(&mut self, client: Option<IpAddr>, now_ms: u64) -> Result<(), u64> {
        let window = self.window_ms;
        if !self.clients.contains_key(&client) && self.clients.len() >= self.max_clients {
            self.clients
                .retain(|_, q| q.back().is_some_and(|&t| t.saturating_add(window) > now_ms));
            if self.clients.len() >= self.max_clients {
                return Err(window.div_ceil(1000).max(1));
            }
        }
        let q = self.clients.entry(client).or_default();
        while q
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now_ms)
        {
            q.pop_front();
        }
        if q.len() >= self.limit {
            let oldest = q.front().copied().unwrap_or(now_ms);
            let wait_ms = (oldest + window).saturating_sub(now_ms);
            return Err(wait_ms.div_ceil(1000).max(1));
        }
        q.push_back(now_ms);
        Ok(())
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

/// Why the replay cache refused a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The same signature was accepted before, within its window.
    #[error("proof already used")]
    Replayed,
    /// The cache is full of live entries; refusing is safer than forgetting.
    #[error("replay cache full")]
    Full,
}

/// Remembers accepted proofs (by signature digest) until their timestamp leaves the
/// window, so each proof is accepted once.
///
/// The cache is in memory: a relay that starts again has forgotten it. Told its start
/// second ([`ReplayCache::started_at`]), it refuses every proof stamped at or before
/// that second as a replay, which covers every proof the previous process could have
/// accepted from a client whose clock does not run ahead of the relay's; those proofs
/// turn stale one window after the start, so the rule needs no state.
#[derive(Debug)]
pub struct ReplayCache {
    cap: usize,
    window: i64,
    started: Option<i64>,
    seen: HashMap<[u8; 32], i64>,
    by_expiry: BTreeSet<(i64, [u8; 32])>,
}

impl ReplayCache {
    /// A cache of at most `cap` live proofs whose timestamps are accepted `window`
    /// seconds either side of now.
    pub fn new(cap: usize, window: i64) -> Self {
        Self {
            cap: cap.max(1),
            window,
            started: None,
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// The same cache in a process that started at `started` (unix seconds).
    #[must_use]
    pub fn started_at(mut self, started: i64) -> Self {
        self.started = Some(started);
        self
    }

    /// Records the proof `digest` signed for `ts`; refuses one seen before, or one
    /// stamped at or before the process's start.
    pub fn admit(&mut self, digest: [u8; 32], ts: i64, now: i64) -> Result<(), ReplayError> {
        while let Some(&(exp, d)) = self.by_expiry.first() {
            if exp >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&d);
        }
        if self.seen.contains_key(&digest) || self.started.is_some_and(|s| ts <= s) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.cap {
            return Err(ReplayError::Full);
        }
        // After ts + window the timestamp itself is refused as stale.
        let expiry = ts.saturating_add(self.window);
        self.seen.insert(digest, expiry);
        self.by_expiry.insert((expiry, digest));
        Ok(())
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// No live entries.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_admits_limit_then_says_when() {
        let ip = Some("10.0.0.1".parse().unwrap());
        let mut r = RateLimiter::new(3, 60_000, 10);
        for t in [0, 10_000, 20_000] {
            assert_eq!(r.check(ip, t), Ok(()));
        }
        assert_eq!(r.check(ip, 30_000), Err(30));
        // Another client has its own window; unknown addresses share one.
        assert_eq!(r.check(Some("10.0.0.2".parse().unwrap()), 30_000), Ok(()));
        assert_eq!(r.check(None, 30_000), Ok(()));
        // Refused attempts do not extend the window.
        assert_eq!(r.check(ip, 59_999), Err(1));
        assert_eq!(r.check(ip, 60_000), Ok(()));
        assert_eq!(r.check(ip, 60_001), Err(10));
    }

    #[test]
    fn client_table_is_bounded() {
        let mut r = RateLimiter::new(1, 1000, 2);
        assert!(r.check(Some("10.0.0.1".parse().unwrap()), 0).is_ok());
        assert!(r.check(Some("10.0.0.2".parse().unwrap()), 0).is_ok());
        assert_eq!(r.check(Some("10.0.0.3".parse().unwrap()), 500), Err(1));
        // Once the old windows lapse their slots are reused.
        assert!(r.check(Some("10.0.0.3".parse().unwrap()), 1001).is_ok());
        assert!(r.clients() <= 2);
    }

    #[test]
    fn replay_cache_accepts_once_forgets_after_window_refuses_when_full() {
        let mut c = ReplayCache::new(2, 60);
        assert_eq!(c.admit([1; 32], 100, 100), Ok(()));
        assert_eq!(c.admit([1; 32], 100, 159), Err(ReplayError::Replayed));
        assert_eq!(c.admit([1; 32], 100, 160), Err(ReplayError::Replayed));
        assert_eq!(c.admit([2; 32], 100, 160), Ok(()));
        assert_eq!(c.admit([3; 32], 100, 160), Err(ReplayError::Full));
        // Past ts + window both lapse (the timestamp is stale by then anyway).
        assert_eq!(c.admit([3; 32], 161, 161), Ok(()));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_restarted_cache_refuses_proofs_stamped_up_to_its_start() {
        let mut before = ReplayCache::new(4, 60);
        assert_eq!(before.admit([1; 32], 100, 100), Ok(()));
        // Restarted at 101: the digest is forgotten, its timestamp is not trusted.
        let mut after = ReplayCache::new(4, 60).started_at(101);
        assert_eq!(after.admit([1; 32], 100, 102), Err(ReplayError::Replayed));
        assert_eq!(after.admit([2; 32], 101, 102), Err(ReplayError::Replayed));
        assert_eq!(after.admit([3; 32], 102, 102), Ok(()));
        assert_eq!(after.admit([3; 32], 102, 103), Err(ReplayError::Replayed));
    }
}
