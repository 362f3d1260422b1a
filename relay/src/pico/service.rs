//! Pico's HTTP adapter: which paths and methods are Pico's ([`route`]), the exact
//! responses of the released server, [`Pico`] (a waiting GET or POST is a future holding
//! a `oneshot::Receiver` and a timer), and Pico as a [`ServiceFamily`] of the HTTP
//! service.

use super::channel::{Limits, Notice, Read, Refusal, Table, Timer, WaitId, Write};
use super::{
    ALLOW_HEADERS, ALLOW_METHODS, CLOSED_JSON, MAX_MESSAGE, MAX_NAME, NO_RESOURCE_HTML, OK_JSON,
    PEER_GONE_JSON, TIMEOUT_JSON,
};
use crate::body::{BodyError, json_reply};
use crate::cluster::http::{ClusterHttp, Family, Routed};
use http_body_util::Full;
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::family::{ServeContext, ServeFuture, ServiceFamily};
use hyper::body::Incoming;

/// What a request to this family asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The path is not a Pico path.
    NotMine,
    /// `GET /new`.
    New,
    /// `OPTIONS` on a Pico path.
    Preflight,
    /// `GET /channel/<name>`.
    Read(Vec<u8>),
    /// `POST /channel/<name>`.
    Write(Vec<u8>),
    /// `DELETE /channel/<name>`.
    Delete(Vec<u8>),
    /// A Pico path, but a method it does not serve.
    MethodNotAllowed(&'static str),
    /// Under `/channel/` but not one name (empty, nested, too long, bad escape).
    NoSuchChannel,
}

/// True for the paths this family owns: `/new` and everything under `/channel/`.
pub fn owns(path: &str) -> bool {
    path == "/new" || path.starts_with("/channel/")
}

/// Classifies a request by method and path (the path without the query).
pub fn route(method: &Method, path: &str) -> Route {
    if path == "/new" {
        return match *method {
            Method::GET => Route::New,
            Method::OPTIONS => Route::Preflight,
            _ => Route::MethodNotAllowed("GET, OPTIONS"),
        };
    }
    let Some(rest) = path.strip_prefix("/channel/") else {
        return Route::NotMine;
    };
    if *method == Method::OPTIONS {
        return Route::Preflight;
    }
    let Some(name) = channel_name(rest) else {
        return Route::NoSuchChannel;
    };
    match *method {
        Method::GET => Route::Read(name),
        Method::POST => Route::Write(name),
        Method::DELETE => Route::Delete(name),
        _ => Route::MethodNotAllowed("GET, POST, DELETE, OPTIONS"),
    }
}

/// The channel name in one path segment: percent-decoded (as Twisted decodes path
/// segments), non-empty, at most [`MAX_NAME`] bytes; `None` otherwise.
pub fn channel_name(segment: &str) -> Option<Vec<u8>> {
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
        if out.len() > MAX_NAME {
            return None;
        }
    }
    Some(out)
}

/// A fresh channel name: a version-4 UUID as 32 lower-case hex digits (`uuid4().hex`).
pub fn new_name() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    hex::encode(b)
}

/// Type of the responses this family produces.
pub type PicoResponse = Response<Full<Bytes>>;

fn response(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> PicoResponse {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// A JSON reply with the CORS header.
fn json_cors(status: StatusCode, body: impl Into<Bytes>) -> PicoResponse {
    let mut resp = json_reply(status, body);
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn json(body: &'static str) -> PicoResponse {
    json_cors(StatusCode::OK, body)
}

fn data(body: Bytes) -> PicoResponse {
    response(StatusCode::OK, Some("application/octet-stream"), body)
}

fn no_resource() -> PicoResponse {
    response(
        StatusCode::NOT_FOUND,
        Some("text/html"),
        Bytes::from_static(NO_RESOURCE_HTML.as_bytes()),
    )
}

fn preflight() -> PicoResponse {
    let mut resp = response(StatusCode::NO_CONTENT, None, Bytes::new());
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    resp
}

/// A tryst-style JSON error (`{"error":{"code":..,"message":..}}`) with the CORS header.
fn error(status: StatusCode, code: &str, message: &str, close: bool) -> PicoResponse {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut resp = json_cors(status, body);
    let h = resp.headers_mut();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn refused(r: Refusal) -> PicoResponse {
    match r {
        Refusal::Busy => no_resource(),
        Refusal::TooManyChannels => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "pico_channels_full",
            &r.to_string(),
            false,
        ),
        Refusal::TooManyWaiting => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "pico_waiting_full",
            &r.to_string(),
            false,
        ),
    }
}

fn notice_response(n: Notice) -> PicoResponse {
    match n {
        Notice::Data(b) => data(b),
        Notice::Written => json(OK_JSON),
        Notice::TimedOut => json(TIMEOUT_JSON),
        Notice::Closed => json(CLOSED_JSON),
    }
}

type Waiter = oneshot::Sender<Notice>;

/// The Pico family: the channel table behind a mutex (never held across an await).
/// Cheap to clone; clones share the table.
#[derive(Debug, Clone)]
pub struct Pico {
    table: Arc<Mutex<Table<Waiter>>>,
    limits: Limits,
    /// With `--cluster-redis`: channels live on their owner node (see
    /// [`Pico::with_cluster`]).
    cluster: Option<Arc<ClusterHttp>>,
}

/// Extra time a request carried to a channel's owner node may take beyond the wait.
const PROXY_SLACK: Duration = Duration::from_secs(10);

/// Sends every side-effect notice (waiters whose receivers are gone are skipped).
fn notify(out: &mut Vec<(Waiter, Notice)>) {
    for (w, n) in out.drain(..) {
        let _ = w.send(n);
    }
}

impl Pico {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            table: Arc::new(Mutex::new(Table::new(limits))),
            limits,
            cluster: None,
        }
    }

    /// The same family in a cluster: a channel lives on the node that first served it
    /// (its owner, recorded in the directory as `tryst:pico:<hex name>`); GETs, POSTs
    /// and DELETEs arriving elsewhere are carried to the owner over the mesh and its
    /// exact reply is passed back (docs/cluster.md). `None`: a single node, as before.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Option<Arc<ClusterHttp>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Serves one request as [`Pico::serve`] does, first carrying channel requests to
    /// their owner node when this node is in a cluster and the request did not already
    /// come over the mesh. A POST's body is read here, with the same limits and
    /// answers as a local one. Owner unreachable until the wait ends (or the exchange
    /// broke after the request was sent): the code-2 "request timed out" answer, which
    /// clients answer by polling (or posting) again; a DELETE answers code 0.
    pub async fn serve_in<B>(&self, req: Request<B>, cx: ServeContext) -> PicoResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(cluster) = self.cluster.as_ref().filter(|_| !cx.via_mesh) else {
            return self.serve(req, cx.body_deadline).await;
        };
        let (parts, body) = req.into_parts();
        let route = route(&parts.method, parts.uri.path());
        let (name, bytes) = match &route {
            Route::Read(name) | Route::Delete(name) => (name.clone(), Bytes::new()),
            Route::Write(name) => match read_body(body, cx.body_deadline).await {
                Ok(b) => (name.clone(), b),
                Err(resp) => return resp,
            },
            _ => {
                return self
                    .serve(Request::from_parts(parts, body), cx.body_deadline)
                    .await;
            }
        };
        let key = format!("tryst:pico:{}", hex::encode(&name));
        let ttl = self.limits.channel_ttl + self.limits.wait;
        let now = tokio::time::Instant::now();
        let give_up = if matches!(route, Route::Delete(_)) {
            now + crate::cluster::http::TAKEOVER_WAIT
        } else {
            now + self.limits.wait
        };
        let routed = cluster
            .route(
                Family::Pico,
                &key,
                Some(ttl),
                &parts,
                &bytes,
                cx,
                MAX_MESSAGE + 64 * 1024,
                self.limits.wait + PROXY_SLACK,
                give_up,
            )
            .await;
        match (routed, route) {
            (Routed::Answered(resp), _) => resp,
            (Routed::Local, Route::Read(name)) => self.read(&name).await,
            (Routed::Local, Route::Write(name)) => self.write(&name, bytes).await,
            (Routed::Local | Routed::Unavailable, Route::Delete(name)) => {
                self.delete(&name);
                json(OK_JSON)
            }
            (Routed::Unavailable, _) => json(TIMEOUT_JSON),
            // Not reached: only channel routes come this far.
            (Routed::Local, _) => no_resource(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<Waiter>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (channels, waiting parties) now.
    pub fn counts(&self) -> (usize, usize) {
        let t = self.lock();
        (t.channels(), t.waiting())
    }

    /// The Pico gauges in Prometheus text format (`tryst_pico_channels`,
    /// `tryst_pico_waiting`), appended to `/metrics`.
    pub fn render_metrics(&self) -> String {
        let (channels, waiting) = self.counts();
        let mut out = String::new();
        crate::metrics::single(
            &mut out,
            "tryst_pico_channels",
            "gauge",
            "Pico channels that exist now.",
            channels,
        );
        crate::metrics::single(
            &mut out,
            "tryst_pico_waiting",
            "gauge",
            "Pico GETs and POSTs waiting for their peer now.",
            waiting,
        );
        out
    }

    /// Serves one request on a Pico path ([`owns`] is true for it). The body (POST only)
    /// is read within `body_deadline` and up to [`MAX_MESSAGE`] bytes.
    pub async fn serve<B>(&self, req: Request<B>, body_deadline: Duration) -> PicoResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        match route(&parts.method, parts.uri.path()) {
            Route::NotMine | Route::NoSuchChannel => no_resource(),
            Route::New => response(StatusCode::OK, Some("text/html"), Bytes::from(new_name())),
            Route::Preflight => preflight(),
            Route::MethodNotAllowed(allow) => {
                let mut resp = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "method not allowed",
                    false,
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            Route::Read(name) => self.read(&name).await,
            Route::Write(name) => match read_body(body, body_deadline).await {
                Ok(bytes) => self.write(&name, bytes).await,
                Err(resp) => resp,
            },
            Route::Delete(name) => {
                self.delete(&name);
                json(OK_JSON)
            }
        }
    }

    /// A GET: the message, or the outcome of waiting for one.
    pub async fn read(&self, name: &[u8]) -> PicoResponse {
        let (tx, rx) = oneshot::channel();
        let mut out = Vec::new();
        let decision = {
            let mut t = self.lock();
            let d = t.read(Instant::now(), name, tx, &mut out);
            notify(&mut out);
            match d {
                Ok(Read::Delivered {
                    data: bytes,
                    writer,
                }) => {
                    let _ = writer.send(Notice::Written);
                    Ok(Err(bytes))
                }
                Ok(Read::Parked { id, deadline }) => Ok(Ok((id, deadline))),
                Err(r) => Err(r),
            }
        };
        match decision {
            Err(r) => refused(r),
            Ok(Err(bytes)) => data(bytes),
            Ok(Ok((id, deadline))) => self.wait(name, id, deadline, rx).await,
        }
    }

    /// A POST of `bytes`: code 0 once a reader has it, or the outcome of waiting.
    pub async fn write(&self, name: &[u8], bytes: Bytes) -> PicoResponse {
        let (tx, rx) = oneshot::channel();
        let mut out = Vec::new();
        let decision = {
            let mut t = self.lock();
            let d = t.write(Instant::now(), name, bytes.clone(), tx, &mut out);
            notify(&mut out);
            match d {
                Ok(Write::Deliver { reader }) => Ok(Err(reader.send(Notice::Data(bytes)).is_ok())),
                Ok(Write::Parked { id, deadline }) => Ok(Ok((id, deadline))),
                Err(r) => Err(r),
            }
        };
        match decision {
            Err(r) => refused(r),
            Ok(Err(true)) => json(OK_JSON),
            Ok(Err(false)) => json(PEER_GONE_JSON),
            Ok(Ok((id, deadline))) => self.wait(name, id, deadline, rx).await,
        }
    }

    /// A DELETE: removes the channel; its waiting party hears code -1.
    pub fn delete(&self, name: &[u8]) {
        let mut out = Vec::new();
        let mut t = self.lock();
        t.delete(Instant::now(), name, &mut out);
        notify(&mut out);
    }

    /// Waits for a notice or the timer. Dropping this future (the client went away)
    /// cancels the wait.
    async fn wait(
        &self,
        name: &[u8],
        id: WaitId,
        deadline: Instant,
        mut rx: oneshot::Receiver<Notice>,
    ) -> PicoResponse {
        let mut guard = CancelOnDrop {
            pico: self,
            name,
            id,
            armed: true,
        };
        let mut deadline = deadline;
        loop {
            tokio::select! {
                biased;
                notice = &mut rx => {
                    guard.armed = false;
                    // A sender dropped without a notice means the channel went away.
                    return notice_response(notice.unwrap_or(Notice::Closed));
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let mut out = Vec::new();
                    let fired = {
                        let mut t = self.lock();
                        let f = t.timer(Instant::now(), name, id, &mut out);
                        notify(&mut out);
                        f
                    };
                    match fired {
                        Timer::Fired(n) => {
                            guard.armed = false;
                            return notice_response(n);
                        }
                        Timer::NotYet(d) => deadline = d,
                        // Answered meanwhile: the notice is already in `rx`.
                        Timer::Gone => deadline = Instant::now() + Duration::from_secs(3600),
                    }
                }
            }
        }
    }

    /// Test hook: the wait of `id` on `name` is cancelled as if its client vanished.
    #[doc(hidden)]
    pub fn cancel(&self, name: &[u8], id: WaitId) -> bool {
        self.lock().cancel(name, id).is_some()
    }
}

/// Puts the channel back to standby if a waiting request is dropped unanswered.
struct CancelOnDrop<'a> {
    pico: &'a Pico,
    name: &'a [u8],
    id: WaitId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && self.pico.cancel(self.name, self.id) {
            tracing::debug!("pico: waiting party vanished; channel back to standby");
        }
    }
}

/// Reads a POST body of at most [`MAX_MESSAGE`] bytes within `deadline`; the `Err` is
/// Pico's reply.
async fn read_body<B>(body: B, deadline: Duration) -> Result<Bytes, PicoResponse>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::body::read_body(body, MAX_MESSAGE, deadline)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => too_large(),
            BodyError::Timeout => error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "request body not received in time",
                true,
            ),
            BodyError::Malformed => error(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "malformed request body",
                true,
            ),
        })
}

fn too_large() -> PicoResponse {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "request body too large",
        true,
    )
}

impl ServiceFamily for Pico {
    fn name(&self) -> &'static str {
        "pico"
    }

    fn owns(&self, path: &str) -> bool {
        owns(path)
    }

    fn serve(&self, req: Request<Incoming>, cx: ServeContext) -> ServeFuture<'_> {
        Box::pin(Self::serve_in(self, req, cx))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&Self::render_metrics(self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn short() -> Limits {
        Limits {
            wait: Duration::from_millis(150),
            channel_ttl: Duration::from_secs(60),
            max_channels: 8,
            max_waiting: 8,
        }
    }

    async fn body(resp: PicoResponse) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/new"), Route::New);
        assert_eq!(route(&Method::OPTIONS, "/new"), Route::Preflight);
        assert_eq!(
            route(&Method::POST, "/new"),
            Route::MethodNotAllowed("GET, OPTIONS")
        );
        assert_eq!(
            route(&Method::GET, "/channel/ab"),
            Route::Read(b"ab".to_vec())
        );
        assert_eq!(
            route(&Method::POST, "/channel/a%2Fb"),
            Route::Write(b"a/b".to_vec())
        );
        assert_eq!(
            route(&Method::DELETE, "/channel/x"),
            Route::Delete(b"x".to_vec())
        );
        assert_eq!(route(&Method::OPTIONS, "/channel/x"), Route::Preflight);
        assert_eq!(route(&Method::GET, "/channel/"), Route::NoSuchChannel);
        assert_eq!(route(&Method::GET, "/channel/a/b"), Route::NoSuchChannel);
        assert_eq!(route(&Method::GET, "/channel/%zz"), Route::NoSuchChannel);
        assert_eq!(route(&Method::GET, "/channel/%4"), Route::NoSuchChannel);
        let long = "a".repeat(MAX_NAME + 1);
        assert_eq!(
            route(&Method::GET, &format!("/channel/{long}")),
            Route::NoSuchChannel
        );
        assert_eq!(route(&Method::GET, "/channels"), Route::NotMine);
        assert_eq!(route(&Method::GET, "/newer"), Route::NotMine);
        assert!(owns("/channel/") && owns("/new") && !owns("/metrics"));
    }

    #[test]
    fn new_names_are_uuid4_hex() {
        let a = new_name();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(&a[12..13], "4");
        assert!(matches!(&a[16..17], "8" | "9" | "a" | "b"));
        assert_ne!(a, new_name());
    }

    #[tokio::test]
    async fn write_to_a_reader_that_just_vanished_is_code_1() {
        let pico = Pico::new(short());
        // The window between a reader's receiver going away and its cancel guard
        // running: the table still lists the reader.
        let (tx, rx) = oneshot::channel();
        drop(rx);
        let mut out = Vec::new();
        assert!(pico.lock().read(Instant::now(), b"c", tx, &mut out).is_ok());
        let resp = pico.write(b"c", Bytes::from_static(b"m")).await;
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(body(resp).await, PEER_GONE_JSON.as_bytes());
        assert_eq!(pico.counts(), (1, 0));
    }

    #[tokio::test]
    async fn a_dropped_waiting_request_cancels_its_wait() {
        let pico = Pico::new(short());
        let p = pico.clone();
        let reader = tokio::spawn(async move { p.read(b"c").await });
        // Wait (bounded) until the reader is registered, then abort it.
        let t0 = Instant::now();
        while pico.counts().1 == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5));
            tokio::task::yield_now().await;
        }
        reader.abort();
        let _ = reader.await;
        assert_eq!(pico.counts(), (1, 0));
        // The slot is free: a writer waits (and times out with code 2).
        let resp = pico.write(b"c", Bytes::from_static(b"m")).await;
        assert_eq!(body(resp).await, TIMEOUT_JSON.as_bytes());
    }

    #[tokio::test]
    async fn exchange_and_timeouts_through_the_adapter() {
        let pico = Pico::new(short());
        let p = pico.clone();
        let writer =
            tokio::spawn(async move { p.write(b"c", Bytes::from_static(b"\0\xffhi")).await });
        let resp = pico.read(b"c").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/octet-stream");
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        assert_eq!(body(resp).await, &b"\0\xffhi"[..]);
        assert_eq!(body(writer.await.unwrap()).await, OK_JSON.as_bytes());
        let resp = pico.read(b"c").await;
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(body(resp).await, TIMEOUT_JSON.as_bytes());
        assert_eq!(pico.counts(), (1, 0));
    }
}
