//! The Hive rendezvous relay family (issue 7): signed publications
//! (`/v1/rendezvous`), their federation, forward mailboxes (`/v1/forward`) and the
//! compatibility extras (`/v1/health`, the unsigned candidates board).
//!
//! - [`record`]: the publication JSON, its encodings and limits.
//! - [`preimage`]: the canonical bytes a publication signature covers.
//! - [`verify`]: strict Ed25519 ([`verify_strict`]) and [`verify_publication`].
//! - [`store`]: the bounded publication store (sans-IO).
//! - [`forward`]: forward mailboxes, the drain proof and its replay cache (sans-IO).
//! - [`board`]: the unsigned candidates board (sans-IO, off by default).
//! - [`connect`]: the streaming fallback, the `hive:` CONNECT family (sans-IO).
//! - [`mirror`]: federation with peer relays (push and pull).
//! - [`service`]: the HTTP adapter ([`Hive`]), served by [`crate::http`].
//! - [`cluster`]: publications in the directory and forward mailbox keys, for several
//!   nodes (`--cluster-redis`).
//!
//! Everything here is sans-IO except the HTTP adapter; docs/protocol-publications.md is
//! the wire reference.

pub mod board;
pub mod cluster;
pub mod connect;
pub mod forward;
pub mod mirror;
pub mod preimage;
pub mod record;
pub mod service;
pub mod store;
use std::time::Duration;
pub mod verify;

pub use service::{Hive, HiveConfig};
pub use verify::{
    PublicationError, PublicationPolicy, SignatureError, VerifiedPublication, verify_publication,
    verify_strict,
};

/// The Hive family settings: defaults, overridden and validated.
pub fn resolve(
    s: &crate::cli::Settings,
    proof_window_secs: u64,
) -> Result<HiveConfig, crate::config::ConfigError> {
    use crate::config::{invalid, positive};
    let mut h = HiveConfig::default();
    // `--proof-window` governs the drain proof as it does every park proof.
    h.forward.proof_window_secs = i64::try_from(proof_window_secs).unwrap_or(i64::MAX);
    if let Some(t) = s.max_ttl {
        if t.0 < Duration::from_secs(1) || t.0.subsec_nanos() != 0 {
            return Err(invalid(
                "max-ttl",
                "must be a whole number of seconds, at least 1s",
            ));
        }
        h.policy.max_ttl_secs = t.0.as_secs();
    }
    if let Some(n) = s.hive_max_per_workspace {
        if n == 0 {
            return Err(invalid("hive-max-per-workspace", "must be at least 1"));
        }
        h.store.max_per_workspace = n;
    }
    if let Some(n) = s.hive_max_publications {
        if n == 0 {
            return Err(invalid("hive-max-publications", "must be at least 1"));
        }
        h.store.max_total = n;
    }
    for url in s.mirror.iter().flatten() {
        let peer = mirror::MirrorPeer::parse(url).map_err(|e| invalid("mirror", &e.to_string()))?;
        h.mirrors.push(peer);
    }
    if let Some(d) = s.mirror_interval {
        h.mirror_interval = positive("mirror-interval", d.0)?;
    }
    if let Some(d) = s.forward_poll_timeout {
        h.poll_timeout = positive("forward-poll-timeout", d.0)?;
    }
    if let Some(n) = s.forward_mailbox_bytes {
        if n < h.forward.max_body {
            return Err(invalid(
                "forward-mailbox-bytes",
                "must be at least 1048576 (one largest body)",
            ));
        }
        h.forward.max_mailbox_bytes = n;
    }
    if let Some(n) = s.forward_total_bytes {
        if n < h.forward.max_body {
            return Err(invalid(
                "forward-total-bytes",
                "must be at least 1048576 (one largest body)",
            ));
        }
        h.forward.max_total_bytes = n;
    }
    if s.hive_board == Some(true) {
        h.board = Some(board::BoardLimits::default());
    }
    Ok(h)
}
