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
//! - `service.rs`: its [`crate::family::ServiceFamily`] (which also owns unknown paths).
//! - here: [`DeadDropConfig`], [`DeadDropSettings`] (its flags), [`resolve`] and the
//!   async adapter [`DeadDrop`].
//!
//! The dead-drop has no `CONNECT` side, so no `connect.rs`.
//!
//! Error replies are upstream's `{"status":"error","reason":"<code>"}`; see
//! docs/compat/hivemind.md for the deliberate differences.

pub mod keys;
pub mod limits;
pub mod pg;
pub mod proof;
pub mod request;
mod service;
pub mod store;

use crate::body::{BodyError, json_reply};
use crate::clock::{unix_now, unix_now_ms};
use crate::deaddrop::request::{Action, Checker, Reject};
use crate::deaddrop::store::{
    Full, Op, Outcome, Reader, RedbStore, StoreLimits, WriteError, Writer,
};
use crate::duration::HumanDuration;
use http_body_util::Full as FullBody;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deposits committed.
    pub deposits: AtomicU64,
    /// Messages handed out by `/retrieve`.
    pub delivered: AtomicU64,
    /// Proofs refused because their signature was used before.
    pub replays: AtomicU64,
    /// Requests refused, any reason.
    pub rejected: AtomicU64,
    /// Requests answered 503 `store_unavailable` (the database could not be reached).
    pub store_unavailable: AtomicU64,
}

/// The dead-drop service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadDrop {
    inner: Arc<DeadDropInner>,
}

#[derive(Debug)]
struct DeadDropInner {
    config: DeadDropConfig,
    checker: Checker,
    writer: Writer,
    reader: Reader,
    counters: Counters,
}

impl DeadDrop {
    /// Loads or generates the relay key, opens the store and starts its writer thread.
    /// Returns the service and whether the key was generated now (into `key_path`).
    /// `started` is the unix second the relay started: the proof replay cache is in
    /// memory, so proofs stamped at or before it are refused as replays.
    ///
    /// With a PostgreSQL store the relay key is the one in the database; the first node
    /// to start stores its own (the `key_path` file if it exists, else a new one that is
    /// not written to disk), so every node serves the same `/pubkey`.
    pub fn open(config: DeadDropConfig, started: u64) -> Result<(Self, bool), DeadDropError> {
        match &config.store {
            StoreChoice::Redb => {
                let (key, generated) = keys::load_or_generate(&config.key_path)?;
                let relay_pem = keys::public_pem(&key);
                let store =
                    RedbStore::open(&config.store_path, config.limits()).map_err(|source| {
                        DeadDropError::Store {
                            path: config.store_path.clone(),
                            source,
                        }
                    })?;
                Ok((Self::start(config, store, relay_pem, started), generated))
            }
            StoreChoice::Postgres { url, pool_size } => {
                let key_path = config.key_path.clone();
                let offer = move || {
                    keys::offer_shared(&key_path)
                        .map_err(|e| store::StoreError::failed(e.to_string()))
                };
                let (store, private) = pg::PgStore::open(url, config.limits(), *pool_size, offer)
                    .map_err(|source| DeadDropError::Postgres {
                    what: pg::describe(url),
                    source,
                })?;
                let relay_pem = keys::public_pem_of(&private).map_err(DeadDropError::SharedKey)?;
                if let Ok(local) = std::fs::read_to_string(&config.key_path)
                    && keys::public_pem_of(&local).ok().as_deref() != Some(relay_pem.as_str())
                {
                    tracing::warn!(
                        path = %config.key_path.display(),
                        "this node's dead-drop key file differs from the key in the database; \
                         every node serves the database's key (docs/cluster.md)"
                    );
                }
                Ok((Self::start(config, store, relay_pem, started), false))
            }
        }
    }

    fn start(
        config: DeadDropConfig,
        store: impl store::Store,
        relay_pem: String,
        started: u64,
    ) -> Self {
        let reader = store.reader();
        let writer = Writer::spawn(store, WRITER_QUEUE, Duration::from_secs(10), unix_now);
        let started = i64::try_from(started).unwrap_or(i64::MAX);
        let checker = Checker::new(&config, relay_pem).started_at(started);
        Self {
            inner: Arc::new(DeadDropInner {
                config,
                checker,
                writer,
                reader,
                counters: Counters::default(),
            }),
        }
    }

    /// The PEM served at `/pubkey`.
    pub fn relay_pem(&self) -> String {
        self.inner.checker.relay_pem().to_owned()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Prometheus lines for the counters.
    pub fn render_metrics(&self) -> String {
        let c = &self.inner.counters;
        let mut out = String::new();
        for (name, help, v) in [
            (
                "tryst_deaddrop_deposits_total",
                "Dead-drop deposits committed.",
                &c.deposits,
            ),
            (
                "tryst_deaddrop_delivered_total",
                "Dead-drop messages handed out.",
                &c.delivered,
            ),
            (
                "tryst_deaddrop_replays_total",
                "Dead-drop proofs refused as replays.",
                &c.replays,
            ),
            (
                "tryst_deaddrop_rejected_total",
                "Dead-drop requests refused.",
                &c.rejected,
            ),
            (
                "tryst_deaddrop_store_unavailable_total",
                "Dead-drop requests answered 503 because the store's database could not be reached.",
                &c.store_unavailable,
            ),
        ] {
            crate::metrics::single(&mut out, name, "counter", help, v.load(Ordering::Relaxed));
        }
        let w = self.inner.writer.stats();
        histogram(
            &mut out,
            "tryst_deaddrop_batch_requests",
            "Requests per dead-drop store transaction (group commit).",
            &w.batch_size,
            1.0,
        );
        histogram(
            &mut out,
            "tryst_deaddrop_commit_seconds",
            "Time a dead-drop store transaction took, commit included.",
            &w.commit_micros,
            1e6,
        );
        crate::metrics::single(
            &mut out,
            "tryst_deaddrop_gather_seconds_total",
            "counter",
            "Time the dead-drop writer waited for more requests before a transaction.",
            w.gather_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        out
    }

    /// Whether this family serves `path`.
    pub fn owns(path: &str) -> bool {
        matches!(path, "/pubkey" | "/deposit" | "/retrieve" | "/ack")
    }

    /// Serves one request to one of its paths; `peer` is the client address when known.
    pub async fn serve(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
        body_timeout: Duration,
    ) -> Response<FullBody<Bytes>> {
        let resp = self.serve_inner(req, peer, body_timeout).await;
        if !resp.status().is_success() {
            self.inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        resp
    }

    async fn serve_inner(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
        body_timeout: Duration,
    ) -> Response<FullBody<Bytes>> {
        use hyper::body::Body as _;
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET {
            if parts.uri.path() == "/pubkey" && parts.uri.query().is_none() {
                let body = serde_json::json!({ "pubkey": self.relay_pem() });
                return json_reply(StatusCode::OK, body.to_string());
            }
            return Reject::NotFound.response();
        }
        if parts.method != Method::POST {
            return Reject::MethodNotAllowed.response();
        }
        let limit = self.inner.config.body_limit();
        if body.is_end_stream() {
            return Reject::EmptyBody.response();
        }
        let bytes = match crate::body::read_body(body, limit, body_timeout).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return Reject::PayloadTooLarge.response(),
            Err(BodyError::Timeout) => return Reject::BodyTimeout.response(),
            Err(BodyError::Malformed) => return Reject::MalformedBody.response(),
        };
        let path = if parts.uri.query().is_some() {
            ""
        } else {
            parts.uri.path()
        };
        self.handle_post(path, &bytes, peer).await
    }

    /// The POST part after the body is read: sans-HTTP, for tests and benchmarks.
    pub async fn handle_post(
        &self,
        path: &str,
        body: &[u8],
        peer: Option<IpAddr>,
    ) -> Response<FullBody<Bytes>> {
        let action = self.inner.checker.check(path, body, peer, unix_now_ms());
        let action = match action {
            Ok(a) => a,
            Err(reject) => {
                if reject.is_replay() {
                    self.inner.counters.replays.fetch_add(1, Ordering::Relaxed);
                }
                return reject.response();
            }
        };
        match action {
            Action::Deposit(m) => {
                let id = m.deposit_id.clone();
                match self.inner.writer.submit(Op::Deposit(m)).await {
                    Ok(Outcome::Deposited) => {
                        self.inner.counters.deposits.fetch_add(1, Ordering::Relaxed);
                        json_reply(
                            StatusCode::OK,
                            serde_json::json!({"status": "ok", "deposit_id": id}).to_string(),
                        )
                    }
                    Ok(Outcome::Refused(Full::Mailbox)) => Reject::MailboxFull.response(),
                    Ok(Outcome::Refused(Full::Mailboxes)) => Reject::TooManyMailboxes.response(),
                    Ok(Outcome::Refused(Full::Bytes)) => Reject::StoreFull.response(),
                    Err(e) => self.write_error(&e),
                    Ok(_) => Reject::StorageError.response(),
                }
            }
            Action::Retrieve { mailbox, keep } => {
                let now = unix_now();
                // Read first: an empty mailbox needs no write transaction.
                match self.inner.reader.has_live(&mailbox, now).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return json_reply(
                            StatusCode::OK,
                            serde_json::json!({"status": "ok", "messages": []}).to_string(),
                        );
                    }
                    Err(e) => return self.write_error(&WriteError::from(e)),
                }
                let op = Op::Take {
                    mailbox,
                    now,
                    delete: !keep,
                };
                match self.inner.writer.submit(op).await {
                    Ok(Outcome::Messages(msgs)) => {
                        self.inner
                            .counters
                            .delivered
                            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                        let messages: Vec<serde_json::Value> = if keep {
                            msgs.into_iter()
                                .map(|m| serde_json::json!({"deposit_id": m.deposit_id, "payload": m.payload}))
                                .collect()
                        } else {
                            msgs.into_iter().map(|m| m.payload.into()).collect()
                        };
                        json_reply(
                            StatusCode::OK,
                            serde_json::json!({"status": "ok", "messages": messages}).to_string(),
                        )
                    }
                    Err(e) => self.write_error(&e),
                    Ok(_) => Reject::StorageError.response(),
                }
            }
            Action::Ack { mailbox, ids } => {
                match self.inner.writer.submit(Op::Ack { mailbox, ids }).await {
                    Ok(Outcome::Removed(n)) => json_reply(
                        StatusCode::OK,
                        serde_json::json!({"status": "ok", "removed": n}).to_string(),
                    ),
                    Err(e) => self.write_error(&e),
                    Ok(_) => Reject::StorageError.response(),
                }
            }
        }
    }
}

/// Writes `h` as a Prometheus histogram, its values divided by `per_unit`.
fn histogram(out: &mut String, name: &str, help: &str, h: &store::Histogram, per_unit: f64) {
    use std::fmt::Write as _;
    crate::metrics::header(out, name, "histogram", help);
    let mut count = 0;
    for (bound, n) in h.cumulative() {
        let le = bound.map_or_else(|| "+Inf".to_owned(), |b| (b as f64 / per_unit).to_string());
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        count = n;
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum() as f64 / per_unit);
    let _ = writeln!(out, "{name}_count {count}");
}

impl DeadDrop {
    /// The reply to a request the store did not carry out (nothing of it committed).
    fn write_error(&self, e: &WriteError) -> Response<FullBody<Bytes>> {
        match e {
            WriteError::Busy => Reject::Busy.response(),
            WriteError::Unavailable(_) => {
                self.inner
                    .counters
                    .store_unavailable
                    .fetch_add(1, Ordering::Relaxed);
                Reject::StoreUnavailable.response()
            }
            WriteError::Failed(_) => Reject::StorageError.response(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use http_body_util::BodyExt as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
    use std::sync::mpsc;

    const CLIENT_KEY: &str = include_str!("../../tests/fixtures/deaddrop/client-key.pem");
    const CLIENT_PEM: &str = include_str!("../../tests/fixtures/deaddrop/client-pub.pem");
    const RELAY_PEM: &str = "relay";

    /// A store whose writes never get through until the test lets them fail; reads go to
    /// the redb file underneath.
    struct Stuck {
        inner: RedbStore,
        entered: mpsc::Sender<usize>,
        gate: mpsc::Receiver<()>,
    }

    impl store::Store for Stuck {
        fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, store::StoreError> {
            let _ = self.entered.send(ops.len());
            let _ = self.gate.recv();
            Err(store::StoreError::failed("stuck"))
        }

        fn reader(&self) -> Reader {
            self.inner.reader()
        }
    }

    fn proof() -> String {
        let ts = unix_now();
        let key = rsa::pss::BlindedSigningKey::<sha2::Sha256>::new(
            rsa::RsaPrivateKey::from_pkcs8_pem(CLIENT_KEY).unwrap(),
        );
        let msg = proof::ownership_message(CLIENT_PEM, RELAY_PEM, ts as i64);
        let sig = key.sign_with_rng(&mut rand::thread_rng(), &msg).to_bytes();
        serde_json::json!({
            "pubkey": CLIENT_PEM,
            "timestamp": ts,
            "signature": base64::engine::general_purpose::STANDARD.encode(sig),
        })
        .to_string()
    }

    async fn body(resp: Response<FullBody<Bytes>>) -> (StatusCode, serde_json::Value) {
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// A retrieve of an empty mailbox is answered from a read, without the writer (here
    /// stuck); a deposit waits for its commit and, when that fails, is not acknowledged.
    #[tokio::test]
    async fn empty_retrieve_needs_no_write_and_a_failed_commit_acks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DeadDropConfig::in_dir(dir.path());
        config.rate_limit = 1000;
        let (entered, entered_rx) = mpsc::channel();
        let (release, gate) = mpsc::channel();
        let store = Stuck {
            inner: RedbStore::open(&config.store_path, config.limits()).unwrap(),
            entered,
            gate,
        };
        let dd = DeadDrop::start(config, store, RELAY_PEM.into(), 0);

        let resp = dd.handle_post("/retrieve", proof().as_bytes(), None).await;
        assert_eq!(
            body(resp).await,
            (
                StatusCode::OK,
                serde_json::json!({"status": "ok", "messages": []})
            )
        );
        assert!(
            entered_rx.try_recv().is_err(),
            "the retrieve reached the writer"
        );

        let deposit = serde_json::json!({
            "payload": r#"{"msg_type":"intercom","payload":{}}"#,
            "target_pubkey": CLIENT_PEM,
        })
        .to_string();
        let pending = tokio::spawn({
            let dd = dd.clone();
            async move { body(dd.handle_post("/deposit", deposit.as_bytes(), None).await).await }
        });
        let batch = tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(batch, 1);
        assert!(!pending.is_finished(), "answered before its commit");
        drop(release);
        assert_eq!(
            pending.await.unwrap(),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"status": "error", "reason": "storage_error"})
            )
        );
    }

    /// `/metrics` shows how the writer batched: the batch-size and commit-time
    /// histograms count the committed deposit.
    #[tokio::test]
    async fn metrics_show_batch_sizes_and_commit_times() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DeadDropConfig::in_dir(dir.path());
        config.rate_limit = 1000;
        let store = RedbStore::open(&config.store_path, config.limits()).unwrap();
        let dd = DeadDrop::start(config, store, RELAY_PEM.into(), 0);
        let deposit = serde_json::json!({
            "payload": r#"{"msg_type":"intercom","payload":{}}"#,
            "target_pubkey": CLIENT_PEM,
        })
        .to_string();
        let resp = dd.handle_post("/deposit", deposit.as_bytes(), None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let text = dd.render_metrics();
        for line in [
            "# TYPE tryst_deaddrop_batch_requests histogram",
            "tryst_deaddrop_batch_requests_bucket{le=\"1\"} 1",
            "tryst_deaddrop_batch_requests_bucket{le=\"+Inf\"} 1",
            "tryst_deaddrop_batch_requests_sum 1",
            "tryst_deaddrop_batch_requests_count 1",
            "# TYPE tryst_deaddrop_commit_seconds histogram",
            "tryst_deaddrop_commit_seconds_bucket{le=\"+Inf\"} 1",
            "tryst_deaddrop_commit_seconds_count 1",
            "tryst_deaddrop_gather_seconds_total 0",
            "tryst_deaddrop_deposits_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }
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
