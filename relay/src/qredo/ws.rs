//! The WebSocket at `/services` (the SDK's default transport, `QredoWebSocketTransport`):
//! each binary message is one Lingua Franca request, answered by one binary message
//! carrying its result (same correlation id). Several requests may be in flight (each
//! answered as it completes, at most [`MAX_IN_FLIGHT`] per socket). The multi-response
//! operations answer once per item for as long as the socket lives:
//!
//! - `Rendezvous.subscribeToResponses(hashedTag, signature)` (`OperationList` over the
//!   tag): the responses already registered, then each new one, as
//!   `RendezvousResponseWithSequenceValue`;
//! - `Conversations.subscribe(queueId, signature)` (`OperationList` over nothing, as
//!   `QredoConversation.m` signs it): each item published from then on, as
//!   `ConversationItemWithSequenceValue`.
//!
//! A subscription that falls more than the event buffer behind gets one failure result
//! (`busy`) and ends (the SDK re-subscribes). When the socket dies, its subscriptions end
//! (`tryst_qredo_subscriptions` counts the live ones).
//!
//! Bounds: at most `max_sockets` sockets (one more upgrade is answered `503` with
//! `Retry-After: 1`), messages up to the request limit (a larger one closes the
//! socket), [`MAX_IN_FLIGHT`] requests answered at once per socket. Text messages are
//! ignored.

use super::Failure;
use super::lf::{self, Interchange, Limits, Outcome, PROTOCOL_VERSION, Response, Value};
use super::ownership::Op;
use super::service::{Event, Qredo, failure_response};
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Requests answered concurrently per socket; further ones wait to be read.
pub const MAX_IN_FLIGHT: usize = 16;
/// Results queued for a socket's writer.
const OUTBOX: usize = 64;

/// Is `req` a WebSocket upgrade request?
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
}

fn plain(status: StatusCode) -> HttpResponse<Full<Bytes>> {
    let mut resp = HttpResponse::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

impl Qredo {
    /// Answers a WebSocket upgrade at `/services` (`101`, then the socket is served on a
    /// task of its own), or `400` for a malformed handshake.
    pub fn upgrade<B>(&self, mut req: Request<B>) -> HttpResponse<Full<Bytes>>
    where
        B: Send + 'static,
    {
        let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let version_ok = req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let (Some(key), true) = (key, version_ok) else {
            return plain(StatusCode::BAD_REQUEST);
        };
        let wants_qredo = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "qredo");
        let Some(permit) = self.socket_permit() else {
            let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        };
        let accept = derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let service = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => service.run_socket(TokioIo::new(upgraded)).await,
                Err(e) => tracing::debug!(error = %e, "qredo: websocket upgrade failed"),
            }
            drop(permit);
        });
        let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS);
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if wants_qredo {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("qredo"),
            );
        }
        resp
    }

    async fn run_socket<T>(self, io: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_request()))
            .max_frame_size(Some(self.max_request()));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (mut sink, mut stream) = ws.split();
        let (out, mut outbox) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let writer = tokio::spawn(async move {
            while let Some(frame) = outbox.recv().await {
                if sink.send(Message::binary(frame)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        while let Some(msg) = stream.next().await {
            let body = match msg {
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                // Text is not Lingua Franca; pings are answered by the library.
                Ok(_) => continue,
            };
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break;
            };
            let service = self.clone();
            let out = out.clone();
            tokio::spawn(async move {
                service.socket_call(&body, out).await;
                drop(permit);
            });
        }
        // The socket is gone: stop the writer, which ends every subscription (they
        // watch the outbox closing).
        writer.abort();
    }

    /// One request read from a socket: a subscription, or an ordinary call.
    async fn socket_call(&self, body: &[u8], out: mpsc::Sender<Vec<u8>>) {
        let limits = Limits {
            max_total: self.max_request(),
            max_atom: self.max_request(),
            ..Limits::default()
        };
        if let Ok(req) = lf::decode_request(body, &limits) {
            let op = (req.header.service.as_str(), req.header.operation.as_str());
            if matches!(
                op,
                ("Rendezvous", "subscribeToResponses") | ("Conversations", "subscribe")
            ) && self.app_allowed(&req)
                && req.header.protocol.minor == PROTOCOL_VERSION.minor
                && req.header.protocol.major == PROTOCOL_VERSION.major
            {
                self.subscribe(req.header, &req.args, out).await;
                return;
            }
        }
        let result = self.call(body).await;
        let _ = out.send(result).await;
    }

    async fn subscribe(&self, header: Interchange, args: &[Value], out: mpsc::Sender<Vec<u8>>) {
        // Subscribe to events first, so nothing registered after the snapshot is missed.
        let mut events = self.events();
        let now = crate::clock::unix_now_ms();
        let setup = match (header.service.as_str(), args) {
            ("Rendezvous", [tag, sig]) => self
                .signed(|t| t.subscribe(tag, sig, now))
                .await
                .and_then(|existing| {
                    let tag = *tag.as_quid().map_err(|_| Failure::BadArguments)?;
                    Ok((Target::Tag(tag), existing))
                }),
            ("Conversations", [queue, sig]) => self
                .queue_auth(queue, sig, Op::List, &[], now)
                .await
                .map(|q| (Target::Queue(q), Vec::new())),
            _ => Err(Failure::BadArguments),
        };
        let (target, existing) = match setup {
            Ok(s) => s,
            Err(f) => {
                let _ = out.send(self.fail(header, f)).await;
                return;
            }
        };
        let last_seen = existing.last().map_or(0, sequence_of);
        let push = |value: Value| {
            Response {
                header: Interchange {
                    protocol: PROTOCOL_VERSION,
                    ..header.clone()
                },
                outcome: Outcome::Success(vec![value]),
            }
            .encode()
        };
        for v in existing {
            if out.send(push(v)).await.is_err() {
                return;
            }
        }
        let counters = self.subscriptions();
        counters.fetch_add(1, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = out.closed() => break,
                event = events.recv() => match event {
                    Ok(Event::Response { tag, value }) if target == Target::Tag(tag) => {
                        if sequence_of(&value) <= last_seen {
                            continue;
                        }
                        if out.send(push(value)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Event::Item { queue, value }) if target == Target::Queue(queue) => {
                        if out.send(push(value)).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = out.send(failure_response(header.clone(), Failure::Busy)).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        counters.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Tag([u8; 32]),
    Queue([u8; 32]),
}

/// The `sequenceValue` of a `RendezvousResponseWithSequenceValue` (0 if absent).
fn sequence_of(v: &Value) -> i64 {
    v.as_record()
        .and_then(|r| r.field("sequenceValue"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let req = Request::builder()
            .method(Method::GET)
            .uri("/services")
            .header("Connection", "keep-alive, Upgrade")
            .header("Upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&req));
        let post = Request::builder()
            .method(Method::POST)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(&post));
        let plain = Request::builder().method(Method::GET).body(()).unwrap();
        assert!(!is_upgrade(&plain));
    }

    fn handshake() -> Request<()> {
        Request::builder()
            .method(Method::GET)
            .uri("/services")
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn upgrades_are_capped_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = super::super::QredoConfig::in_dir(dir.path());
        config.max_sockets = 1;
        let q = Qredo::open(config, None).unwrap();
        // RFC 6455's example key and answer.
        let first = q.upgrade(handshake());
        assert_eq!(first.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            first.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // The first socket holds the only slot (its upgrade never completes here).
        let second = q.upgrade(handshake());
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "1");
        let mut bad = handshake();
        bad.headers_mut().remove("Sec-WebSocket-Version");
        assert_eq!(q.upgrade(bad).status(), StatusCode::BAD_REQUEST);
    }
}
