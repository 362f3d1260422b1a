//! [`ServiceFamily`]: the shape of a family served by the supervisor (HTTP paths on the
//! handed-off connections, and UDP or background tasks), as [`crate::router::SchemeFamily`]
//! is the shape of a `CONNECT` family on the workers.
//!
//! [`crate::http::HttpService`] holds the families in one `Vec` (listed once, in
//! [`crate::families`]): it routes a request to the first family that [owns](ServiceFamily::owns)
//! its path, appends every family's [metrics](ServiceFamily::render_metrics) to
//! `/metrics` in list order, and the supervisor [starts](ServiceFamily::start) each once.
//!
//! I/O contract: the trait does none; implementations do what their module says.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

/// What a family learns about a request besides the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeContext {
    /// The client's address, when known.
    pub peer: Option<IpAddr>,
    /// How long the request body may take to arrive.
    pub body_deadline: Duration,
    /// The request came from another node over the cluster mesh: serve it from this
    /// node's state and never carry it to a third node (one hop at most).
    pub via_mesh: bool,
}

/// The future of one [`ServiceFamily::serve`].
pub type ServeFuture<'a> = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'a>>;

/// A family served by the supervisor: Pico channels, the dead-drop, Hive's HTTP side,
/// Qredo's `/services`, the STUN responder.
pub trait ServiceFamily: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`"pico"`, `"deaddrop"`, ...).
    fn name(&self) -> &'static str;
    /// Whether the family serves `path` on the public listeners. The default owns none:
    /// a family that only adds `/metrics` lines, `/healthz` members or background tasks
    /// (STUN, the cluster's parts).
    fn owns(&self, path: &str) -> bool {
        let _ = path;
        false
    }
    /// Whether the family also serves the paths nobody owns (outside every family's
    /// prefix): the dead-drop does, as hivemind's upstream server does on its port. The
    /// first family in the list that says so gets them.
    fn owns_unknown_paths(&self) -> bool {
        false
    }
    /// Serves one request; reads its body, if at all, within `cx.body_deadline`. Only
    /// called for paths the family [`owns`](Self::owns); the default, for families that
    /// own none, is never reached and would answer `404 {"error":"not_found"}`.
    fn serve(&self, req: Request<Incoming>, cx: ServeContext) -> ServeFuture<'_> {
        let _ = (req, cx);
        Box::pin(async {
            crate::body::json_reply(
                hyper::StatusCode::NOT_FOUND,
                r#"{"error":"not_found"}"#.to_owned(),
            )
        })
    }
    /// Appends the family's Prometheus text to `out`.
    fn render_metrics(&self, out: &mut String);
    /// A member of `/healthz`'s JSON object, `(key, value)`, for families with state an
    /// operator's health check should see (the cluster's directory). The default adds
    /// none; the status and code stay `ok`/200 either way.
    fn health(&self) -> Option<(&'static str, serde_json::Value)> {
        None
    }
    /// Starts the family's background tasks (sweeps, mirror pulls, a UDP loop); called
    /// once, inside the supervisor's tokio runtime. The default has none.
    fn start(&self) {}
}
