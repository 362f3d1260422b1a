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
//! - [`service`]: the HTTP adapter ([`Hive`], its [`crate::family::ServiceFamily`]),
//!   served by [`crate::http`].
//! - here: [`HiveConfig`], [`HiveSettings`] (its flags) and [`resolve`].
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
pub mod verify;

use crate::duration::HumanDuration;
use board::BoardLimits;
use forward::ForwardLimits;
use std::time::Duration;
use store::StoreLimits;

pub use service::Hive;
pub use verify::{
    PublicationError, PublicationPolicy, SignatureError, VerifiedPublication, verify_publication,
    verify_strict,
};

/// Settings of the Hive family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiveConfig {
    /// Publication checks (TTL cap, skew window).
    pub policy: PublicationPolicy,
    /// Publication caps.
    pub store: StoreLimits,
    /// Forward mailbox limits.
    pub forward: ForwardLimits,
    /// How long a forward drain waits for data before 204.
    pub poll_timeout: Duration,
    /// The unsigned candidates board, or `None` (off: its paths answer 404).
    pub board: Option<BoardLimits>,
    /// Peer relays to mirror publications with (`http://host:port`).
    pub mirrors: Vec<mirror::MirrorPeer>,
    /// How often each peer is pulled.
    pub mirror_interval: Duration,
}

impl Default for HiveConfig {
    fn default() -> Self {
        Self {
            policy: PublicationPolicy::default(),
            store: StoreLimits::default(),
            forward: ForwardLimits::default(),
            poll_timeout: Duration::from_secs(25),
            board: None,
            mirrors: Vec::new(),
            mirror_interval: Duration::from_secs(10),
        }
    }
}

impl HiveConfig {
    /// Its `--check-config` line: the mirror peers, when there are any (none is
    /// contacted).
    pub fn summary_line(&self) -> String {
        if self.mirrors.is_empty() {
            return String::new();
        }
        let peers: Vec<String> = self.mirrors.iter().map(ToString::to_string).collect();
        format!("hive mirrors    {}\n", peers.join(", "))
    }
}

/// The Hive flags (publications, mirrors, forward mailboxes, board; config keys of the
/// same names).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct HiveSettings {
    /// Cap on a Hive publication's TTL (/v1/rendezvous), whole seconds [default: 300s].
    #[arg(long, env = "TRYST_MAX_TTL", value_name = "DURATION")]
    pub max_ttl: Option<HumanDuration>,
    /// Most Hive publications per workspace; 503 beyond, after evicting expired ones [default: 256].
    #[arg(long, env = "TRYST_HIVE_MAX_PER_WORKSPACE", value_name = "N")]
    pub hive_max_per_workspace: Option<usize>,
    /// Most Hive publications in total; 503 beyond, after evicting expired ones [default: 65536].
    #[arg(long, env = "TRYST_HIVE_MAX_PUBLICATIONS", value_name = "N")]
    pub hive_max_publications: Option<usize>,
    /// A peer relay to mirror Hive publications with, http://host:port; repeatable (environment: comma-separated) [default: none].
    #[arg(long, env = "TRYST_MIRROR", value_name = "URL", value_delimiter = ',')]
    pub mirror: Option<Vec<String>>,
    /// How often each --mirror peer is pulled [default: 10s].
    #[arg(long, env = "TRYST_MIRROR_INTERVAL", value_name = "DURATION")]
    pub mirror_interval: Option<HumanDuration>,
    /// How long a /v1/forward drain waits for data before 204 [default: 25s].
    #[arg(long, env = "TRYST_FORWARD_POLL_TIMEOUT", value_name = "DURATION")]
    pub forward_poll_timeout: Option<HumanDuration>,
    /// Most bytes queued in one /v1/forward mailbox; 429 beyond [default: 4194304].
    #[arg(long, env = "TRYST_FORWARD_MAILBOX_BYTES", value_name = "BYTES")]
    pub forward_mailbox_bytes: Option<usize>,
    /// Most bytes queued in all /v1/forward mailboxes; 503 beyond [default: 268435456].
    #[arg(long, env = "TRYST_FORWARD_TOTAL_BYTES", value_name = "BYTES")]
    pub forward_total_bytes: Option<usize>,
    /// Serve Hive's unsigned candidates board (/v1/workspaces/{id}/candidates) [default: false].
    #[arg(long, env = "TRYST_HIVE_BOARD", value_name = "BOOL")]
    pub hive_board: Option<bool>,
}

crate::config_keys::impl_settings_or!(HiveSettings {
    max_ttl,
    hive_max_per_workspace,
    hive_max_publications,
    mirror,
    mirror_interval,
    forward_poll_timeout,
    forward_mailbox_bytes,
    forward_total_bytes,
    hive_board,
});

/// The Hive family settings: defaults, overridden and validated.
pub fn resolve(
    s: &HiveSettings,
    cx: &crate::families::ResolveContext<'_>,
) -> Result<HiveConfig, crate::config::ConfigError> {
    let proof_window_secs = cx.proof_window.as_secs();
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
        h.board = Some(BoardLimits::default());
    }
    Ok(h)
}

/// Its settings as `tryst serve` resolves them (flags, config keys, refusals).
#[cfg(test)]
mod settings_tests {
    use super::*;
    use crate::cli::Settings;
    use crate::config::tests::resolve;
    use crate::config::{ConfigError, parse_config};

    #[test]
    fn proof_window_governs_the_hive_drain_proof() {
        let c = resolve(Settings::default()).unwrap();
        assert_eq!(c.families.hive.forward.proof_window_secs, 60);
        let c = resolve(parse_config("proof-window = \"30s\"\n").unwrap()).unwrap();
        assert_eq!(c.families.hive.forward.proof_window_secs, 30);
        assert_eq!(c.proof_window_secs, 30);
    }

    #[test]
    fn hive_settings_default_parse_and_validate() {
        let c = resolve(Settings::default()).unwrap();
        assert_eq!(c.families.hive, HiveConfig::default());
        assert_eq!(c.families.hive.policy.max_ttl_secs, 300);
        assert_eq!(c.families.hive.board, None);
        let s = parse_config(
            "max-ttl = \"90s\"\nhive-max-per-workspace = 3\nhive-max-publications = 7\n\
             mirror = [\"http://127.0.0.1:7400\", \"http://[::1]:9/\"]\nmirror-interval = \"500ms\"\n\
             forward-poll-timeout = \"2s\"\nforward-mailbox-bytes = 2097152\n\
             forward-total-bytes = 8388608\nhive-board = true\n",
        )
        .unwrap();
        let h = resolve(s).unwrap().families.hive;
        assert_eq!(h.policy.max_ttl_secs, 90);
        assert_eq!(h.policy.skew_secs, 300);
        assert_eq!((h.store.max_per_workspace, h.store.max_total), (3, 7));
        assert_eq!(h.mirrors.len(), 2);
        assert_eq!(h.mirrors[1].host, "::1");
        assert_eq!(h.mirror_interval, Duration::from_millis(500));
        assert_eq!(h.poll_timeout, Duration::from_secs(2));
        assert_eq!(h.forward.max_mailbox_bytes, 2 << 20);
        assert_eq!(h.forward.max_total_bytes, 8 << 20);
        assert!(h.board.is_some());
        for (text, key) in [
            ("max-ttl = \"0s\"\n", "max-ttl"),
            ("max-ttl = \"1500ms\"\n", "max-ttl"),
            ("hive-max-per-workspace = 0\n", "hive-max-per-workspace"),
            ("hive-max-publications = 0\n", "hive-max-publications"),
            ("mirror = [\"https://a:1\"]\n", "mirror"),
            ("mirror-interval = \"0s\"\n", "mirror-interval"),
            ("forward-poll-timeout = \"0s\"\n", "forward-poll-timeout"),
            ("forward-mailbox-bytes = 1000\n", "forward-mailbox-bytes"),
            ("forward-total-bytes = 1000\n", "forward-total-bytes"),
        ] {
            match resolve(parse_config(text).unwrap()) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
    }
}
