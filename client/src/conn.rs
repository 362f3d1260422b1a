//! One park or one reach: connect to the relay (plain TCP or TLS with a pinned
//! certificate), send a head, read the relay's answer.
//!
//! A refusal becomes [`Error::Refused`] with the relay's status and stable error code
//! (`bad_proof`, `not_parked`, ... see docs/protocol.md), so callers can tell permanent
//! refusals from transient ones ([`Error::is_permanent`]).

use crate::heads;
use crate::tls::{Pin, pinned_config};
use std::io;
use std::pin::Pin as StdPin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tryst_engine::auth::Secret;
use tryst_engine::target::RendezvousId;

/// Longest response head read from the relay.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Longest refusal body read from the relay.
pub const MAX_REFUSAL_BODY: usize = 4 * 1024;

/// Where the relay is and how to talk to it.
#[derive(Debug, Clone)]
pub struct RelayAddr {
    /// `HOST:PORT`.
    pub addr: String,
    /// TLS with this pinned certificate, or plain TCP.
    pub tls: Option<Pin>,
}

impl RelayAddr {
    /// Plain TCP to `HOST:PORT`.
    pub fn plain(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            tls: None,
        }
    }

    /// TLS to `HOST:PORT`, trusting only the certificate with `pin`.
    pub fn tls(addr: impl Into<String>, pin: Pin) -> Self {
        Self {
            addr: addr.into(),
            tls: Some(pin),
        }
    }
}

/// Time limits of one park or reach.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// From the head sent to the relay's answer (a reach includes the relay's
    /// `--client-wait`).
    pub answer: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 30 s for the answer.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            answer: Duration::from_secs(30),
        }
    }
}

/// A relay's refusal: status, stable code and message from its JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The stable `code` (empty when the body had none).
    pub code: String,
    /// The human message (empty when the body had none).
    pub message: String,
}

impl Refusal {
    /// Whether retrying the same request cannot succeed: every 4xx except a timeout
    /// (408), a replayed nonce (a retry uses a fresh one) and 429. A stale timestamp is
    /// permanent: the clock is off and needs fixing. 5xx (503 `shutting_down`,
    /// `room_full`, ...) are transient.
    pub fn is_permanent(&self) -> bool {
        (400..500).contains(&self.status)
            && !matches!(self.status, 408 | 429)
            && self.code != "replayed_nonce"
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = if self.code.is_empty() {
            "no code"
        } else {
            &self.code
        };
        write!(f, "{} {code}", self.status)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

/// Why a park or reach failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay could not be reached (DNS, connect, TLS handshake).
    #[error("relay {addr} unreachable: {source}")]
    Unreachable {
        /// `HOST:PORT`.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The relay answered with an error.
    #[error("relay refused: {0}")]
    Refused(Refusal),
    /// The connection failed after it was established, or closed before an answer.
    #[error("connection to the relay lost: {0}")]
    Lost(#[source] io::Error),
    /// The relay's answer is not an HTTP/1.x response head within the size limit.
    #[error("the relay's answer is not an HTTP response")]
    BadResponse,
    /// No answer in time.
    #[error("no answer from the relay within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// Whether retrying cannot help (see [`Refusal::is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused(r) if r.is_permanent())
    }

    /// The relay's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// A connection to the relay: plain TCP or TLS.
#[derive(Debug)]
pub enum RelayStream {
    /// Plain TCP (splice-able).
    Tcp(TcpStream),
    /// TLS over TCP (bytes pass through user space).
    Tls(Box<TlsStream<TcpStream>>),
}

impl RelayStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for RelayStream {
    fn poll_read(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => StdPin::new(s).poll_read(cx, buf),
            Self::Tls(s) => StdPin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => StdPin::new(s).poll_write(cx, buf),
            Self::Tls(s) => StdPin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => StdPin::new(s).poll_flush(cx),
            Self::Tls(s) => StdPin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => StdPin::new(s).poll_shutdown(cx),
            Self::Tls(s) => StdPin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens a connection to the relay (TCP, then TLS when pinned).
pub async fn open(relay: &RelayAddr, timeout: Duration) -> Result<RelayStream, Error> {
    let unreachable = |source| Error::Unreachable {
        addr: relay.addr.clone(),
        source,
    };
    let connect = async {
        let tcp = TcpStream::connect(&relay.addr).await?;
        tcp.set_nodelay(true)?;
        match relay.tls {
            None => Ok(RelayStream::Tcp(tcp)),
            Some(pin) => {
                let host = relay
                    .addr
                    .rsplit_once(':')
                    .map_or(relay.addr.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                // The name is not checked (the pin is); any valid name will do for SNI.
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
                        rustls::pki_types::ServerName::try_from("tryst-relay")
                            .expect("a valid DNS name")
                    });
                let tls = TlsConnector::from(pinned_config(pin))
                    .connect(name, tcp)
                    .await?;
                Ok(RelayStream::Tls(Box::new(tls)))
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result.map_err(unreachable),
        Err(_) => Err(unreachable(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        ))),
    }
}

/// Sends `head` on `stream` and reads the relay's answer: `Ok(early)` on a 200, where
/// `early` is whatever arrived after the response head (a reaching client's first bytes
/// from the hidden server), or the refusal.
pub async fn exchange<S>(stream: &mut S, head: &[u8], timeout: Duration) -> Result<Vec<u8>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let work = async {
        stream.write_all(head).await.map_err(Error::Lost)?;
        stream.flush().await.map_err(Error::Lost)?;
        read_answer(stream).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Error::Timeout(timeout)))
}

/// Reads the relay's answer to a head already sent: `Ok(early)` on a 200 (the bytes that
/// followed it), or the refusal; [`Error::Timeout`] after `timeout`.
pub async fn answer<S>(stream: &mut S, timeout: Duration) -> Result<Vec<u8>, Error>
where
    S: AsyncRead + Unpin,
{
    tokio::time::timeout(timeout, read_answer(stream))
        .await
        .unwrap_or(Err(Error::Timeout(timeout)))
}

/// Opens a connection to the relay and sends `head` without waiting for the answer (read
/// it with [`answer`]). For a reach: the relay delivers bytes sent right after a reach
/// head to the hidden server once paired, in order, so a client may send its first bytes
/// at once (see `splice_reach` in [`crate::pump`]).
pub async fn open_and_send(
    relay: &RelayAddr,
    head: &[u8],
    timeouts: &Timeouts,
) -> Result<RelayStream, Error> {
    let mut stream = open(relay, timeouts.connect).await?;
    send(&mut stream, head, timeouts.answer).await?;
    Ok(stream)
}

/// Sends `head` on an open connection (a spare: [`crate::spare`]) without waiting for
/// the answer; [`Error::Timeout`] if it cannot be written within `timeout`.
pub async fn send<S>(stream: &mut S, head: &[u8], timeout: Duration) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    let send = async {
        stream.write_all(head).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Lost(e)),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// Reads one response head (and, for a refusal, its body).
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.ok_or(Error::BadResponse)?;
                if status == 200 {
                    return Ok(buf.split_off(len));
                }
                let content_length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(MAX_REFUSAL_BODY)
                    .min(MAX_REFUSAL_BODY);
                let mut body = buf.split_off(len);
                while body.len() < content_length {
                    let n = stream.read(&mut chunk).await.map_err(Error::Lost)?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(content_length);
                return Err(Error::Refused(refusal(status, &body)));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(Error::BadResponse),
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(Error::BadResponse);
        }
        let n = stream.read(&mut chunk).await.map_err(Error::Lost)?;
        if n == 0 {
            return Err(Error::Lost(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the relay closed the connection before answering",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The refusal in a relay error body `{"error":{"code":..,"message":..}}`.
pub fn refusal(status: u16, body: &[u8]) -> Refusal {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |name: &str| {
        value
            .get("error")
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect::<String>()
    };
    // node-rendezvous frames say `{"error":{"permanent":..,"diagnostic":".."}}`.
    let message = match field("message") {
        m if m.is_empty() => field("diagnostic"),
        m => m,
    };
    Refusal {
        status,
        code: field("code"),
        message,
    }
}

/// Parks one native connection for `id`: connects, sends a fresh proof, and returns the
/// connection once the relay answered 200, with any bytes that followed the 200 (when a
/// client was already waiting the relay pairs at once, and its first bytes come right
/// after). The next bytes on the connection are a client's.
pub async fn park(
    relay: &RelayAddr,
    id: &RendezvousId,
    secret: &Secret,
    timeouts: &Timeouts,
) -> Result<(RelayStream, Vec<u8>), Error> {
    park_with(relay, heads::park_head_now(id, secret).as_bytes(), timeouts).await
}

/// Parks with a ready-made head (any family): the connection once the relay answered
/// 200, and the client bytes that arrived with it (often none).
pub async fn park_with(
    relay: &RelayAddr,
    head: &[u8],
    timeouts: &Timeouts,
) -> Result<(RelayStream, Vec<u8>), Error> {
    send_head(relay, head, timeouts).await
}

/// Reaches the hidden server parked under `id`: the connection and the first bytes it
/// already sent (often empty).
pub async fn reach(
    relay: &RelayAddr,
    id: &RendezvousId,
    timeouts: &Timeouts,
) -> Result<(RelayStream, Vec<u8>), Error> {
    reach_with(relay, heads::reach_head(id).as_bytes(), timeouts).await
}

/// Reaches with a ready-made head (any family).
pub async fn reach_with(
    relay: &RelayAddr,
    head: &[u8],
    timeouts: &Timeouts,
) -> Result<(RelayStream, Vec<u8>), Error> {
    send_head(relay, head, timeouts).await
}

/// Opens a connection to the relay, sends `head` and reads the 200: parking and reaching
/// differ only in the head.
async fn send_head(
    relay: &RelayAddr,
    head: &[u8],
    timeouts: &Timeouts,
) -> Result<(RelayStream, Vec<u8>), Error> {
    let mut stream = open(relay, timeouts.connect).await?;
    let early = exchange(&mut stream, head, timeouts.answer).await?;
    Ok((stream, early))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer_of(bytes: &'static [u8]) -> Result<Vec<u8>, Error> {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        b.write_all(bytes).await.unwrap();
        drop(b);
        read_answer(&mut a).await
    }

    #[tokio::test]
    async fn a_200_returns_the_bytes_after_it() {
        assert_eq!(
            answer_of(b"HTTP/1.1 200\r\n\r\nSSH-2.0").await.unwrap(),
            b"SSH-2.0"
        );
    }

    #[tokio::test]
    async fn a_refusal_carries_status_code_and_message() {
        let body = r#"{"error":{"code":"bad_proof","message":"proof does not verify"}}"#;
        let text = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let err = answer_of(Box::leak(text.into_bytes().into_boxed_slice()))
            .await
            .unwrap_err();
        let r = err.refusal().unwrap();
        assert_eq!((r.status, r.code.as_str()), (403, "bad_proof"));
        assert!(err.is_permanent());
        assert_eq!(
            err.to_string(),
            "relay refused: 403 bad_proof (proof does not verify)"
        );
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_errors() {
        assert!(matches!(
            answer_of(b"SSH-2.0-OpenSSH\r\n\r\n").await,
            Err(Error::BadResponse)
        ));
        assert!(matches!(
            answer_of(b"HTTP/1.1 2").await,
            Err(Error::Lost(_))
        ));
    }

    #[test]
    fn permanence_follows_the_status_and_code() {
        let r = |status, code: &str| Refusal {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(r(403, "bad_proof").is_permanent());
        assert!(r(400, "malformed_proof").is_permanent());
        assert!(r(403, "stale_timestamp").is_permanent());
        assert!(!r(403, "replayed_nonce").is_permanent());
        assert!(!r(503, "shutting_down").is_permanent());
        assert!(!r(408, "head_timeout").is_permanent());
    }
}
