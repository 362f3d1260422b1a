//! The Hive streaming fallback through the splice engine: the `hive:` CONNECT family.
//!
//! A published device that can be reached parks:
//! ```text
//! CONNECT hive:<ws-uuid>/<device-uuid> HTTP/1.1
//! Hive-Publication: <base64 of the exact POST /v1/rendezvous body of this device>
//! Proxy-Authorization: Hive ts=<unix secs>, nonce=<32 hex>, sig=<base64 padded>
//! ```
//! where `sig` is Ed25519 by the publication's signing key over
//! `b"hive-connect-v1\0" ‖ ws(16) ‖ device(16) ‖ ts u64 LE ‖ nonce(16)`. Its peer reaches
//! it with `CONNECT hive:<ws>/<device> HTTP/1.1` and no proof. Both are keyed by
//! `RendezvousKey::derived(KeySpace::Hive, ws ‖ device)`; pairing, splicing, limits and
//! timeouts are the engine's, and the answers are the native ones (`HTTP/1.1 200`).
//!
//! Publications are self-authenticating, so workers need no shared store: the owner
//! worker verifies the carried publication with [`verify_publication`] (strict Ed25519,
//! skew window, TTL cap), requires it to be for the target's workspace and device and
//! still fresh, then checks the proof (window `--proof-window`, default
//! [`PROOF_WINDOW_SECS`]; strict signature) and its nonce in a bounded per-worker replay
//! cache. Because every connection for a key lands on the same owner, that cache sees
//! every nonce for the device. A restarted worker has forgotten the nonces; it refuses
//! as replays the proofs stamped at or before its start second
//! (`ReplayCache::started_at`).
//!
//! The proof's parameter names (`ts`, `nonce`, `sig`) are case-sensitive (lower case),
//! as in every Hive proof; the scheme name `Hive` is not.
//!
//! Check order and refusals (engine responses, [`Rejection`]):
//! 1. target `hive:<uuid>/<uuid>` (hyphenated, any letter case) — 400 `malformed_hive_target`;
//! 2. more than one `Proxy-Authorization` — 400 `malformed_proof`; none — a reach;
//! 3. the proof header `Hive ts=, nonce=, sig=` — 400 `malformed_proof`;
//! 4. exactly one `Hive-Publication`, strict padded standard base64, verifying, and not
//!    expired at `now` — 400 `malformed_publication`;
//! 5. its workspace and device equal the target's — 403 `publication_mismatch`;
//! 6. `|now - ts| <=` the proof window — 403 `stale_timestamp`;
//! 7. the signature — 401 `hive_bad_signature` (with `WWW-Authenticate: Hive`);
//! 8. the nonce unseen for this device, and `ts` after the worker's start second — 403
//!    `replayed_nonce`; cache full — 503
//!    `replay_cache_full` (it refuses rather than forgets);
//! 9. no bytes after the head — 409 `early_data`.
//!
//! Size: the engine reads heads of at most 16 KiB. A publication body is at most
//! [`MAX_PUBLICATION_BYTES`] (8 KiB), whose base64 is at most 10,924 bytes, so a park
//! head with the largest publication is about 11.1 KiB and fits.
//!
//! Pure: no I/O, no clock reads (`now` comes from the engine).
//!
//! [`MAX_PUBLICATION_BYTES`]: super::record::MAX_PUBLICATION_BYTES

use super::forward::{HiveProof, ProofError, check_proof, parse_proof};
use super::verify::{PublicationPolicy, verify_publication};
use crate::router::SchemeFamily;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tryst_engine::auth::{self, ReplayCache};
use tryst_engine::head::RequestHead;
use tryst_engine::reject::Rejection;
use tryst_engine::route::{Classified, ReloadError, Route, Router, Transport};
use tryst_engine::target::RendezvousId;

/// Domain tag of the park proof (`b"hive-connect-v1\0"`, defined beside the shared proof
/// parser).
pub use super::forward::CONNECT_DOMAIN;
/// The proof's `Proxy-Authorization` scheme.
pub use tryst_client::hive::PROOF_SCHEME;
/// The header carrying the publication.
pub use tryst_client::hive::PUBLICATION_HEADER;
/// The scheme, with its colon.
pub use tryst_client::hive::SCHEME;
/// Default accepted `|now - ts|` for park proofs, seconds (`--proof-window` sets it).
pub const PROOF_WINDOW_SECS: u64 = 60;
/// Default replay-cache capacity per worker (nonces within the window).
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// A parsed `hive:` target (the type devices build targets with, in tryst-client).
pub use tryst_client::hive::HiveTarget;

/// Parses `hive:<ws-uuid>/<device-uuid>`: the scheme in any letter case, then two
/// hyphenated UUIDs (any letter case) separated by one `/`, nothing else.
pub fn parse_target(target: &str) -> Result<HiveTarget, Rejection> {
    let bad = Rejection::MalformedHiveTarget;
    let scheme = target.get(..SCHEME.len()).ok_or(bad)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(bad);
    }
    let rest = target.get(SCHEME.len()..).ok_or(bad)?;
    let (ws, device) = rest.split_once('/').ok_or(bad)?;
    Ok(HiveTarget {
        workspace: RendezvousId::parse(ws).map_err(|_| bad)?.0,
        device: RendezvousId::parse(device).map_err(|_| bad)?.0,
    })
}

/// Parses a `Proxy-Authorization` value as a `Hive` proof.
pub fn parse_park_proof(value: &[u8]) -> Result<HiveProof, Rejection> {
    let text = std::str::from_utf8(value).map_err(|_| Rejection::MalformedProof)?;
    parse_proof(text, PROOF_SCHEME).map_err(|_| Rejection::MalformedProof)
}

/// The header value for a park (device side), built by tryst-client.
pub use tryst_client::hive::park_proof_header;

/// Settings of the `hive:` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiveConnectConfig {
    /// How carried publications are verified (the relay's `--max-ttl` and skew).
    pub policy: PublicationPolicy,
    /// Replay-cache capacity (nonces within the window) per worker.
    pub replay_capacity: usize,
    /// Accepted `|now - ts|` for park proofs, seconds (`--proof-window`).
    pub proof_window_secs: u64,
    /// The worker's start (unix seconds): proofs stamped at or before it are refused as
    /// replays. `None`: no such rule (tests, tools).
    pub started_unix: Option<u64>,
}

impl Default for HiveConnectConfig {
    fn default() -> Self {
        Self {
            policy: PublicationPolicy::default(),
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            proof_window_secs: PROOF_WINDOW_SECS,
            started_unix: None,
        }
    }
}

/// The `hive:` scheme family (see the module documentation).
#[derive(Debug)]
pub struct HiveConnect {
    policy: PublicationPolicy,
    replay: ReplayCache,
    window_secs: u64,
}

impl HiveConnect {
    /// A family with `config`.
    pub fn new(config: HiveConnectConfig) -> Self {
        let replay =
            ReplayCache::new(config.replay_capacity, config.proof_window_secs).scoped("hive-park");
        Self {
            policy: config.policy,
            replay: match config.started_unix {
                Some(started) => replay.started_at(started),
                None => replay,
            },
            window_secs: config.proof_window_secs,
        }
    }

    /// A family verifying publications with `policy` (the relay's `--max-ttl`) and the
    /// default replay capacity.
    pub fn with_policy(policy: PublicationPolicy) -> Self {
        Self::new(HiveConnectConfig {
            policy,
            ..HiveConnectConfig::default()
        })
    }

    /// Checks a park (steps 3 to 8 of the module documentation).
    fn check_park(
        &mut self,
        target: &HiveTarget,
        head: &RequestHead,
        proof_value: &[u8],
        now_unix: u64,
    ) -> Result<(), Rejection> {
        let proof = parse_park_proof(proof_value)?;
        if head.header_count(PUBLICATION_HEADER) != 1 {
            return Err(Rejection::MalformedPublication);
        }
        let encoded = head
            .header(PUBLICATION_HEADER)
            .ok_or(Rejection::MalformedPublication)?;
        let body = STANDARD
            .decode(encoded.trim_ascii())
            .map_err(|_| Rejection::MalformedPublication)?;
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        let publication = verify_publication(&body, now, &self.policy)
            .map_err(|_| Rejection::MalformedPublication)?;
        if publication.workspace != target.workspace || publication.device != target.device {
            return Err(Rejection::PublicationMismatch);
        }
        if !publication.is_fresh(now) {
            return Err(Rejection::MalformedPublication);
        }
        let window = i64::try_from(self.window_secs).unwrap_or(i64::MAX);
        check_proof(
            &proof,
            CONNECT_DOMAIN,
            &publication.signing_key,
            (&target.workspace, &target.device),
            now,
            window,
        )
        .map_err(|e| match e {
            ProofError::Window => Rejection::StaleTimestamp,
            ProofError::Signature(_) => Rejection::HiveBadSignature,
            _ => Rejection::MalformedProof,
        })?;
        // The replay cache is per device key; its bytes name the device in the cache.
        let owner = RendezvousId(*target.key().bytes());
        let replay = auth::Proof {
            ts: proof.ts,
            ts_leading_zeros: 0,
            // 16 bytes, within a native nonce's 8 to 32.
            nonce: auth::Nonce::new(&proof.nonce).ok_or(Rejection::MalformedProof)?,
            mac: [0; 32],
        };
        self.replay
            .check_and_insert(&owner, &replay, now_unix)
            .map_err(Rejection::from)
    }
}

impl Default for HiveConnect {
    fn default() -> Self {
        Self::new(HiveConnectConfig::default())
    }
}

impl SchemeFamily for HiveConnect {
    fn scheme(&self) -> &'static str {
        SCHEME
    }
}

impl Router for HiveConnect {
    fn classify(&self, head: &RequestHead, _: Transport) -> Result<Classified, Rejection> {
        Ok(Classified::Rendezvous(parse_target(&head.target)?.key()))
    }

    fn route(&mut self, head: &RequestHead, early: &[u8], now_unix: u64, _: Transport) -> Route {
        let target = match parse_target(&head.target) {
            Ok(t) => t,
            Err(r) => return Route::Reject(r),
        };
        if head.header_count("proxy-authorization") > 1 {
            return Route::Reject(Rejection::MalformedProof);
        }
        let Some(proof) = head.header("proxy-authorization") else {
            return Route::reach(target.key());
        };
        if let Err(r) = self.check_park(&target, head, proof, now_unix) {
            return Route::Reject(r);
        }
        if !early.is_empty() {
            return Route::Reject(Rejection::EarlyData);
        }
        Route::park(target.key())
    }

    /// The park proof's replay claim (`tryst:replay:hive-park:...`).
    fn claim(&mut self, now_unix: u64) -> Option<tryst_engine::claim::Claim> {
        self.replay.take_claim(now_unix)
    }

    /// Nothing is loaded from disk: the family's state lives only in memory.
    fn reload(&mut self) -> Result<(), ReloadError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
