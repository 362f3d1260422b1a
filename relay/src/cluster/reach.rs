//! Parks and reaches across nodes: the workers' presence changes written to the
//! directory, and lookups that carry a waiting client to a node holding its key.
//!
//! Directory keys (see docs/cluster.md):
//!
//! | key | type | what |
//! |---|---|---|
//! | `tryst:park:<34 hex: space byte + 16 key bytes>` | hash: node name → `"<epoch> <unix>"`, TTL [`PARK_TTL`] | which nodes hold parked connections for the key (field written on the 0 → 1 transition, deleted on 1 → 0, re-written with every key this node holds every [`REWRITE_INTERVAL`] and whenever the directory answers again) |
//! | `tryst:parked` | pub/sub channel, message = the same 34 hex | a key went 0 → 1 somewhere: wakes lookups waiting for it |
//!
//! A reader trusts a field only if its node is live with that epoch (a restarted node
//! has a new one: what its previous run left is ignored) and it was written within
//! [`PARK_TTL`] (a node that could not delete a field stops refreshing it). A node that
//! could not delete fields (cut off from the directory while parks ended) deletes them
//! before it writes its liveness record again
//! ([`super::directory::Directory::set_owes_deletions`]): a node that rejoins never
//! advertises a park it no longer holds.
//!
//! A lookup costs one `HGETALL` when a holder exists; without one it waits for a
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
/// The channel 0 → 1 transitions are published on.
pub const PARKED_CHANNEL: &str = "tryst:parked";
/// Most lookups in flight; beyond, a client waits for a local park only.
pub const MAX_LOOKUPS: usize = 4096;
/// A lookup with less than this left of its client's wait carries nothing any more.
const MIN_LEFT: Duration = Duration::from_millis(50);
/// Keys per pipeline in a full re-write.
const REWRITE_BATCH: usize = 512;

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
        tokio::spawn(subscribe_loop(cluster.clone(), parked.clone()));
        Self {
            cluster,
            injector,
            presence: tx,
            parked,
            lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
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
                let holder = choose_holder(
                    &fields,
                    self.cluster.node(),
                    &self.cluster.directory().live_map(),
                    crate::clock::unix_now(),
                    rand::random::<u32>() as usize,
                );
                if let Some(node) = holder {
                    if self.carry(&node, &l, deadline).await {
                        return;
                    }
                    // Unreachable (killed, or its mesh refuses us) though still live in
                    // the cache: not again for this client; try another holder now.
                    failed.insert(node);
                    continue;
                }
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

    /// Opens a mesh connection to `node`, writes the client's bytes and gives the
    /// socket to the client's worker. False if any step failed (the lookup goes on).
    async fn carry(&self, node: &str, l: &Lookup, deadline: tokio::time::Instant) -> bool {
        let origin = Origin {
            transport: l.transport,
            peer: l.peer,
        };
        let attempt = async {
            let mut stream = self.cluster.mesh_connect(node, origin).await.ok()?;
            stream.write_all(&l.head).await.ok()?;
            Some(stream)
        };
        let Ok(Some(stream)) = tokio::time::timeout_at(deadline, attempt).await else {
            return false;
        };
        let stats = self.cluster.stats();
        stats
            .mesh_bytes_out
            .fetch_add(l.head.len() as u64, Ordering::Relaxed);
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
}

/// Owns which keys this node holds (key → worker) and mirrors them into the directory.
async fn presence_loop(cluster: Cluster, mut rx: mpsc::UnboundedReceiver<PresenceMsg>) {
    let mut held: HashMap<RendezvousKey, usize> = HashMap::new();
    let mut to_set: HashSet<RendezvousKey> = HashSet::new();
    let mut to_del: HashSet<RendezvousKey> = HashSet::new();
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
                        PresenceMsg::Change { worker, key, parked: true } => {
                            held.insert(key, worker);
                            to_del.remove(&key);
                            to_set.insert(key);
                        }
                        PresenceMsg::Change { key, parked: false, .. } => {
                            held.remove(&key);
                            to_set.remove(&key);
                            to_del.insert(key);
                        }
                        PresenceMsg::WorkerGone(worker) => {
                            held.retain(|key, w| {
                                if *w == worker {
                                    to_set.remove(key);
                                    to_del.insert(*key);
                                    false
                                } else {
                                    true
                                }
                            });
                        }
                    }
                }
                flush(&cluster, &mut to_set, &mut to_del).await;
            }
            _ = retry.tick() => {
                if !to_set.is_empty() || !to_del.is_empty() {
                    flush(&cluster, &mut to_set, &mut to_del).await;
                }
            }
            _ = rewrite.tick() => rewrite_all(&cluster, &held).await,
            changed = reconnects.changed() => {
                if changed.is_err() {
                    return;
                }
                // What changed while the directory was away first (the deletions this
                // node owes keep it from being live again), then everything it holds.
                if !to_set.is_empty() || !to_del.is_empty() {
                    flush(&cluster, &mut to_set, &mut to_del).await;
                }
                rewrite_all(&cluster, &held).await;
            }
        }
    }
}

fn field_value(cluster: &Cluster) -> String {
    format!("{} {}", cluster.epoch(), crate::clock::unix_now())
}

/// Writes the pending changes, deletions first, in pipelines of [`REWRITE_BATCH`] keys
/// (a long outage's backlog still makes progress under the command timeout); what
/// fails stays pending. Then tells the directory whether deletions are still owed: the
/// node writes its liveness record only when none are.
async fn flush(
    cluster: &Cluster,
    to_set: &mut HashSet<RendezvousKey>,
    to_del: &mut HashSet<RendezvousKey>,
) {
    let value = field_value(cluster);
    let ttl = u64::try_from(PARK_TTL.as_millis()).unwrap_or(u64::MAX);
    let changes: Vec<(RendezvousKey, bool)> = to_del
        .iter()
        .map(|key| (*key, false))
        .chain(to_set.iter().map(|key| (*key, true)))
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
                pipe.cmd("HDEL").arg(&record).arg(cluster.node()).ignore();
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
                to_set.remove(key);
            } else {
                to_del.remove(key);
            }
        }
    }
    cluster.directory().set_owes_deletions(!to_del.is_empty());
}

/// Re-writes every key this node holds (heals an emptied or restarted Redis, and keeps
/// the fields fresh).
async fn rewrite_all(cluster: &Cluster, held: &HashMap<RendezvousKey, usize>) {
    let value = field_value(cluster);
    let ttl = u64::try_from(PARK_TTL.as_millis()).unwrap_or(u64::MAX);
    let keys: Vec<&RendezvousKey> = held.keys().collect();
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
    }
}

/// Subscribes to [`PARKED_CHANNEL`] and re-broadcasts each key to waiting lookups;
/// reconnects after a failure.
async fn subscribe_loop(cluster: Cluster, out: broadcast::Sender<[u8; 17]>) {
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
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                let mut wire = [0u8; 17];
                if hex::decode_to_slice(text.as_bytes(), &mut wire).is_ok() {
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
