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
//! | `tryst:replace:<space>:<key hex>` (a replace park, e.g. node-rendezvous) | `PUBLISH tryst:replace "<space>:<key hex> <node> <epoch>"` | won once published; every other node closes what it has parked under the key | the park proceeds (only this node replaces), counted |
//!
//! Bounded everywhere: the hand-off from the inbox is a bounded channel (full: answered
//! unavailable at once), at most [`MAX_IN_FLIGHT`] directory commands run at once, each
//! under the directory's command timeout; the workers' own deadline covers the rest.

use super::Cluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// 1 while subscribed to [`REPLACE_CHANNEL`].
    subscribed: AtomicU64,
}

/// The claims service (one per supervisor, with `--cluster-redis`).
#[derive(Debug)]
pub struct Claims {
    cluster: Cluster,
    answerer: ClaimAnswerer,
    stats: ClaimStats,
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
                let verdict = me.decide(&request).await;
                me.answer(&request, verdict);
                drop(permit);
            });
        }
    }

    async fn decide(&self, r: &ClaimRequest) -> Verdict {
        let dir = self.cluster.directory();
        let mut c = self.cluster.redis();
        if let Some(key) = r.key.strip_prefix(REPLACE_PREFIX) {
            let message = format!("{key} {} {}", self.cluster.node(), self.cluster.epoch());
            let sent: Option<i64> = dir
                .run(
                    "replace",
                    redis::cmd("PUBLISH")
                        .arg(REPLACE_CHANNEL)
                        .arg(&message)
                        .query_async(&mut c),
                )
                .await;
            return match sent {
                Some(_) => {
                    self.stats.replace_sent.fetch_add(1, Ordering::Relaxed);
                    Verdict::Won
                }
                None => Verdict::Unavailable,
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
        match set {
            Some(Some(_)) => Verdict::Won,
            Some(None) => Verdict::Lost,
            None => Verdict::Unavailable,
        }
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
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
        match self.cluster.live_node(r.node) {
            Some(n) if n.epoch == r.epoch => self.evict(&r.key),
            Some(n) if n.epoch > r.epoch => self.stale(r.node, r.epoch),
            _ => {
                let me = self.clone();
                let (key, node, epoch) = (r.key, r.node.to_owned(), r.epoch);
                tokio::spawn(async move {
                    let mut c = me.cluster.redis();
                    let record: Option<Option<String>> = me
                        .cluster
                        .directory()
                        .run(
                            "replace",
                            redis::cmd("GET")
                                .arg(super::directory::node_key(&node))
                                .query_async(&mut c),
                        )
                        .await;
                    let live = record
                        .flatten()
                        .and_then(|v| super::directory::parse_record(&node, &v));
                    match live {
                        Some(n) if n.epoch == epoch => me.evict(&key),
                        _ => me.stale(&node, epoch),
                    }
                });
            }
        }
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
             # HELP tryst_cluster_replace_total Replace parks: sent = announced by this node, received = another node's, evicted here, stale = another node's ignored (that node is not live in the epoch it names).\n\
             # TYPE tryst_cluster_replace_total counter\n\
             tryst_cluster_replace_total{{direction=\"sent\"}} {}\n\
             tryst_cluster_replace_total{{direction=\"received\"}} {}\n\
             tryst_cluster_replace_total{{direction=\"stale\"}} {}\n\
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
}

/// The replace-claim key for `key`: `tryst:replace:<space byte>:<32 hex>`.
pub fn replace_key(key: &RendezvousKey) -> String {
    tryst_engine::claim::replace_claim(key).key
}

/// Parses `"<space>:<32 hex> <node> <epoch>"`; `None` for anything else (a known space,
/// exactly 32 lower-case hex digits, a valid node name, a decimal epoch without leading
/// zeros: the spelling is canonical).
pub fn parse_replace(text: &str) -> Option<Replace<'_>> {
    let mut parts = text.split(' ');
    let (key, node, epoch) = (parts.next()?, parts.next()?, parts.next()?);
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
    if epoch.is_empty()
        || !epoch.bytes().all(|b| b.is_ascii_digit())
        || (epoch.len() > 1 && epoch.starts_with('0'))
    {
        return None;
    }
    Some(Replace {
        key: RendezvousKey::from_parts(space, bytes),
        node,
        epoch: epoch.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_announcements_round_trip_and_bad_ones_are_ignored() {
        let key = RendezvousKey::uuid([0xab; 16]);
        let claim = replace_key(&key);
        assert_eq!(claim, format!("tryst:replace:0:{}", "ab".repeat(16)));
        let text = format!("{} node-b 17", claim.strip_prefix(REPLACE_PREFIX).unwrap());
        assert_eq!(
            parse_replace(&text),
            Some(Replace {
                key,
                node: "node-b",
                epoch: 17
            })
        );
        for bad in [
            "",
            "0:abab node-b 17",
            &format!("3:{} n 1", "ab".repeat(16)),
            &format!("0:{} n", "ab".repeat(16)),
            &format!("0:{} n 1 extra", "ab".repeat(16)),
            &format!("0:{} n +1", "ab".repeat(16)),
            &format!("0:{} n 01", "ab".repeat(16)),
            &format!("0:{} n 1", "AB".repeat(16)),
            &format!("0:{} bad/name 1", "ab".repeat(16)),
        ] {
            assert_eq!(parse_replace(bad), None, "{bad:?}");
        }
    }
}
