//! The HTTP service for connections the engine hands off (everything that is not a
//! rendezvous request) and for the operators' listener (`--metrics-listen`).
//!
//! A handed-off connection arrives with the bytes the engine already read (the request
//! head and whatever followed). [`Rewind`] replays them before reading the socket, and
//! hyper serves the connection. Routing on the public listeners, in this order:
//! 1. the first [`ServiceFamily`] (in the one list, [`crate::families`]) that owns the
//!    path serves the request, reading its body with its own limit (a family may also
//!    take a WebSocket upgrade);
//! 2. `/healthz`, and `/metrics` unless [`HttpService::make_metrics_private`] moved it
//!    to the operators' listener;
//! 3. any other path outside [`tryst_engine::node::HTTP_SERVICE_PREFIXES`] goes to the
//!    family that [owns unknown paths](ServiceFamily::owns_unknown_paths), in that
//!    family's shape;
//! 4. everything else is `404 not_found`, after reading at most [`BODY_LIMIT`] body
//!    bytes.
//!
//! `/metrics` is the engine's counters, `tryst_worker_socket_budget`, then every
//! family's metrics in list order. The operators' listener serves `/metrics` and
//! `/healthz` only. Limits: a header read timeout (also bounding idle keep-alive
//! connections and each family's body deadline) and a cap on concurrent connections
//! (over it: 503 and close).
//!
//! I/O contract: network I/O on the handed-off and accepted sockets; the families do
//! their own.

use crate::body::{BodyError, json_reply};
use crate::family::{ServeContext, ServiceFamily};
use crate::metrics::{self, render_metrics};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::{IpAddr, Shutdown};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;
use tryst_engine::driver::{HandedOff, StatsSnapshot};
use tryst_engine::reject::{Cause, Rejection};

/// Most request-body bytes read from any request; larger bodies get 413.
pub const BODY_LIMIT: usize = 16 * 1024;
/// How long `/metrics` waits for the supervisor's counters.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Limits of the HTTP service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most concurrent connections; beyond it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// Deadline for a complete request head (and for a request body), and how long an
    /// idle keep-alive connection may wait for its next request.
    pub header_timeout: Duration,
    /// Most header fields per request.
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            max_headers: 64,
        }
    }
}

/// A request for the current counters, answered by whoever owns the engine.
pub type StatsRequest = oneshot::Sender<StatsSnapshot>;

/// Finds the client's own address of a mesh-origin connection by the connection's peer
/// address (see [`HttpService::set_mesh_peers`]).
pub struct MeshPeers(
    pub Box<dyn Fn(std::net::SocketAddr) -> Option<std::net::SocketAddr> + Send + Sync>,
);

impl std::fmt::Debug for MeshPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshPeers")
    }
}

/// Asks the supervisor loop (which owns the engine) for a [`StatsSnapshot`].
#[derive(Debug, Clone)]
pub struct StatsRequester {
    tx: mpsc::Sender<StatsRequest>,
}

impl StatsRequester {
    /// A requester and the receiver the engine owner answers from.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<StatsRequest>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// The current counters, or `None` if the owner is gone or slow.
    pub async fn snapshot(&self) -> Option<StatsSnapshot> {
        let (reply, answer) = oneshot::channel();
        let ask = async {
            self.tx.send(reply).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(STATS_TIMEOUT, ask)
            .await
            .ok()
            .flatten()
    }
}

/// Why the HTTP service refused a request. Mapped to a response in one place,
/// [`ApiError::response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No endpoint at this path.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The endpoint takes this method only as a WebSocket upgrade.
    #[error("this endpoint takes GET as a WebSocket upgrade only")]
    UpgradeRequired,
    /// The body exceeds [`BODY_LIMIT`].
    #[error("request body too large")]
    BodyTooLarge,
    /// The body did not arrive within the header timeout.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The body could not be read (bad chunked encoding, connection error).
    #[error("malformed request body")]
    MalformedBody,
    /// The engine's counters could not be read.
    #[error("statistics unavailable")]
    StatsUnavailable,
}

impl ApiError {
    /// Who caused it.
    pub fn cause(self) -> Cause {
        match self {
            Self::StatsUnavailable => Cause::Relay,
            _ => Cause::Peer,
        }
    }

    /// The status code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MalformedBody => StatusCode::BAD_REQUEST,
            Self::StatsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpgradeRequired => "upgrade_required",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::MalformedBody => "malformed_body",
            Self::StatsUnavailable => "stats_unavailable",
        }
    }

    /// The JSON error response: `{"error":{"code":...,"message":...}}`.
    pub fn response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut resp = json_reply(self.status(), body.to_string());
        let headers = resp.headers_mut();
        match self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            // The rest of the body (if any) is unread: the connection cannot be reused.
            Self::BodyTooLarge | Self::BodyTimeout | Self::MalformedBody => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::StatsUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::UpgradeRequired => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            }
            Self::NotFound => {}
        }
        resp
    }
}

/// The HTTP service. Cheap to clone; clones share the connection cap.
#[derive(Debug, Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: HttpLimits,
    permits: Arc<Semaphore>,
    stats: StatsRequester,
    shutting_down: AtomicBool,
    /// The families, in routing and `/metrics` order.
    families: Vec<Arc<dyn ServiceFamily>>,
    /// Sockets one worker may hold, rendered as `tryst_worker_socket_budget` once set.
    socket_budget: std::sync::OnceLock<u64>,
    /// With a cluster: the client's own address of a mesh-origin connection, by the
    /// connection's peer (the sending node's socket).
    mesh_peers: std::sync::OnceLock<MeshPeers>,
    /// Set when an operators' listener serves `/metrics`: the public listeners then
    /// answer it as an unknown path.
    metrics_private: AtomicBool,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The public listeners (plain and TLS): every family, `/healthz`, and `/metrics`
    /// unless an operators' listener serves it.
    Public,
    /// The operators' listener (`--metrics-listen`): `/metrics` and `/healthz` only.
    Operator,
}

impl HttpService {
    /// A service with `limits`, reading counters through `stats`, serving `families`
    /// (routing and `/metrics` follow their order; see [`HttpService::serve_connection`]).
    pub fn new(
        limits: HttpLimits,
        stats: StatsRequester,
        families: Vec<Arc<dyn ServiceFamily>>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        Self {
            inner: Arc::new(Inner {
                limits,
                permits,
                stats,
                shutting_down: AtomicBool::new(false),
                families,
                socket_budget: std::sync::OnceLock::new(),
                mesh_peers: std::sync::OnceLock::new(),
                metrics_private: AtomicBool::new(false),
            }),
        }
    }

    /// Renders `tryst_worker_socket_budget` (sockets one worker may hold before it
    /// pauses accepting) on `/metrics` from now on, so alerts can compare
    /// `tryst_worker_sockets` with it (the first call wins).
    pub fn set_socket_budget(&self, sockets_per_worker: u64) {
        let _ = self.inner.socket_budget.set(sockets_per_worker);
    }

    /// With a cluster: how the client's own address of a connection another node
    /// carried here is found (the preamble named it), so families see the client, not
    /// the node (the first call wins).
    pub fn set_mesh_peers(&self, peers: MeshPeers) {
        let _ = self.inner.mesh_peers.set(peers);
    }

    /// From now on `/metrics` is served only by [`HttpService::serve_operator_connection`]
    /// (the `--metrics-listen` listener); the public listeners answer it as an unknown
    /// path (`404 not_found`).
    pub fn make_metrics_private(&self) {
        self.inner.metrics_private.store(true, Ordering::Relaxed);
    }

    /// Takes a connection accepted on the operators' listener: serves `/metrics` and
    /// `/healthz` (everything else is `404 not_found`) on a new task, or answers 503 and
    /// closes it when the connection cap is reached. Must be called inside a tokio
    /// runtime.
    pub fn accept_operator(&self, stream: tokio::net::TcpStream) {
        let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_owned() else {
            if let Ok(std) = stream.into_std() {
                refuse_overloaded(std);
            }
            return;
        };
        let service = self.clone();
        tokio::spawn(async move {
            service.serve_operator_connection(stream).await;
            drop(permit);
        });
    }

    /// Serves one operators' connection until it closes (no connection cap applied).
    pub async fn serve_operator_connection<T>(&self, io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_scoped(io, None, Scope::Operator, false).await;
    }

    /// From now on `/healthz` answers 503 (the relay is draining).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Connections being served now.
    pub fn active_connections(&self) -> usize {
        self.inner.limits.max_connections - self.inner.permits.available_permits()
    }

    /// Takes a handed-off connection: serves it on a new task, or answers 503 and closes
    /// it when the connection cap is reached. Must be called inside a tokio runtime.
    pub fn accept(&self, conn: HandedOff) -> io::Result<()> {
        let HandedOff {
            stream,
            early,
            origin,
            ..
        } = conn;
        let via_mesh = origin == tryst_engine::driver::Origin::Mesh;
        let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_owned() else {
            refuse_overloaded(stream);
            return Ok(());
        };
        let mut peer = stream.peer_addr().ok();
        if via_mesh
            && let (Some(conn), Some(lookup)) = (peer, self.inner.mesh_peers.get())
            && let Some(client) = (lookup.0)(conn)
        {
            peer = Some(client);
        }
        stream.set_nonblocking(true)?;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        let service = self.clone();
        let span = tracing::debug_span!("http", ?peer);
        tokio::spawn(
            async move {
                service
                    .serve_scoped(
                        Rewind::new(early, stream),
                        peer.map(|p| p.ip()),
                        Scope::Public,
                        via_mesh,
                    )
                    .await;
                drop(permit);
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Serves one connection until it closes (no connection cap applied here).
    pub async fn serve_connection<T>(&self, io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_connection_from(io, None).await;
    }

    /// [`HttpService::serve_connection`] for a client at `peer` (`None`: unknown, e.g.
    /// a TLS-terminated connection; such clients share rate-limit buckets).
    pub async fn serve_connection_from<T>(&self, io: T, peer: Option<IpAddr>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_scoped(io, peer, Scope::Public, false).await;
    }

    /// `via_mesh`: the connection came from another node over the cluster mesh.
    async fn serve_scoped<T>(&self, io: T, peer: Option<IpAddr>, scope: Scope, via_mesh: bool)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.inner.limits;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_headers(limits.max_headers)
            .max_buf_size(64 * 1024);
        let service = self.clone();
        let svc = service_fn(move |req| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(service.handle(req, peer, scope, via_mesh).await) }
        });
        // `with_upgrades`: a family's WebSocket takes the connection over.
        if let Err(e) = builder
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await
        {
            tracing::debug!(error = %e, "http connection ended with an error");
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
        scope: Scope,
        via_mesh: bool,
    ) -> Response<Full<Bytes>> {
        match self.route(req, peer, scope, via_mesh).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(code = e.code(), "http request refused");
                e.response()
            }
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
        scope: Scope,
        via_mesh: bool,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        if scope == Scope::Operator {
            return self.builtin(req).await;
        }
        // Families each own a set of paths and read their own bodies with their own
        // limits: the first that owns the path serves it, before the built-in endpoints.
        let cx = ServeContext {
            peer,
            body_deadline: self.inner.limits.header_timeout,
            via_mesh,
        };
        if let Some(family) = self
            .inner
            .families
            .iter()
            .find(|f| f.owns(req.uri().path()))
        {
            return Ok(family.serve(req, cx).await);
        }
        let path = req.uri().path();
        let builtin = path == "/healthz"
            || (path == "/metrics" && !self.inner.metrics_private.load(Ordering::Relaxed));
        let family_prefix = tryst_engine::node::HTTP_SERVICE_PREFIXES
            .iter()
            .any(|p| path.starts_with(p));
        if !builtin
            && !family_prefix
            && let Some(family) = self.inner.families.iter().find(|f| f.owns_unknown_paths())
        {
            // Unknown paths on the public listeners (outside the API families' prefixes,
            // whose unknown paths stay this service's 404) are the owning family's, as
            // on its upstream server's port (see its `ServiceFamily::serve`). Unknown
            // paths the engine's router keeps on the TLS listener never reach here.
            return Ok(family.serve(req, cx).await);
        }
        self.builtin(req).await
    }

    /// `/healthz` and `/metrics`; every other path is `404 not_found`.
    async fn builtin(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
        let (parts, body) = req.into_parts();
        read_capped(body, self.inner.limits.header_timeout).await?;
        let endpoint = match parts.uri.path() {
            "/healthz" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            _ => return Err(ApiError::NotFound),
        };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(ApiError::MethodNotAllowed);
        }
        match endpoint {
            Endpoint::Health => Ok(self.health()),
            Endpoint::Metrics => {
                let stats = self
                    .inner
                    .stats
                    .snapshot()
                    .await
                    .ok_or(ApiError::StatsUnavailable)?;
                let mut text = render_metrics(&stats);
                if let Some(budget) = self.inner.socket_budget.get() {
                    metrics::single(
                        &mut text,
                        "tryst_worker_socket_budget",
                        "gauge",
                        "Sockets one worker may hold before it pauses accepting.",
                        budget,
                    );
                }
                for family in &self.inner.families {
                    family.render_metrics(&mut text);
                }
                let mut resp = Response::new(Full::new(Bytes::from(text)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                Ok(resp)
            }
        }
    }

    fn health(&self) -> Response<Full<Bytes>> {
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            let mut resp = json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"shutting_down"}"#.to_owned(),
            );
            // A load balancer's keep-alive health check must not keep a draining relay's
            // connection: hyper closes it after this response.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        } else {
            let extra: Vec<_> = self
                .inner
                .families
                .iter()
                .filter_map(|f| f.health())
                .collect();
            if extra.is_empty() {
                return json_reply(StatusCode::OK, r#"{"status":"ok"}"#.to_owned());
            }
            let mut body = serde_json::Map::new();
            body.insert("status".into(), "ok".into());
            for (k, v) in extra {
                body.insert(k.into(), v);
            }
            json_reply(StatusCode::OK, serde_json::Value::Object(body).to_string())
        }
    }
}

enum Endpoint {
    Health,
    Metrics,
}

/// Reads and discards a request body of at most [`BODY_LIMIT`] bytes.
async fn read_capped(body: Incoming, deadline: Duration) -> Result<(), ApiError> {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Ok(());
    }
    match crate::body::read_body(body, BODY_LIMIT, deadline).await {
        Ok(_) => Ok(()),
        Err(BodyError::TooLarge) => Err(ApiError::BodyTooLarge),
        Err(BodyError::Timeout) => Err(ApiError::BodyTimeout),
        Err(BodyError::Malformed) => Err(ApiError::MalformedBody),
    }
}

/// Over the connection cap: one non-blocking write of the engine's `503 overloaded`
/// response, then close. Never waits.
fn refuse_overloaded(stream: std::net::TcpStream) {
    tracing::debug!("http connection cap reached; answering 503");
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(&Rejection::Overloaded.response());
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// An I/O object that yields `prefix` first, then reads from `inner`; writes go to
/// `inner` directly.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    /// Replays `prefix` before `inner`'s bytes.
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The wrapped I/O object.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let left = this.prefix.len() - this.pos;
        if left > 0 {
            let n = left.min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pico::{Pico, PicoLimits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tryst_engine::driver::WorkerStats;

    fn sample_stats() -> StatsSnapshot {
        StatsSnapshot {
            workers: vec![WorkerStats {
                index: 0,
                pid: 7,
                parked: 1,
                ..WorkerStats::default()
            }],
            ..StatsSnapshot::default()
        }
    }

    /// A service whose stats requests are answered with [`sample_stats`].
    fn service(limits: HttpLimits) -> HttpService {
        let (stats, mut rx) = StatsRequester::channel(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(sample_stats());
            }
        });
        HttpService::new(
            limits,
            stats,
            vec![Arc::new(Pico::new(PicoLimits::default()))],
        )
    }

    /// Connects a client over loopback and hands the server side to `svc` with `early`.
    async fn hand_off(svc: &HttpService, early: &[u8]) -> TcpStream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        svc.accept(HandedOff {
            stream: server,
            early: early.to_vec(),
            transport: tryst_engine::route::Transport::Plain,
            origin: tryst_engine::driver::Origin::Client,
        })
        .unwrap();
        client
    }

    async fn read_all(mut client: TcpStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Removes the `date:` header, the only part of a response that varies.
    fn without_date(resp: &str) -> String {
        resp.split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    const HEALTH_OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
    /// The same, answering a request that asked for `Connection: close`.
    const HEALTH_OK_CLOSE: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";

    #[tokio::test]
    async fn healthz_from_early_bytes() {
        let svc = service(HttpLimits::default());
        let client = hand_off(
            &svc,
            b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
        )
        .await;
        let resp = read_all(client).await;
        assert!(resp.contains("\r\ndate: "), "{resp}");
        assert_eq!(without_date(&resp), HEALTH_OK_CLOSE);
    }

    #[tokio::test]
    async fn head_split_between_early_bytes_and_socket() {
        let svc = service(HttpLimits::default());
        let mut client = hand_off(&svc, b"GET /heal").await;
        client
            .write_all(b"thz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(without_date(&read_all(client).await), HEALTH_OK_CLOSE);
    }

    #[tokio::test]
    async fn pipelined_requests_in_early_bytes_keep_alive() {
        let svc = service(HttpLimits::default());
        let early = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let resp = without_date(&read_all(hand_off(&svc, early).await).await);
        let body404 = r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#;
        assert_eq!(
            resp,
            format!(
                "{HEALTH_OK}HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body404}",
                body404.len()
            )
        );
    }

    #[tokio::test]
    async fn not_found_and_method_not_allowed_bodies() {
        let svc = service(HttpLimits::default());
        let resp = read_all(
            hand_off(
                &svc,
                b"GET /v1/nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        )
        .await;
        let body = r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#;
        assert_eq!(
            without_date(&resp),
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        );

        let resp = read_all(
            hand_off(
                &svc,
                b"DELETE /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        )
        .await;
        let body = r#"{"error":{"code":"method_not_allowed","message":"method not allowed"}}"#;
        assert_eq!(
            without_date(&resp),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\nallow: GET, HEAD\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[tokio::test]
    async fn metrics_are_rendered_from_the_snapshot() {
        let svc = service(HttpLimits::default());
        let resp = read_all(
            hand_off(
                &svc,
                b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        )
        .await;
        let body =
            render_metrics(&sample_stats()) + &Pico::new(PicoLimits::default()).render_metrics();
        assert_eq!(
            without_date(&resp),
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        );
        assert!(body.contains("tryst_parked 1\n"));
        assert!(body.contains("tryst_worker_up{worker=\"0\",pid=\"7\"} 1\n"));
        assert!(body.contains("tryst_pico_waiting 0\n"));
    }

    #[tokio::test]
    async fn head_requests_get_headers_only() {
        let svc = service(HttpLimits::default());
        let resp = read_all(
            hand_off(
                &svc,
                b"HEAD /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        )
        .await;
        assert_eq!(
            without_date(&resp),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 15\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn metrics_without_an_engine_owner_is_503() {
        let (stats, rx) = StatsRequester::channel(1);
        drop(rx);
        let svc = HttpService::new(HttpLimits::default(), stats, Vec::new());
        let resp = read_all(
            hand_off(
                &svc,
                b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{resp}"
        );
        assert!(
            resp.ends_with(
                r#"{"error":{"code":"stats_unavailable","message":"statistics unavailable"}}"#
            ),
            "{resp}"
        );
    }

    #[tokio::test]
    async fn small_bodies_are_read_large_ones_refused() {
        let svc = service(HttpLimits::default());
        let resp = read_all(
            hand_off(&svc, b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await,
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{resp}"
        );

        let head = format!(
            "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 1
        );
        let resp = read_all(hand_off(&svc, head.as_bytes()).await).await;
        let body = r#"{"error":{"code":"body_too_large","message":"request body too large"}}"#;
        assert_eq!(
            without_date(&resp),
            format!(
                "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        );

        // Chunked bodies are cut off at the limit too.
        let mut client = hand_off(
            &svc,
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
        let chunk = format!("{:x}\r\n{}\r\n", BODY_LIMIT, "a".repeat(BODY_LIMIT));
        client.write_all(chunk.as_bytes()).await.unwrap();
        client.write_all(b"1\r\nb\r\n").await.unwrap();
        let resp = read_all(client).await;
        assert!(
            resp.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{resp}"
        );
    }

    #[tokio::test]
    async fn over_the_connection_cap_is_503_and_close() {
        let svc = service(HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        });
        // Holds the only slot: no request yet.
        let first = hand_off(&svc, b"").await;
        assert_eq!(svc.active_connections(), 1);
        let resp = read_all(hand_off(&svc, b"GET /healthz HTTP/1.1\r\n\r\n").await).await;
        assert_eq!(resp.as_bytes(), &Rejection::Overloaded.response()[..]);
        drop(first);
    }

    #[tokio::test]
    async fn slow_heads_are_cut_off() {
        let svc = service(HttpLimits {
            header_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        });
        let client = hand_off(&svc, b"GET /healthz HTTP/1.1\r\nHost:").await;
        let resp = read_all(client).await;
        assert!(
            resp.is_empty() || resp.starts_with("HTTP/1.1 408"),
            "{resp}"
        );
    }

    #[tokio::test]
    async fn shutting_down_health_is_503() {
        let svc = service(HttpLimits::default());
        svc.begin_shutdown();
        let resp = read_all(
            hand_off(
                &svc,
                b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await,
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{resp}"
        );
        assert!(resp.ends_with(r#"{"status":"shutting_down"}"#), "{resp}");
    }

    #[tokio::test]
    async fn rewind_yields_prefix_then_inner() {
        let mut r = Rewind::new(b"abc".to_vec(), &b"def"[..]);
        let mut small = [0u8; 2];
        assert_eq!(r.read(&mut small).await.unwrap(), 2);
        assert_eq!(&small, b"ab");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cdef");
        let mut empty = Rewind::new(Vec::new(), &b"xyz"[..]);
        let mut all = Vec::new();
        empty.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"xyz");
    }

    #[test]
    fn api_errors_map_in_one_place() {
        for e in [
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::UpgradeRequired,
            ApiError::BodyTooLarge,
            ApiError::BodyTimeout,
            ApiError::MalformedBody,
            ApiError::StatsUnavailable,
        ] {
            let resp = e.response();
            assert_eq!(resp.status(), e.status());
            assert!(
                e.status().is_client_error() || e.cause() == Cause::Relay,
                "{e:?}"
            );
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        }
    }
}
