//! The routing contract between the engine and the relay, and the native router.
//!
//! Routing happens twice per connection, both pure:
//! 1. [`Router::classify`] on the worker that accepted the connection: which rendezvous
//!    key (hence which owner worker), or the HTTP service. Cheap; no proof is checked.
//! 2. [`Router::route`] on the owner worker: the full decision, proofs and replay cache
//!    included. Because every connection for a key lands on the same owner, that owner's
//!    replay cache sees every nonce for the key.

use crate::auth::{self, Operation, ProofError, ReplayCache, Secret};
use crate::head::{Method, RequestHead};
use crate::reject::Rejection;
use crate::target::{ConnectTarget, RendezvousId, RendezvousKey, parse_connect_target};

/// Where a head goes after classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A rendezvous request: handled by the worker owning this key.
    Rendezvous(RendezvousKey),
    /// Anything else: handed, with the bytes already read, to the relay's HTTP service.
    Http,
}

/// The owner's decision for a rendezvous request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A hidden server parks under `key`; it is answered `200` at once.
    Park {
        /// The key to park under.
        key: RendezvousKey,
    },
    /// A client wants the server parked under `key`; answered `200` when paired.
    Reach {
        /// The key to reach.
        key: RendezvousKey,
    },
    /// Hand to the HTTP service after all.
    Http,
    /// Refuse with this response, then close.
    Reject(Rejection),
}

/// Routing policy supplied by the relay. Implementations must be pure apart from their
/// own bounded state (replay caches): no I/O, no clock reads (time is passed in).
pub trait Router {
    /// Cheap classification on the accepting worker.
    fn classify(&self, head: &RequestHead) -> Result<Classified, Rejection>;
    /// The full decision on the owner worker. `early` are the bytes that followed the
    /// head; `now_unix` is wall-clock seconds.
    fn route(&mut self, head: &RequestHead, early: &[u8], now_unix: u64) -> Route;
    /// Re-reads whatever the router loads (secrets). Called on SIGHUP; on error the old
    /// state stays and the error is returned for logging.
    fn reload(&mut self) -> Result<(), String>;
}

/// Looks up per-id secrets for the native proof.
pub trait SecretSource {
    /// The secret for `id`, if provisioned.
    fn secret(&self, id: &RendezvousId) -> Option<&Secret>;
    /// Re-reads the source; on error the old secrets stay.
    fn reload(&mut self) -> Result<(), String>;
}

/// Settings of the native router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeRouterConfig {
    /// Accepted `|now - ts|`, seconds.
    pub proof_window_secs: u64,
    /// Replay cache capacity (entries).
    pub replay_capacity: usize,
}

impl Default for NativeRouterConfig {
    fn default() -> Self {
        Self { proof_window_secs: 60, replay_capacity: 1 << 20 }
    }
}

/// The native protocol: `CONNECT uuid:<UUID>` with a `Tryst` proof parks, without one
/// reaches; every other method goes to the HTTP service.
#[derive(Debug)]
pub struct NativeRouter<S> {
    secrets: S,
    replay: ReplayCache,
    window_secs: u64,
}

impl<S: SecretSource> NativeRouter<S> {
    /// A router over `secrets`.
    pub fn new(secrets: S, config: NativeRouterConfig) -> Self {
        Self {
            secrets,
            replay: ReplayCache::new(config.replay_capacity, config.proof_window_secs),
            window_secs: config.proof_window_secs,
        }
    }

    fn check_park(
        &mut self,
        id: &RendezvousId,
        value: &[u8],
        now_unix: u64,
    ) -> Result<(), ProofError> {
        let proof = auth::parse_proof(value)?;
        auth::verify(
            self.secrets.secret(id),
            Operation::Park,
            id,
            &proof,
            now_unix,
            self.window_secs,
        )?;
        self.replay.check_and_insert(id, &proof, now_unix)
    }
}

fn connect_id(head: &RequestHead) -> Result<RendezvousId, Rejection> {
    match parse_connect_target(&head.target)? {
        ConnectTarget::Uuid(id) => Ok(id),
    }
}

impl<S: SecretSource> Router for NativeRouter<S> {
    fn classify(&self, head: &RequestHead) -> Result<Classified, Rejection> {
        match head.method {
            Method::Connect => Ok(Classified::Rendezvous(connect_id(head)?.into())),
            Method::Other(_) => Err(Rejection::MethodNotAllowed),
            _ => Ok(Classified::Http),
        }
    }

    fn route(&mut self, head: &RequestHead, early: &[u8], now_unix: u64) -> Route {
        if head.method != Method::Connect {
            return match self.classify(head) {
                Ok(_) => Route::Http,
                Err(r) => Route::Reject(r),
            };
        }
        let id = match connect_id(head) {
            Ok(id) => id,
            Err(r) => return Route::Reject(r),
        };
        if head.header_count("proxy-authorization") > 1 {
            return Route::Reject(Rejection::MalformedProof);
        }
        match head.header("proxy-authorization") {
            None => Route::Reach { key: id.into() },
            Some(value) => {
                if let Err(e) = self.check_park(&id, value, now_unix) {
                    return Route::Reject(e.into());
                }
                if !early.is_empty() {
                    return Route::Reject(Rejection::EarlyData);
                }
                Route::Park { key: id.into() }
            }
        }
    }

    fn reload(&mut self) -> Result<(), String> {
        self.secrets.reload()
    }
}
