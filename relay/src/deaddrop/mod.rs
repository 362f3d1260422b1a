//! The dead-drop: a hivemind-rendezvous 0.1.2a2 compatible store-and-forward mailbox
//! service on the relay's HTTP port (`GET /pubkey`, `POST /deposit`, `POST /retrieve`,
//! and tryst's `POST /ack`).
//!
//! - [`proof`]: ownership proofs (RSA-PSS SHA-256) and Python `int()` semantics, sans-IO.
//! - [`limits`]: the per-client deposit rate limit and the proof replay cache, sans-IO.
//! - [`request`]: the JSON bodies checked in upstream's order, sans-IO (takes `now`).
//! - [`store`]: the durable store (redb) behind a trait, and the group-commit writer.
//! - [`keys`]: the relay's RSA key pair in the data directory.
//!
//! Error replies are upstream's `{"status":"error","reason":"<code>"}`; see
//! docs/compat/hivemind.md for the deliberate differences.

pub mod keys;
pub mod limits;
pub mod proof;
pub mod request;
pub mod store;

use crate::deaddrop::request::{Action, Checker, Reject};
use crate::deaddrop::store::{Full, Op, Outcome, RedbStore, StoreLimits, WriteError, Writer};
use http_body_util::{BodyExt as _, Full as FullBody, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The dead-drop's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadDropConfig {
    /// The relay's RSA private key (PKCS#8 PEM); generated if missing.
    pub key_path: PathBuf,
    /// The redb store file.
    pub store_path: PathBuf,
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
}

/// The dead-drop service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadDrop {
    inner: Arc<DeadDropInner>,
}

#[derive(Debug)]
struct DeadDropInner {
    config: DeadDropConfig,
    checker: Mutex<Checker>,
    writer: Writer,
    counters: Counters,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DeadDrop {
    /// Loads or generates the relay key, opens the store and starts its writer thread.
    /// Returns the service and whether the key was generated now. `started` is the unix
    /// second the relay started: the proof replay cache is in memory, so proofs stamped
    /// at or before it are refused as replays.
    pub fn open(config: DeadDropConfig, started: u64) -> Result<(Self, bool), DeadDropError> {
        let (key, generated) = keys::load_or_generate(&config.key_path)?;
        let relay_pem = keys::public_pem(&key.to_public_key());
        drop(key);
        let store = RedbStore::open(
            &config.store_path,
            StoreLimits {
                max_pending: config.max_pending,
                max_mailboxes: config.max_mailboxes,
                max_bytes: config.max_store_bytes,
            },
        )
        .map_err(|source| DeadDropError::Store {
            path: config.store_path.clone(),
            source,
        })?;
        let writer = Writer::spawn(store, WRITER_QUEUE, Duration::from_secs(10), unix_now);
        let started = i64::try_from(started).unwrap_or(i64::MAX);
        let checker = Checker::new(&config, relay_pem).started_at(started);
        Ok((
            Self {
                inner: Arc::new(DeadDropInner {
                    config,
                    checker: Mutex::new(checker),
                    writer,
                    counters: Counters::default(),
                }),
            },
            generated,
        ))
    }

    /// The PEM served at `/pubkey`.
    pub fn relay_pem(&self) -> String {
        self.checker().relay_pem().to_owned()
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
        ] {
            crate::metrics::single(&mut out, name, "counter", help, v.load(Ordering::Relaxed));
        }
        out
    }

    fn checker(&self) -> std::sync::MutexGuard<'_, Checker> {
        // A panic while holding the lock cannot leave the checker inconsistent in a way
        // that matters more than refusing every request would.
        self.inner
            .checker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                return json(StatusCode::OK, body.to_string());
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
        if body.size_hint().lower() > limit as u64 {
            return Reject::PayloadTooLarge.response();
        }
        let bytes = match tokio::time::timeout(body_timeout, Limited::new(body, limit).collect())
            .await
        {
            Err(_) => return Reject::BodyTimeout.response(),
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<LengthLimitError>() => return Reject::PayloadTooLarge.response(),
            Ok(Err(_)) => return Reject::MalformedBody.response(),
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
        let action = {
            let mut checker = self.checker();
            checker.check(path, body, peer, unix_now_ms())
        };
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
                        json(
                            StatusCode::OK,
                            serde_json::json!({"status": "ok", "deposit_id": id}).to_string(),
                        )
                    }
                    Ok(Outcome::Refused(Full::Mailbox)) => Reject::MailboxFull.response(),
                    Ok(Outcome::Refused(Full::Mailboxes)) => Reject::TooManyMailboxes.response(),
                    Ok(Outcome::Refused(Full::Bytes)) => Reject::StoreFull.response(),
                    Ok(_) | Err(WriteError::Failed(_)) => Reject::StorageError.response(),
                    Err(WriteError::Busy) => Reject::Busy.response(),
                }
            }
            Action::Retrieve { mailbox, keep } => {
                let op = Op::Take {
                    mailbox,
                    now: unix_now(),
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
                        json(
                            StatusCode::OK,
                            serde_json::json!({"status": "ok", "messages": messages}).to_string(),
                        )
                    }
                    Err(WriteError::Busy) => Reject::Busy.response(),
                    _ => Reject::StorageError.response(),
                }
            }
            Action::Ack { mailbox, ids } => {
                match self.inner.writer.submit(Op::Ack { mailbox, ids }).await {
                    Ok(Outcome::Removed(n)) => json(
                        StatusCode::OK,
                        serde_json::json!({"status": "ok", "removed": n}).to_string(),
                    ),
                    Err(WriteError::Busy) => Reject::Busy.response(),
                    _ => Reject::StorageError.response(),
                }
            }
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<FullBody<Bytes>> {
    let mut resp = Response::new(FullBody::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
