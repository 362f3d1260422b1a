//! The cluster directory on Valkey/Redis: the connection, this node's liveness record and
//! the cached map of live nodes.
//!
//! Keys (every node uses the same ones; docs/cluster.md lists them all):
//!
//! | key | type | written by | what |
//! |---|---|---|---|
//! | `tryst:node:<name>` | string `"<epoch> <mesh addr>"`, TTL [`LIVENESS_TTL`] | the node, every [`LIVENESS_INTERVAL`] | the node is alive, in this run (epoch), dialable there |
//! | `tryst:nodes` | set of names | every node (`SADD` itself; `SREM` names whose record expired) | where readers find the records |
//!
//! A node whose record is gone (killed, or cut off from Redis for longer than the TTL)
//! is no longer live for anyone: nobody forwards to it. A node that cannot reach Redis
//! for longer than the TTL empties its own cache, so it forwards nowhere either. A node
//! that owes the directory deletions of its park fields (parks that ended while it could
//! not write) does not write its record until they are done
//! ([`Directory::set_owes_deletions`]): once it is live again, every field it has in
//! Redis is a park it holds.
//!
//! Every command is bounded by [`COMMAND_TIMEOUT`]: an unreachable Redis costs a
//! bounded wait, never a hang, and the supervisor's other work goes on meanwhile.

use super::{ClusterConfig, ClusterError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Longest wait for one directory command (or pipeline).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node refreshes its liveness record and re-reads the live nodes.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(1);
/// Lifetime of a liveness record: a node silent for this long is dead to the others.
pub const LIVENESS_TTL: Duration = Duration::from_secs(5);
/// The set of node names.
pub const NODES_KEY: &str = "tryst:nodes";

/// The liveness record's key for `name`.
pub fn node_key(name: &str) -> String {
    format!("tryst:node:{name}")
}

/// A live node as its liveness record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its run's epoch (unix ms at its start).
    pub epoch: u64,
    /// Where its mesh listener is dialled.
    pub mesh: SocketAddr,
}

/// Parses a liveness record's value, `"<epoch> <mesh addr>"`.
pub fn parse_record(name: &str, value: &str) -> Option<NodeInfo> {
    let (epoch, mesh) = value.split_once(' ')?;
    Some(NodeInfo {
        name: name.to_owned(),
        epoch: epoch.parse().ok()?,
        mesh: mesh.parse().ok()?,
    })
}

/// The directory's health, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryState {
    /// The last command succeeded.
    pub connected: bool,
    /// The last failure's message (kept after recovery, for the operator).
    pub last_error: Option<String>,
    /// Failed commands since start.
    pub errors: u64,
    /// Live peers in the cache.
    pub live_nodes: usize,
}

/// The Redis connection, this node's identity in it, and the live-node cache.
pub struct Directory {
    conn: ConnectionManager,
    client: redis::Client,
    me: String,
    epoch: u64,
    advertise: SocketAddr,
    live: RwLock<Arc<BTreeMap<String, NodeInfo>>>,
    connected: AtomicBool,
    /// The current failure was logged (set at the first failure after a success, or
    /// since start: a wrong password or address is warned about even if the directory
    /// never answered).
    failure_logged: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_ok: Mutex<Option<Instant>>,
    /// Bumped every time the directory answers again after a failure (and once at the
    /// first success): whoever keeps state in Redis re-writes all of it then.
    reconnects: tokio::sync::watch::Sender<u64>,
    /// Park fields this node failed to delete are still in Redis: the liveness record is
    /// not written until they are gone.
    owes_deletions: tokio::sync::watch::Sender<bool>,
    /// Round trips by purpose (`tryst_cluster_directory_round_trips_total{what}`).
    round_trips: Mutex<Vec<(&'static str, u64)>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("me", &self.me)
            .field("epoch", &self.epoch)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// A lazy connection (nothing is dialled until the first command, so a node starts
    /// while Redis is down and catches up when it comes).
    pub(super) fn new(
        config: &ClusterConfig,
        epoch: u64,
        advertise: SocketAddr,
    ) -> Result<Self, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| ClusterError::Redis(format!("{:?}", e.kind())))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| ClusterError::Redis(e.to_string()))?;
        Ok(Self {
            conn,
            client,
            me: config.node_name.clone(),
            epoch,
            advertise,
            live: RwLock::new(Arc::default()),
            connected: AtomicBool::new(false),
            failure_logged: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            last_ok: Mutex::new(None),
            reconnects: tokio::sync::watch::channel(0).0,
            owes_deletions: tokio::sync::watch::channel(false).0,
            round_trips: Mutex::new(Vec::new()),
        })
    }

    /// A clone of the connection manager (cheap; shares one multiplexed connection).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for what a multiplexed connection cannot carry (a `PubSub`).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs one command or pipeline under [`COMMAND_TIMEOUT`], recording success or
    /// failure in the directory's state.
    pub async fn run<T, F>(&self, what: &'static str, f: F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        {
            let mut trips = self.round_trips.lock().unwrap_or_else(|p| p.into_inner());
            match trips.iter_mut().find(|(w, _)| *w == what) {
                Some((_, n)) => *n += 1,
                None => trips.push((what, 1)),
            }
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
            Ok(Ok(v)) => {
                self.record_ok();
                Some(v)
            }
            Ok(Err(e)) => {
                self.record_error(what, &e.to_string());
                None
            }
            Err(_) => {
                self.record_error(what, "timed out");
                None
            }
        }
    }

    /// Round trips [`Directory::run`] made (a command, script or pipeline each), by its
    /// `what`, in first-use order.
    pub fn round_trips(&self) -> Vec<(&'static str, u64)> {
        self.round_trips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a successful command (the directory is connected).
    pub fn record_ok(&self) {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.failure_logged.store(false, Ordering::Release);
        if !self.connected.swap(true, Ordering::AcqRel) {
            tracing::info!("cluster directory connected");
            self.reconnects.send_modify(|n| *n += 1);
        }
    }

    /// Records a failed command: the directory is disconnected until the next success.
    /// Logged once per failure period (the first failure after a success, or since
    /// start), not per failure.
    pub fn record_error(&self, what: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let message = format!("{what}: {error}");
        self.connected.store(false, Ordering::Release);
        if !self.failure_logged.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %message, "cluster directory unreachable; cross-node reaches stop until it answers");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    /// Whether the last command succeeded.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// A receiver whose value changes every time the directory answers again after a
    /// failure (and at the first success): re-write your state in Redis then.
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnects.subscribe()
    }

    /// Tells the liveness loop whether this node still has park fields in Redis for
    /// parks that ended (their deletion failed). While it has, [`Directory::refresh`]
    /// re-reads the live nodes but does not write this node's record: a node cut off
    /// from the directory for longer than [`LIVENESS_TTL`] is live again for the others
    /// only once the parks that ended meanwhile are no longer advertised (otherwise they
    /// would carry clients to it, in its unchanged epoch, for keys it no longer holds).
    /// The presence writer calls it after every write.
    pub fn set_owes_deletions(&self, owes: bool) {
        self.owes_deletions
            .send_if_modified(|o| std::mem::replace(o, owes) != owes);
    }

    /// The state for `/healthz`.
    pub fn state(&self) -> DirectoryState {
        DirectoryState {
            connected: self.connected(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            errors: self.errors.load(Ordering::Relaxed),
            live_nodes: self.live.read().unwrap_or_else(|p| p.into_inner()).len(),
        }
    }

    /// The cached live peers (this node excluded), by name.
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        self.live_map().values().cloned().collect()
    }

    /// The cached live peer `name`.
    pub fn live_node(&self, name: &str) -> Option<NodeInfo> {
        self.live_map().get(name).cloned()
    }

    /// The whole cached map (cheap: an `Arc`).
    pub fn live_map(&self) -> Arc<BTreeMap<String, NodeInfo>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes this node's liveness record and re-reads the live nodes (two round trips).
    /// On failure the cache is kept for up to one TTL, then emptied.
    ///
    /// While this node owes deletions ([`Directory::set_owes_deletions`]) it first makes
    /// one round trip (a success wakes the presence writer through
    /// [`Directory::reconnects`]) and waits up to [`COMMAND_TIMEOUT`] for them; if they
    /// are still owed, the record is not written this time.
    pub async fn refresh(&self) {
        let mut c = self.conn.clone();
        if *self.owes_deletions.borrow() {
            if self
                .run::<(), _>("liveness", redis::cmd("PING").query_async(&mut c))
                .await
                .is_none()
            {
                self.expire_cache();
                return;
            }
            let mut owes = self.owes_deletions.subscribe();
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, owes.wait_for(|o| !*o)).await;
        }
        let value = format!("{} {}", self.epoch, self.advertise);
        let ttl_ms = u64::try_from(LIVENESS_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        if !*self.owes_deletions.borrow() {
            pipe.cmd("SET")
                .arg(node_key(&self.me))
                .arg(&value)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(NODES_KEY)
                .arg(&self.me)
                .ignore();
        }
        pipe.cmd("SMEMBERS").arg(NODES_KEY);
        let names: Option<(Vec<String>,)> = self.run("liveness", pipe.query_async(&mut c)).await;
        let Some((names,)) = names else {
            self.expire_cache();
            return;
        };
        let peers: Vec<String> = names.into_iter().filter(|n| *n != self.me).collect();
        let mut live = BTreeMap::new();
        if !peers.is_empty() {
            let keys: Vec<String> = peers.iter().map(|n| node_key(n)).collect();
            let Some(values) = self
                .run::<Vec<Option<String>>, _>(
                    "liveness",
                    redis::cmd("MGET").arg(&keys).query_async(&mut c),
                )
                .await
            else {
                self.expire_cache();
                return;
            };
            let mut gone = Vec::new();
            for (name, value) in peers.iter().zip(values) {
                match value.as_deref().and_then(|v| parse_record(name, v)) {
                    Some(info) => {
                        live.insert(name.clone(), info);
                    }
                    None => gone.push(name.clone()),
                }
            }
            if !gone.is_empty() {
                // A node that comes back re-adds itself within a second.
                let _ = self
                    .run::<(), _>(
                        "liveness",
                        redis::cmd("SREM")
                            .arg(NODES_KEY)
                            .arg(&gone)
                            .query_async(&mut c),
                    )
                    .await;
            }
        }
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    fn expire_cache(&self) {
        let stale = self
            .last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= LIVENESS_TTL);
        if stale {
            *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::default();
        }
    }

    /// Removes this node's liveness record (on a clean shutdown), best effort.
    pub async fn leave(&self) {
        let mut c = self.conn.clone();
        let _ = self
            .run::<(), _>(
                "leave",
                redis::pipe()
                    .cmd("DEL")
                    .arg(node_key(&self.me))
                    .ignore()
                    .cmd("SREM")
                    .arg(NODES_KEY)
                    .arg(&self.me)
                    .ignore()
                    .query_async(&mut c),
            )
            .await;
    }
}

/// Refreshes the liveness record and the live-node cache every [`LIVENESS_INTERVAL`].
pub(super) async fn liveness_loop(cluster: super::Cluster) {
    let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        cluster.directory().refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        assert_eq!(
            parse_record("a", "17 127.0.0.2:7401"),
            Some(NodeInfo {
                name: "a".into(),
                epoch: 17,
                mesh: "127.0.0.2:7401".parse().unwrap()
            })
        );
        assert_eq!(parse_record("a", "17"), None);
        assert_eq!(parse_record("a", "x 127.0.0.2:7401"), None);
        assert_eq!(parse_record("a", "1 nowhere"), None);
    }
}
