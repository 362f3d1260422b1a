//! The HTTP adapter of the Hive family: routes `/v1/*` requests to the sans-IO pieces
//! (store, mailboxes, board), reads the clock, waits for forward drains (futures and a
//! [`Notify`], no thread per waiter) and feeds the federation.
//!
//! Every error is `application/json` `{"error":"<reason>"}`.

use super::HiveConfig;
use super::board::{Board, valid_workspace};
use super::forward::{
    DRAIN_DOMAIN, DRAIN_SCHEME, ForwardError, MailboxKey, Mailboxes, ProofError, ReplayCache,
    check_proof, parse_proof,
};
use super::record::{MAX_PUBLICATION_BYTES, parse_uuid};
use super::store::{InsertError, Inserted, PublicationStore};
use super::verify::{PublicationError, VerifiedPublication, verify_publication};
use crate::body::{BodyError, json_reply};
use crate::clock::unix_now_signed;
use crate::cluster::http::{ClusterHttp, Family, Routed};
use crate::family::ServeContext;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::Full;
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The `/v1/health` response header naming the STUN responder's UDP port (when
/// `--stun-listen` is set): a device asks the relay's host on that port for its
/// server-reflexive address.
pub const STUN_PORT_HEADER: &str = "tryst-stun-port";

/// Most publications in one federation export page.
pub const MAX_EXPORT_PAGE: usize = 256;

#[derive(Debug)]
struct State {
    store: PublicationStore,
    mailboxes: Mailboxes,
    replay: ReplayCache,
    waiters: HashMap<MailboxKey, Arc<Notify>>,
    board: Option<Board>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: HiveConfig,
    /// With `--cluster-redis`: publications written through to the directory, forward
    /// mailboxes owned by one node (see [`Hive::with_cluster`]).
    cluster: std::sync::OnceLock<Arc<ClusterHttp>>,
    state: Mutex<State>,
    pushes: Mutex<Vec<mpsc::Sender<Arc<Vec<u8>>>>>,
    counters: MirrorCounters,
    epoch: u64,
    /// The STUN responder's UDP port, advertised on `/v1/health` (0: none).
    stun_port: std::sync::atomic::AtomicU16,
}

impl Inner {
    /// The cluster side, when in a cluster.
    pub(crate) fn cluster(&self) -> Option<&Arc<ClusterHttp>> {
        self.cluster.get()
    }

    /// The publication TTL cap, seconds.
    pub(crate) fn max_ttl_secs(&self) -> u64 {
        self.config.policy.max_ttl_secs
    }

    /// Every fresh publication held now.
    pub(crate) fn all_fresh(&self) -> Vec<Arc<VerifiedPublication>> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.store.since(0, usize::MAX, unix_now_signed()).0
    }
}

/// Extra time a request carried to a mailbox's owner node may take beyond the poll
/// timeout.
const PROXY_SLACK: Duration = Duration::from_secs(10);

/// Federation counters (also on `/metrics`).
#[derive(Debug, Default)]
pub struct MirrorCounters {
    /// Publications queued for a push to a peer.
    pub pushes_queued: AtomicU64,
    /// Pushes dropped because a peer's queue was full.
    pub pushes_dropped: AtomicU64,
    /// Pushes a peer answered (any status).
    pub pushes_answered: AtomicU64,
    /// Publications a pull stored (new or replacing).
    pub pulled: AtomicU64,
}

/// The Hive family service. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Hive {
    inner: Arc<Inner>,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `{"error":"<reason>"}` with `status`.
pub fn error(status: u16, reason: &str) -> Resp {
    json_reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        serde_json::json!({ "error": reason }).to_string(),
    )
}

fn ok_json() -> Resp {
    json_reply(StatusCode::OK, r#"{"ok":true}"#)
}

fn not_found() -> Resp {
    error(404, "not found")
}

fn no_publication() -> Resp {
    error(404, "no fresh publication")
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(405, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn close(mut r: Resp) -> Resp {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads a body of at most `limit` bytes; the `Err` is the response to send.
async fn read_body<B>(
    body: B,
    limit: usize,
    too_large: &str,
    deadline: Duration,
) -> Result<Bytes, Resp>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::body::read_body(body, limit, deadline)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => close(error(413, too_large)),
            BodyError::Timeout => close(error(408, "request body not received in time")),
            BodyError::Malformed => close(error(400, "malformed request body")),
        })
}

/// The raw ids of a `{ws}/{device}` path; the `Err` is the 400 reason.
fn ids(ws: &str, device: &str) -> Result<MailboxKey, &'static str> {
    let ws = parse_uuid(ws).ok_or("malformed workspace id")?;
    let device = parse_uuid(device).ok_or("malformed device id")?;
    Ok((ws, device))
}

fn forward_error(e: &ForwardError) -> Resp {
    error(e.status(), &e.to_string())
}

/// Ends a waiting drain however its future ends (answered, timed out, or dropped because
/// the client went away).
struct WaitGuard<'a> {
    hive: &'a Hive,
    key: MailboxKey,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.hive.lock();
        state.mailboxes.end_wait(&self.key, unix_now_signed());
        state.waiters.remove(&self.key);
    }
}

impl Hive {
    /// The same service in a relay that started in unix second `started`: the drain
    /// nonces are in memory, so drain proofs stamped at or before it are refused as
    /// replays (an earlier relay may have accepted them).
    #[must_use]
    pub fn with_replay_floor(self, started: u64) -> Self {
        {
            let mut state = self.lock();
            let cap = self.inner.config.forward.max_nonces;
            state.replay =
                ReplayCache::new(cap).started_at(i64::try_from(started).unwrap_or(i64::MAX));
        }
        self
    }

    /// The same service in a cluster (`None`: a single node, as before): publications
    /// are written through to the directory and read from it (verified again) before
    /// local answers, and each forward mailbox lives on one owner node that the other
    /// nodes carry its requests to (docs/cluster.md).
    #[must_use]
    pub fn with_cluster(self, cluster: Option<Arc<ClusterHttp>>) -> Self {
        if let Some(c) = cluster {
            let _ = self.inner.cluster.set(c);
        }
        self
    }

    fn cluster(&self) -> Option<&Arc<ClusterHttp>> {
        self.inner.cluster.get()
    }

    /// Takes the directory's publication of (ws, device) into the local store when it
    /// differs from the local one (verified again; the store's rules and caps apply).
    async fn refresh_publication(&self, ws: &[u8; 16], device: &[u8; 16]) {
        let Some(c) = self.cluster() else { return };
        let Some(Some(body)) = super::cluster::get(c, ws, device).await else {
            return;
        };
        let now = unix_now_signed();
        let same = self
            .lock()
            .store
            .get(ws, device, now)
            .is_some_and(|p| p.body == body);
        if !same {
            self.absorb(&body, now);
        }
    }

    /// [`Hive::refresh_publication`] for every device of workspace `ws`.
    async fn refresh_workspace(&self, ws: &[u8; 16]) {
        let Some(c) = self.cluster() else { return };
        let Some(bodies) = super::cluster::workspace(c, ws).await else {
            return;
        };
        let now = unix_now_signed();
        let local: std::collections::HashSet<Vec<u8>> = self
            .lock()
            .store
            .workspace(ws, now)
            .iter()
            .map(|p| p.body.clone())
            .collect();
        for body in bodies.iter().filter(|b| !local.contains(*b)) {
            self.absorb(body, now);
        }
    }

    /// Verifies a body read from the directory and stores it (refusals are dropped:
    /// older, expired, or over a cap here).
    fn absorb(&self, body: &[u8], now: i64) {
        match verify_publication(body, now, &self.inner.config.policy) {
            Ok(p) => {
                let _ = self.lock().store.insert(p, now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "hive: a publication in the directory does not verify here");
            }
        }
    }

    /// Serves one `/v1/*` request as [`Hive::serve`] does, in a cluster first: reads
    /// publications from the directory before answering from the local store, writes
    /// accepted ones through, and carries forward requests to their mailbox's owner
    /// node unless the request already came over the mesh. Owner unreachable until
    /// the deadline (or the exchange broke after sending): a drain answers `204` (no
    /// data), a forward POST `503 {"error":"forward mailbox unavailable"}` with
    /// `Retry-After: 1`.
    pub async fn serve_in<B>(&self, req: Request<B>, cx: ServeContext) -> Resp
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(cluster) = self.cluster().map(Arc::clone) else {
            return self.serve(req, cx.body_deadline).await;
        };
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let get = parts.method == Method::GET || parts.method == Method::HEAD;
        let post = parts.method == Method::POST;
        match segments.as_slice() {
            ["v1", "rendezvous", ws, device] if get => {
                if let Ok((ws, device)) = ids(ws, device) {
                    self.refresh_publication(&ws, &device).await;
                }
            }
            ["v1", "rendezvous", ws] if get && *ws != "mirror" => {
                if let Some(ws) = parse_uuid(ws) {
                    self.refresh_workspace(&ws).await;
                }
            }
            ["v1", "forward", ws, device] if get || post => {
                if let Ok(key) = ids(ws, device) {
                    return self.forward_in(&cluster, key, parts, body, cx).await;
                }
            }
            _ => {}
        }
        self.serve(Request::from_parts(parts, body), cx.body_deadline)
            .await
    }

    async fn forward_in<B>(
        &self,
        cluster: &ClusterHttp,
        key: MailboxKey,
        parts: hyper::http::request::Parts,
        body: B,
        cx: ServeContext,
    ) -> Resp
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let post = parts.method == Method::POST;
        let bytes = if post {
            let limit = self.inner.config.forward.max_body;
            let too_large = ForwardError::TooLarge.to_string();
            match read_body(body, limit, &too_large, cx.body_deadline).await {
                Ok(b) => b,
                Err(r) => return r,
            }
        } else {
            Bytes::new()
        };
        let routed = if cx.via_mesh {
            Routed::Local
        } else {
            let poll = self.inner.config.poll_timeout;
            let idle = Duration::from_secs(
                u64::try_from(self.inner.config.forward.idle_secs).unwrap_or(0),
            );
            let now = tokio::time::Instant::now();
            let give_up = now
                + if post {
                    crate::cluster::http::TAKEOVER_WAIT
                } else {
                    poll
                };
            // A drain's reply is at most one mailbox.
            let reply_limit = self.inner.config.forward.max_mailbox_bytes + 64 * 1024;
            cluster
                .route(
                    Family::HiveForward,
                    &super::cluster::forward_key(&key.0, &key.1),
                    Some(idle + poll),
                    &parts,
                    &bytes,
                    cx,
                    reply_limit,
                    poll + PROXY_SLACK,
                    give_up,
                )
                .await
        };
        match routed {
            Routed::Answered(resp) => resp,
            Routed::Local => {
                self.refresh_publication(&key.0, &key.1).await;
                if post {
                    self.forward_append(key, bytes)
                } else {
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap_or("\u{0}"));
                    self.forward_drain(key, auth).await
                }
            }
            Routed::Unavailable if post => {
                let mut r = error(503, "forward mailbox unavailable");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Routed::Unavailable => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
        }
    }

    /// Advertises the STUN responder's UDP `port` on `/v1/health` from now on.
    pub fn set_stun_port(&self, port: u16) {
        self.inner.stun_port.store(port, Ordering::Relaxed);
    }

    /// A service with `config` (no background tasks yet; see [`Hive::start_background`]).
    pub fn new(config: HiveConfig) -> Self {
        let state = State {
            store: PublicationStore::new(config.store),
            mailboxes: Mailboxes::new(config.forward),
            replay: ReplayCache::new(config.forward.max_nonces),
            waiters: HashMap::new(),
            board: config.board.map(Board::new),
        };
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                pushes: Mutex::new(Vec::new()),
                counters: MirrorCounters::default(),
                cluster: std::sync::OnceLock::new(),
                epoch: rand::random(),
                stun_port: std::sync::atomic::AtomicU16::new(0),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &HiveConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the tables inconsistent in a way
        // that matters more than refusing service; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `path` belongs to this family: `/v1/health`, and everything under
    /// `/v1/rendezvous`, `/v1/forward/` and `/v1/workspaces/` (other `/v1/` paths get
    /// the HTTP service's generic 404).
    pub fn owns(path: &str) -> bool {
        path == "/v1/health"
            || path == "/v1/rendezvous"
            || ["/v1/rendezvous/", "/v1/forward/", "/v1/workspaces/"]
                .iter()
                .any(|p| path.starts_with(p))
    }

    /// Starts the periodic sweep and the federation tasks. Needs a tokio runtime.
    pub fn start_background(&self) {
        if self.cluster().is_some() {
            tokio::spawn(super::cluster::rewrite_loop(Arc::downgrade(&self.inner)));
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let hive = Self { inner };
                let now = unix_now_signed();
                let mut state = hive.lock();
                state.store.evict_expired(now);
                state.mailboxes.evict_idle(now);
            }
        });
        let mut pushes = Vec::new();
        for peer in &self.inner.config.mirrors {
            pushes.push(super::mirror::spawn_peer(
                self.clone(),
                peer.clone(),
                self.inner.config.mirror_interval,
            ));
        }
        *self
            .inner
            .pushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pushes;
    }

    /// The federation counters.
    pub fn mirror_counters(&self) -> &MirrorCounters {
        &self.inner.counters
    }

    /// The family's gauges and counters in Prometheus text: publications held, forward mailboxes,
    /// bytes queued in them, drains waiting.
    pub fn render_metrics(&self) -> String {
        let (publications, mailboxes, bytes, waiting) = {
            let state = self.lock();
            (
                state.store.len(),
                state.mailboxes.len(),
                state.mailboxes.total_bytes(),
                state.waiters.len(),
            )
        };
        let mut out = String::new();
        for (name, help, v) in [
            (
                "tryst_hive_publications",
                "Hive publications held (fresh or not yet evicted).",
                publications,
            ),
            ("tryst_hive_mailboxes", "Hive forward mailboxes.", mailboxes),
            (
                "tryst_hive_forward_bytes",
                "Bytes queued in Hive forward mailboxes.",
                bytes,
            ),
            (
                "tryst_hive_drains_waiting",
                "Hive forward drains waiting for data.",
                waiting,
            ),
        ] {
            crate::metrics::single(&mut out, name, "gauge", help, v);
        }
        let c = &self.inner.counters;
        for (name, help, v) in [
            (
                "tryst_hive_mirror_pushes_total",
                "Publications queued for a push to a mirror peer.",
                &c.pushes_queued,
            ),
            (
                "tryst_hive_mirror_pushes_dropped_total",
                "Mirror pushes dropped because the peer's queue was full.",
                &c.pushes_dropped,
            ),
            (
                "tryst_hive_mirror_pulled_total",
                "Publications stored from a mirror peer's export.",
                &c.pulled,
            ),
        ] {
            crate::metrics::single(&mut out, name, "counter", help, v.load(Ordering::Relaxed));
        }
        out
    }

    /// Verifies and stores one publication body at `now` (the POST and the federation
    /// pull share this). Returns how the store changed.
    pub fn accept_publication(&self, body: &[u8], now: i64) -> Result<Inserted, PublishRefusal> {
        let p = verify_publication(body, now, &self.inner.config.policy)
            .map_err(PublishRefusal::Invalid)?;
        self.lock()
            .store
            .insert(p, now)
            .map_err(PublishRefusal::Store)
    }

    fn push_to_mirrors(&self, body: &[u8]) {
        let pushes = self
            .inner
            .pushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pushes.is_empty() {
            return;
        }
        let body = Arc::new(body.to_vec());
        let c = &self.inner.counters;
        for tx in pushes.iter() {
            if tx.try_send(Arc::clone(&body)).is_ok() {
                c.pushes_queued.fetch_add(1, Ordering::Relaxed);
            } else {
                c.pushes_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("hive mirror push queue full; the peer's pull will catch up");
            }
        }
    }

    /// The federation export page after `since` (see [`PublicationStore::since`]) as
    /// `{"epoch":"<16 hex>","next":N,"publications":["<base64 of the exact body>",...]}`.
    /// `epoch` is random per process: a puller that sees it change starts over from 0.
    pub fn export(&self, since: u64, limit: usize, now: i64) -> String {
        let (page, next) = self.lock().store.since(since, limit, now);
        let publications: Vec<String> = page.iter().map(|p| STANDARD.encode(&p.body)).collect();
        serde_json::json!({
            "epoch": format!("{:016x}", self.inner.epoch),
            "next": next,
            "publications": publications,
        })
        .to_string()
    }

    /// Serves one `/v1/*` request; `deadline` bounds reading its body.
    pub async fn serve<B>(&self, req: Request<B>, deadline: Duration) -> Resp
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let get = parts.method == Method::GET || parts.method == Method::HEAD;
        let post = parts.method == Method::POST;
        match segments.as_slice() {
            ["v1", "health"] if get => {
                let mut resp = respond(200, "text/plain", "ok");
                let port = self.inner.stun_port.load(Ordering::Relaxed);
                if port != 0 {
                    resp.headers_mut()
                        .insert(STUN_PORT_HEADER, HeaderValue::from(port));
                }
                resp
            }
            ["v1", "health"] => method_not_allowed("GET, HEAD"),
            ["v1", "rendezvous"] if post => self.publish(body, deadline).await,
            ["v1", "rendezvous"] => method_not_allowed("POST"),
            ["v1", "rendezvous", "mirror"] if get => match export_query(parts.uri.query()) {
                Ok((since, limit)) => {
                    json_reply(StatusCode::OK, self.export(since, limit, unix_now_signed()))
                }
                Err(reason) => error(400, reason),
            },
            ["v1", "rendezvous", ws] if get => match parse_uuid(ws) {
                None => error(400, "malformed workspace id"),
                Some(ws) => {
                    let all = self.lock().store.workspace(&ws, unix_now_signed());
                    let mut out = Vec::from(&b"["[..]);
                    for (i, p) in all.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&p.body);
                    }
                    out.push(b']');
                    json_reply(StatusCode::OK, out)
                }
            },
            ["v1", "rendezvous", ws, device] if get => match ids(ws, device) {
                Err(reason) => error(400, reason),
                Ok((ws, device)) => match self.lock().store.get(&ws, &device, unix_now_signed()) {
                    Some(p) => json_reply(StatusCode::OK, p.body.clone()),
                    None => no_publication(),
                },
            },
            ["v1", "rendezvous", _] | ["v1", "rendezvous", _, _] => method_not_allowed("GET, HEAD"),
            ["v1", "forward", ws, device] if post => match ids(ws, device) {
                Err(reason) => error(400, reason),
                Ok(key) => self.forward_post(key, body, deadline).await,
            },
            ["v1", "forward", ws, device] if get => match ids(ws, device) {
                Err(reason) => error(400, reason),
                Ok(key) => {
                    let auth = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap_or("\u{0}"));
                    self.forward_drain(key, auth).await
                }
            },
            ["v1", "forward", _, _] => method_not_allowed("GET, POST"),
            ["v1", "workspaces", ws, "candidates"] if self.inner.config.board.is_some() => {
                if !valid_workspace(ws) {
                    return error(400, "malformed workspace id");
                }
                if get {
                    let now = unix_now_signed();
                    let text = self.lock().board.as_ref().map(|b| b.get(ws, now));
                    json_reply(StatusCode::OK, text.unwrap_or_default())
                } else if post {
                    let limit = self.inner.config.board.map_or(0, |b| b.max_body);
                    let body =
                        match read_body(body, limit, "request body too large", deadline).await {
                            Ok(b) => b,
                            Err(r) => return r,
                        };
                    let now = unix_now_signed();
                    let result = self.lock().board.as_mut().map(|b| b.post(ws, &body, now));
                    match result {
                        Some(Ok(())) => ok_json(),
                        Some(Err(e)) => error(e.status(), &e.to_string()),
                        None => not_found(),
                    }
                } else {
                    method_not_allowed("GET, HEAD, POST")
                }
            }
            _ => not_found(),
        }
    }

    async fn publish<B>(&self, body: B, deadline: Duration) -> Resp
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = PublicationError::TooLarge.reason();
        let body = match read_body(body, MAX_PUBLICATION_BYTES, &too_large, deadline).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let now = unix_now_signed();
        let p = match verify_publication(&body, now, &self.inner.config.policy) {
            Ok(p) => p,
            Err(e) => {
                let e = PublishRefusal::Invalid(e);
                return error(e.status(), &e.reason());
            }
        };
        let written = self.cluster().map(|c| (Arc::clone(c), p.clone()));
        match self
            .lock()
            .store
            .insert(p, now)
            .map_err(PublishRefusal::Store)
        {
            Ok(outcome) => {
                if outcome.changed() {
                    self.push_to_mirrors(&body);
                }
            }
            Err(e) => return error(e.status(), &e.reason()),
        }
        if let Some((c, p)) = written {
            super::cluster::put(&c, &p, self.inner.config.policy.max_ttl_secs).await;
        }
        ok_json()
    }

    async fn forward_post<B>(&self, key: MailboxKey, body: B, deadline: Duration) -> Resp
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.inner.config.forward.max_body;
        let too_large = ForwardError::TooLarge.to_string();
        let body = match read_body(body, limit, &too_large, deadline).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        self.forward_append(key, body)
    }

    /// Appends a read forward body to `key`'s mailbox (the device must have a fresh
    /// publication here).
    fn forward_append(&self, key: MailboxKey, body: Bytes) -> Resp {
        let now = unix_now_signed();
        let mut state = self.lock();
        if state.store.get(&key.0, &key.1, now).is_none() {
            return no_publication();
        }
        match state.mailboxes.append(key, body.to_vec(), now) {
            Ok(()) => {
                if let Some(n) = state.waiters.get(&key) {
                    n.notify_one();
                }
                ok_json()
            }
            Err(e) => forward_error(&e),
        }
    }

    async fn forward_drain(&self, key: MailboxKey, auth: Option<&str>) -> Resp {
        let notify = Arc::new(Notify::new());
        let now = unix_now_signed();
        // Look the key up under the lock, verify outside it (Ed25519 is the slow part).
        let (signing_key, window) = {
            let state = self.lock();
            let Some(publication) = state.store.get(&key.0, &key.1, now) else {
                return no_publication();
            };
            (
                publication.signing_key,
                state.mailboxes.limits().proof_window_secs,
            )
        };
        let proof = auth
            .ok_or(ProofError::Missing)
            .and_then(|v| parse_proof(v, DRAIN_SCHEME))
            .and_then(|p| {
                check_proof(
                    &p,
                    DRAIN_DOMAIN,
                    &signing_key,
                    (&key.0, &key.1),
                    now,
                    window,
                )
                .map(|()| p)
            });
        let proof = match proof {
            Ok(p) => p,
            Err(e) => return forward_error(&ForwardError::Proof(e)),
        };
        if let Err(e) = self
            .lock()
            .replay
            .check_and_insert(key, proof.nonce, proof.ts, now, window)
        {
            return forward_error(&e);
        }
        // In a cluster: a proof another node accepted (a mailbox that moved to this
        // node) is refused as the local cache refuses it.
        if let Some(c) = self.cluster() {
            let until_ms = proof
                .ts
                .saturating_add(window.unsigned_abs())
                .saturating_mul(1000);
            let ttl = crate::cluster::replay::ttl(until_ms, crate::clock::unix_now_ms());
            let parts: [&[u8]; 2] = [&[key.0, key.1].concat(), &proof.nonce];
            let seen = c
                .replay()
                .first_use(crate::cluster::replay::Scope::HiveDrain, &parts, ttl)
                .await;
            if seen == crate::cluster::replay::Seen::Replayed {
                return forward_error(&ForwardError::Replay);
            }
        }
        {
            let mut state = self.lock();
            if let Err(e) = state.mailboxes.begin_wait(key, now) {
                return forward_error(&e);
            }
            state.waiters.insert(key, Arc::clone(&notify));
        }
        let _guard = WaitGuard { hive: self, key };
        let until = tokio::time::Instant::now() + self.inner.config.poll_timeout;
        loop {
            if let Some(data) = self.lock().mailboxes.take(&key, unix_now_signed()) {
                return respond(200, "application/octet-stream", data);
            }
            if tokio::time::timeout_at(until, notify.notified())
                .await
                .is_err()
            {
                return match self.lock().mailboxes.take(&key, unix_now_signed()) {
                    Some(data) => respond(200, "application/octet-stream", data),
                    None => {
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        r
                    }
                };
            }
        }
    }
}

/// Why [`Hive::accept_publication`] refused a publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishRefusal {
    /// It does not verify.
    #[error("{0}")]
    Invalid(PublicationError),
    /// The store refused it.
    #[error("{0}")]
    Store(InsertError),
}

impl PublishRefusal {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(e) => e.status(),
            Self::Store(e) => e.status(),
        }
    }

    /// The reason text of the JSON error body.
    pub fn reason(&self) -> String {
        match self {
            Self::Invalid(e) => e.reason(),
            Self::Store(e) => e.to_string(),
        }
    }
}

/// `since` and `limit` of an export query: missing ones are 0 and the page cap; a
/// `since` that is not a decimal `u64`, or a `limit` outside 1 to [`MAX_EXPORT_PAGE`],
/// is the reason of a 400 (`Err`).
fn export_query(query: Option<&str>) -> Result<(u64, usize), &'static str> {
    let (mut since, mut limit) = (0, MAX_EXPORT_PAGE);
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("since", v)) => {
                since = v
                    .parse()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or("malformed since")?;
            }
            Some(("limit", v)) => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_EXPORT_PAGE).contains(n))
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or("limit must be 1 to 256")?;
            }
            _ => {}
        }
    }
    Ok((since, limit))
}

impl crate::family::ServiceFamily for Hive {
    fn name(&self) -> &'static str {
        "hive"
    }

    fn owns(&self, path: &str) -> bool {
        Self::owns(path)
    }

    fn serve(
        &self,
        req: Request<hyper::body::Incoming>,
        cx: ServeContext,
    ) -> crate::family::ServeFuture<'_> {
        Box::pin(Self::serve_in(self, req, cx))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&Self::render_metrics(self));
    }

    fn start(&self) {
        self.start_background();
    }
}

#[cfg(test)]
mod tests;
