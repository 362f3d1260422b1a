//! What must be cluster-wide on the `CONNECT` side (issue #16), decided in the
//! directory: proof replays, single-shot tags, node-rendezvous replace parks.
//!
//! The workers route as always; a decision that carries a claim
//! ([`tryst_engine::claim`]) waits on its owner worker while the supervisor decides it
//! here and answers a verdict:
//!
//! | claim key | command | verdict | when the directory cannot answer |
//! |---|---|---|---|
//! | `tryst:replay:<scope>:<id hex>:<nonce hex>` (scope `native`, `tag`, `hive-park`) | `SET key <node> NX EX <window left>` | set: won; exists: lost (the family's own replay refusal) | the node's own replay cache decided: proceed, counted |
//! | `tryst:tag-once:<hashed tag hex>` | `SET key <node> NX EX <tag max duration>` | set: this responder won; exists: lost (`404 unknown_tag`) | `503 overloaded` (never two winners) |
//! | `tryst:replace:<space>:<key hex>` (a replace park, e.g. node-rendezvous) | one script: `INCR tryst:replace-seq`, then `PUBLISH tryst:replace "<space>:<key hex> <node> <epoch> <seq>"` | won once published; every other node closes what it has parked under the key, unless its own park for the key is newer (a larger `seq`) | the park proceeds (only this node replaces), counted |
//!
//! Bounded everywhere: the hand-off from the inbox is a bounded channel (full: answered
//! unavailable at once), at most [`MAX_IN_FLIGHT`] directory commands run at once, each
//! under the directory's command timeout; the workers' own deadline covers the rest.

use super::Cluster;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tryst_engine::claim::{ClaimRequest, Verdict};
use tryst_engine::driver::ClaimAnswerer;
use tryst_engine::target::{KeySpace, RendezvousKey};

/// Claims queued between the HTTP inbox and the directory.
pub const QUEUE: usize = 4096;
/// Directory commands for claims in flight at once.
pub const MAX_IN_FLIGHT: usize = 512;
/// The pub/sub channel of replace parks.
pub const REPLACE_CHANNEL: &str = "tryst:replace";
/// Prefix of the claim keys that announce a replace park.
pub const REPLACE_PREFIX: &str = tryst_engine::claim::REPLACE_PREFIX;
/// The one counter that orders replace announcements (cluster-wide, never expires).
pub const REPLACE_SEQ_KEY: &str = "tryst:replace-seq";
/// How long this node remembers the order of its own replace parks: an announcement
/// from another node is in flight for far less (one pub/sub hop, a `GET` at most).
pub const OWN_REPLACE_WINDOW: Duration = Duration::from_secs(30);
/// Most own replace parks remembered (the oldest is forgotten first).
pub const OWN_REPLACE_CAP: usize = 65_536;

/// The announce script: `KEYS[1]` [`REPLACE_SEQ_KEY`], `ARGV[1]` the channel, `ARGV[2]`
/// `"<space>:<key hex> <node> <epoch>"`. Takes the next sequence number and publishes
/// the announcement with it, in one round trip; returns the number.
static ANNOUNCE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. seq)
return seq
",
    )
});

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClaimStats {
    won: AtomicU64,
    lost: AtomicU64,
    /// The directory did not answer (down, timed out).
    unavailable: AtomicU64,
    /// The queue to the directory was full.
    full: AtomicU64,
    /// Replace parks announced, and evictions received from other nodes.
    replace_sent: AtomicU64,
    replace_received: AtomicU64,
    /// Announcements of a node not live in the epoch they name (a previous run's).
    replace_stale: AtomicU64,
    /// Announcements older than this node's own later park for the key (ignored).
    replace_older: AtomicU64,
    /// 1 while subscribed to [`REPLACE_CHANNEL`].
    subscribed: AtomicU64,
}

/// The claims service (one per supervisor, with `--cluster-redis`).
#[derive(Debug)]
pub struct Claims {
    cluster: Cluster,
    answerer: ClaimAnswerer,
    stats: ClaimStats,
    own: Mutex<OwnReplaces>,
}

impl Claims {
    /// Starts the service: claims from `inbox` go to the directory, verdicts back to
    /// the workers through `answerer`; a subscriber on [`REPLACE_CHANNEL`] evicts what
    /// other nodes' replace parks supersede. Call inside the runtime.
    pub fn start(
        cluster: Cluster,
        answerer: ClaimAnswerer,
        inbox: &tryst_engine::driver::HttpInbox,
    ) -> Arc<Self> {
        let claims = Arc::new(Self {
            cluster,
            answerer,
            stats: ClaimStats::default(),
            own: Mutex::new(OwnReplaces::default()),
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<ClaimRequest>(QUEUE);
        let sink = claims.clone();
        inbox.set_claim_sink(Box::new(move |request| {
            if let Err(e) = tx.try_send(request) {
                let request = match e {
                    tokio::sync::mpsc::error::TrySendError::Full(r)
                    | tokio::sync::mpsc::error::TrySendError::Closed(r) => r,
                };
                sink.stats.full.fetch_add(1, Ordering::Relaxed);
                sink.answer(&request, Verdict::Unavailable);
            }
        }));
        tokio::spawn(claims.clone().dispatch(rx));
        tokio::spawn(claims.clone().subscribe());
        claims
    }

    fn answer(&self, r: &ClaimRequest, verdict: Verdict) {
        match verdict {
            Verdict::Won => &self.stats.won,
            Verdict::Lost => &self.stats.lost,
            Verdict::Unavailable => &self.stats.unavailable,
        }
        .fetch_add(1, Ordering::Relaxed);
        // A full worker inbox: the worker settles the claim at its deadline.
        let _ = self.answerer.answer(r.worker, r.id, verdict);
    }

    async fn dispatch(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<ClaimRequest>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        while let Some(request) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let (verdict, released) = me.decide(&request).await;
                me.answer(&request, verdict);
                // After the verdict (the worker's socket is FIFO): a newer park's
                // announcement held while this one was decided closes this park.
                for a in released {
                    me.consider(a);
                }
                drop(permit);
            });
        }
    }

    /// The verdict, and for a replace park the other nodes' announcements for its key
    /// that arrived while it was decided and are newer than it.
    async fn decide(&self, r: &ClaimRequest) -> (Verdict, Vec<Announcement>) {
        let dir = self.cluster.directory();
        let mut c = self.cluster.redis();
        if let Some(key) = r.key.strip_prefix(REPLACE_PREFIX) {
            // Until this park has its place in the order, announcements for the key
            // wait: one published before it would close it once it parks.
            self.own_replaces().begin(key);
            let message = format!("{key} {} {}", self.cluster.node(), self.cluster.epoch());
            let sent: Option<u64> = dir
                .run(
                    "replace",
                    ANNOUNCE
                        .key(REPLACE_SEQ_KEY)
                        .arg(REPLACE_CHANNEL)
                        .arg(&message)
                        .invoke_async(&mut c),
                )
                .await;
            let released = self.own_replaces().finish(key, sent, Instant::now());
            return match sent {
                Some(_) => {
                    self.stats.replace_sent.fetch_add(1, Ordering::Relaxed);
                    (Verdict::Won, released)
                }
                None => (Verdict::Unavailable, released),
            };
        }
        let set: Option<Option<String>> = dir
            .run(
                "claim",
                redis::cmd("SET")
                    .arg(&r.key)
                    .arg(self.cluster.node())
                    .arg("NX")
                    .arg("EX")
                    .arg(r.ttl_secs)
                    .query_async(&mut c),
            )
            .await;
        let verdict = match set {
            Some(Some(_)) => Verdict::Won,
            Some(None) => Verdict::Lost,
            None => Verdict::Unavailable,
        };
        (verdict, Vec::new())
    }

    /// Listens for other nodes' replace parks; re-subscribes after a failure.
    async fn subscribe(self: Arc<Self>) {
        use futures_util::StreamExt as _;
        loop {
            let client = self.cluster.directory().client().clone();
            let connected =
                tokio::time::timeout(super::directory::COMMAND_TIMEOUT, client.get_async_pubsub())
                    .await;
            if let Ok(Ok(mut pubsub)) = connected
                && pubsub.subscribe(REPLACE_CHANNEL).await.is_ok()
            {
                self.stats.subscribed.store(1, Ordering::Relaxed);
                let mut messages = pubsub.on_message();
                while let Some(m) = messages.next().await {
                    let Ok(text) = m.get_payload::<String>() else {
                        continue;
                    };
                    self.on_replace(&text);
                }
                self.stats.subscribed.store(0, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Another node's replace park: closes what this node parks under the key, when
    /// the announcing node is live in the epoch it names (as every reader of the
    /// directory trusts only live nodes' current runs): an announcement a previous run
    /// of a restarted node left in flight never closes a newer park. A node the live
    /// cache does not know in that epoch yet (it started within the last second) is
    /// looked up in the directory first.
    fn on_replace(self: &Arc<Self>, text: &str) {
        let Some(r) = parse_replace(text) else {
            tracing::debug!("ignoring a malformed replace announcement");
            return;
        };
        if r.node == self.cluster.node() {
            return;
        }
        self.consider(Announcement::from(&r));
    }

    /// Closes what this node parks under the announced key, unless the announcement
    /// is older than this node's own park for the key (delivered late: ignored), waits
    /// for this node's park being decided, or names an epoch its node is not live in.
    fn consider(self: &Arc<Self>, a: Announcement) {
        let Some(a) = self.admitted(a) else {
            return;
        };
        match self.cluster.live_node(&a.node) {
            Some(n) if n.epoch == a.epoch => self.evict(&a.key),
            Some(n) if n.epoch > a.epoch => self.stale(&a.node, a.epoch),
            _ => {
                let me = self.clone();
                tokio::spawn(async move {
                    let mut c = me.cluster.redis();
                    let record: Option<Option<String>> = me
                        .cluster
                        .directory()
                        .run(
                            "replace",
                            redis::cmd("GET")
                                .arg(super::directory::node_key(&a.node))
                                .query_async(&mut c),
                        )
                        .await;
                    let live = record
                        .flatten()
                        .and_then(|v| super::directory::parse_record(&a.node, &v));
                    match live {
                        // Checked again: this node may have parked under the key
                        // meanwhile.
                        Some(n) if n.epoch == a.epoch => {
                            if let Some(a) = me.admitted(a) {
                                me.evict(&a.key);
                            }
                        }
                        _ => me.stale(&a.node, a.epoch),
                    }
                });
            }
        }
    }

    /// The announcement if it may close this node's parks now ([`OwnReplaces::admit`]);
    /// `None` when it is held for this node's park being decided, or older than it
    /// (counted).
    fn admitted(&self, a: Announcement) -> Option<Announcement> {
        match self.own_replaces().admit(a, Instant::now()) {
            Admit::Go(a) => Some(a),
            Admit::Held => None,
            Admit::Older => {
                self.stats.replace_older.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("ignoring a replace announcement older than this node's park");
                None
            }
        }
    }

    fn own_replaces(&self) -> std::sync::MutexGuard<'_, OwnReplaces> {
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn evict(&self, key: &RendezvousKey) {
        self.stats.replace_received.fetch_add(1, Ordering::Relaxed);
        if self.answerer.evict(key) > 0 {
            tracing::warn!("a replace eviction could not reach every worker (inbox full)");
        }
    }

    fn stale(&self, node: &str, epoch: u64) {
        self.stats.replace_stale.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            node,
            epoch,
            "ignoring a replace announcement of a node not live in that epoch"
        );
    }

    /// Appends the claims' `/metrics` lines.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        let _ = write!(
            out,
            "# HELP tryst_cluster_claims_total Cluster-wide claims (proof replays, single-shot tags, replace parks) decided by the directory.\n\
             # TYPE tryst_cluster_claims_total counter\n\
             tryst_cluster_claims_total{{verdict=\"won\"}} {}\n\
             tryst_cluster_claims_total{{verdict=\"lost\"}} {}\n\
             # HELP tryst_cluster_claims_fallback_total Claims the directory could not decide: proofs fell back to the node's own replay cache, single-shot tag responders were refused 503 (reason: unavailable = directory down or timed out, full = queue to it full).\n\
             # TYPE tryst_cluster_claims_fallback_total counter\n\
             tryst_cluster_claims_fallback_total{{reason=\"unavailable\"}} {}\n\
             tryst_cluster_claims_fallback_total{{reason=\"full\"}} {}\n\
             # HELP tryst_cluster_replace_total Replace parks: sent = announced by this node, received = another node's, evicted here, stale = another node's ignored (that node is not live in the epoch it names), older = another node's ignored (this node parked under the key after it).\n\
             # TYPE tryst_cluster_replace_total counter\n\
             tryst_cluster_replace_total{{direction=\"sent\"}} {}\n\
             tryst_cluster_replace_total{{direction=\"received\"}} {}\n\
             tryst_cluster_replace_total{{direction=\"stale\"}} {}\n\
             tryst_cluster_replace_total{{direction=\"older\"}} {}\n\
             # HELP tryst_cluster_replace_subscribed 1 while this node listens for other nodes' replace parks.\n\
             # TYPE tryst_cluster_replace_subscribed gauge\n\
             tryst_cluster_replace_subscribed {}\n",
            g(&s.won),
            g(&s.lost),
            g(&s.unavailable),
            g(&s.full),
            g(&s.replace_sent),
            g(&s.replace_received),
            g(&s.replace_stale),
            g(&s.replace_older),
            g(&s.subscribed),
        );
    }
}

impl crate::family::ServiceFamily for Claims {
    fn name(&self) -> &'static str {
        "cluster-claims"
    }

    fn render_metrics(&self, out: &mut String) {
        Self::render_metrics(self, out);
    }
}

/// A replace announcement as published on [`REPLACE_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace<'a> {
    /// The key whose older parks are closed.
    pub key: RendezvousKey,
    /// The announcing node.
    pub node: &'a str,
    /// Its epoch.
    pub epoch: u64,
    /// The announcement's place in the cluster-wide order ([`REPLACE_SEQ_KEY`]).
    pub seq: u64,
}

/// The replace-claim key for `key`: `tryst:replace:<space byte>:<32 hex>`.
pub fn replace_key(key: &RendezvousKey) -> String {
    tryst_engine::claim::replace_claim(key).key
}

/// Parses `"<space>:<32 hex> <node> <epoch> <seq>"`; `None` for anything else (a known
/// space, exactly 32 lower-case hex digits, a valid node name, decimal epoch and seq
/// without leading zeros: the spelling is canonical).
pub fn parse_replace(text: &str) -> Option<Replace<'_>> {
    let mut parts = text.split(' ');
    let (key, node, epoch, seq) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !super::preamble::valid_name(node) {
        return None;
    }
    let (space, hex) = key.split_once(':')?;
    let space = match space {
        "0" => KeySpace::Uuid,
        "1" => KeySpace::Tag,
        "2" => KeySpace::Hive,
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(hex, &mut bytes).ok()?;
    Some(Replace {
        key: RendezvousKey::from_parts(space, bytes),
        node,
        epoch: canonical_decimal(epoch)?,
        seq: canonical_decimal(seq)?,
    })
}

/// A decimal `u64` spelt without sign or leading zeros.
fn canonical_decimal(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// This node's own recent replace parks and their places in the cluster-wide order,
/// so that an announcement delivered late never closes a newer park (sans-IO: takes
/// `now`). Bounded by [`OWN_REPLACE_WINDOW`] and [`OWN_REPLACE_CAP`].
#[derive(Debug, Default)]
pub struct OwnReplaces {
    latest: HashMap<String, (u64, Instant)>,
    order: VecDeque<(Instant, String)>,
    /// Keys with a replace park of this node being decided: how many, and the other
    /// nodes' announcements held until they are.
    pending: HashMap<String, (usize, Vec<Announcement>)>,
}

/// Most announcements held for one key while this node's park for it is decided;
/// beyond that they are considered at once.
pub const HELD_PER_KEY: usize = 64;

/// Another node's replace announcement, owned (it may wait for this node's park).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The key whose older parks are closed.
    pub key: RendezvousKey,
    /// `"<space>:<key hex>"`.
    pub key_text: String,
    /// The announcing node.
    pub node: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its place in the cluster-wide order.
    pub seq: u64,
}

impl From<&Replace<'_>> for Announcement {
    fn from(r: &Replace<'_>) -> Self {
        let claim = replace_key(&r.key);
        Self {
            key: r.key,
            key_text: claim
                .strip_prefix(REPLACE_PREFIX)
                .unwrap_or_default()
                .to_owned(),
            node: r.node.to_owned(),
            epoch: r.epoch,
            seq: r.seq,
        }
    }
}

/// What [`OwnReplaces::admit`] decides for an announcement.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// It supersedes this node's parks for the key: go on (epoch check, eviction).
    Go(Announcement),
    /// This node's park for the key is being decided: held until it is.
    Held,
    /// Older than this node's own later park for the key: ignored.
    Older,
}

impl OwnReplaces {
    /// This node starts deciding a replace park for `key`.
    pub fn begin(&mut self, key: &str) {
        self.pending.entry(key.to_owned()).or_default().0 += 1;
    }

    /// This node's replace park for `key` was decided: announced as `seq`, or not
    /// announced (`None`, the directory did not answer). Returns the held announcements
    /// to consider now, once no park for the key is being decided any more.
    pub fn finish(&mut self, key: &str, seq: Option<u64>, now: Instant) -> Vec<Announcement> {
        if let Some(seq) = seq {
            self.record(key, seq, now);
        }
        let Some(entry) = self.pending.get_mut(key) else {
            return Vec::new();
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 > 0 {
            return Vec::new();
        }
        self.pending
            .remove(key)
            .map(|(_, held)| held)
            .unwrap_or_default()
    }

    /// Decides what to do with another node's announcement now.
    pub fn admit(&mut self, a: Announcement, now: Instant) -> Admit {
        if let Some((_, held)) = self.pending.get_mut(&a.key_text)
            && held.len() < HELD_PER_KEY
        {
            held.push(a);
            return Admit::Held;
        }
        if self.superseded_by(&a.key_text, a.seq, now) {
            Admit::Go(a)
        } else {
            Admit::Older
        }
    }

    /// This node announced a replace park for `key` (`"<space>:<key hex>"`) as `seq`.
    pub fn record(&mut self, key: &str, seq: u64, now: Instant) {
        self.forget_old(now);
        if self.order.len() >= OWN_REPLACE_CAP
            && let Some((at, oldest)) = self.order.pop_front()
        {
            self.forget(&oldest, at);
        }
        // The largest seq, and when the key was last recorded (what `forget` checks).
        let entry = self.latest.entry(key.to_owned()).or_insert((seq, now));
        *entry = (entry.0.max(seq), now);
        self.order.push_back((now, key.to_owned()));
    }

    /// Whether another node's announcement `seq` for `key` supersedes what this node
    /// parked under it: true unless this node announced a later park within the window.
    pub fn superseded_by(&mut self, key: &str, seq: u64, now: Instant) -> bool {
        self.forget_old(now);
        self.latest.get(key).is_none_or(|(own, _)| *own < seq)
    }

    /// Entries remembered (for tests).
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < OWN_REPLACE_WINDOW {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                self.forget(&key, at);
            }
        }
    }

    /// Drops `key`'s entry when the record made at `at` was its last.
    fn forget(&mut self, key: &str, at: Instant) {
        if self.latest.get(key).is_some_and(|(_, last)| *last <= at) {
            self.latest.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_announcements_round_trip_and_bad_ones_are_ignored() {
        let key = RendezvousKey::uuid([0xab; 16]);
        let claim = replace_key(&key);
        assert_eq!(claim, format!("tryst:replace:0:{}", "ab".repeat(16)));
        let text = format!(
            "{} node-b 17 9",
            claim.strip_prefix(REPLACE_PREFIX).unwrap()
        );
        assert_eq!(
            parse_replace(&text),
            Some(Replace {
                key,
                node: "node-b",
                epoch: 17,
                seq: 9,
            })
        );
        for bad in [
            "",
            "0:abab node-b 17 1",
            &format!("3:{} n 1 1", "ab".repeat(16)),
            &format!("0:{} n 1", "ab".repeat(16)),
            &format!("0:{} n 1 1 extra", "ab".repeat(16)),
            &format!("0:{} n +1 1", "ab".repeat(16)),
            &format!("0:{} n 01 1", "ab".repeat(16)),
            &format!("0:{} n 1 01", "ab".repeat(16)),
            &format!("0:{} n 1 -1", "ab".repeat(16)),
            &format!("0:{} n 1 ", "ab".repeat(16)),
            &format!("0:{} n 1 18446744073709551616", "ab".repeat(16)),
            &format!("0:{} n 1 1", "AB".repeat(16)),
            &format!("0:{} bad/name 1 1", "ab".repeat(16)),
        ] {
            assert_eq!(parse_replace(bad), None, "{bad:?}");
        }
    }

    /// A late announcement never closes a newer park of this node; a newer one does;
    /// the memory is bounded by its window.
    #[test]
    fn own_replace_parks_outrank_older_announcements_within_the_window() {
        let t0 = Instant::now();
        let mut own = OwnReplaces::default();
        assert!(
            own.superseded_by("0:aa", 1, t0),
            "nothing parked here: close"
        );
        own.record("0:aa", 5, t0);
        assert!(
            !own.superseded_by("0:aa", 4, t0),
            "announced before our park"
        );
        assert!(!own.superseded_by("0:aa", 5, t0));
        assert!(own.superseded_by("0:aa", 6, t0), "a newer park elsewhere");
        assert!(own.superseded_by("0:bb", 1, t0), "another key");
        // A lower seq recorded later (two parks here racing) keeps the larger one.
        own.record("0:aa", 3, t0 + Duration::from_secs(1));
        assert!(!own.superseded_by("0:aa", 4, t0 + Duration::from_secs(1)));
        // Forgotten once the window passed since the key's last record.
        let later = t0 + Duration::from_secs(1) + OWN_REPLACE_WINDOW;
        assert!(own.superseded_by("0:aa", 4, later));
        assert!(own.is_empty());
    }

    #[test]
    fn own_replace_parks_are_capped() {
        let t0 = Instant::now();
        let mut own = OwnReplaces::default();
        for i in 0..=OWN_REPLACE_CAP {
            own.record(&format!("0:{i:032x}"), 1, t0);
        }
        assert_eq!(own.len(), OWN_REPLACE_CAP);
        assert!(
            own.superseded_by(&format!("0:{:032x}", 0), 0, t0),
            "the oldest went first"
        );
        assert!(!own.superseded_by(&format!("0:{OWN_REPLACE_CAP:032x}"), 0, t0));
    }

    fn announcement(key: &str, seq: u64) -> Announcement {
        Announcement {
            key: RendezvousKey::uuid([0xab; 16]),
            key_text: key.to_owned(),
            node: "b".into(),
            epoch: 1,
            seq,
        }
    }

    /// An announcement that arrives while this node's park for the key is decided
    /// waits for it, then closes it only if it is newer; other keys are not held.
    #[test]
    fn announcements_wait_for_a_park_being_decided_and_only_newer_ones_go() {
        let t0 = Instant::now();
        let mut own = OwnReplaces::default();
        own.begin("0:aa");
        assert_eq!(own.admit(announcement("0:aa", 4), t0), Admit::Held);
        assert_eq!(own.admit(announcement("0:aa", 9), t0), Admit::Held);
        assert_eq!(
            own.admit(announcement("0:bb", 1), t0),
            Admit::Go(announcement("0:bb", 1))
        );
        let released = own.finish("0:aa", Some(7), t0);
        assert_eq!(
            released,
            vec![announcement("0:aa", 4), announcement("0:aa", 9)]
        );
        let decided: Vec<_> = released.into_iter().map(|a| own.admit(a, t0)).collect();
        assert_eq!(
            decided,
            vec![Admit::Older, Admit::Go(announcement("0:aa", 9))]
        );
        // Two parks decided at once: held until both are; not announced: all go.
        own.begin("0:cc");
        own.begin("0:cc");
        assert_eq!(own.admit(announcement("0:cc", 2), t0), Admit::Held);
        assert!(own.finish("0:cc", None, t0).is_empty());
        assert_eq!(own.finish("0:cc", None, t0), vec![announcement("0:cc", 2)]);
        assert_eq!(
            own.admit(announcement("0:cc", 2), t0),
            Admit::Go(announcement("0:cc", 2))
        );
        // Bounded: past HELD_PER_KEY they are considered at once.
        own.begin("0:dd");
        for _ in 0..HELD_PER_KEY {
            assert_eq!(own.admit(announcement("0:dd", 3), t0), Admit::Held);
        }
        assert_eq!(
            own.admit(announcement("0:dd", 3), t0),
            Admit::Go(announcement("0:dd", 3))
        );
    }
}
