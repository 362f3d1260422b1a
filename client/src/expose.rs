//! [`Exposer`]: a hidden server for one service, as a pool of parked connections.
//!
//! Each of `pool` parkers loops: park (fresh proof) → wait for the first bytes (the
//! pairing) → hand the tunnel to its own task (open the local target, move bytes both
//! ways) → park again at once. So a client finds a parked connection whenever fewer
//! than `pool` tunnels were opened in the time one park takes.
//!
//! Failures:
//! - transient (relay unreachable, connection lost, 5xx, a parked connection closed by
//!   the relay): the parker waits with exponential back-off and jitter ([`Backoff`]),
//!   and at least the refusal's `Retry-After` when it had one (capped at the back-off's
//!   maximum, `--backoff-max`), counts a reconnect and tries again;
//! - permanent (a 4xx refusal such as `403 bad_proof`: wrong secret or unknown id,
//!   `400 malformed_proof`): [`Exposer::run`] returns the error at once, after one
//!   attempt, so the process can exit with the relay's code in its message;
//! - local target down: the client's tunnel is closed cleanly (FIN), counted in
//!   `local_failures`, and serving continues.
//!
//! Shutdown (the `shutdown` watch turning `true`): parkers stop and close their parked
//! connections; [`Exposer::run`] then waits for open tunnels up to the drain deadline.

use crate::backoff::Backoff;
use crate::conn::{self, Error, RelayAddr, RelayStream, Timeouts};
use crate::heads;
use crate::pump::{self, Counters};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tryst_engine::auth::Secret;
use tryst_engine::target::RendezvousId;

/// Most bytes read at pairing before the local target is opened.
pub const FIRST_READ: usize = 16 * 1024;

/// How a parker builds each park request head.
#[derive(Clone)]
pub enum ParkAuth {
    /// Native HMAC proof (`Proxy-Authorization: Tryst ...`), fresh for every park.
    Native {
        /// The rendezvous id.
        id: RendezvousId,
        /// Its shared secret.
        secret: Secret,
    },
    /// The `tag:` family as a long-term publisher: the ownership proof by the key
    /// derived from the hashed tag, and at pairing the hello frame is read (and
    /// stripped) and a responder's challenge answered with `identity`, the key of an
    /// authenticated tag `<prefix>@<key>`.
    Tag {
        /// The hashed tag.
        tag: crate::tag::HashedTag,
        /// The identity key of an authenticated tag.
        identity: Option<Box<ed25519_dalek::SigningKey>>,
    },
    /// Any other family: a function returning a fresh, complete park head each call.
    Head(Arc<dyn Fn() -> Vec<u8> + Send + Sync>),
}

impl std::fmt::Debug for ParkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Native { id, .. } => write!(f, "Native({id})"),
            Self::Tag { tag, identity } => {
                write!(f, "Tag({tag:?}, identity: {})", identity.is_some())
            }
            Self::Head(_) => f.write_str("Head(<builder>)"),
        }
    }
}

impl ParkAuth {
    /// A fresh park head; a native one asks for a pairing notice (so a service that
    /// speaks first is opened as soon as a client is paired).
    fn head(&self) -> Vec<u8> {
        match self {
            Self::Native { id, secret } => {
                heads::with_pairing_notice(&heads::park_head_now(id, secret)).into_bytes()
            }
            Self::Tag { tag, .. } => crate::tag::park_request(
                tag,
                &tag.derived_signing_key(),
                heads::now_unix(),
                &heads::fresh_nonce(),
                &crate::tag::CreateOptions {
                    mode: Some(crate::tag::TagMode::LongTerm),
                    ..Default::default()
                },
            )
            .into_bytes(),
            Self::Head(build) => build(),
        }
    }
}

/// Reads the tag family's hello frame at the start of a pairing (`early` holds the
/// bytes read so far): returns the bytes after it (the responder's), and the answer to
/// send first when the responder sent a challenge.
async fn tag_hello(
    stream: &mut RelayStream,
    mut early: Vec<u8>,
    tag: &crate::tag::HashedTag,
    identity: Option<&ed25519_dalek::SigningKey>,
) -> Result<(Vec<u8>, Option<[u8; crate::tag::ANSWER_LEN]>), Error> {
    let mut chunk = [0u8; 128];
    let (challenge, len) = loop {
        match crate::tag::parse_hello(&early) {
            Ok(done) => break done,
            Err(crate::tag::FrameError::Incomplete) => {
                let n = stream.read(&mut chunk).await.map_err(Error::Lost)?;
                if n == 0 {
                    return Err(Error::Lost(std::io::ErrorKind::UnexpectedEof.into()));
                }
                early.extend_from_slice(&chunk[..n]);
            }
            Err(_) => return Err(Error::BadResponse),
        }
    };
    let answer = match (challenge.is_empty(), identity) {
        (true, _) => None,
        (false, Some(key)) => Some(crate::tag::answer_frame(key, tag, &challenge)),
        (false, None) => {
            return Err(Error::Lost(std::io::Error::other(
                "the responder sent a challenge but this tag has no identity key",
            )));
        }
    };
    Ok((early.split_off(len), answer))
}

/// One exposed service.
#[derive(Debug, Clone)]
pub struct Service {
    /// A name for logs and metrics labels.
    pub name: String,
    /// The relay.
    pub relay: RelayAddr,
    /// How to park.
    pub auth: ParkAuth,
    /// The local target, `HOST:PORT`.
    pub local: String,
    /// Parked connections kept open (at least 1).
    pub pool: usize,
    /// Time limits of each park.
    pub timeouts: Timeouts,
    /// Back-off of transient failures: first delay and cap.
    pub backoff: (Duration, Duration),
    /// How long open tunnels may finish after shutdown.
    pub drain: Duration,
}

/// Counters of one service (read by the metrics endpoint).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections parked now (gauge).
    pub parked: AtomicU64,
    /// Pairings so far.
    pub paired: AtomicU64,
    /// Transient failures followed by a retry.
    pub reconnects: AtomicU64,
    /// Tunnels whose local target could not be opened.
    pub local_failures: AtomicU64,
    /// Tunnels open now (gauge).
    pub tunnels: AtomicU64,
    /// Tunnel bytes: relay → local target in `a_to_b`, local target → relay in `b_to_a`.
    pub bytes: Counters,
}

/// A service's hidden-server pool.
#[derive(Debug)]
pub struct Exposer {
    service: Arc<Service>,
    stats: Arc<Stats>,
}

/// Why [`Exposer::run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("service {service}: {error}")]
pub struct ExposeError {
    /// The service's name.
    pub service: String,
    /// The permanent failure.
    #[source]
    pub error: Error,
}

impl Exposer {
    /// A pool for `service`.
    pub fn new(service: Service) -> Self {
        Self {
            service: Arc::new(service),
            stats: Arc::default(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.service.name
    }

    /// The counters (shared; they keep counting while `run` runs).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` turns true (then drains and returns `Ok`) or a permanent
    /// refusal (returned at once; open tunnels are dropped).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ExposeError> {
        let (tunnel_tx, mut tunnel_rx) = mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut parkers = tokio::task::JoinSet::new();
        for slot in 0..self.service.pool.max(1) {
            let parker = Parker {
                service: self.service.clone(),
                stats: self.stats.clone(),
                tunnels: tunnel_tx.clone(),
                slot,
            };
            parkers.spawn(parker.run(stop_rx.clone()));
        }
        drop(tunnel_tx);
        let failure = loop {
            tokio::select! {
                done = parkers.join_next() => match done {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(error))) => break Some(error),
                    Some(Err(join)) => break Some(Error::Lost(std::io::Error::other(join))),
                    None => break None,
                },
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        let _ = stop_tx.send(true);
                    }
                }
            }
        };
        let _ = stop_tx.send(true);
        if let Some(error) = failure {
            parkers.abort_all();
            return Err(ExposeError {
                service: self.service.name.clone(),
                error,
            });
        }
        // Drain: every tunnel task holds a sender; all gone means all tunnels ended.
        let open = self.stats.tunnels.load(Ordering::Relaxed);
        if open > 0 {
            tracing::info!(service = %self.service.name, open, drain = ?self.service.drain, "draining open tunnels");
        }
        if tokio::time::timeout(self.service.drain, tunnel_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.service.name, "drain deadline passed; closing open tunnels");
        }
        Ok(())
    }
}

/// Parks once with `head` ([`ParkAuth::head`]). Returns the connection, the bytes after
/// the 200 and whether the relay confirmed a pairing notice (which only native heads
/// ask for).
async fn park(svc: &Service, head: &[u8]) -> Result<(RelayStream, Vec<u8>, bool), Error> {
    match &svc.auth {
        ParkAuth::Native { .. } => conn::park_noticed(&svc.relay, head, &svc.timeouts).await,
        _ => conn::park_with(&svc.relay, head, &svc.timeouts)
            .await
            .map(|(stream, early)| (stream, early, false)),
    }
}

/// Waits on a parked connection until a client is paired: `Some(bytes)` with the
/// client's first bytes (empty when the relay sent a pairing notice and nothing else
/// yet), or `None` when the relay closed it. With `notice`, the relay's
/// [`conn::PAIRING_NOTICE`] comes first and is taken off; without, the client's first
/// bytes are the sign (as early bytes when a client was already waiting at the park).
async fn await_pairing(
    stream: &mut RelayStream,
    mut early: Vec<u8>,
    notice: bool,
    buf: &mut [u8],
) -> Result<Option<Vec<u8>>, Error> {
    let want = if notice {
        conn::PAIRING_NOTICE.len()
    } else {
        1
    };
    while early.len() < want {
        let n = stream.read(buf).await.map_err(Error::Lost)?;
        if n == 0 {
            return Ok(None);
        }
        early.extend_from_slice(&buf[..n]);
    }
    if !notice {
        return Ok(Some(early));
    }
    if !early.starts_with(conn::PAIRING_NOTICE) {
        return Err(Error::BadResponse);
    }
    Ok(Some(early.split_off(conn::PAIRING_NOTICE.len())))
}

struct Parker {
    service: Arc<Service>,
    stats: Arc<Stats>,
    tunnels: mpsc::Sender<()>,
    slot: usize,
}

impl Parker {
    async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let svc = &self.service;
        let mut backoff = Backoff::new(svc.backoff.0, svc.backoff.1);
        let mut buf = vec![0u8; FIRST_READ];
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let head = svc.auth.head();
            let parked = tokio::select! {
                r = park(svc, &head) => r,
                _ = stop.changed() => return Ok(()),
            };
            let transient = match parked {
                Ok((mut stream, early, notice)) => {
                    self.stats.parked.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(service = %svc.name, slot = self.slot, relay = %svc.relay.addr, notice, "parked");
                    let first = tokio::select! {
                        r = await_pairing(&mut stream, early, notice, &mut buf) => r,
                        _ = stop.changed() => {
                            self.stats.parked.fetch_sub(1, Ordering::Relaxed);
                            return Ok(());
                        }
                    };
                    self.stats.parked.fetch_sub(1, Ordering::Relaxed);
                    match first {
                        Ok(Some(early)) => {
                            backoff.reset();
                            let (early, answer) = match &svc.auth {
                                ParkAuth::Tag { tag, identity } => {
                                    let hello = tokio::time::timeout(
                                        svc.timeouts.answer,
                                        tag_hello(&mut stream, early, tag, identity.as_deref()),
                                    )
                                    .await
                                    .unwrap_or(Err(Error::Timeout(svc.timeouts.answer)));
                                    match hello {
                                        Ok(ok) => ok,
                                        Err(e) => {
                                            tracing::warn!(service = %svc.name, "pairing frame: {e}; closing");
                                            continue;
                                        }
                                    }
                                }
                                _ => (early, None),
                            };
                            self.stats.paired.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(service = %svc.name, slot = self.slot, "paired; opening {}", svc.local);
                            tokio::spawn(tunnel(
                                svc.clone(),
                                self.stats.clone(),
                                stream,
                                (early, answer),
                                self.tunnels.clone(),
                            ));
                            // The tunnel (next in this worker's queue) opens the local
                            // target first; the re-park's connect and proof come after,
                            // off the client's first-byte path.
                            tokio::task::yield_now().await;
                            continue;
                        }
                        Ok(None) => Error::Lost(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the relay closed a parked connection",
                        )),
                        Err(e) => e,
                    }
                }
                Err(e) if e.is_permanent() => {
                    tracing::error!(service = %svc.name, relay = %svc.relay.addr, "park refused: {e}");
                    return Err(e);
                }
                Err(e) => e,
            };
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            // The relay's `Retry-After` (503 `overloaded`, `room_full`, ...) lengthens
            // the wait up to the back-off's cap.
            let retry_after = transient.refusal().and_then(|r| r.retry_after);
            let delay = backoff.next_delay_at_least(retry_after.unwrap_or_default());
            tracing::warn!(service = %svc.name, slot = self.slot, retry_in = ?delay, "{transient}; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

/// One paired connection: open the local target, deliver the early bytes, join.
async fn tunnel(
    svc: Arc<Service>,
    stats: Arc<Stats>,
    relay: RelayStream,
    (early, answer): (Vec<u8>, Option<[u8; crate::tag::ANSWER_LEN]>),
    _alive: mpsc::Sender<()>,
) {
    stats.tunnels.fetch_add(1, Ordering::Relaxed);
    let local =
        match tokio::time::timeout(svc.timeouts.connect, TcpStream::connect(&svc.local)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
    let (result, unjoined) = match local {
        Ok(local) => (join(&stats, relay, local, &early, answer).await, None),
        Err(e) => (Err(("local target", e)), Some(relay)),
    };
    match result {
        Ok((up, down)) => {
            let up = up + early.len() as u64;
            tracing::info!(service = %svc.name, to_local = up, from_local = down, "tunnel closed");
        }
        Err(("local target", e)) => {
            stats.local_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(service = %svc.name, local = %svc.local, "local target unavailable: {e}; closing the client's tunnel");
        }
        Err((what, e)) => tracing::info!(service = %svc.name, "{what} ended with an error: {e}"),
    }
    if let Some(relay) = unjoined {
        // An end, not a reset: the client's first bytes may be unread here, and a
        // socket closed with unread bytes is reset (the relay passes that on).
        relay.close_gracefully(svc.timeouts.connect).await;
    }
    stats.tunnels.fetch_sub(1, Ordering::Relaxed);
}

/// Delivers the early bytes (and a tag responder's answer) and joins the relay
/// connection with the local one until both directions end. When the local target
/// could not be reached the relay connection is ended gracefully by the caller.
async fn join(
    stats: &Stats,
    mut relay: RelayStream,
    mut local: TcpStream,
    early: &[u8],
    answer: Option<[u8; crate::tag::ANSWER_LEN]>,
) -> Result<(u64, u64), (&'static str, std::io::Error)> {
    let _ = local.set_nodelay(true);
    if let Some(answer) = answer {
        // The tag family's challenge answer: the responder's first bytes from us.
        relay.write_all(&answer).await.map_err(|e| ("tunnel", e))?;
        relay.flush().await.map_err(|e| ("tunnel", e))?;
    }
    local
        .write_all(early)
        .await
        .map_err(|e| ("local target", e))?;
    stats
        .bytes
        .a_to_b
        .fetch_add(early.len() as u64, Ordering::Relaxed);
    let moved = match relay {
        RelayStream::Tcp(relay) => pump::splice_join(&relay, &local, &stats.bytes).await,
        tls => pump::copy_join(tls, local, &stats.bytes).await,
    };
    moved.map_err(|e| ("tunnel", e))
}
