//! Cluster-wide proof replay caches of the HTTP families (issue #16): a proof accepted
//! by one node is refused by every other node within its window.
//!
//! Each family keeps its own local replay cache exactly as on a single node and checks
//! it first (so a replay on the same node gets its refusal without a round trip, and a
//! single node is unchanged byte for byte). With `--cluster-redis`, a proof that passed
//! the local cache is then claimed once in the directory before the family acts on it:
//!
//! | scope | key | used by |
//! |---|---|---|
//! | `hive-drain` | `tryst:replay:hive-drain:<ws hex><device hex>:<nonce hex>` | Hive `Hive-Drain` proofs |
//! | `qredo` | `tryst:replay:qredo:<sha256(key, nonce) hex>` | Qredo `OwnershipSignature`s |
//! | `deaddrop` | `tryst:replay:deaddrop:<sha256(signature) hex>` | dead-drop retrieve, ack and depositor proofs |
//!
//! One command, `SET key <node> NX PX <rest of the proof's window>`: set → the proof is
//! [`Seen::First`] anywhere; exists → [`Seen::Replayed`] (the family answers its own
//! replay refusal). When the directory cannot answer (known down: no command is tried;
//! or the command fails or times out), the policy is the engine-side claims' one
//! (`claims.rs`): the node's own cache decided, the proof is accepted
//! ([`Seen::Unchecked`]) and counted in `tryst_cluster_replay_fallback_total{scope}`.
//!
//! I/O contract: one Redis command per accepted proof, under the directory's timeout;
//! nothing here runs on a worker.

use super::Cluster;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which family's proofs (the key's scope and the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Hive `Hive-Drain` proofs of `/v1/forward` drains.
    HiveDrain,
    /// Qredo `OwnershipSignature`s (`/services`: rendezvous and conversation queues).
    Qredo,
    /// Dead-drop proofs (`/retrieve`, `/ack`, depositor proofs of `/deposit`).
    DeadDrop,
}

impl Scope {
    /// Every scope, in `/metrics` order.
    pub const ALL: [Self; 3] = [Self::HiveDrain, Self::Qredo, Self::DeadDrop];

    /// The key scope and `scope` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HiveDrain => "hive-drain",
            Self::Qredo => "qredo",
            Self::DeadDrop => "deaddrop",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the directory says of a proof that passed the node's own replay cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No node used it before: act on it.
    First,
    /// Another node (or this one, before a restart) used it: refuse it as a replay.
    Replayed,
    /// The directory could not say: the node's own cache decided (counted).
    Unchecked,
}

#[derive(Debug, Default)]
struct Counters {
    first: AtomicU64,
    replayed: AtomicU64,
    fallback: AtomicU64,
}

/// The directory key of a proof: `tryst:replay:<scope>:<hex parts joined by ':'>`.
pub fn key(scope: Scope, parts: &[&[u8]]) -> String {
    let mut out = format!("tryst:replay:{}", scope.label());
    for p in parts {
        out.push(':');
        tryst_engine::claim::push_hex(&mut out, p);
    }
    out
}

/// How long a proof's key must live: until the proof's timestamp leaves its window
/// (`until_ms`, unix ms), from `now_ms`; at least one second.
pub fn ttl(until_ms: u64, now_ms: u64) -> Duration {
    Duration::from_millis(until_ms.saturating_sub(now_ms).max(1000))
}

/// The cluster-wide replay caches (one per supervisor, with `--cluster-redis`).
#[derive(Debug)]
pub struct ReplayClaims {
    cluster: Cluster,
    counters: [Counters; 3],
}

impl ReplayClaims {
    /// The replay claims of this node.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            counters: Default::default(),
        }
    }

    fn counters(&self, scope: Scope) -> &Counters {
        &self.counters[scope.index()]
    }

    /// Claims the proof named by `parts` in `scope` for `ttl` (see [`ttl`]); call it
    /// after the family's own replay cache accepted the proof and before acting on it.
    pub async fn first_use(&self, scope: Scope, parts: &[&[u8]], ttl: Duration) -> Seen {
        let c = self.counters(scope);
        let directory = self.cluster.directory();
        if !directory.connected() {
            c.fallback.fetch_add(1, Ordering::Relaxed);
            return Seen::Unchecked;
        }
        let mut conn = self.cluster.redis();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<Option<String>> = directory
            .run(
                "replay",
                redis::cmd("SET")
                    .arg(key(scope, parts))
                    .arg(self.cluster.node())
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn),
            )
            .await;
        match set {
            Some(Some(_)) => {
                c.first.fetch_add(1, Ordering::Relaxed);
                Seen::First
            }
            Some(None) => {
                c.replayed.fetch_add(1, Ordering::Relaxed);
                Seen::Replayed
            }
            None => {
                c.fallback.fetch_add(1, Ordering::Relaxed);
                Seen::Unchecked
            }
        }
    }

    /// Appends the `/metrics` lines.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP tryst_cluster_replay_total HTTP-side proofs claimed in the cluster directory: first = first use anywhere, replayed = used on another node before (refused).\n\
             # TYPE tryst_cluster_replay_total counter"
        );
        for s in Scope::ALL {
            let c = self.counters(s);
            for (outcome, v) in [("first", &c.first), ("replayed", &c.replayed)] {
                let _ = writeln!(
                    out,
                    "tryst_cluster_replay_total{{scope=\"{}\",outcome=\"{outcome}\"}} {}",
                    s.label(),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tryst_cluster_replay_fallback_total HTTP-side proofs the directory could not check (down or timed out): only this node's replay cache decided.\n\
             # TYPE tryst_cluster_replay_fallback_total counter"
        );
        for s in Scope::ALL {
            let _ = writeln!(
                out,
                "tryst_cluster_replay_fallback_total{{scope=\"{}\"}} {}",
                s.label(),
                self.counters(s).fallback.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ttls() {
        assert_eq!(
            key(Scope::HiveDrain, &[&[0xab, 0x01], &[0xff]]),
            "tryst:replay:hive-drain:ab01:ff"
        );
        assert_eq!(
            key(Scope::DeadDrop, &[&[0; 2]]),
            "tryst:replay:deaddrop:0000"
        );
        assert!(tryst_engine::claim::valid_key(
            key(Scope::Qredo, &[&[7; 32]]).as_bytes()
        ));
        assert_eq!(ttl(61_500, 1_000), Duration::from_millis(60_500));
        assert_eq!(ttl(1_000, 5_000), Duration::from_secs(1));
        for (i, s) in Scope::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }
}
