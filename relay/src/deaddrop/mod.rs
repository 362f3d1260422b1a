//! The dead-drop: a hivemind-rendezvous 0.1.2a2 compatible store-and-forward mailbox
//! service on the relay's HTTP port (`GET /pubkey`, `POST /deposit`, `POST /retrieve`,
//! and tryst's `POST /ack`).
//!
//! - [`proof`]: ownership proofs (RSA-PSS SHA-256) and Python `int()` semantics, sans-IO.
//! - [`limits`]: the per-client deposit rate limit and the proof replay cache, sans-IO.
//! - [`request`]: the JSON bodies checked in upstream's order, sans-IO (takes `now`).
//! - [`store`]: the durable store behind a trait (redb, the default), the read-only
//!   [`store::Reader`], and the group-commit writer.
//! - [`pg`]: the same store on PostgreSQL (`--deaddrop-store postgres://...`), shared by
//!   several nodes; the relay key is shared through the database (docs/cluster.md).
//! - [`keys`]: the relay's RSA key pair in the data directory.
//! - `service.rs`: the async adapter [`DeadDrop`] and its
//!   [`crate::family::ServiceFamily`] (which also owns unknown paths).
//! - here: [`DeadDropConfig`], [`DeadDropSettings`] (its flags) and [`resolve`].
//!
//! The dead-drop has no `CONNECT` side, so no `connect.rs`.
//!
//! Error replies are upstream's `{"status":"error","reason":"<code>"}`; see
//! docs/compat/hivemind.md for the deliberate differences.

pub mod keys;
pub mod limits;
pub mod pg;
pub mod proof;
mod queue;
pub mod request;
mod service;
pub mod store;

use crate::duration::HumanDuration;
use std::path::PathBuf;
use std::time::Duration;
use store::StoreLimits;

pub use service::{Counters, DeadDrop};

/// Name of the relay key file inside the data directory.
pub const KEY_FILE_NAME: &str = "deaddrop-key.pem";
/// Name of the store file inside the data directory.
pub const STORE_FILE_NAME: &str = "deaddrop.redb";
/// Upstream's default and largest ttl: 7 days.
pub const MAX_TTL_SECS: i64 = 604_800;
/// Default largest payload string, bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;
/// Default most pending messages per mailbox.
pub const DEFAULT_MAX_PENDING: u64 = 256;
/// Default most mailboxes.
pub const DEFAULT_MAX_MAILBOXES: u64 = 4096;
/// Default most stored bytes (1 GiB).
pub const DEFAULT_MAX_STORE_BYTES: u64 = 1 << 30;
/// Default deposits per client per window.
pub const DEFAULT_RATE_LIMIT: usize = 60;
/// Default rate-limit window.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Live proofs remembered at most (beyond: 503 until they lapse).
pub const REPLAY_CACHE_CAP: usize = 1 << 20;
/// Store requests queued at most (beyond: 503).
pub const WRITER_QUEUE: usize = 4096;

/// Where the dead-drop keeps its messages.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The redb file [`DeadDropConfig::store_path`] (the default).
    Redb,
    /// A PostgreSQL database, by connection URL (may hold a password: never printed).
    Postgres {
        /// `postgres://...` or `postgresql:///db?host=/socket/dir`.
        url: String,
        /// Most pooled connections.
        pool_size: usize,
    },
}

impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe_without_path())
    }
}

impl StoreChoice {
    fn describe_without_path(&self) -> String {
        match self {
            Self::Redb => "redb".into(),
            Self::Postgres { url, pool_size } => {
                format!("{} pool={pool_size}", pg::describe(url))
            }
        }
    }
}

/// The dead-drop's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadDropConfig {
    /// The relay's RSA private key (PKCS#8 PEM); generated if missing. With a
    /// PostgreSQL store the key stored in the database wins (see [`pg`]).
    pub key_path: PathBuf,
    /// The redb store file.
    pub store_path: PathBuf,
    /// Which store.
    pub store: StoreChoice,
    /// Largest payload string, bytes (413 beyond).
    pub max_payload: usize,
    /// Most pending messages per mailbox (507 mailbox_full beyond).
    pub max_pending: u64,
    /// Most mailboxes (507 too_many_mailboxes beyond).
    pub max_mailboxes: u64,
    /// Most stored bytes (507 store_full beyond).
    pub max_store_bytes: u64,
    /// Deposits per client address per window (429 beyond).
    pub rate_limit: usize,
    /// The rate-limit window.
    pub rate_window: Duration,
    /// Refuse deposits without a depositor proof.
    pub require_depositor_proof: bool,
    /// Refuse envelopes without `recipient_fingerprint`.
    pub require_recipient_fingerprint: bool,
}

impl DeadDropConfig {
    /// The defaults with files in `data_dir`.
    pub fn in_dir(data_dir: &std::path::Path) -> Self {
        Self {
            key_path: data_dir.join(KEY_FILE_NAME),
            store_path: data_dir.join(STORE_FILE_NAME),
            store: StoreChoice::Redb,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_pending: DEFAULT_MAX_PENDING,
            max_mailboxes: DEFAULT_MAX_MAILBOXES,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_window: DEFAULT_RATE_WINDOW,
            require_depositor_proof: false,
            require_recipient_fingerprint: false,
        }
    }

    /// Its start-up line: `tryst: dead-drop store <store>`.
    pub fn startup_line(&self) -> String {
        format!("tryst: dead-drop store {}\n", self.describe_store())
    }

    /// Its `--check-config` line: only when not the default file, as the mirrors (the
    /// database is not contacted).
    pub fn summary_line(&self) -> String {
        match self.store {
            StoreChoice::Redb => String::new(),
            _ => format!("dead-drop store {}\n", self.describe_store()),
        }
    }

    /// The store, as printed at start-up (no password).
    pub fn describe_store(&self) -> String {
        match &self.store {
            StoreChoice::Redb => format!("redb {}", self.store_path.display()),
            other => other.describe_without_path(),
        }
    }

    fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_pending: self.max_pending,
            max_mailboxes: self.max_mailboxes,
            max_bytes: self.max_store_bytes,
        }
    }

    /// Largest request body read: room for a fully escaped payload plus the rest.
    pub fn body_limit(&self) -> usize {
        self.max_payload.saturating_mul(2).saturating_add(64 * 1024)
    }
}

/// Why the dead-drop could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadDropError {
    /// The relay key.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The store.
    #[error("dead-drop store {path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// Why.
        source: store::StoreError,
    },
    /// The PostgreSQL store.
    #[error("dead-drop store {what}: {source}")]
    Postgres {
        /// The database (no password).
        what: String,
        /// Why.
        source: store::StoreError,
    },
    /// The relay key stored in the database.
    #[error("dead-drop key in the database: not a PKCS#8 RSA private key PEM ({0})")]
    SharedKey(String),
}

/// The dead-drop flags (`tryst serve --deaddrop-*`, config keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct DeadDropSettings {
    /// The dead-drop's RSA private key, PKCS#8 PEM; its public half is served at /pubkey [default: deaddrop-key.pem in the data directory, generated (2048-bit, mode 0600) if missing].
    #[arg(long, env = "TRYST_DEADDROP_KEY", value_name = "FILE")]
    pub deaddrop_key: Option<PathBuf>,
    /// Where the dead-drop keeps messages: a PostgreSQL URL (`postgres://user@host/db`, or `postgresql:///db?host=/socket/dir`) shared by several nodes, whose database then also holds the relay key every node serves (docs/cluster.md) [default: the redb file deaddrop.redb in the data directory].
    #[arg(
        long,
        env = "TRYST_DEADDROP_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub deaddrop_store: Option<String>,
    /// Most connections the dead-drop keeps to PostgreSQL [default: 4].
    #[arg(long, env = "TRYST_DEADDROP_STORE_POOL", value_name = "N")]
    pub deaddrop_store_pool: Option<usize>,
    /// Largest dead-drop payload string in bytes; 413 beyond [default: 262144].
    #[arg(long, env = "TRYST_DEADDROP_MAX_PAYLOAD", value_name = "BYTES")]
    pub deaddrop_max_payload: Option<usize>,
    /// Most undelivered messages per dead-drop mailbox; 507 mailbox_full beyond [default: 256].
    #[arg(long, env = "TRYST_DEADDROP_MAX_PENDING", value_name = "N")]
    pub deaddrop_max_pending: Option<u64>,
    /// Most dead-drop mailboxes holding messages; 507 too_many_mailboxes beyond [default: 4096].
    #[arg(long, env = "TRYST_DEADDROP_MAX_MAILBOXES", value_name = "N")]
    pub deaddrop_max_mailboxes: Option<u64>,
    /// Most bytes the dead-drop stores; 507 store_full beyond [default: 1073741824].
    #[arg(long, env = "TRYST_DEADDROP_MAX_STORE_BYTES", value_name = "BYTES")]
    pub deaddrop_max_store_bytes: Option<u64>,
    /// Dead-drop deposits per client address per window; 429 beyond [default: 60].
    #[arg(long, env = "TRYST_DEADDROP_RATE_LIMIT", value_name = "N")]
    pub deaddrop_rate_limit: Option<usize>,
    /// The dead-drop rate-limit window [default: 60s].
    #[arg(long, env = "TRYST_DEADDROP_RATE_WINDOW", value_name = "DURATION")]
    pub deaddrop_rate_window: Option<HumanDuration>,
    /// Refuse dead-drop deposits without a depositor ownership proof [default: false].
    #[arg(
        long,
        env = "TRYST_DEADDROP_REQUIRE_DEPOSITOR_PROOF",
        value_name = "BOOL"
    )]
    pub deaddrop_require_depositor_proof: Option<bool>,
    /// Refuse dead-drop envelopes without recipient_fingerprint [default: false].
    #[arg(
        long,
        env = "TRYST_DEADDROP_REQUIRE_RECIPIENT_FINGERPRINT",
        value_name = "BOOL"
    )]
    pub deaddrop_require_recipient_fingerprint: Option<bool>,
}

crate::config_keys::impl_settings_or!(DeadDropSettings {
    deaddrop_key,
    deaddrop_store,
    deaddrop_store_pool,
    deaddrop_max_payload,
    deaddrop_max_pending,
    deaddrop_max_mailboxes,
    deaddrop_max_store_bytes,
    deaddrop_rate_limit,
    deaddrop_rate_window,
    deaddrop_require_depositor_proof,
    deaddrop_require_recipient_fingerprint,
});

/// The dead-drop settings: defaults in `data_dir`, overridden and validated.
pub fn resolve(
    s: &DeadDropSettings,
    cx: &crate::families::ResolveContext<'_>,
) -> Result<DeadDropConfig, crate::config::ConfigError> {
    use crate::config::{absolute, invalid};
    let (data_dir, cwd) = (cx.data_dir, cx.cwd);
    let mut d = DeadDropConfig::in_dir(data_dir);
    if let Some(key) = &s.deaddrop_key {
        d.key_path = absolute(key.clone(), cwd)?;
    }
    if let Some(n) = s.deaddrop_store_pool
        && !(1..=1024).contains(&n)
    {
        return Err(invalid("deaddrop-store-pool", "must be between 1 and 1024"));
    }
    match s.deaddrop_store.as_deref() {
        None | Some("") => {
            if s.deaddrop_store_pool.is_some() {
                return Err(invalid(
                    "deaddrop-store-pool",
                    "needs --deaddrop-store postgres://...",
                ));
            }
        }
        Some(url) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "deaddrop-store",
                    "must be a postgres:// or postgresql:// URL",
                ));
            }
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                // The parser's message never repeats the URL (which may hold a password).
                return Err(invalid(
                    "deaddrop-store",
                    &format!("not a PostgreSQL URL: {e}"),
                ));
            }
            d.store = StoreChoice::Postgres {
                url: url.to_owned(),
                pool_size: s.deaddrop_store_pool.unwrap_or(pg::DEFAULT_POOL_SIZE),
            };
        }
    }
    if let Some(n) = s.deaddrop_max_payload {
        if !(1..=64 << 20).contains(&n) {
            return Err(invalid(
                "deaddrop-max-payload",
                "must be between 1 and 67108864",
            ));
        }
        d.max_payload = n;
    }
    if let Some(n) = s.deaddrop_max_pending {
        if n == 0 {
            return Err(invalid("deaddrop-max-pending", "must be at least 1"));
        }
        d.max_pending = n;
    }
    if let Some(n) = s.deaddrop_max_mailboxes {
        if n == 0 {
            return Err(invalid("deaddrop-max-mailboxes", "must be at least 1"));
        }
        d.max_mailboxes = n;
    }
    if let Some(n) = s.deaddrop_max_store_bytes {
        d.max_store_bytes = n;
    }
    if let Some(n) = s.deaddrop_rate_limit {
        if n == 0 {
            return Err(invalid("deaddrop-rate-limit", "must be at least 1"));
        }
        d.rate_limit = n;
    }
    if let Some(w) = s.deaddrop_rate_window {
        if w.0 < Duration::from_millis(1) {
            return Err(invalid("deaddrop-rate-window", "must be at least 1ms"));
        }
        d.rate_window = w.0;
    }
    if let Some(b) = s.deaddrop_require_depositor_proof {
        d.require_depositor_proof = b;
    }
    if let Some(b) = s.deaddrop_require_recipient_fingerprint {
        d.require_recipient_fingerprint = b;
    }
    Ok(d)
}

/// Its settings as `tryst serve` resolves them (flags, config keys, refusals).
#[cfg(test)]
mod settings_tests {
    use crate::cli::Settings;
    use crate::config::tests::resolve;
    use crate::config::{ConfigError, parse_config};

    #[test]
    fn deaddrop_store_default_parse_and_validate() {
        use crate::deaddrop::StoreChoice;
        let c = resolve(Settings::default()).unwrap();
        assert_eq!(c.families.deaddrop.store, StoreChoice::Redb);
        assert_eq!(
            c.families.deaddrop.describe_store(),
            "redb /home/u/.local/share/tryst/deaddrop.redb"
        );
        let s = parse_config(
            "deaddrop-store = \"postgres://tryst:hunter2@db:5433/mail\"\ndeaddrop-store-pool = 9\n",
        )
        .unwrap();
        let c = resolve(s).unwrap();
        assert_eq!(
            c.families.deaddrop.store,
            StoreChoice::Postgres {
                url: "postgres://tryst:hunter2@db:5433/mail".into(),
                pool_size: 9
            }
        );
        // Neither the start-up line nor Debug shows the password.
        assert_eq!(
            c.families.deaddrop.describe_store(),
            "postgres host=db dbname=mail user=tryst pool=9"
        );
        assert!(!format!("{:?}", c.families.deaddrop).contains("hunter2"));
        let c = resolve(
            parse_config("deaddrop-store = \"postgresql:///mail?host=/run/postgresql\"\n").unwrap(),
        )
        .unwrap();
        assert!(matches!(
            c.families.deaddrop.store,
            StoreChoice::Postgres { pool_size: 4, .. }
        ));
        for (text, key, message) in [
            (
                "deaddrop-store = \"mysql://db/mail\"\n",
                "deaddrop-store",
                "invalid `deaddrop-store`: must be a postgres:// or postgresql:// URL",
            ),
            (
                "deaddrop-store = \"postgres://db:notaport/mail\"\n",
                "deaddrop-store",
                "",
            ),
            (
                "deaddrop-store-pool = 4\n",
                "deaddrop-store-pool",
                "invalid `deaddrop-store-pool`: needs --deaddrop-store postgres://...",
            ),
            (
                "deaddrop-store = \"postgres:///x\"\ndeaddrop-store-pool = 0\n",
                "deaddrop-store-pool",
                "invalid `deaddrop-store-pool`: must be between 1 and 1024",
            ),
        ] {
            match resolve(parse_config(text).unwrap()) {
                Err(e @ ConfigError::Invalid { key: k, .. }) => {
                    assert_eq!(k, key);
                    if !message.is_empty() {
                        assert_eq!(e.to_string(), message);
                    }
                }
                other => panic!("{text}: expected Invalid, got {other:?}"),
            }
        }
    }
}
