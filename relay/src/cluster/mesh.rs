//! The one-hop mesh: the listener that accepts other nodes' connections and the
//! connector that opens this node's to them.
//!
//! A mesh connection carries one client: the sending node writes a [`super::preamble`]
//! and then the client's head and early bytes verbatim; the receiving node verifies the
//! preamble and gives the connection (with the bytes read past the preamble) to one of
//! its workers as a *mesh-origin* connection (`tryst_engine::driver::Origin::Mesh`),
//! which classifies, routes and pairs it like any other, answers it in the client's
//! transport's style, and never looks it up in the directory again (one hop at most).
//! After the family's answer both nodes splice: the mesh socket is an ordinary tunnel
//! end on each side.
//!
//! Warm sockets: `warm_loop` keeps [`WARM_PER_PEER`] connected sockets per live peer
//! so a cross-node reach does not pay a TCP handshake. A warm socket says nothing until
//! used; the listener waits up to [`WARM_IDLE`] for its first byte (a socket closed
//! before any byte is not a refusal) and then [`PREAMBLE_DEADLINE`] for the rest of the
//! preamble. Warm sockets are replaced after [`WARM_MAX_AGE`], well inside that.

use super::Cluster;
use super::preamble::{self, MAX_PREAMBLE, Preamble, Refusal, Verifier};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tryst_engine::driver::Injector;
use tryst_engine::route::Transport;

/// Longest wait to dial a peer's mesh listener.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the listener keeps a connection that has sent nothing yet (a warm socket).
pub const WARM_IDLE: Duration = Duration::from_secs(30);
/// Warm sockets older than this are closed and replaced.
pub const WARM_MAX_AGE: Duration = Duration::from_secs(20);
/// Warm sockets kept per live peer.
pub const WARM_PER_PEER: usize = 2;
/// Once its first byte arrived, a preamble must be complete within this.
pub const PREAMBLE_DEADLINE: Duration = Duration::from_secs(2);
/// Most accepted mesh connections still sending their preamble (or warm) at once; more
/// are closed at once.
pub const MAX_PENDING: usize = 1024;
/// Most nonces the listener's replay cache remembers.
pub const REPLAY_CAPACITY: usize = 1 << 16;
/// Bytes read per receive while waiting for a preamble (what follows it is handed on).
const READ_CHUNK: usize = 4096;
/// At most one refusal warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The client side of a reach being carried to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// How the client reached this node.
    pub transport: Transport,
    /// The client's address, when this node has one (a TLS client's plaintext end
    /// does not).
    pub peer: Option<SocketAddr>,
}

/// Why a mesh connection to a peer could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The node is not (or no longer) live in the directory.
    #[error("node {0} is not live")]
    NotLive(String),
    /// Dialling or writing the preamble failed.
    #[error("mesh connection to {node}: {source}")]
    Io {
        /// The peer.
        node: String,
        /// Why.
        source: std::io::Error,
    },
    /// Dialling or writing the preamble took longer than [`CONNECT_TIMEOUT`].
    #[error("mesh connection to {0} timed out")]
    Timeout(String),
}

#[derive(Debug)]
struct Warm {
    stream: TcpStream,
    addr: SocketAddr,
    since: Instant,
}

/// Pre-connected sockets per peer node.
#[derive(Debug, Default)]
pub struct WarmPool {
    socks: Mutex<HashMap<String, Vec<Warm>>>,
}

impl WarmPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Warm>>> {
        self.socks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A usable warm socket to `node` at `addr`, if one is ready.
    fn take(&self, node: &str, addr: SocketAddr) -> Option<TcpStream> {
        let mut map = self.lock();
        let list = map.get_mut(node)?;
        while let Some(w) = list.pop() {
            if w.addr == addr && w.since.elapsed() < WARM_MAX_AGE && still_open(&w.stream) {
                return Some(w.stream);
            }
        }
        None
    }

    /// Warm sockets held now (all peers).
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// True when no warm socket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A warm socket the peer has not closed: nothing to read yet (the peer never speaks
/// first on a mesh connection).
fn still_open(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn dial(node: &str, addr: SocketAddr) -> Result<TcpStream, MeshError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| MeshError::Timeout(node.to_owned()))?
        .map_err(|source| MeshError::Io {
            node: node.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// [`Cluster::mesh_connect`].
pub(super) async fn connect(
    cluster: &Cluster,
    node: &str,
    origin: Origin,
) -> Result<TcpStream, MeshError> {
    let result = async {
        let info = cluster
            .live_node(node)
            .ok_or_else(|| MeshError::NotLive(node.to_owned()))?;
        let mut stream = match cluster.warm().take(node, info.mesh) {
            Some(s) => s,
            None => dial(node, info.mesh).await?,
        };
        let bytes = preamble::encode(
            &Preamble {
                node: cluster.node().to_owned(),
                transport: origin.transport,
                peer: origin.peer,
                unix: crate::clock::unix_now(),
                nonce: rand::random(),
            },
            cluster.psk(),
        );
        tokio::time::timeout(CONNECT_TIMEOUT, stream.write_all(&bytes))
            .await
            .map_err(|_| MeshError::Timeout(node.to_owned()))?
            .map_err(|source| MeshError::Io {
                node: node.to_owned(),
                source,
            })?;
        cluster
            .stats()
            .mesh_bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(stream)
    }
    .await;
    if result.is_err() {
        cluster
            .stats()
            .mesh_connect_errors
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Keeps [`WARM_PER_PEER`] fresh sockets per live peer, once a second.
pub(super) async fn warm_loop(cluster: Cluster) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let live = cluster.directory().live_map();
        let mut wanted = Vec::new();
        {
            let mut map = cluster.warm().lock();
            map.retain(|name, _| live.contains_key(name));
            for (name, info) in live.iter() {
                let list = map.entry(name.clone()).or_default();
                list.retain(|w| {
                    w.addr == info.mesh && w.since.elapsed() < WARM_MAX_AGE && still_open(&w.stream)
                });
                for _ in list.len()..WARM_PER_PEER {
                    wanted.push((name.clone(), info.mesh));
                }
            }
        }
        for (name, addr) in wanted {
            if let Ok(stream) = dial(&name, addr).await {
                cluster.warm().lock().entry(name).or_default().push(Warm {
                    stream,
                    addr,
                    since: Instant::now(),
                });
            }
        }
    }
}

/// Logs refusals at most once per [`WARN_INTERVAL`], saying how many were suppressed.
#[derive(Debug, Default)]
struct RefusalLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, r: Refusal) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.0 {
            Some(t) if t.elapsed() < WARN_INTERVAL => st.1 += 1,
            _ => {
                tracing::warn!(%peer, reason = r.label(), suppressed = st.1, "mesh connection refused: {r}");
                *st = (Some(Instant::now()), 0);
            }
        }
    }
}

/// Accepts mesh connections until the runtime stops: each is verified in its own task
/// and, once verified, given to a worker through `injector` as mesh-origin.
pub async fn serve(cluster: Cluster, listener: TcpListener, injector: Arc<Injector>) {
    let verifier = Arc::new(Mutex::new(Verifier::new(
        cluster.psk(),
        super::PREAMBLE_WINDOW_SECS,
        REPLAY_CAPACITY,
    )));
    let log = Arc::new(RefusalLog::default());
    let pending = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "mesh listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if pending.load(Ordering::Relaxed) >= MAX_PENDING as u64 {
            continue;
        }
        pending.fetch_add(1, Ordering::Relaxed);
        let (cluster, verifier, injector, log, pending) = (
            cluster.clone(),
            verifier.clone(),
            injector.clone(),
            log.clone(),
            pending.clone(),
        );
        tokio::spawn(async move {
            let outcome = receive(&cluster, stream, &verifier).await;
            pending.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Received::Closed => {}
                Received::Refused(r) => {
                    cluster.count_refusal(r);
                    log.refused(peer, r);
                }
                Received::Verified {
                    stream,
                    early,
                    preamble,
                } => hand_in(&cluster, &injector, stream, &early, &preamble),
            }
        });
    }
}

enum Received {
    /// Closed before sending anything (a warm socket retired by its node).
    Closed,
    Refused(Refusal),
    Verified {
        stream: TcpStream,
        early: Vec<u8>,
        preamble: Preamble,
    },
}

async fn receive(cluster: &Cluster, mut stream: TcpStream, verifier: &Mutex<Verifier>) -> Received {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    // The first byte may take as long as a warm socket waits.
    match tokio::time::timeout(WARM_IDLE, stream.read(&mut chunk)).await {
        Err(_) => return Received::Refused(Refusal::Timeout),
        Ok(Err(_) | Ok(0)) => return Received::Closed,
        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
    }
    let deadline = tokio::time::Instant::now() + PREAMBLE_DEADLINE;
    loop {
        let verdict = verifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .verify(&buf, crate::clock::unix_now());
        match verdict {
            Err(r) => return Received::Refused(r),
            Ok(Some(parsed)) => {
                cluster
                    .stats()
                    .mesh_bytes_in
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                let early = buf.split_off(parsed.len);
                return Received::Verified {
                    stream,
                    early,
                    preamble: parsed.preamble,
                };
            }
            Ok(None) if buf.len() > MAX_PREAMBLE => return Received::Refused(Refusal::Malformed),
            Ok(None) => {}
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Received::Refused(Refusal::Timeout),
            Ok(Err(_) | Ok(0)) => return Received::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Clients' own addresses (from verified preambles) by the mesh connection that
/// carries them, named by its remote address (the sending node's socket, unique while
/// the connection is open): the HTTP service looks up the peer of a mesh-origin
/// connection here, so rate limits and logs see the client, not the sending node.
/// Bounded: at most [`MeshClients::CAP`] entries, each kept at most
/// [`MeshClients::TTL`] (entries of rendezvous reaches, never looked up, expire).
#[derive(Debug, Default)]
pub struct MeshClients {
    inner: Mutex<ClientsInner>,
}

#[derive(Debug, Default)]
struct ClientsInner {
    by_conn: HashMap<SocketAddr, (SocketAddr, Instant)>,
    order: std::collections::VecDeque<(Instant, SocketAddr)>,
}

impl MeshClients {
    /// Most entries held.
    pub const CAP: usize = 65_536;
    /// Longest an entry is kept.
    pub const TTL: Duration = Duration::from_secs(60);

    /// Records that the mesh connection from `conn` carries the client at `client`.
    pub fn record(&self, conn: SocketAddr, client: SocketAddr, now: Instant) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(at, c)) = g.order.front() {
            if now.duration_since(at) < Self::TTL && g.order.len() < Self::CAP {
                break;
            }
            g.order.pop_front();
            if g.by_conn.get(&c).is_some_and(|&(_, t)| t == at) {
                g.by_conn.remove(&c);
            }
        }
        g.by_conn.insert(conn, (client, now));
        g.order.push_back((now, conn));
    }

    /// The client carried by the mesh connection from `conn` (forgotten once asked).
    pub fn take(&self, conn: SocketAddr) -> Option<SocketAddr> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_conn.remove(&conn).map(|(client, _)| client)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_conn
            .len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hand_in(cluster: &Cluster, injector: &Injector, stream: TcpStream, early: &[u8], p: &Preamble) {
    let conn = stream.peer_addr().ok();
    if let (Some(conn), Some(client)) = (conn, p.peer) {
        // Before the worker can hand it to the HTTP service.
        cluster.clients().record(conn, client, Instant::now());
    }
    let fd: OwnedFd = match stream.into_std() {
        Ok(s) => s.into(),
        Err(e) => {
            tracing::warn!(error = %e, "mesh connection: cannot take the socket from tokio");
            return;
        }
    };
    match injector.inject(fd, early, p.transport) {
        Ok(()) => {
            cluster.stats().reaches_in.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(from = %p.node, "mesh connection handed to a worker");
        }
        Err(e) => {
            if let Some(conn) = conn {
                cluster.clients().take(conn);
            }
            // Every worker's inbox full: the connection closes; the sending node's
            // client sees its tunnel end.
            tracing::warn!(from = %p.node, error = %e, "mesh connection dropped: no worker took it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_clients_are_taken_once_and_expire() {
        let c = MeshClients::default();
        let t0 = Instant::now();
        let (n1, n2): (SocketAddr, SocketAddr) = (
            "10.0.0.2:40000".parse().unwrap(),
            "10.0.0.2:40001".parse().unwrap(),
        );
        let client: SocketAddr = "198.51.100.7:5555".parse().unwrap();
        c.record(n1, client, t0);
        assert_eq!(c.take(n1), Some(client));
        assert_eq!(c.take(n1), None);
        c.record(n1, client, t0);
        c.record(n2, client, t0 + MeshClients::TTL);
        assert_eq!(c.take(n1), None, "expired when n2 came");
        assert_eq!(c.take(n2), Some(client));
        // A connection reused later (same remote port) keeps its newer entry.
        c.record(n1, client, t0);
        let other: SocketAddr = "198.51.100.8:1".parse().unwrap();
        c.record(n1, other, t0 + MeshClients::TTL / 2);
        c.record(n2, client, t0 + MeshClients::TTL);
        assert_eq!(c.take(n1), Some(other));
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn still_open_tells_a_closed_peer() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        assert!(still_open(&a));
        drop(b);
        // The FIN arrives asynchronously: wait for readability, then look.
        a.readable().await.unwrap();
        assert!(!still_open(&a));
    }
}
