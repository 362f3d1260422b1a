//! Parks and reaches across nodes: the workers' presence changes written to the
//! directory, and lookups that carry a waiting client to a node holding its key.
//!
//! Directory keys (see docs/cluster.md):
//!
//! | key | type | what |
//! |---|---|---|
//! | `tryst:park:<34 hex: space byte + 16 key bytes>` | hash: node name → `"<epoch> <unix>"`, TTL [`PARK_TTL`] | which nodes hold parked connections for the key (field written on the 0 → 1 transition, deleted on 1 → 0, re-written with every key this node holds every [`REWRITE_INTERVAL`] and whenever the directory answers again) |
//! | `tryst:parked` | pub/sub channel, message = the same 34 hex | a key went 0 → 1 or 1 → 0 somewhere: wakes lookups waiting for it, and every node forgets the holder it remembered for it |
//!
//! A reader trusts a field only if its node is live with that epoch (a restarted node
//! has a new one: what its previous run left is ignored) and it was written within
//! [`PARK_TTL`] (a node that could not delete a field stops refreshing it). A node that
//! could not delete fields (cut off from the directory while parks ended) deletes them
//! before it writes its liveness record again
//! ([`super::directory::Directory::set_owes_deletions`]): a node that rejoins never
//! advertises a park it no longer holds.
//!
//! A 1 → 0 and a 0 → 1 of one key that meet in the presence writer's queue (a hidden
//! server re-parking right after its pairing) cancel out: nothing is written.
//!
//! A lookup reuses the holder an `HGETALL` found for the same key within the last
//! [`HOLDER_CACHE_TTL`], while that node is still live in the same epoch and no
//! publication on `tryst:parked` has said the key's holders changed, so repeated reaches
//! for a busy hidden server cost no round trip. (A publication lost with a dropped
//! subscription leaves a remembered holder stale for at most that TTL.) Otherwise a
//! lookup costs one `HGETALL` when a holder exists; without one it waits for a
//! publication of its key (or re-reads once a second, in case one was missed) until the
//! client's wait ends, when the client's own node answers the family's "not parked".

use super::Cluster;
use super::mesh::Origin;
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{broadcast, mpsc};
use tryst_engine::driver::Injector;
use tryst_engine::driver::cluster::{ClusterEvent, Lookup};
use tryst_engine::target::RendezvousKey;

/// Lifetime of a park record (the hash) and of each node's field in it.
pub const PARK_TTL: Duration = Duration::from_secs(30);
/// How often a node re-writes every key it holds (and retries failed writes: every
/// second).
pub const REWRITE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a holder found by a lookup is reused for later lookups of the same key.
pub const HOLDER_CACHE_TTL: Duration = Duration::from_secs(1);
/// Keys whose holder is remembered at most (beyond: the memory is emptied).
const HOLDER_CACHE_CAP: usize = 65_536;
/// The channel both transitions of a key are published on.
pub const PARKED_CHANNEL: &str = "tryst:parked";
/// Most lookups in flight; beyond, a client waits for a local park only.
pub const MAX_LOOKUPS: usize = 4096;
/// A lookup with less than this left of its client's wait carries nothing any more.
const MIN_LEFT: Duration = Duration::from_millis(50);
/// Keys per pipeline in a full re-write.
const REWRITE_BATCH: usize = 512;
/// Seconds between two warnings about holders that closed without answering.
const CLOSED_WARN_INTERVAL: u64 = 10;

/// The directory key of a rendezvous key's park record.
pub fn park_key(key: &RendezvousKey) -> String {
    format!("tryst:park:{}", hex::encode(key.to_wire()))
}

/// Reads a park record's field value `"<epoch> <unix>"`.
pub fn parse_field(value: &str) -> Option<(u64, u64)> {
    let (epoch, unix) = value.split_once(' ')?;
    Some((epoch.parse().ok()?, unix.parse().ok()?))
}

/// The node to carry a client to, from a park record's fields: another node, live in
/// this very epoch, whose field is fresh. Several: the first in name order after a
/// rotation by `spread` (spreads clients over holders).
pub fn choose_holder(
    fields: &HashMap<String, String>,
    me: &str,
    live: &std::collections::BTreeMap<String, super::NodeInfo>,
    now: u64,
    spread: usize,
) -> Option<String> {
    let mut ok: Vec<&String> = fields
        .iter()
        .filter(|(node, _)| node.as_str() != me)
        .filter_map(|(node, value)| {
            let (epoch, unix) = parse_field(value)?;
            let info = live.get(node)?;
            (info.epoch == epoch && now.saturating_sub(unix) <= PARK_TTL.as_secs()).then_some(node)
        })
        .collect();
    if ok.is_empty() {
        return None;
    }
    ok.sort();
    Some(ok[spread % ok.len()].clone())
}

enum PresenceMsg {
    Change {
        worker: usize,
        key: RendezvousKey,
        parked: bool,
    },
    WorkerGone(usize),
}

/// What the supervisor's loop hands the workers' cluster events to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    cluster: Cluster,
    injector: Arc<Injector>,
    presence: mpsc::UnboundedSender<PresenceMsg>,
    parked: broadcast::Sender<[u8; 17]>,
    lookups: Arc<tokio::sync::Semaphore>,
    holders: Arc<std::sync::Mutex<HolderCache>>,
    /// Unix second of the last warning about a holder that closed a carried client's
    /// mesh connection without answering (at most one per [`CLOSED_WARN_INTERVAL`]).
    closed_warned: Arc<std::sync::atomic::AtomicU64>,
}

/// Holders recent lookups found, by key: (node, its epoch then, when found).
#[derive(Debug, Default)]
struct HolderCache(HashMap<[u8; 17], (String, u64, tokio::time::Instant)>);

impl HolderCache {
    /// The holder found for `key` less than [`HOLDER_CACHE_TTL`] before `now`, if its
    /// node is still live in the epoch it had then.
    fn get(
        &self,
        key: &[u8; 17],
        now: tokio::time::Instant,
        live: &std::collections::BTreeMap<String, super::NodeInfo>,
    ) -> Option<String> {
        let (node, epoch, at) = self.0.get(key)?;
        (now.duration_since(*at) < HOLDER_CACHE_TTL
            && live.get(node).is_some_and(|info| info.epoch == *epoch))
        .then(|| node.clone())
    }

    fn put(&mut self, key: [u8; 17], node: String, epoch: u64, now: tokio::time::Instant) {
        if self.0.len() >= HOLDER_CACHE_CAP && !self.0.contains_key(&key) {
            self.0.clear();
        }
        self.0.insert(key, (node, epoch, now));
    }

    fn forget(&mut self, key: &[u8; 17]) {
        self.0.remove(key);
    }
}

impl std::fmt::Debug for PresenceMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresenceMsg")
    }
}

impl Dispatcher {
    /// Starts the presence writer and the `tryst:parked` subscriber; needs the runtime.
    pub fn start(cluster: Cluster, injector: Arc<Injector>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (parked, _) = broadcast::channel(1024);
        tokio::spawn(presence_loop(cluster.clone(), rx));
        let holders = Arc::default();
        tokio::spawn(subscribe_loop(
            cluster.clone(),
            parked.clone(),
            Arc::clone(&holders),
        ));
        Self {
            cluster,
            injector,
            presence: tx,
            parked,
            lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
            holders,
            closed_warned: Arc::default(),
        }
    }

    /// Handles one event from a worker.
    pub fn on_event(&self, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Presence {
                worker,
                key,
                parked,
            } => {
                let _ = self.presence.send(PresenceMsg::Change {
                    worker,
                    key,
                    parked,
                });
            }
            ClusterEvent::Lookup(l) => {
                let Ok(permit) = self.lookups.clone().try_acquire_owned() else {
                    self.cluster
                        .stats()
                        .lookups_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.lookup(l).await;
                    drop(permit);
                });
            }
        }
    }

    /// Worker `worker` died: whatever it had parked is gone.
    pub fn worker_gone(&self, worker: usize) {
        let _ = self.presence.send(PresenceMsg::WorkerGone(worker));
    }

    async fn lookup(&self, l: Lookup) {
        let deadline = tokio::time::Instant::now() + l.wait;
        let mut published = self.parked.subscribe();
        let wire = l.key.to_wire();
        let record = park_key(&l.key);
        let mut failed: HashSet<String> = HashSet::new();
        let cached = self
            .holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(
                &wire,
                tokio::time::Instant::now(),
                &self.cluster.directory().live_map(),
            );
        if let Some(node) = cached {
            if self.carry(&node, &l, deadline).await {
                return;
            }
            self.forget_holder(&wire);
            failed.insert(node);
        }
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left < MIN_LEFT {
                self.cluster
                    .stats()
                    .lookups_unfound
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut c = self.cluster.redis();
            let fields: Option<HashMap<String, String>> = self
                .cluster
                .directory()
                .run(
                    "lookup",
                    redis::cmd("HGETALL").arg(&record).query_async(&mut c),
                )
                .await;
            if let Some(mut fields) = fields {
                fields.retain(|node, _| !failed.contains(node));
                // One snapshot: the holder is chosen, and remembered, in the epoch it
                // was live in.
                let live = self.cluster.directory().live_map();
                let holder = choose_holder(
                    &fields,
                    self.cluster.node(),
                    &live,
                    crate::clock::unix_now(),
                    rand::random::<u32>() as usize,
                );
                if let Some(node) = holder {
                    if let Some(info) = live.get(&node) {
                        self.holders
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .put(wire, node.clone(), info.epoch, tokio::time::Instant::now());
                    }
                    if self.carry(&node, &l, deadline).await {
                        return;
                    }
                    self.forget_holder(&wire);
                    // Unreachable (killed, or its mesh refuses us) though still live in
                    // the cache: not again for this client; try another holder now.
                    failed.insert(node);
                    continue;
                }
                self.forget_holder(&wire);
            }
            // Nobody (reachable) holds it: wait for a park anywhere, re-reading once a
            // second in case a publication was missed, until the client's wait ends.
            let pause = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(1));
            let woke = tokio::time::timeout(pause, async {
                loop {
                    match published.recv().await {
                        Ok(k) if k == wire => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            })
            .await;
            drop(woke);
        }
    }

    fn forget_holder(&self, wire: &[u8; 17]) {
        self.holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .forget(wire);
    }

    /// Opens a mesh connection to `node`, writes the client's bytes, waits for the
    /// holder's first answer byte and then gives the socket to the client's worker. False
    /// if any step failed (the lookup goes on).
    ///
    /// The holder answers every carried head (its family's `200` or refusal) before the
    /// client's wait ends; a holder that closes first refused the preamble (another mesh
    /// key, or a node that is not what the directory says) and is counted and warned
    /// about, not handed to the client as a tunnel that ends at once. The answer is only
    /// peeked: it stays in the socket for the worker.
    async fn carry(&self, node: &str, l: &Lookup, deadline: tokio::time::Instant) -> bool {
        let origin = Origin {
            transport: l.transport,
            peer: l.peer,
        };
        let attempt = async {
            let mut stream = self.cluster.mesh_connect(node, origin).await.ok()?;
            stream.write_all(&l.head).await.ok()?;
            self.cluster
                .stats()
                .mesh_bytes_out
                .fetch_add(l.head.len() as u64, Ordering::Relaxed);
            let mut first = [0u8; 1];
            let answered = matches!(stream.peek(&mut first).await, Ok(n) if n > 0);
            Some((stream, answered))
        };
        let Ok(Some((stream, answered))) = tokio::time::timeout_at(deadline, attempt).await else {
            return false;
        };
        let stats = self.cluster.stats();
        if !answered {
            stats.mesh_connect_errors.fetch_add(1, Ordering::Relaxed);
            self.warn_closed(node);
            return false;
        }
        let fd: OwnedFd = match stream.into_std() {
            Ok(s) => s.into(),
            Err(_) => return false,
        };
        match self.injector.deliver(l.worker, l.token, fd) {
            Ok(()) => {
                stats.reaches_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(to = node, "client carried to another node");
                true
            }
            Err(e) => {
                tracing::warn!(worker = l.worker, error = %e, "cannot give a mesh socket to its worker");
                // The socket is closed; the client keeps waiting for a local park.
                true
            }
        }
    }

    /// Warns, at most once per [`CLOSED_WARN_INTERVAL`], that `node` closed a carried
    /// client's mesh connection without answering.
    fn warn_closed(&self, node: &str) {
        let now = crate::clock::unix_now();
        let last = self.closed_warned.load(Ordering::Relaxed);
        if now >= last.saturating_add(CLOSED_WARN_INTERVAL)
            && self
                .closed_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                to = node,
                "a node closed a carried client's mesh connection without answering: \
                 it refused the preamble (another --mesh-psk-file?); its tryst_mesh_refused_total \
                 says why; the client is carried elsewhere or answered not parked"
            );
        }
    }
}

/// What the presence writer knows: which keys this node holds, and what it owes the
/// directory.
#[derive(Default)]
struct Presence {
    /// Keys this node holds (key → worker).
    held: HashMap<RendezvousKey, usize>,
    /// Fields to write (a 0 → 1 the directory has not seen).
    to_set: HashSet<RendezvousKey>,
    /// Fields to delete (a 1 → 0 the directory has not seen).
    to_del: HashSet<RendezvousKey>,
    /// Fields this node wrote and has not deleted since.
    advertised: HashSet<RendezvousKey>,
}

impl Presence {
    fn parked(&mut self, key: RendezvousKey, worker: usize) {
        self.held.insert(key, worker);
        self.to_del.remove(&key);
        // Still advertised (its deletion had not gone out): nothing to write.
        if !self.advertised.contains(&key) {
            self.to_set.insert(key);
        }
    }

    fn unparked(&mut self, key: RendezvousKey) {
        self.held.remove(&key);
        self.to_set.remove(&key);
        // Deleted whether or not the field is known to be there: a write whose answer
        // was lost may have landed.
        self.to_del.insert(key);
    }
}

/// Owns which keys this node holds (key → worker) and mirrors them into the directory.
async fn presence_loop(cluster: Cluster, mut rx: mpsc::UnboundedReceiver<PresenceMsg>) {
    let mut p = Presence::default();
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rewrite = tokio::time::interval(REWRITE_INTERVAL);
    rewrite.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnects = cluster.directory().reconnects();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let mut batch = vec![msg];
                while batch.len() < 4096 {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                for m in batch {
                    match m {
                        PresenceMsg::Change { worker, key, parked: true } => p.parked(key, worker),
                        PresenceMsg::Change { key, parked: false, .. } => p.unparked(key),
                        PresenceMsg::WorkerGone(worker) => {
                            let gone: Vec<RendezvousKey> = p
                                .held
                                .iter()
                                .filter(|(_, w)| **w == worker)
                                .map(|(key, _)| *key)
                                .collect();
                            for key in gone {
                                p.unparked(key);
                            }
                        }
                    }
                }
                flush(&cluster, &mut p).await;
            }
            _ = retry.tick() => {
                if !p.to_set.is_empty() || !p.to_del.is_empty() {
                    flush(&cluster, &mut p).await;
                }
            }
            _ = rewrite.tick() => rewrite_all(&cluster, &mut p).await,
            changed = reconnects.changed() => {
                if changed.is_err() {
                    return;
                }
                // What changed while the directory was away first (the deletions this
                // node owes keep it from being live again), then everything it holds.
                // The directory may have lost what it had (a restart): nothing counts as
                // advertised until written again, so a key re-parked during its grace is
                // written too.
                p.advertised.clear();
                if !p.to_set.is_empty() || !p.to_del.is_empty() {
                    flush(&cluster, &mut p).await;
                }
                rewrite_all(&cluster, &mut p).await;
            }
        }
    }
}

fn field_value(cluster: &Cluster) -> String {
    format!("{} {}", cluster.epoch(), crate::clock::unix_now())
}

/// Writes the pending changes, deletions first, in pipelines of [`REWRITE_BATCH`] keys
/// (a long outage's backlog still makes progress under the command timeout); what
/// fails stays pending. Nothing pending: no round trip. Then tells the directory
/// whether deletions are still owed: the node writes its liveness record only when none
/// are.
async fn flush(cluster: &Cluster, p: &mut Presence) {
    let value = field_value(cluster);
    let ttl = u64::try_from(PARK_TTL.as_millis()).unwrap_or(u64::MAX);
    let changes: Vec<(RendezvousKey, bool)> = p
        .to_del
        .iter()
        .map(|key| (*key, false))
        .chain(p.to_set.iter().map(|key| (*key, true)))
        .collect();
    for chunk in changes.chunks(REWRITE_BATCH) {
        let mut pipe = redis::pipe();
        for (key, parked) in chunk {
            let record = park_key(key);
            if *parked {
                pipe.cmd("HSET")
                    .arg(&record)
                    .arg(cluster.node())
                    .arg(&value)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&record)
                    .arg(ttl)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(PARKED_CHANNEL)
                    .arg(hex::encode(key.to_wire()))
                    .ignore();
            } else {
                pipe.cmd("HDEL")
                    .arg(&record)
                    .arg(cluster.node())
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(PARKED_CHANNEL)
                    .arg(hex::encode(key.to_wire()))
                    .ignore();
            }
        }
        let mut c = cluster.redis();
        if cluster
            .directory()
            .run::<(), _>("presence", pipe.query_async(&mut c))
            .await
            .is_none()
        {
            break;
        }
        for (key, parked) in chunk {
            if *parked {
                p.to_set.remove(key);
                p.advertised.insert(*key);
            } else {
                p.to_del.remove(key);
                p.advertised.remove(key);
            }
        }
    }
    cluster.directory().set_owes_deletions(!p.to_del.is_empty());
}

/// Re-writes every key this node holds (heals an emptied or restarted Redis, and keeps
/// the fields fresh).
async fn rewrite_all(cluster: &Cluster, p: &mut Presence) {
    let value = field_value(cluster);
    let ttl = u64::try_from(PARK_TTL.as_millis()).unwrap_or(u64::MAX);
    let keys: Vec<RendezvousKey> = p.held.keys().copied().collect();
    for chunk in keys.chunks(REWRITE_BATCH) {
        let mut pipe = redis::pipe();
        for key in chunk {
            let record = park_key(key);
            pipe.cmd("HSET")
                .arg(&record)
                .arg(cluster.node())
                .arg(&value)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&record)
                .arg(ttl)
                .ignore();
        }
        let mut c = cluster.redis();
        if cluster
            .directory()
            .run::<(), _>("presence", pipe.query_async(&mut c))
            .await
            .is_none()
        {
            return;
        }
        p.advertised.extend(chunk.iter().copied());
    }
}

/// Subscribes to [`PARKED_CHANNEL`] and re-broadcasts each key to waiting lookups;
/// reconnects after a failure.
async fn subscribe_loop(
    cluster: Cluster,
    out: broadcast::Sender<[u8; 17]>,
    holders: Arc<std::sync::Mutex<HolderCache>>,
) {
    use futures_util::StreamExt as _;
    loop {
        let connected = tokio::time::timeout(
            super::directory::COMMAND_TIMEOUT,
            cluster.directory().client().get_async_pubsub(),
        )
        .await;
        if let Ok(Ok(mut pubsub)) = connected
            && tokio::time::timeout(
                super::directory::COMMAND_TIMEOUT,
                pubsub.subscribe(PARKED_CHANNEL),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        {
            // Publications were missed while unsubscribed: remember no holder.
            holders
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0
                .clear();
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                let mut wire = [0u8; 17];
                if hex::decode_to_slice(text.as_bytes(), &mut wire).is_ok() {
                    holders
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .forget(&wire);
                    let _ = out.send(wire);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeInfo;
    use std::collections::BTreeMap;

    /// A found holder is reused within its time, while its node is live in the same
    /// epoch; forgotten on request; the memory is bounded.
    #[test]
    fn holders_are_reused_briefly_and_only_while_live_in_their_epoch() {
        let live = |epoch: u64| {
            let mut m = BTreeMap::new();
            m.insert(
                "a".to_owned(),
                NodeInfo {
                    name: "a".into(),
                    epoch,
                    mesh: "127.0.0.1:1".parse().unwrap(),
                },
            );
            m
        };
        let t0 = tokio::time::Instant::now();
        let mut c = HolderCache::default();
        let k = [7u8; 17];
        assert_eq!(c.get(&k, t0, &live(1)), None);
        c.put(k, "a".into(), 1, t0);
        assert_eq!(
            c.get(&k, t0 + HOLDER_CACHE_TTL / 2, &live(1)).as_deref(),
            Some("a")
        );
        assert_eq!(c.get(&k, t0 + HOLDER_CACHE_TTL, &live(1)), None);
        assert_eq!(c.get(&k, t0, &live(2)), None, "a restarted node");
        assert_eq!(c.get(&k, t0, &BTreeMap::new()), None, "a dead node");
        c.forget(&k);
        assert_eq!(c.get(&k, t0, &live(1)), None);
        for i in 0..HOLDER_CACHE_CAP + 1 {
            let mut key = [0u8; 17];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            c.put(key, "a".into(), 1, t0);
        }
        assert!(c.0.len() <= HOLDER_CACHE_CAP);
    }

    /// A 1 -> 0 and a 0 -> 1 that meet before a flush cancel out when the field is
    /// advertised; a key never written is written on park, even after a pending
    /// deletion.
    #[test]
    fn a_re_park_before_the_deletion_went_out_writes_nothing() {
        let (k, other) = (RendezvousKey::uuid([1; 16]), RendezvousKey::uuid([2; 16]));
        let mut p = Presence::default();
        p.parked(k, 0);
        assert!(p.to_set.contains(&k));
        // The write succeeded (as `flush` records it).
        p.to_set.remove(&k);
        p.advertised.insert(k);
        p.unparked(k);
        assert!(p.to_del.contains(&k));
        p.parked(k, 0);
        assert!(p.to_set.is_empty() && p.to_del.is_empty());
        p.unparked(other);
        p.parked(other, 1);
        assert!(p.to_set.contains(&other) && !p.to_del.contains(&other));
    }

    #[test]
    fn holders_are_live_in_their_epoch_and_fresh() {
        let mut live = BTreeMap::new();
        for (name, epoch) in [("a", 10), ("b", 20)] {
            live.insert(
                name.to_owned(),
                NodeInfo {
                    name: name.into(),
                    epoch,
                    mesh: "127.0.0.1:1".parse().unwrap(),
                },
            );
        }
        let fields = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let now = 1000;
        // Itself, a stale epoch, an old field, a dead node: none.
        let f = fields(&[
            ("me", "1 1000"),
            ("a", "9 1000"),
            ("b", "20 900"),
            ("c", "5 1000"),
        ]);
        assert_eq!(choose_holder(&f, "me", &live, now, 0), None);
        let f = fields(&[("a", "10 990"), ("b", "20 1000"), ("x", "garbage")]);
        assert_eq!(choose_holder(&f, "me", &live, now, 0).as_deref(), Some("a"));
        assert_eq!(choose_holder(&f, "me", &live, now, 1).as_deref(), Some("b"));
        assert_eq!(
            park_key(&RendezvousKey::uuid([0xab; 16])),
            format!("tryst:park:00{}", "ab".repeat(16))
        );
    }
}
