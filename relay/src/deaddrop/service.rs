//! The dead-drop's HTTP adapter: [`DeadDrop`] (the checks in upstream's order, the
//! store behind them, the exact replies, `/metrics`) and the dead-drop as a
//! [`ServiceFamily`] of the HTTP service: its four paths, and every path nobody owns on
//! the public listeners (hivemind's upstream 404).

use super::request::{Action, Checker, Reject, retrieved_body};
use super::store::{Full, Op, Outcome, Reader, RedbStore, WriteError, Writer};
use super::*;
use crate::body::{BodyError, json_reply};
use crate::clock::{unix_now, unix_now_ms};
use crate::family::{ServeContext, ServeFuture, ServiceFamily};
use http_body_util::Full as FullBody;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// With `--cluster-redis`: proofs are also claimed in the directory, so a proof
    /// used on one node is refused on every node (see [`DeadDrop::with_cluster`]).
    cluster: std::sync::OnceLock<Arc<crate::cluster::http::ClusterHttp>>,
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
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The same service in a cluster (`None`: a single node, as before): every proof
    /// its replay cache admits is then claimed in the directory too, and one another
    /// node used is refused with the exact reply of a local replay (docs/cluster.md).
    #[must_use]
    pub fn with_cluster(self, cluster: Option<Arc<crate::cluster::http::ClusterHttp>>) -> Self {
        if let Some(c) = cluster {
            let _ = self.inner.cluster.set(c);
        }
        self
    }

    /// The PostgreSQL store's pool when the dead-drop is on PostgreSQL: Qredo's
    /// `Conversations` then keep their queues in the same database.
    pub fn postgres(&self) -> Option<pg::PgAccess> {
        match &self.inner.reader {
            Reader::Postgres(access) => Some(access.clone()),
            Reader::Redb(_) => None,
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
        if let Reader::Postgres(access) = &self.inner.reader {
            let claims = access.claim_stats();
            for (name, help, v) in [
                (
                    "tryst_deaddrop_proof_claims_total",
                    "Dead-drop requests whose proof was recorded in the database (replay protection across nodes).",
                    &claims.claims,
                ),
                (
                    "tryst_deaddrop_proof_claim_statements_total",
                    "Statements that recorded them (concurrent requests share one).",
                    &claims.statements,
                ),
            ] {
                crate::metrics::single(&mut out, name, "counter", help, v.load(Ordering::Relaxed));
            }
        }
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
            let mut resp = Reject::MethodNotAllowed.response();
            // /pubkey takes GET; every other dead-drop path takes POST.
            let allow = if parts.uri.path() == "/pubkey" {
                "GET"
            } else {
                "POST"
            };
            resp.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static(allow),
            );
            return resp;
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
        let checked = self
            .inner
            .checker
            .check_admitted(path, body, peer, unix_now_ms());
        let replayed = |reject: Reject| {
            if reject.is_replay() {
                self.inner.counters.replays.fetch_add(1, Ordering::Relaxed);
            }
            reject.response()
        };
        let (action, admitted) = match checked {
            Ok(a) => a,
            Err(reject) => return replayed(reject),
        };
        let now = unix_now();
        // Whether the retrieved mailbox holds a live message, when already known.
        let mut live = None;
        if let (Some(c), Some(proof)) = (self.inner.cluster.get(), admitted) {
            use crate::cluster::replay::{Scope, Seen, ttl};
            let until_ms = u64::try_from(proof.until).unwrap_or(0).saturating_mul(1000);
            let seen = c
                .replay()
                .first_use(
                    Scope::DeadDrop,
                    &[&proof.digest],
                    ttl(until_ms, unix_now_ms()),
                )
                .await;
            if seen == Seen::Replayed {
                return replayed(proof.replay);
            }
        } else if let (Reader::Postgres(access), Some(proof)) = (&self.inner.reader, admitted) {
            // Nodes sharing the database without a cluster directory: the database is
            // where every node's proofs meet (docs/cluster.md). A retrieve asks its
            // read-first question in the same statement.
            let until = u64::try_from(proof.until).unwrap_or(0);
            let mailbox_at = match &action {
                Action::Retrieve { mailbox, .. } => Some((*mailbox, now)),
                _ => None,
            };
            match access.first_use(proof.digest, until, mailbox_at).await {
                Ok(claim) if !claim.first => return replayed(proof.replay),
                Ok(claim) => live = claim.live,
                Err(e) => return self.write_error(&WriteError::from(e)),
            }
        }
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
                // Read first: an empty mailbox needs no write transaction.
                let live = match live {
                    Some(known) => Ok(known),
                    None => self.inner.reader.has_live(&mailbox, now).await,
                };
                match live {
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
                        match retrieved_body(&msgs, keep) {
                            Ok(body) => json_reply(StatusCode::OK, body),
                            Err(_) => Reject::StorageError.response(),
                        }
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

impl ServiceFamily for DeadDrop {
    fn name(&self) -> &'static str {
        "deaddrop"
    }

    fn owns(&self, path: &str) -> bool {
        Self::owns(path)
    }

    /// Unknown paths on the public listeners answer as hivemind's upstream server does
    /// on its port: `404 {"reason":"not_found","status":"error"}` (a POST's body is
    /// parsed first, as upstream does).
    fn owns_unknown_paths(&self) -> bool {
        true
    }

    fn serve(&self, req: Request<Incoming>, cx: ServeContext) -> ServeFuture<'_> {
        Box::pin(Self::serve(self, req, cx.peer, cx.body_deadline))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&Self::render_metrics(self));
    }
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
