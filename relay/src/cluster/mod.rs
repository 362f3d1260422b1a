//! Several relay nodes as one (issue #16): a directory on Valkey/Redis and a one-hop
//! mesh between nodes. Design and operator guide: docs/cluster.md.
//!
//! Without `--cluster-redis` nothing here starts: [`resolve`] gives `None` and a node is
//! exactly the single relay it always was. With it, the supervisor (tokio side) builds
//! one [`Cluster`] handle at start ([`Cluster::new`], then [`Cluster::spawn_tasks`]) and passes clones to whatever
//! needs the cluster:
//!
//! - [`directory`]: the Redis client (a `redis::aio::ConnectionManager`, reconnecting
//!   by itself), this node's liveness record (`tryst:node:<name>`, refreshed every
//!   second with a short TTL, holding its epoch and mesh address) and the cached map of
//!   live nodes that [`Cluster::live_nodes`] reads without a round trip.
//! - [`mesh`]: the mesh listener (verifies the [`preamble`], then hands the connection
//!   to a worker as a mesh-origin connection, classified and routed like any other but
//!   never sent to the directory again: one hop at most) and the connector
//!   [`Cluster::mesh_connect`] (a warm pre-connected socket to the peer, a fresh
//!   preamble written on it).
//! - [`preamble`]: the sans-IO preamble codec and verifier (HMAC-SHA256 under the
//!   pre-shared mesh key, time window, nonce replay cache).
//!
//! - [`claims`]: what must be cluster-wide on the `CONNECT` side (proof replays,
//!   single-shot tags, replace parks), decided for the workers by `SET NX` / `PUBLISH`.
//! - [`replay`]: the HTTP families' proof replay caches made cluster-wide (Hive drains,
//!   Qredo ownership signatures, dead-drop proofs), one `SET NX` per accepted proof.
//!
//! Keys colleagues add for cluster-wide state go under the `tryst:` prefix, named in
//! docs/cluster.md's key table.

pub mod claims;
pub mod directory;
pub mod http;
pub mod mesh;
pub mod preamble;
pub mod reach;
pub mod replay;

use crate::cli::Settings;
use crate::config::{ConfigError, absolute, invalid};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use directory::{Directory, DirectoryState, NodeInfo};
pub use mesh::{MeshError, Origin};

/// Default `--mesh-listen`.
pub const DEFAULT_MESH_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 7401);
/// Shortest mesh key accepted, bytes (after trimming surrounding whitespace).
pub const MIN_PSK_LEN: usize = 16;
/// Accepted clock difference between nodes for mesh preambles, seconds.
pub const PREAMBLE_WINDOW_SECS: u64 = 30;

/// The validated cluster settings (present only with `--cluster-redis`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis/Valkey URL as the `redis` crate takes it (`redis://…`, `rediss://…`
    /// or `unix:///path`); may hold a password, so never printed (see
    /// [`ClusterConfig::describe_redis`]).
    pub redis_url: String,
    /// This node's name (1..=64 bytes of `[A-Za-z0-9._-]`, unique in the cluster).
    pub node_name: String,
    /// Where the mesh listener binds.
    pub mesh_listen: SocketAddr,
    /// The address other nodes dial; `None`: the bound mesh address (which must then
    /// not be a wildcard address).
    pub mesh_advertise: Option<SocketAddr>,
    /// The file holding the pre-shared mesh key (read by the supervisor at start).
    pub mesh_psk_file: PathBuf,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.describe_redis())
            .field("node_name", &self.node_name)
            .field("mesh_listen", &self.mesh_listen)
            .field("mesh_advertise", &self.mesh_advertise)
            .field("mesh_psk_file", &self.mesh_psk_file)
            .finish()
    }
}

impl ClusterConfig {
    /// The Redis endpoint without credentials: `unix:<path>` or `<host>:<port>`.
    pub fn describe_redis(&self) -> String {
        if let Some(path) = self.redis_url.strip_prefix("unix://") {
            let path = path.split('?').next().unwrap_or(path);
            return format!("unix:{path}");
        }
        let rest = self
            .redis_url
            .split_once("://")
            .map_or(self.redis_url.as_str(), |(_, r)| r);
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        host.split(['/', '?']).next().unwrap_or(host).to_owned()
    }
}

/// `--cluster-redis` and friends → [`ClusterConfig`], or `None` without
/// `--cluster-redis` (then every other cluster flag is refused: it would do nothing).
pub fn resolve(
    s: &Settings,
    cwd: &Result<&Path, std::io::Error>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(url) = s.cluster_redis.as_deref().filter(|u| !u.is_empty()) else {
        for (given, key) in [
            (s.node_name.is_some(), "node-name"),
            (s.mesh_listen.is_some(), "mesh-listen"),
            (s.mesh_advertise.is_some(), "mesh-advertise"),
            (s.mesh_psk_file.is_some(), "mesh-psk-file"),
        ] {
            if given {
                return Err(invalid(key, "needs --cluster-redis"));
            }
        }
        return Ok(None);
    };
    let redis_url = if url.starts_with('/') {
        format!("unix://{url}")
    } else if ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        url.to_owned()
    } else {
        return Err(invalid(
            "cluster-redis",
            "must be a redis:// or rediss:// URL, or an absolute unix socket path",
        ));
    };
    if let Err(e) = redis::Client::open(redis_url.as_str()) {
        // The crate's message names the problem, not the URL (which may hold a password).
        return Err(invalid(
            "cluster-redis",
            &format!("not a Redis URL: {:?}", e.kind()),
        ));
    }
    let node_name = match &s.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    if !preamble::valid_name(&node_name) {
        return Err(invalid(
            "node-name",
            "must be 1 to 64 characters of A-Z a-z 0-9 . _ - (default: the host name, when it fits)",
        ));
    }
    let Some(psk) = &s.mesh_psk_file else {
        return Err(invalid(
            "mesh-psk-file",
            "is required with --cluster-redis (the same key file on every node)",
        ));
    };
    let mesh_listen = s.mesh_listen.unwrap_or(DEFAULT_MESH_LISTEN);
    if let Some(a) = s.mesh_advertise
        && (a.ip().is_unspecified() || a.port() == 0)
    {
        return Err(invalid(
            "mesh-advertise",
            "must be an address other nodes can dial (not 0.0.0.0, not port 0)",
        ));
    }
    Ok(Some(ClusterConfig {
        redis_url,
        node_name,
        mesh_listen,
        mesh_advertise: s.mesh_advertise,
        mesh_psk_file: absolute(psk.clone(), cwd)?,
    }))
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The mesh key file could not be read.
    #[error("cannot read mesh key file {path}: {source}")]
    PskRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The mesh key is too short.
    #[error("mesh key file {path} holds fewer than {MIN_PSK_LEN} bytes of key")]
    PskShort {
        /// The file.
        path: PathBuf,
    },
    /// The mesh listener could not be bound or read.
    #[error("cannot listen for the mesh on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No address for other nodes to dial.
    #[error("the mesh listens on {0}, which other nodes cannot dial: pass --mesh-advertise ADDR")]
    NoAdvertise(SocketAddr),
    /// The Redis client could not be built.
    #[error("cluster directory: {0}")]
    Redis(String),
}

/// Reads the mesh key: the file's bytes with surrounding whitespace trimmed, at least
/// [`MIN_PSK_LEN`] of them. Warns (as for the secrets file) when group or others may
/// read it. The key is never printed.
pub fn load_psk(path: &Path) -> Result<Vec<u8>, ClusterError> {
    let err = |source| ClusterError::PskRead {
        path: path.to_owned(),
        source,
    };
    crate::secrets::warn_if_accessible(path, &std::fs::metadata(path).map_err(err)?);
    let bytes = std::fs::read(path).map_err(err)?;
    let key = bytes.trim_ascii();
    if key.len() < MIN_PSK_LEN {
        return Err(ClusterError::PskShort {
            path: path.to_owned(),
        });
    }
    Ok(key.to_vec())
}

/// Counters of the cluster parts, shown in `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Connections this node carried to another node for a client (cross-node reaches
    /// out).
    pub reaches_out: AtomicU64,
    /// Mesh connections accepted from other nodes and handed to a worker (reaches in).
    pub reaches_in: AtomicU64,
    /// Lookups (clients waiting for a key not parked here) that ended without a node
    /// to carry them to: the client got its family's "not parked" from this node.
    pub lookups_unfound: AtomicU64,
    /// Lookups not started because [`reach::MAX_LOOKUPS`] were in flight (the client
    /// waited for a local park only).
    pub lookups_dropped: AtomicU64,
    /// Mesh connects that failed (dial or preamble write).
    pub mesh_connect_errors: AtomicU64,
    /// Preamble and head bytes this node wrote to mesh connections.
    pub mesh_bytes_out: AtomicU64,
    /// Preamble and head bytes read from accepted mesh connections.
    pub mesh_bytes_in: AtomicU64,
    /// Tunnel bytes the workers wrote to mesh connections (their total, copied here by
    /// the supervisor: [`Cluster::set_tunnel_bytes`]).
    pub tunnel_bytes_out: AtomicU64,
    /// Tunnel bytes the workers read from mesh connections (likewise).
    pub tunnel_bytes_in: AtomicU64,
    /// Refused mesh connections, by [`preamble::Refusal::index`].
    pub mesh_refused: [AtomicU64; 8],
}

/// The cluster, as the supervisor's tokio side sees it. Cheap to clone (one `Arc`);
/// every method is usable from any task.
///
/// ```text
/// cluster.node()                 this node's name
/// cluster.epoch()                this run's epoch (unix ms at start)
/// cluster.redis()                a ConnectionManager clone for your own commands
/// cluster.live_nodes()           cached live peers (no round trip), this node excluded
/// cluster.mesh_connect(n, o)     a TcpStream to node n with a fresh preamble written
/// cluster.state()                directory connected / last error, for /healthz
/// ```
#[derive(Clone, Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClusterConfig,
    epoch: u64,
    psk: Vec<u8>,
    advertise: SocketAddr,
    directory: Directory,
    stats: ClusterStats,
    warm: mesh::WarmPool,
    clients: mesh::MeshClients,
}

impl Cluster {
    /// Builds the handle: reads the mesh key, creates the (lazy) Redis connection and
    /// the directory's cache. `mesh_local` is the bound mesh listener's address (the
    /// advertised address unless `--mesh-advertise` says otherwise). Needs a tokio
    /// runtime context; starts no task (see [`Cluster::spawn_tasks`]).
    pub fn new(config: ClusterConfig, mesh_local: SocketAddr) -> Result<Self, ClusterError> {
        let psk = load_psk(&config.mesh_psk_file)?;
        let advertise = match config.mesh_advertise {
            Some(a) => a,
            None if mesh_local.ip().is_unspecified() => {
                return Err(ClusterError::NoAdvertise(mesh_local));
            }
            None => mesh_local,
        };
        let epoch = crate::clock::unix_now_ms();
        let directory = Directory::new(&config, epoch, advertise)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                epoch,
                psk,
                advertise,
                directory,
                stats: ClusterStats::default(),
                warm: mesh::WarmPool::default(),
                clients: mesh::MeshClients::default(),
            }),
        })
    }

    /// Starts the background tasks: the directory's liveness loop and the warm-socket
    /// keeper. Call once, inside the runtime.
    pub fn spawn_tasks(&self) {
        tokio::spawn(directory::liveness_loop(self.clone()));
        tokio::spawn(mesh::warm_loop(self.clone()));
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.config.node_name
    }

    /// This run's epoch: unix milliseconds when the handle was built. A restarted node
    /// has a larger one, so entries a previous run left behind are told apart.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The address other nodes dial for this node's mesh.
    pub fn advertise(&self) -> SocketAddr {
        self.inner.advertise
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The directory (Redis connection, liveness cache).
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// A clone of the Redis connection manager for commands of your own. It reconnects
    /// by itself; every command times out after [`directory::COMMAND_TIMEOUT`], so an
    /// unreachable Redis costs a bounded wait, never a hang. Report failures with
    /// [`Directory::record_error`] so `/healthz` shows them.
    pub fn redis(&self) -> redis::aio::ConnectionManager {
        self.inner.directory.connection()
    }

    /// The live peers (this node excluded) as last read from the directory (at most
    /// about a second old; empty while the directory is unreachable for longer than a
    /// liveness TTL, so a node cut off from Redis forwards nowhere).
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        self.inner.directory.live_nodes()
    }

    /// The live peer called `name`, if any.
    pub fn live_node(&self, name: &str) -> Option<NodeInfo> {
        self.inner.directory.live_node(name)
    }

    /// Directory state for `/healthz`.
    pub fn state(&self) -> DirectoryState {
        self.inner.directory.state()
    }

    /// The counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.inner.stats
    }

    pub(crate) fn psk(&self) -> &[u8] {
        &self.inner.psk
    }

    pub(crate) fn warm(&self) -> &mesh::WarmPool {
        &self.inner.warm
    }

    /// The clients' addresses of mesh connections handed to the workers.
    pub fn clients(&self) -> &mesh::MeshClients {
        &self.inner.clients
    }

    /// The client carried by the accepted mesh connection whose remote address is
    /// `conn` (from its verified preamble), once.
    pub fn mesh_client(&self, conn: SocketAddr) -> Option<SocketAddr> {
        self.inner.clients.take(conn)
    }

    /// A connection to live node `node`'s mesh listener with a fresh preamble already
    /// written (sending node, `origin`'s transport and peer, time, nonce, MAC): write
    /// the client's head next, verbatim. Takes a warm pre-connected socket when one is
    /// ready, else dials (bounded by [`mesh::CONNECT_TIMEOUT`]).
    pub async fn mesh_connect(
        &self,
        node: &str,
        origin: Origin,
    ) -> Result<tokio::net::TcpStream, MeshError> {
        mesh::connect(self, node, origin).await
    }

    /// The workers' totals of cross-node tunnel bytes written to (`out`) and read from
    /// (`inn`) mesh connections; the supervisor copies them here every loop turn.
    pub fn set_tunnel_bytes(&self, out: u64, inn: u64) {
        let s = &self.inner.stats;
        s.tunnel_bytes_out.store(out, Ordering::Relaxed);
        s.tunnel_bytes_in.store(inn, Ordering::Relaxed);
    }

    /// Every byte on mesh connections so far: (out, in) = preambles, carried heads and
    /// requests, and both directions of cross-node tunnels.
    pub fn mesh_bytes(&self) -> (u64, u64) {
        let s = &self.inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            g(&s.mesh_bytes_out) + g(&s.tunnel_bytes_out),
            g(&s.mesh_bytes_in) + g(&s.tunnel_bytes_in),
        )
    }

    /// Counts a mesh refusal by reason.
    pub fn count_refusal(&self, r: preamble::Refusal) {
        self.inner.stats.mesh_refused[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the cluster's `/metrics` lines.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let st = self.state();
        let s = &self.inner.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP tryst_cluster_directory_connected 1 when the last directory command succeeded.\n\
             # TYPE tryst_cluster_directory_connected gauge\n\
             tryst_cluster_directory_connected {}\n\
             # HELP tryst_cluster_directory_errors_total Directory commands that failed.\n\
             # TYPE tryst_cluster_directory_errors_total counter\n\
             tryst_cluster_directory_errors_total {}\n\
             # HELP tryst_cluster_live_nodes Live peer nodes in the directory (this node excluded).\n\
             # TYPE tryst_cluster_live_nodes gauge\n\
             tryst_cluster_live_nodes {}\n\
             # HELP tryst_cluster_reaches_total Cross-node reaches: out = clients' reaches carried from here to another node, in = mesh connections accepted from another node (carried reaches and carried HTTP requests).\n\
             # TYPE tryst_cluster_reaches_total counter\n\
             tryst_cluster_reaches_total{{direction=\"out\"}} {}\n\
             tryst_cluster_reaches_total{{direction=\"in\"}} {}\n\
             # HELP tryst_cluster_lookups_total Lookups of keys not parked on this node that found no node to carry the client to, or were not started (too many in flight).\n\
             # TYPE tryst_cluster_lookups_total counter\n\
             tryst_cluster_lookups_total{{outcome=\"unfound\"}} {}\n\
             tryst_cluster_lookups_total{{outcome=\"dropped\"}} {}\n\
             # HELP tryst_mesh_connect_errors_total Mesh connections to other nodes that failed: dial, preamble, or closed without answering a carried client.\n\
             # TYPE tryst_mesh_connect_errors_total counter\n\
             tryst_mesh_connect_errors_total {}\n\
             # HELP tryst_mesh_bytes_total Bytes on mesh connections: preambles, carried heads and requests, and both directions of cross-node tunnels (out = written to another node, in = read from one).\n\
             # TYPE tryst_mesh_bytes_total counter\n\
             tryst_mesh_bytes_total{{direction=\"out\"}} {}\n\
             tryst_mesh_bytes_total{{direction=\"in\"}} {}\n\
             # HELP tryst_mesh_refused_total Mesh connections refused, by reason.\n\
             # TYPE tryst_mesh_refused_total counter\n",
            u8::from(st.connected),
            st.errors,
            st.live_nodes,
            g(&s.reaches_out),
            g(&s.reaches_in),
            g(&s.lookups_unfound),
            g(&s.lookups_dropped),
            g(&s.mesh_connect_errors),
            self.mesh_bytes().0,
            self.mesh_bytes().1,
        );
        for r in preamble::Refusal::ALL {
            let _ = writeln!(
                out,
                "tryst_mesh_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                g(&s.mesh_refused[r.index()])
            );
        }
        out.push_str(
            "# HELP tryst_cluster_directory_round_trips_total Directory round trips this node made (a command, script or pipeline each; pub/sub pushes not counted), by purpose.\n\
             # TYPE tryst_cluster_directory_round_trips_total counter\n",
        );
        for (what, n) in self.directory().round_trips() {
            let _ = writeln!(
                out,
                "tryst_cluster_directory_round_trips_total{{what=\"{what}\"}} {n}"
            );
        }
    }

    /// The `cluster` object of `/healthz` (JSON).
    pub fn healthz_json(&self) -> serde_json::Value {
        let st = self.state();
        let s = &self.inner.stats;
        serde_json::json!({
            "node": self.node(),
            "epoch": self.epoch(),
            "mesh": self.advertise().to_string(),
            "directory": {
                "connected": st.connected,
                "last_error": st.last_error,
                "live_nodes": self.live_nodes().iter().map(|n| serde_json::json!({
                    "name": n.name,
                    "epoch": n.epoch,
                    "mesh": n.mesh.to_string(),
                })).collect::<Vec<_>>(),
            },
            "reaches": {
                "out": s.reaches_out.load(Ordering::Relaxed),
                "in": s.reaches_in.load(Ordering::Relaxed),
            },
            "mesh_bytes": {
                "out": self.mesh_bytes().0,
                "in": self.mesh_bytes().1,
            },
        })
    }
}

/// The cluster in the supervisor's family list: no paths, its lines in `/metrics` and
/// its object in `/healthz`.
impl crate::family::ServiceFamily for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn render_metrics(&self, out: &mut String) {
        Self::render_metrics(self, out);
    }

    fn health(&self) -> Option<(&'static str, serde_json::Value)> {
        Some(("cluster", self.healthz_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Settings {
        Settings {
            cluster_redis: Some(url.into()),
            node_name: Some("a".into()),
            mesh_psk_file: Some("psk".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn without_cluster_redis_nothing_and_other_flags_refused() {
        let cwd = Ok(Path::new("/cwd"));
        assert_eq!(resolve(&Settings::default(), &cwd).unwrap(), None);
        let s = Settings {
            mesh_listen: Some("127.0.0.1:1".parse().unwrap()),
            ..Settings::default()
        };
        let e = resolve(&s, &cwd).unwrap_err().to_string();
        assert_eq!(e, "invalid `mesh-listen`: needs --cluster-redis");
    }

    #[test]
    fn urls_paths_and_names() {
        let cwd = Ok(Path::new("/cwd"));
        let c = resolve(&settings("/run/redis.sock"), &cwd)
            .unwrap()
            .unwrap();
        assert_eq!(c.redis_url, "unix:///run/redis.sock");
        assert_eq!(c.describe_redis(), "unix:/run/redis.sock");
        assert_eq!(c.mesh_psk_file, PathBuf::from("/cwd/psk"));
        assert_eq!(c.mesh_listen, DEFAULT_MESH_LISTEN);
        let c = resolve(&settings("redis://:hunter2@db.internal:6380/0"), &cwd)
            .unwrap()
            .unwrap();
        assert_eq!(c.describe_redis(), "db.internal:6380");
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = resolve(&settings("http://x"), &cwd)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid `cluster-redis`"), "{e}");
        let mut s = settings("redis://x");
        s.node_name = Some("a b".into());
        assert!(resolve(&s, &cwd).is_err());
        let mut s = settings("redis://x");
        s.mesh_psk_file = None;
        let e = resolve(&s, &cwd).unwrap_err().to_string();
        assert!(e.contains("mesh-psk-file"), "{e}");
        let mut s = settings("redis://x");
        s.mesh_advertise = Some("0.0.0.0:7401".parse().unwrap());
        assert!(resolve(&s, &cwd).is_err());
    }

    #[test]
    fn psk_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("psk");
        std::fs::write(&p, "short\n").unwrap();
        assert!(matches!(load_psk(&p), Err(ClusterError::PskShort { .. })));
        std::fs::write(&p, "  0123456789abcdef0123\n").unwrap();
        assert_eq!(load_psk(&p).unwrap(), b"0123456789abcdef0123");
        let e = load_psk(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, ClusterError::PskRead { .. }));
    }
}
