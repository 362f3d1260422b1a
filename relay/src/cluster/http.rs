//! The HTTP families across nodes (issue #16): Pico channels and Hive `/v1/forward`
//! mailboxes live on one *owner* node each, recorded in the directory; the other nodes
//! carry requests for them to the owner over the mesh and pass its exact reply back.
//! Hive publications are written through to the directory (see [`crate::hive::cluster`]).
//! Design and failure behaviour: docs/cluster.md, "The HTTP families".
//!
//! Ownership: the key `tryst:<family>:<hex key>` holds `"<node> <epoch>"`. One script
//! ([`CLAIM`], one round trip) returns the owner, claiming the key for the asking node
//! when nobody holds it or when its holder's liveness record is gone or belongs to
//! another run (a dead or restarted node: its state is lost, the mailbox or channel
//! moves). The owner's own requests refresh the key's TTL, so a key outlives its state
//! by at most the TTL the family chooses.
//!
//! Carrying a request: [`ClusterHttp::proxy`] opens a mesh connection to the owner
//! ([`super::Cluster::mesh_connect`]: preamble, then the request), sends the request
//! again with hyper's client (method, path, query, headers, the body this node already
//! read within its own limits), reads the reply under a cap and a deadline, and returns
//! status, headers (the owner's `date` included) and body unchanged. The owner's node
//! sees a mesh-origin connection ([`crate::family::ServeContext::via_mesh`]) and serves
//! it from its own state, never carrying it further (one hop at most). If this node's
//! client goes away, the future is dropped, the mesh connection closes, and the owner
//! drops its waiting request as for any vanished client.
//!
//! Directory unreachable: [`ClusterHttp::place`] answers [`Placement::Unknown`] at once
//! (without a round trip while the directory is known to be down) and the family serves
//! the request from local state, counted in `tryst_cluster_http_local_fallbacks_total`.
//!
//! I/O contract: Redis commands (each under the directory's timeout) and mesh
//! connections; nothing here runs on a worker.

use super::{Cluster, NodeInfo, Origin};
use crate::family::{ServeContext, ServiceFamily};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::time::Instant;

/// How long a request waits between attempts to reach an owner that is still live in the
/// directory but cannot be reached (it died and its record has not expired yet).
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// How long a request that does not wait for a peer (a forward POST) keeps retrying an
/// unreachable owner: past the liveness TTL, so a dead owner's key is taken over.
pub const TAKEOVER_WAIT: Duration =
    Duration::from_secs(super::directory::LIVENESS_TTL.as_secs() + 2);

/// The claim script: `KEYS[1]` the ownership key; `ARGV` = this node's
/// `"<name> <epoch>"`, the TTL in ms, the liveness key prefix. Returns
/// `{owner, how}`: how = 0 an existing live owner (its TTL refreshed when it is the
/// caller), 1 claimed fresh, 2 taken over from a dead or restarted node.
pub static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('GET', KEYS[1])
local how = 1
if v then
  if v == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {v, 0}
  end
  local sp = string.find(v, ' ', 1, true)
  if sp then
    local rec = redis.call('GET', ARGV[3] .. string.sub(v, 1, sp - 1))
    if rec then
      local rsp = string.find(rec, ' ', 1, true)
      if rsp and string.sub(rec, 1, rsp - 1) == string.sub(v, sp + 1) then
        return {v, 0}
      end
    end
  end
  how = 2
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], how}
",
    )
});

/// The lookup script: `KEYS[1]` the ownership key, `ARGV[1]` the liveness key prefix.
/// Returns the owner's `"<name> <epoch>"` when a live node of that epoch holds the key,
/// else nil (nobody, or a dead or restarted node). Claims nothing.
pub static LOOKUP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local sp = string.find(v, ' ', 1, true)
if not sp then return false end
local rec = redis.call('GET', ARGV[1] .. string.sub(v, 1, sp - 1))
if not rec then return false end
local rsp = string.find(rec, ' ', 1, true)
if rsp and string.sub(rec, 1, rsp - 1) == string.sub(v, sp + 1) then return v end
return false
",
    )
});

/// The families whose state the cluster shares, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Pico channels (owned).
    Pico,
    /// Hive `/v1/forward` mailboxes (owned).
    HiveForward,
    /// Hive publications (written through to the directory).
    HivePublications,
    /// Qredo `/services` rendezvous (owned by the node that created them).
    QredoRendezvous,
}

impl Family {
    /// Every family, in `/metrics` order.
    pub const ALL: [Self; 4] = [
        Self::Pico,
        Self::HiveForward,
        Self::HivePublications,
        Self::QredoRendezvous,
    ];

    /// The `family` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pico => "pico",
            Self::HiveForward => "hive_forward",
            Self::HivePublications => "hive_publications",
            Self::QredoRendezvous => "qredo_rendezvous",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Counters {
    proxied: AtomicU64,
    proxy_errors: AtomicU64,
    takeovers: AtomicU64,
    fallbacks: AtomicU64,
}

/// Where a request's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node (it owns the key, or just claimed it).
    Here,
    /// On this live node.
    There(NodeInfo),
    /// On a node the directory lists as live but this node's cache does not know yet.
    Away(String),
    /// The directory cannot say (unreachable): serve from local state.
    Unknown,
}

/// What became of a request offered to [`ClusterHttp::route`].
#[derive(Debug)]
pub enum Routed {
    /// Serve it here, from local state.
    Local,
    /// The owner answered: pass this on.
    Answered(Response<Full<Bytes>>),
    /// The owner could not be reached before the deadline, or the exchange broke after
    /// the request was sent: answer the family's own "nothing happened" reply.
    Unavailable,
}

/// Why a carried request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No mesh connection (nothing was sent: trying again is safe).
    #[error("mesh connection: {0}")]
    Connect(#[from] super::MeshError),
    /// The request could not be built from the client's.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The exchange broke or took too long after the request was (maybe) sent.
    #[error("exchange with the owner: {0}")]
    Exchange(String),
}

/// The cluster side of the HTTP families: ownership in the directory, requests carried
/// over the mesh, and their counters (`/metrics`). Cheap to share (`Arc`).
#[derive(Debug)]
pub struct ClusterHttp {
    cluster: Cluster,
    me: String,
    counters: [Counters; Family::ALL.len()],
    replay: super::replay::ReplayClaims,
}

/// Aborts a spawned task when dropped (the mesh connection's driver).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Request headers that describe one hop, not the request: not carried. `Connection`
/// is carried: the owner then answers `connection: close` exactly where it would for a
/// client of its own, and this node's server, seeing it in the reply, closes the
/// client's connection as the owner would have.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == header::TE
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

impl ClusterHttp {
    /// The cluster side for this node.
    pub fn new(cluster: Cluster) -> Arc<Self> {
        let me = format!("{} {}", cluster.node(), cluster.epoch());
        Arc::new(Self {
            replay: super::replay::ReplayClaims::new(cluster.clone()),
            cluster,
            me,
            counters: Default::default(),
        })
    }

    /// The cluster handle.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The cluster-wide proof replay caches of the HTTP families.
    pub fn replay(&self) -> &super::replay::ReplayClaims {
        &self.replay
    }

    fn counters(&self, family: Family) -> &Counters {
        &self.counters[family.index()]
    }

    /// Counts a request served from local state only because the directory was
    /// unreachable.
    pub fn count_fallback(&self, family: Family) {
        self.counters(family)
            .fallbacks
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Where the state of `key` (a full directory key, `tryst:...`) lives, claiming it
    /// for this node when nobody live holds it; `ttl` is the key's lifetime after this
    /// node's last use.
    pub async fn place(&self, family: Family, key: &str, ttl: Duration) -> Placement {
        let directory = self.cluster.directory();
        if !directory.connected() {
            self.count_fallback(family);
            return Placement::Unknown;
        }
        let mut conn = self.cluster.redis();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let answer: Option<(String, i64)> = directory
            .run(
                "owner",
                CLAIM
                    .key(key)
                    .arg(&self.me)
                    .arg(ttl_ms)
                    .arg(super::directory::node_key(""))
                    .invoke_async(&mut conn),
            )
            .await;
        let Some((owner, how)) = answer else {
            self.count_fallback(family);
            return Placement::Unknown;
        };
        if owner == self.me {
            if how == 2 {
                self.counters(family)
                    .takeovers
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    family = family.label(),
                    "cluster: took over a dead node's key"
                );
            }
            return Placement::Here;
        }
        let name = owner.split(' ').next().unwrap_or_default();
        match self.cluster.live_node(name) {
            Some(info) => Placement::There(info),
            None => Placement::Away(name.to_owned()),
        }
    }

    /// Where the state of `key` lives, without claiming it: [`Placement::Here`] or
    /// `There`/`Away` when a live node owns it, [`Placement::Unknown`] when nobody live
    /// does (or the directory cannot say: counted as a fallback).
    pub async fn locate(&self, family: Family, key: &str) -> Placement {
        let directory = self.cluster.directory();
        if !directory.connected() {
            self.count_fallback(family);
            return Placement::Unknown;
        }
        let mut conn = self.cluster.redis();
        let answer: Option<Option<String>> = directory
            .run(
                "owner",
                LOOKUP
                    .key(key)
                    .arg(super::directory::node_key(""))
                    .invoke_async(&mut conn),
            )
            .await;
        let owner = match answer {
            None => {
                self.count_fallback(family);
                return Placement::Unknown;
            }
            Some(None) => return Placement::Unknown,
            Some(Some(owner)) => owner,
        };
        if owner == self.me {
            return Placement::Here;
        }
        let name = owner.split(' ').next().unwrap_or_default();
        match self.cluster.live_node(name) {
            Some(info) => Placement::There(info),
            None => Placement::Away(name.to_owned()),
        }
    }

    /// Places `key` (claiming it for this node with lifetime `ttl` when nobody live holds
    /// it; with `ttl` `None` it is only located, never claimed) and, when another node
    /// owns it, carries the request there
    /// (`parts` and the already read `body`), retrying an owner that cannot be reached
    /// every [`RETRY_INTERVAL`] until `give_up` (by then a dead owner's key has been
    /// taken over, unless `give_up` comes first). `reply_limit` caps the reply body;
    /// `reply_timeout` bounds one exchange.
    #[allow(clippy::too_many_arguments)]
    pub async fn route(
        &self,
        family: Family,
        key: &str,
        ttl: Option<Duration>,
        parts: &hyper::http::request::Parts,
        body: &Bytes,
        cx: ServeContext,
        reply_limit: usize,
        reply_timeout: Duration,
        give_up: Instant,
    ) -> Routed {
        loop {
            let placement = match ttl {
                Some(ttl) => self.place(family, key, ttl).await,
                None => self.locate(family, key).await,
            };
            match placement {
                Placement::Here | Placement::Unknown => return Routed::Local,
                Placement::There(node) => {
                    match self
                        .proxy(family, &node, parts, body, cx, reply_limit, reply_timeout)
                        .await
                    {
                        Ok(resp) => return Routed::Answered(resp),
                        Err(ProxyError::Connect(e)) => {
                            tracing::debug!(family = family.label(), error = %e, "cluster: owner unreachable; retrying");
                        }
                        Err(e) => {
                            tracing::debug!(family = family.label(), error = %e, "cluster: carried request failed");
                            return Routed::Unavailable;
                        }
                    }
                }
                Placement::Away(name) => {
                    tracing::debug!(family = family.label(), node = %name, "cluster: owner not in the live cache yet");
                }
            }
            if Instant::now() + RETRY_INTERVAL >= give_up {
                return Routed::Unavailable;
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Carries one request to `node` over the mesh and returns its reply unchanged.
    #[allow(clippy::too_many_arguments)]
    pub async fn proxy(
        &self,
        family: Family,
        node: &NodeInfo,
        parts: &hyper::http::request::Parts,
        body: &Bytes,
        cx: ServeContext,
        reply_limit: usize,
        reply_timeout: Duration,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let result = self
            .exchange(node, parts, body, cx, reply_limit, reply_timeout)
            .await;
        let c = self.counters(family);
        match &result {
            Ok(_) => c.proxied.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.proxy_errors.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn exchange(
        &self,
        node: &NodeInfo,
        parts: &hyper::http::request::Parts,
        body: &Bytes,
        cx: ServeContext,
        reply_limit: usize,
        reply_timeout: Duration,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(target)
            .version(hyper::Version::HTTP_11);
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                builder = builder.header(name, value);
            }
        }
        let request = builder.body(Full::new(body.clone()))?;
        let origin = Origin {
            transport: tryst_engine::route::Transport::Plain,
            peer: cx.peer.map(|ip| SocketAddr::new(ip, 0)),
        };
        let stream = self.cluster.mesh_connect(&node.name, origin).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Exchange(e.to_string()))?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "cluster: mesh HTTP connection ended with an error");
            }
        }));
        let exchange = async {
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| ProxyError::Exchange(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let bytes = crate::body::read_body(body, reply_limit, reply_timeout)
                .await
                .map_err(|e| ProxyError::Exchange(e.to_string()))?;
            Ok(Response::from_parts(parts, Full::new(bytes)))
        };
        tokio::time::timeout(reply_timeout, exchange)
            .await
            .map_err(|_| ProxyError::Exchange("timed out".into()))?
    }

    /// The counters in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, get) in [
            (
                "tryst_cluster_http_proxied_total",
                "HTTP requests carried to the node owning their channel or mailbox and answered by it.",
                (|c: &Counters| &c.proxied) as fn(&Counters) -> &AtomicU64,
            ),
            (
                "tryst_cluster_http_proxy_errors_total",
                "HTTP requests that could not be carried to their owner node (mesh connect or exchange failed).",
                |c: &Counters| &c.proxy_errors,
            ),
            (
                "tryst_cluster_http_takeovers_total",
                "Channels or mailboxes this node took over from a dead or restarted owner (their state is lost).",
                |c: &Counters| &c.takeovers,
            ),
            (
                "tryst_cluster_http_local_fallbacks_total",
                "HTTP requests served from this node's state only because the directory was unreachable.",
                |c: &Counters| &c.fallbacks,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for f in Family::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{family=\"{}\"}} {}",
                    f.label(),
                    get(self.counters(f)).load(Ordering::Relaxed)
                );
            }
        }
        self.replay.render_metrics(out);
    }
}

/// In the family list: no paths, its counters on `/metrics`.
impl ServiceFamily for ClusterHttp {
    fn name(&self) -> &'static str {
        "cluster-http"
    }

    fn render_metrics(&self, out: &mut String) {
        Self::render_metrics(self, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_not_carried() {
        for h in [
            "transfer-encoding",
            "content-length",
            "keep-alive",
            "upgrade",
        ] {
            assert!(hop_by_hop(&HeaderName::from_static(h)), "{h}");
        }
        for h in [
            "host",
            "authorization",
            "content-type",
            "origin",
            "connection",
        ] {
            assert!(!hop_by_hop(&HeaderName::from_static(h)), "{h}");
        }
    }

    #[test]
    fn family_labels_are_distinct_and_indexed_in_order() {
        for (i, f) in Family::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        assert_eq!(Family::HiveForward.label(), "hive_forward");
    }
}
