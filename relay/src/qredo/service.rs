//! `/services`: one Lingua Franca request in, one result out. [`Qredo::call`] is the
//! RPC core (decode, app check, dispatch, encode); [`Qredo::serve`] its HTTP adapter
//! (`POST /services`, the SDK's `QredoHttpTransport`: always `200` with the result as
//! the body, refusals being failure results too).

use super::lf::{
    self, ErrorInfo, Interchange, Limits, Outcome, PROTOCOL_VERSION, Request, Response, Value,
};
use super::ownership::{self, Op, ReplayCache};
use super::rendezvous::RendezvousTable;
use super::share::{Outgoing, TagLink};
use super::store::{ConversationStore, RedbConversations, StoreError};
use super::{Failure, QredoConfig, QredoError};
use crate::body::BodyError;
use crate::clock::unix_now_ms;
use crate::http::ApiError;
use crate::tag::kdf::HashedTag;
use crate::tag::sync::{Answer, Control, SharedTag};
use http_body_util::Full;
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// The path the SDK posts to.
pub const PATH: &str = "/services";

/// Largest result a rendezvous' owner node may send back for a carried call.
const MAX_CARRIED_RESULT: usize = 16 << 20;

/// How long a call carried to a rendezvous' owner node may take.
const CARRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a call came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOrigin {
    /// The client's address, when known.
    pub peer: Option<std::net::IpAddr>,
    /// Carried here by another node over the mesh: answer from this node's state.
    pub via_mesh: bool,
}

/// The hashed tag a `Rendezvous` call is about (`None`: not one it can name).
fn rendezvous_tag(op: &str, args: &[Value]) -> Option<[u8; 32]> {
    let from_record = |v: &Value| {
        v.as_record()
            .ok()?
            .field("hashedTag")
            .ok()?
            .as_quid()
            .ok()
            .copied()
    };
    match (op, args) {
        ("create", [info]) => from_record(info),
        ("respond", [response]) => from_record(response),
        ("activate" | "deactivate" | "getInfo" | "getResponses", [tag, ..]) => {
            tag.as_quid().ok().copied()
        }
        _ => None,
    }
}

/// Most items one `queryItems` returns, whatever `fetchSize` asks.
pub const MAX_FETCH: usize = 1000;

/// The Qredo service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Qredo {
    inner: Arc<Inner>,
}

/// Something subscribers may want: a registered response or a published item.
#[derive(Debug, Clone)]
pub enum Event {
    /// `respond` registered a response (a `RendezvousResponseWithSequenceValue`).
    Response {
        /// The hashed tag.
        tag: [u8; 32],
        /// The value pushed to its subscribers.
        value: Value,
    },
    /// `publish` committed an item (a `ConversationItemWithSequenceValue`).
    Item {
        /// The queue id.
        queue: [u8; 32],
        /// The value pushed to its subscribers.
        value: Value,
    },
}

/// Events buffered for subscribers; one that falls further behind is ended.
const EVENT_BUFFER: usize = 1024;

#[derive(Debug)]
struct Inner {
    config: QredoConfig,
    events: broadcast::Sender<Event>,
    subscriptions: Arc<AtomicU64>,
    sockets: Arc<tokio::sync::Semaphore>,
    apps: HashMap<String, Vec<u8>>,
    rendezvous: Mutex<RendezvousTable>,
    queue_replay: Mutex<ReplayCache>,
    store: ConversationStore,
    counters: Counters,
    /// Set once the relay links the table with the workers' (`link_tags`).
    link: std::sync::OnceLock<TagLink>,
    /// With `--cluster-redis`: ownership signatures are also claimed in the directory
    /// (see [`Qredo::with_cluster`]).
    cluster: std::sync::OnceLock<Arc<crate::cluster::http::ClusterHttp>>,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    /// Other nodes' publish notifications dropped (backlog full; PostgreSQL store).
    notices_dropped: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The header of a failure for a request whose own header could not be read.
fn unknown_header() -> Interchange {
    Interchange {
        protocol: PROTOCOL_VERSION,
        release: PROTOCOL_VERSION,
        return_channel: Vec::new(),
        correlation: Vec::new(),
        service: "_".into(),
        operation: "_".into(),
    }
}

/// The failure result for `failure`, addressed with `header`.
pub fn failure_response(mut header: Interchange, failure: Failure) -> Vec<u8> {
    header.protocol = PROTOCOL_VERSION;
    Response {
        header,
        outcome: Outcome::Failure(vec![ErrorInfo {
            code: failure.code(),
            message: failure.to_string(),
            debug: vec![("tryst".into(), failure.name().into())],
        }]),
    }
    .encode()
}

/// A `ConversationItemWithSequenceValue` (as queried, and as pushed to subscribers).
fn item_with_seq(item: Value, seq: u64) -> Value {
    Value::Record(lf::Record::new(
        "ConversationItemWithSequenceValue",
        vec![
            ("item", item),
            ("sequenceValue", Value::Bytes(seq.to_be_bytes().to_vec())),
        ],
    ))
}

fn success(mut header: Interchange, value: Value) -> Vec<u8> {
    header.protocol = PROTOCOL_VERSION;
    Response {
        header,
        outcome: Outcome::Success(vec![value]),
    }
    .encode()
}

impl Qredo {
    /// Opens the conversation store and builds the service. `postgres` is the
    /// dead-drop's database when it is on PostgreSQL: the queues then live there
    /// (`config.store_path` is not used); otherwise in the redb file at `store_path`.
    pub fn open(
        config: QredoConfig,
        postgres: Option<crate::deaddrop::pg::PgAccess>,
    ) -> Result<Self, QredoError> {
        let store = match postgres {
            Some(access) => {
                ConversationStore::Postgres(super::pg::PgConversations::new(access, config.store))
            }
            None => ConversationStore::Redb(Arc::new(
                RedbConversations::open(&config.store_path, config.store)
                    .map_err(|e| QredoError::Store(e.to_string()))?,
            )),
        };
        let apps = match &config.apps_file {
            None => HashMap::new(),
            Some(path) => load_apps(path)?,
        };
        let qredo = Self {
            inner: Arc::new(Inner {
                rendezvous: Mutex::new(RendezvousTable::new(config.rendezvous)),
                queue_replay: Mutex::new(ReplayCache::new(config.rendezvous.replay_capacity)),
                apps,
                store,
                counters: Counters::default(),
                link: std::sync::OnceLock::new(),
                cluster: std::sync::OnceLock::new(),
                events: broadcast::channel(EVENT_BUFFER).0,
                subscriptions: Arc::new(AtomicU64::new(0)),
                sockets: Arc::new(tokio::sync::Semaphore::new(config.max_sockets)),
                config,
            }),
        };
        if let ConversationStore::Postgres(pg) = &qredo.inner.store {
            // Other nodes' items, pushed to this node's subscribers (no reference to
            // `inner`: the listener lives as long as the store).
            let subscriptions = Arc::clone(&qredo.inner.subscriptions);
            let events = qredo.inner.events.clone();
            pg.listen(
                move || subscriptions.load(Ordering::Relaxed) > 0,
                move |queue, seq, item| match Value::decode_bytes(&item, &Limits::default()) {
                    Ok(item) => {
                        let _ = events.send(Event::Item {
                            queue,
                            value: item_with_seq(item, seq),
                        });
                    }
                    Err(_) => tracing::error!("qredo: a stored conversation item does not decode"),
                },
                Arc::clone(&qredo.inner.counters.notices_dropped),
            );
        }
        Ok(qredo)
    }

    /// The same service in a cluster (`None`: a single node, as before): every
    /// ownership signature is then claimed in the directory before its operation runs,
    /// and one another node accepted is refused `ReplayedSignature` as a local replay
    /// is (docs/cluster.md).
    #[must_use]
    pub fn with_cluster(self, cluster: Option<Arc<crate::cluster::http::ClusterHttp>>) -> Self {
        if let Some(c) = cluster {
            let _ = self.inner.cluster.set(c);
        }
        self
    }

    /// In a cluster: claims a verified signature in the directory; `Err` when another
    /// node (or this one) used it before. Without a cluster, or when the directory
    /// cannot say (counted), the local replay cache alone decides.
    async fn claim_signature(&self, v: &ownership::Verified) -> Result<(), Failure> {
        use crate::cluster::replay::{Scope, Seen, ttl};
        let Some(c) = self.inner.cluster.get() else {
            return Ok(());
        };
        let ttl = ttl(v.expiry_ms, unix_now_ms());
        match c.replay().first_use(Scope::Qredo, &[&v.id], ttl).await {
            Seen::Replayed => Err(Failure::ReplayedSignature),
            Seen::First | Seen::Unchecked => Ok(()),
        }
    }

    /// Runs a signed `Rendezvous` operation on the table; in a cluster its signature is
    /// verified and claimed in the directory first, so the operation runs only for a
    /// signature no node used before.
    pub(super) async fn signed<T>(
        &self,
        op: impl Fn(&mut RendezvousTable) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        if self.inner.cluster.get().is_some() {
            let probed = lock(&self.inner.rendezvous).probe(&op)?;
            if let Some(v) = probed {
                self.claim_signature(&v).await?;
            }
        }
        op(&mut lock(&self.inner.rendezvous))
    }

    pub(super) fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// A WebSocket slot, if one is free.
    pub(super) fn socket_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.inner.sockets).try_acquire_owned().ok()
    }

    pub(super) fn subscriptions(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.inner.subscriptions)
    }

    pub(super) fn max_request(&self) -> usize {
        self.inner.config.max_request
    }

    /// Does this service own `path`?
    pub fn owns(path: &str) -> bool {
        path == PATH
    }

    /// Prometheus lines.
    pub fn render_metrics(&self) -> String {
        let c = &self.inner.counters;
        let active = lock(&self.inner.rendezvous).active(unix_now_ms());
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "tryst_qredo_calls_total",
                "counter",
                "Lingua Franca calls answered at /services.",
                c.calls.load(Ordering::Relaxed),
            ),
            (
                "tryst_qredo_failures_total",
                "counter",
                "Lingua Franca calls answered with a failure result.",
                c.failures.load(Ordering::Relaxed),
            ),
            (
                "tryst_qredo_subscriptions",
                "gauge",
                "Qredo WebSocket subscriptions live now.",
                self.inner.subscriptions.load(Ordering::Relaxed),
            ),
            (
                "tryst_qredo_remote_items_dropped_total",
                "counter",
                "Other nodes' conversation items not pushed to this node's subscribers because the notification backlog was full (PostgreSQL store).",
                c.notices_dropped.load(Ordering::Relaxed),
            ),
            (
                "tryst_qredo_rendezvous_active",
                "gauge",
                "Qredo rendezvous active now.",
                active as u64,
            ),
        ] {
            crate::metrics::single(&mut out, name, kind, help, value);
        }
        out
    }

    pub(super) fn app_allowed(&self, req: &Request) -> bool {
        if self.inner.config.open {
            return true;
        }
        match self.inner.apps.get(&req.app_id) {
            Some(secret) => {
                use subtle::ConstantTimeEq as _;
                secret.len() == req.app_secret.len()
                    && bool::from(secret.as_slice().ct_eq(&req.app_secret))
            }
            None => false,
        }
    }

    /// Answers one request body (at `now_ms`) from a client of this node.
    pub async fn call_at(&self, body: &[u8], now: u64) -> Vec<u8> {
        self.call_from(body, now, CallOrigin::default()).await
    }

    /// Answers one request body (at `now_ms`) that came from `origin`. In a cluster a
    /// `Rendezvous` call is answered by the node that owns its tag (see
    /// `Qredo::carry`).
    pub async fn call_from(&self, body: &[u8], now: u64, origin: CallOrigin) -> Vec<u8> {
        self.inner.counters.calls.fetch_add(1, Ordering::Relaxed);
        let limits = Limits {
            max_total: self.inner.config.max_request,
            max_atom: self.inner.config.max_request,
            ..Limits::default()
        };
        let req = match lf::decode_request(body, &limits) {
            Ok(req) => req,
            Err((e, partial)) => {
                let failure = match e {
                    lf::LfError::TooLarge | lf::LfError::AtomTooLong => Failure::TooLarge,
                    _ => Failure::Malformed,
                };
                return self.fail(partial.header.unwrap_or_else(unknown_header), failure);
            }
        };
        if req.header.protocol.major != PROTOCOL_VERSION.major
            || req.header.protocol.minor != PROTOCOL_VERSION.minor
        {
            return self.fail(req.header, Failure::UnsupportedVersion);
        }
        if !self.app_allowed(&req) {
            return self.fail(req.header, Failure::AppNotAuthorised);
        }
        if let Some(answer) = self.carry(&req, body, origin).await {
            return answer;
        }
        let result = self.dispatch(&req, now).await;
        match result {
            Ok(v) => success(req.header, v),
            Err(f) => self.fail(req.header, f),
        }
    }

    /// Answers one request body now.
    pub async fn call(&self, body: &[u8]) -> Vec<u8> {
        self.call_at(body, unix_now_ms()).await
    }

    /// In a cluster, a `Rendezvous` call for a tag another live node owns is carried to
    /// that node over the mesh (as `POST /services` with the same body) and its result
    /// passed back unchanged; `None`: answer here. `create` and `activate` claim the tag
    /// for this node when nobody live owns it (its key lives as long as a rendezvous and
    /// its inactive time can: twice the longest duration); the other operations only
    /// look the owner up. `subscribeToResponses` is answered by the node the socket is
    /// on (the SDK subscribes on the socket it created the rendezvous on). The owner
    /// unreachable past the takeover wait: `Busy`.
    async fn carry(&self, req: &Request, body: &[u8], origin: CallOrigin) -> Option<Vec<u8>> {
        let cluster = self.inner.cluster.get()?;
        if origin.via_mesh || req.header.service != "Rendezvous" {
            return None;
        }
        let op = req.header.operation.as_str();
        let tag = rendezvous_tag(op, &req.args)?;
        let claim = matches!(op, "create" | "activate").then(|| {
            Duration::from_secs(
                self.inner
                    .config
                    .rendezvous
                    .max_duration_secs
                    .saturating_mul(2),
            )
        });
        let key = format!("tryst:qredo:{}", hex::encode(tag));
        let (mut parts, ()) = HttpRequest::post(PATH)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .body(())
            .ok()?
            .into_parts();
        parts.version = hyper::Version::HTTP_11;
        let cx = crate::family::ServeContext {
            peer: origin.peer,
            body_deadline: CARRY_TIMEOUT,
            via_mesh: false,
        };
        let give_up = tokio::time::Instant::now() + crate::cluster::http::TAKEOVER_WAIT;
        let routed = cluster
            .route(
                crate::cluster::http::Family::QredoRendezvous,
                &key,
                claim,
                &parts,
                &Bytes::copy_from_slice(body),
                cx,
                MAX_CARRIED_RESULT,
                CARRY_TIMEOUT,
                give_up,
            )
            .await;
        match routed {
            crate::cluster::http::Routed::Local => None,
            crate::cluster::http::Routed::Answered(resp) if resp.status() == StatusCode::OK => {
                use http_body_util::BodyExt as _;
                match resp.into_body().collect().await {
                    Ok(b) => Some(b.to_bytes().to_vec()),
                    Err(e) => match e {},
                }
            }
            crate::cluster::http::Routed::Answered(_)
            | crate::cluster::http::Routed::Unavailable => {
                Some(self.fail(req.header.clone(), Failure::Busy))
            }
        }
    }

    pub(super) fn fail(&self, header: Interchange, failure: Failure) -> Vec<u8> {
        self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(code = failure.name(), "qredo call refused");
        failure_response(header, failure)
    }

    async fn dispatch(&self, req: &Request, now: u64) -> Result<Value, Failure> {
        let args = req.args.as_slice();
        match (req.header.service.as_str(), req.header.operation.as_str()) {
            ("Ping", "ping") => match args {
                [] => Ok(Value::Bool(true)),
                _ => Err(Failure::BadArguments),
            },
            ("Ping", _) => Err(Failure::UnknownOperation),
            ("Rendezvous", op) => self.rendezvous(op, args, now).await,
            ("Conversations", op) => match (op, args) {
                ("publish", [queue, item, sig]) => self.publish(queue, item, sig, now).await,
                ("queryItems", [queue, after, fetch, sig]) => {
                    self.query_items(queue, after, fetch, sig, now).await
                }
                ("acknowledgeReceipt", [queue, up_to, sig]) => {
                    self.acknowledge(queue, up_to, sig, now).await
                }
                ("subscribe", [_, _]) => Err(Failure::NeedsWebSocket),
                ("publish" | "queryItems" | "acknowledgeReceipt" | "subscribe", _) => {
                    Err(Failure::BadArguments)
                }
                _ => Err(Failure::UnknownOperation),
            },
            _ => Err(Failure::UnknownService),
        }
    }

    /// The `Rendezvous` operations. With a [`TagLink`] (a relay with workers), the owner
    /// worker's `tag:` table is kept in step: a creation is answered once the worker has
    /// it (or refused it), `activate`/`deactivate` send the new state, and a response to
    /// a single-response rendezvous is first claimed from the worker, which decides
    /// single-shot consumption for RPC and tunnel responders alike.
    async fn rendezvous(&self, op: &str, args: &[Value], now: u64) -> Result<Value, Failure> {
        let table = || lock(&self.inner.rendezvous);
        let link = self.inner.link.get();
        match (op, args) {
            ("create", [info]) => {
                let created = table().create(info, now)?;
                let Some(link) = link else {
                    return Ok(created);
                };
                let tag = info
                    .as_record()
                    .and_then(|r| r.field("hashedTag"))
                    .and_then(Value::as_quid)
                    .copied();
                let shared = match (&created, tag) {
                    (Value::Record(r), Ok(tag)) if r.name == "RendezvousCreated" => {
                        table().shared(&tag, now)
                    }
                    _ => None,
                };
                let Some(shared) = shared else {
                    return Ok(created);
                };
                let tag = shared.tag.0;
                match link.ask(tag, |id| Control::Create { id, shared }).await {
                    Some(Answer::Created) => Ok(created),
                    Some(Answer::Exists) => {
                        table().forget(&tag);
                        Ok(Value::Record(lf::Record::unit("RendezvousAlreadyExists")))
                    }
                    answer => {
                        table().forget(&tag);
                        if answer.is_none() {
                            // The worker may still apply the creation later: retire it.
                            link.put_unanswered(SharedTag {
                                active: false,
                                ..shared
                            })
                            .await;
                        }
                        Err(Failure::Busy)
                    }
                }
            }
            ("activate", [tag, duration, sig]) => {
                let v = self.signed(|t| t.activate(tag, duration, sig, now)).await?;
                self.share_state(tag, now).await;
                Ok(v)
            }
            ("deactivate", [tag, sig]) => {
                let v = self.signed(|t| t.deactivate(tag, sig, now)).await?;
                self.share_state(tag, now).await;
                Ok(v)
            }
            ("getInfo", [tag, sig]) => self.signed(|t| t.get_info(tag, sig, now)).await,
            ("respond", [response]) => {
                let mut claimed = false;
                let claim = link.zip(table().needs_claim(response, now));
                if let Some((link, tag)) = claim {
                    let answer = link
                        .ask(tag, |id| Control::Claim {
                            id,
                            tag: HashedTag(tag),
                        })
                        .await;
                    match answer {
                        Some(Answer::Claimed) => claimed = true,
                        // Refused below as `Rejected(MaxResponseCountReached)`.
                        Some(Answer::Consumed) => table().mark_consumed(&tag),
                        _ => return Err(Failure::Busy),
                    }
                }
                let (v, registered) = if claimed {
                    table().respond_claimed(response, now)?
                } else {
                    table().respond(response, now)?
                };
                // The pushed value is built only when a socket subscribes (to anything: a
                // subscriber takes its receiver before it reads the table, so one that
                // missed this check finds the response in the table instead).
                if let Some(r) = registered
                    && self.inner.events.receiver_count() > 0
                    && let Some(value) = table().registered_value(&r)
                {
                    // A subscriber gone meanwhile is fine.
                    let _ = self
                        .inner
                        .events
                        .send(Event::Response { tag: r.tag, value });
                }
                Ok(v)
            }
            ("getResponses", [tag, after, sig]) => {
                self.signed(|t| t.get_responses(tag, after, sig, now)).await
            }
            ("subscribeToResponses", [_, _]) => Err(Failure::NeedsWebSocket),
            (
                "create"
                | "activate"
                | "getInfo"
                | "respond"
                | "getResponses"
                | "deactivate"
                | "subscribeToResponses",
                _,
            ) => Err(Failure::BadArguments),
            _ => Err(Failure::UnknownOperation),
        }
    }

    /// Sends `tag`'s state to its owner worker (when linked).
    async fn share_state(&self, tag: &Value, now: u64) {
        let Some(link) = self.inner.link.get() else {
            return;
        };
        let Ok(tag) = tag.as_quid() else {
            return;
        };
        let shared = lock(&self.inner.rendezvous).shared(tag, now);
        if let Some(shared) = shared {
            match link.put(shared).await {
                Some(Answer::Applied) => {}
                answer => tracing::warn!(
                    tag = %shared.tag.to_hex(),
                    ?answer,
                    "qredo: the owner worker did not confirm a tag update; tunnels may see it late"
                ),
            }
        }
    }

    /// Links the `Rendezvous` table with the workers' `tag:` tables (once; later calls
    /// get `None`): the supervisor's loop sends each returned [`Outgoing`] to the worker
    /// owning its tag and passes the workers' `tag:` reports to
    /// [`Qredo::on_tag_report`].
    pub fn link_tags(&self) -> Option<mpsc::Receiver<Outgoing>> {
        let (link, rx) = TagLink::new();
        self.inner.link.set(link).ok().map(|()| rx)
    }

    /// A `tag:` report from a worker (the scheme stripped).
    pub fn on_tag_report(&self, report: &[u8]) {
        let Some(link) = self.inner.link.get() else {
            return;
        };
        if let Some(tag) = link.on_report(report) {
            lock(&self.inner.rendezvous).mark_consumed(&tag);
        }
    }

    /// Every rendezvous as the `tag:` tables hold it, for a restarted worker (the
    /// supervisor sends each to its owner as a `Put`).
    pub fn shared_tags(&self, now_ms: u64) -> Vec<Outgoing> {
        lock(&self.inner.rendezvous)
            .all_shared(now_ms)
            .into_iter()
            .map(|shared| Outgoing {
                tag: shared.tag.0,
                message: Control::Put { id: 0, shared }.encode(),
            })
            .collect()
    }

    /// Checks a queue operation's signature: the queue id is the queue's Ed25519 public
    /// key (`QredoConversation.m`: queueId = public key of the queue's signing pair).
    pub(super) async fn queue_auth(
        &self,
        queue: &Value,
        sig: &Value,
        op: Op,
        data: &[u8],
        now: u64,
    ) -> Result<[u8; 32], Failure> {
        let queue = *queue.as_quid().map_err(|_| Failure::BadArguments)?;
        let key = crate::ed25519::strict_key(&queue).map_err(|_| Failure::BadSignature)?;
        let verified = ownership::verify(
            sig,
            &key,
            op,
            data,
            now,
            self.inner.config.rendezvous.window_ms,
        )?;
        lock(&self.inner.queue_replay).insert(&verified, now)?;
        self.claim_signature(&verified).await?;
        Ok(queue)
    }

    /// The failure a store outcome is answered with.
    fn stored<T>(outcome: Result<T, StoreError>) -> Result<T, Failure> {
        match outcome {
            Ok(v) => Ok(v),
            Err(StoreError::QueueFull) => Err(Failure::QueueFull),
            Err(StoreError::StoreFull) => Err(Failure::Busy),
            Err(e) => {
                tracing::error!(error = %e, "qredo: conversation store failed");
                Err(Failure::StoreUnavailable)
            }
        }
    }

    /// `publish(queueId, EncryptedConversationItem, signature)` →
    /// `ConversationPublishResult{sequenceValue}`; signed `OperationCreate` over the
    /// marshalled item (`QredoConversation.m sendMessageWithoutStoring:`).
    async fn publish(
        &self,
        queue: &Value,
        item: &Value,
        sig: &Value,
        now: u64,
    ) -> Result<Value, Failure> {
        let rec = item.as_record().map_err(|_| Failure::BadArguments)?;
        if rec.name != "EncryptedConversationItem"
            || rec.fields.len() != 2
            || rec.field("authCode").and_then(Value::as_bytes).is_err()
            || rec
                .field("encryptedMessage")
                .and_then(Value::as_bytes)
                .is_err()
        {
            return Err(Failure::BadArguments);
        }
        let bytes = item.encode();
        let queue = self.queue_auth(queue, sig, Op::Create, &bytes, now).await?;
        let seq = Self::stored(self.inner.store.publish(&queue, &bytes, now).await)?;
        let _ = self.inner.events.send(Event::Item {
            queue,
            value: item_with_seq(item.clone(), seq),
        });
        Ok(Value::Record(lf::Record::new(
            "ConversationPublishResult",
            vec![("sequenceValue", Value::Bytes(seq.to_be_bytes().to_vec()))],
        )))
    }

    /// `queryItems(queueId, after: set<bytes>, fetchSize: set<int32>, signature)` →
    /// `ConversationQueryItemsResult{current, items, maxSequenceValue}`; signed
    /// `OperationList` over the two sets (`QredoConversation.m enumerateMessages...`).
    async fn query_items(
        &self,
        queue: &Value,
        after: &Value,
        fetch: &Value,
        sig: &Value,
        now: u64,
    ) -> Result<Value, Failure> {
        let after_seq = match after.as_set().map_err(|_| Failure::BadArguments)? {
            [] => 0,
            [v] => sequence(v)?,
            _ => return Err(Failure::BadArguments),
        };
        let limit = match fetch.as_optional_i32().map_err(|_| Failure::BadArguments)? {
            None => MAX_FETCH,
            Some(n) if n <= 0 => return Err(Failure::BadArguments),
            Some(n) => usize::try_from(n).map_or(MAX_FETCH, |n| n.min(MAX_FETCH)),
        };
        let mut data = after.encode();
        fetch.encode_into(&mut data);
        let queue = self.queue_auth(queue, sig, Op::List, &data, now).await?;
        let (items, current) =
            Self::stored(self.inner.store.query(&queue, after_seq, limit, now).await)?;
        let max = items.last().map_or(after_seq, |i| i.seq);
        let mut values = Vec::with_capacity(items.len());
        for stored in items {
            let item = Value::decode_bytes(&stored.item, &Limits::default())
                .map_err(|_| Failure::StoreUnavailable)?;
            values.push(item_with_seq(item, stored.seq));
        }
        Ok(Value::Record(lf::Record::new(
            "ConversationQueryItemsResult",
            vec![
                ("current", Value::Bool(current)),
                ("items", Value::Seq(values)),
                ("maxSequenceValue", Value::Bytes(max.to_be_bytes().to_vec())),
            ],
        )))
    }

    /// `acknowledgeReceipt(queueId, upTo: bytes, signature)` → `ConversationAckResult`;
    /// signed `OperationDelete` over the marshalled `upTo` (the SDK never calls it:
    /// tryst's choice). Answered after the removal is committed.
    async fn acknowledge(
        &self,
        queue: &Value,
        up_to: &Value,
        sig: &Value,
        now: u64,
    ) -> Result<Value, Failure> {
        let seq = sequence(up_to)?;
        let queue = self
            .queue_auth(queue, sig, Op::Delete, &up_to.encode(), now)
            .await?;
        Self::stored(self.inner.store.acknowledge(&queue, seq, now).await)?;
        Ok(Value::Record(lf::Record::unit("ConversationAckResult")))
    }

    /// Serves `POST /services` and the WebSocket upgrade `GET /services`. A `GET` that
    /// is not an upgrade: 426 with `Upgrade: websocket`; any other method: 405 with
    /// `Allow: GET, POST`; both the HTTP service's own errors ([`ApiError`]).
    pub async fn serve<B>(
        &self,
        req: HttpRequest<B>,
        cx: crate::family::ServeContext,
    ) -> HttpResponse<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if super::ws::is_upgrade(&req) {
            return self.upgrade(req);
        }
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET {
            return ApiError::UpgradeRequired.response();
        }
        if parts.method != Method::POST {
            let mut resp = ApiError::MethodNotAllowed.response();
            // This endpoint's methods, not the HTTP service's own GET and HEAD.
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            return resp;
        }
        let limit = self.inner.config.max_request;
        let mut close = false;
        let origin = CallOrigin {
            peer: cx.peer,
            via_mesh: cx.via_mesh,
        };
        let out = match crate::body::read_body(body, limit, cx.body_deadline).await {
            Ok(bytes) => self.call_from(&bytes, unix_now_ms(), origin).await,
            Err(BodyError::TooLarge) => {
                close = true;
                self.fail(unknown_header(), Failure::TooLarge)
            }
            // Qredo's wire has no timeout failure: a late body is a malformed request.
            Err(BodyError::Timeout | BodyError::Malformed) => {
                close = true;
                self.fail(unknown_header(), Failure::Malformed)
            }
        };
        let mut resp = HttpResponse::new(Full::new(Bytes::from(out)));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if close {
            // The rest of the body is unread: the connection cannot be reused.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A conversation sequence value: 8 bytes, big-endian (tryst's encoding of the SDK's
/// opaque `ConversationSequenceValue`).
fn sequence(v: &Value) -> Result<u64, Failure> {
    let b = v.as_bytes().map_err(|_| Failure::BadArguments)?;
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| Failure::BadArguments)
}

impl crate::family::ServiceFamily for Qredo {
    fn name(&self) -> &'static str {
        "qredo"
    }

    fn owns(&self, path: &str) -> bool {
        Self::owns(path)
    }

    fn serve(
        &self,
        req: HttpRequest<hyper::body::Incoming>,
        cx: crate::family::ServeContext,
    ) -> crate::family::ServeFuture<'_> {
        Box::pin(Self::serve(self, req, cx))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&Self::render_metrics(self));
    }
}

/// Reads and parses the `--qredo-apps` file (also what `--check-config` checks).
pub fn load_apps(path: &std::path::Path) -> Result<HashMap<String, Vec<u8>>, QredoError> {
    let apps_err = |message: String| QredoError::Apps {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| apps_err(e.to_string()))?;
    Ok(super::parse_apps(&text)
        .map_err(apps_err)?
        .into_iter()
        .collect())
}
