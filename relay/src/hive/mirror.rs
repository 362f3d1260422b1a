//! Federation (`tryst serve --mirror http://host:port`, repeatable).
//!
//! For each peer:
//! - **push**: every publication this relay newly stores from a client `POST` is sent to
//!   the peer's `POST /v1/rendezvous` (a bounded queue of [`PUSH_QUEUE`] bodies; when it
//!   is full the body is dropped and the pull catches up);
//! - **pull**: every `--mirror-interval`, `GET /v1/rendezvous/mirror?since=<cursor>`
//!   pages through the peer's export and stores every publication that verifies.
//!
//! The receiver re-verifies everything (publications are self-authenticating), so a peer
//! needs no trust. No loops: only client POSTs that *changed* the store are pushed, and
//! a relay receiving a publication it already holds answers it as unchanged (the
//! "identical is a no-op, older never replaces newer" rule), so a push bounces at most
//! once. Pulled publications are never pushed.
//!
//! The client is a minimal HTTP/1.1 client over a tokio `TcpStream` (`Connection:
//! close`, `Content-Length` or read-to-end bodies, no TLS, no redirects).

use super::service::Hive;
use crate::clock::unix_now_signed;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Bodies queued for one peer's push.
pub const PUSH_QUEUE: usize = 256;
/// Timeout of one request to a peer (connect, send, receive).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read from a peer.
pub const MAX_RESPONSE: usize = 8 << 20;

/// A peer relay, from `http://host:port[/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPeer {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a `--mirror` URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mirror URL must be http://host:port (no path, no TLS): {0}")]
pub struct MirrorUrlError(pub String);

impl MirrorPeer {
    /// Parses `http://host:port` (a trailing `/` allowed; `[v6]` literals).
    pub fn parse(url: &str) -> Result<Self, MirrorUrlError> {
        let bad = || MirrorUrlError(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty()
            || port == 0
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for MirrorPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

/// One request to `peer`; the status and body of its answer.
pub async fn request(
    peer: &MirrorPeer,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    tokio::time::timeout(REQUEST_TIMEOUT, request_inner(peer, method, path, body))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "mirror request timed out")
        })?
}

async fn request_inner(
    peer: &MirrorPeer,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect((peer.host.as_str(), peer.port)).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        peer.authority(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE as u64 + 16 * 1024)
        .read_to_end(&mut raw)
        .await?;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

/// Parses a complete `Connection: close` HTTP/1.1 response: status and body (by
/// `Content-Length` when present, else everything after the head; chunked refused).
pub fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(raw.get(..end)?).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
    }
    let body = raw.get(end + 4..)?;
    let body = match length {
        Some(n) => body.get(..n)?,
        None => body,
    };
    Some((status, body.to_vec()))
}

#[derive(Deserialize)]
struct ExportPage {
    epoch: String,
    next: u64,
    publications: Vec<String>,
}

/// Where a pull resumes: the peer's process epoch and the sequence cursor in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullCursor {
    /// The peer's `epoch` when `since` was handed out (empty before the first pull).
    pub epoch: String,
    /// The `next` cursor to ask with.
    pub since: u64,
}

/// Starts the push and pull tasks of `peer`; returns the push queue.
pub fn spawn_peer(hive: Hive, peer: MirrorPeer, interval: Duration) -> mpsc::Sender<Arc<Vec<u8>>> {
    let (tx, mut rx) = mpsc::channel::<Arc<Vec<u8>>>(PUSH_QUEUE);
    let push_peer = peer.clone();
    let push_hive = hive.clone();
    tokio::spawn(async move {
        while let Some(body) = rx.recv().await {
            let answer = request(&push_peer, "POST", "/v1/rendezvous", &body).await;
            if answer.is_ok() {
                push_hive
                    .mirror_counters()
                    .pushes_answered
                    .fetch_add(1, Ordering::Relaxed);
            }
            match answer {
                Ok((200, _)) => {}
                Ok((status, answer)) => tracing::debug!(
                    peer = %push_peer,
                    status,
                    answer = %String::from_utf8_lossy(&answer),
                    "hive mirror push refused"
                ),
                Err(e) => tracing::debug!(peer = %push_peer, error = %e, "hive mirror push failed"),
            }
        }
    });
    tokio::spawn(async move {
        let mut cursor = PullCursor::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            cursor = pull_once(&hive, &peer, cursor).await;
        }
    });
    tx
}

/// Pages through `peer`'s export from `cursor`, storing what verifies; returns the new
/// cursor (unchanged on error). When the peer's epoch changed (it restarted), the pull
/// starts over from 0.
pub async fn pull_once(hive: &Hive, peer: &MirrorPeer, mut cursor: PullCursor) -> PullCursor {
    // Bounded: at most 64 pages per round.
    for _ in 0..64 {
        let path = format!("/v1/rendezvous/mirror?since={}", cursor.since);
        let page: ExportPage = match request(peer, "GET", &path, b"").await {
            Ok((200, body)) => match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "hive mirror: bad export page");
                    return cursor;
                }
            },
            Ok((status, _)) => {
                tracing::debug!(peer = %peer, status, "hive mirror pull refused");
                return cursor;
            }
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "hive mirror pull failed");
                return cursor;
            }
        };
        if page.epoch != cursor.epoch {
            let restarted = !cursor.epoch.is_empty();
            cursor = PullCursor {
                epoch: page.epoch.clone(),
                since: if restarted { 0 } else { cursor.since },
            };
            if restarted {
                tracing::debug!(peer = %peer, "hive mirror: peer restarted; pulling from 0");
                continue;
            }
        }
        let count = page.publications.len();
        let now = unix_now_signed();
        for encoded in &page.publications {
            let Ok(body) = STANDARD.decode(encoded) else {
                continue;
            };
            match hive.accept_publication(&body, now) {
                Ok(outcome) if outcome.changed() => {
                    hive.mirror_counters()
                        .pulled
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::trace!(peer = %peer, reason = %e.reason(), "hive mirror: publication not imported");
                }
            }
        }
        let done = page.next == cursor.since || count == 0;
        cursor.since = page.next;
        if done {
            break;
        }
    }
    cursor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            MirrorPeer::parse("http://127.0.0.1:7400").unwrap(),
            MirrorPeer {
                host: "127.0.0.1".into(),
                port: 7400
            }
        );
        assert_eq!(
            MirrorPeer::parse("http://relay.example:80/").unwrap().port,
            80
        );
        let v6 = MirrorPeer::parse("http://[::1]:9").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "http://[::1]:9");
        for bad in [
            "https://a:1",
            "http://a",
            "http://a:0",
            "http://a:1/x",
            "http://:1",
            "http://a b:1",
            "a:1",
        ] {
            assert!(MirrorPeer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
            Some((200, b"ok".to_vec()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nbody"),
            Some((404, b"body".to_vec()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"),
            None
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            None
        );
        assert_eq!(parse_response(b"garbage"), None);
    }
}
