//! One park or one reach: connect to the relay (plain TCP or TLS with a pinned
//! certificate), send a head, read the relay's answer.
//!
//! A refusal becomes [`Error::Refused`] with the relay's status, stable error code
//! (`bad_proof`, `not_parked`, ... see docs/protocol.md) and `Retry-After`, so callers can
//! tell permanent refusals from transient ones ([`Error::is_permanent`]) and wait as long
//! as the relay asked. The answer is read by a sans-IO parser ([`parse_answer`], fuzzed as
//! `client_answer`) that the async readers feed.

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
pub use tryst_engine::reject::{PAIRING_NOTICE, PAIRING_NOTICE_HEADER};
use tryst_engine::target::RendezvousId;

/// Longest response head read from the relay.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Longest refusal body read from the relay.
pub const MAX_REFUSAL_BODY: usize = 4 * 1024;
/// Longest `Retry-After` read from a refusal: a larger value reads as this (callers cap
/// it further, e.g. the exposer at its `--backoff-max`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

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
    /// The relay's `Retry-After` in seconds (`Retry-After: 1` on 503 `overloaded`,
    /// `room_full`, ...), at most [`MAX_RETRY_AFTER`]; `None` without one, or when its
    /// value is not all digits (an HTTP-date is not read). See [`retry_after`].
    pub retry_after: Option<Duration>,
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

    /// The relay's error code as a person reads it: the code, or `none (HTTP <status>)`
    /// when the answer carried none (node-rendezvous refuses in its upstream's shape,
    /// without one).
    pub fn code_or_none(&self) -> String {
        if self.code.is_empty() {
            format!("none (HTTP {})", self.status)
        } else {
            self.code.clone()
        }
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

/// Most bytes [`RelayStream::close_gracefully`] reads and drops while it waits for the
/// peer's end.
const CLOSE_DISCARD_LIMIT: usize = 1 << 20;

impl RelayStream {
    /// Ends the connection without a reset: sends our end (a FIN, after TLS's
    /// `close_notify`), then reads and drops what the peer still sends, up to 1 MiB and
    /// for at most `within`, until its end, and closes. A socket closed with unread bytes
    /// in its receive queue is reset by the kernel instead, and the relay would pass the
    /// reset on to the client (whose bytes those were) as a reset of its own.
    pub async fn close_gracefully(mut self, within: Duration) {
        let drain = async {
            self.shutdown().await?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut dropped = 0;
            while dropped < CLOSE_DISCARD_LIMIT {
                match self.read(&mut buf).await? {
                    0 => break,
                    n => dropped += n,
                }
            }
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(within, drain).await;
    }

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
                    .await
                    .map_err(crate::tls::explain_pin_mismatch)?;
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
    exchange_noticed(stream, head, timeout)
        .await
        .map(|(early, _)| early)
}

/// [`exchange`], also telling whether a 200 confirmed a pairing notice
/// ([`pairing_notice_confirmed`]).
async fn exchange_noticed<S>(
    stream: &mut S,
    head: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, bool), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let work = async {
        stream.write_all(head).await.map_err(Error::Lost)?;
        stream.flush().await.map_err(Error::Lost)?;
        read_answer_after(stream, Vec::with_capacity(256)).await
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

/// Sends `head` on a plain TCP connection and reads the relay's answer without reading a
/// byte past it: after `Ok(())` (a 200) the next byte on `stream` is the tunnel's first,
/// so the socket can be handed whole to another process (ssh's `ProxyUseFdpass`). A
/// refusal is read and reported as [`exchange`] does.
pub async fn exchange_exact(
    stream: &mut TcpStream,
    head: &[u8],
    timeout: Duration,
) -> Result<(), Error> {
    let work = async {
        stream.write_all(head).await.map_err(Error::Lost)?;
        read_answer_exact(stream).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Error::Timeout(timeout)))
}

/// Reads a response head without consuming a byte past it: it peeks, takes the bytes that
/// are all head (no complete head among them yet) and waits for more, and takes only up
/// to the blank line once the head is complete. A refusal's body is then read as
/// [`read_answer`] reads it.
async fn read_answer_exact(stream: &mut TcpStream) -> Result<(), Error> {
    let mut taken = Vec::with_capacity(256);
    let mut peeked = vec![0u8; MAX_RESPONSE_HEAD];
    loop {
        // One byte past the limit is enough for the parser to call a head too long.
        let room = (MAX_RESPONSE_HEAD + 1 - taken.len()).min(peeked.len());
        let n = stream
            .peek(&mut peeked[..room])
            .await
            .map_err(Error::Lost)?;
        if n == 0 {
            return match parse_answer(&taken, true) {
                Some(Err(e)) => Err(e),
                // Not reached: a complete head is never taken whole.
                Some(Ok(_)) | None => Err(Error::BadResponse),
            };
        }
        let already = taken.len();
        taken.extend_from_slice(&peeked[..n]);
        let (take, complete) = match parse_response_head(&taken)? {
            // The head was not complete in the bytes already taken, so it ends in these.
            Some(head) => (head.len - already, true),
            None => (n, false),
        };
        taken.truncate(already);
        let start = taken.len();
        taken.resize(start + take, 0);
        // These bytes were just peeked, so they are waiting: the read returns at once.
        stream
            .read_exact(&mut taken[start..])
            .await
            .map_err(Error::Lost)?;
        if complete {
            // A 200 is decided on the head alone; a refusal's body may be read past.
            return read_answer_after(stream, taken).await.map(drop);
        }
    }
}

/// Reads one response head (and, for a refusal, its body) through [`parse_answer`].
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Error> {
    read_answer_after(stream, Vec::with_capacity(256))
        .await
        .map(|(early, _)| early)
}

/// [`read_answer`] with `buf` already read; on a 200 also whether its head carried
/// `Tryst-Pairing-Notice: 1` (the relay will send [`PAIRING_NOTICE`] when paired).
async fn read_answer_after<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> Result<(Vec<u8>, bool), Error> {
    let mut chunk = [0u8; 512];
    let mut eof = false;
    loop {
        if let Some(answer) = parse_answer(&buf, eof) {
            let notice = answer.is_ok() && pairing_notice_confirmed(&buf);
            return answer.map(|early| (early, notice));
        }
        let n = stream.read(&mut chunk).await.map_err(Error::Lost)?;
        eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What [`parse_answer`] needs of a relay's response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status.
    pub status: u16,
    /// Bytes of the head, blank line included (at most [`MAX_RESPONSE_HEAD`]).
    pub len: usize,
    /// The first `Content-Length`, when it reads as a number.
    pub content_length: Option<usize>,
    /// The first `Retry-After`, read by [`retry_after`].
    pub retry_after: Option<Duration>,
}

/// The response head at the start of `buf`: `Ok(None)` while it is incomplete and
/// shorter than [`MAX_RESPONSE_HEAD`]; [`Error::BadResponse`] when it is not an HTTP/1.x
/// response head (more than 16 headers included) or is longer than the limit.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_RESPONSE_HEAD => {
            let status = response.code.ok_or(Error::BadResponse)?;
            let first = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            Ok(Some(ResponseHead {
                status,
                len,
                content_length: first("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()),
                retry_after: first("retry-after").and_then(retry_after),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => Ok(None),
        _ => Err(Error::BadResponse),
    }
}

/// Whether the response head at the start of `buf` carries exactly one
/// `Tryst-Pairing-Notice` header, valued `1` (a relay's answer to a park that asked to
/// be told of its pairing).
pub fn pairing_notice_confirmed(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    if !matches!(response.parse(buf), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let mut values = response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(PAIRING_NOTICE_HEADER))
        .map(|h| h.value);
    matches!((values.next(), values.next()), (Some(b"1"), None))
}

/// A `Retry-After` value in delay-seconds: optional spaces or tabs around one or more
/// ASCII digits (no sign, no fraction), saturating at [`MAX_RETRY_AFTER`]; `None` for
/// anything else, an HTTP-date included (the relay sends only seconds).
pub fn retry_after(value: &[u8]) -> Option<Duration> {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    let digits = &value[start..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let max = MAX_RETRY_AFTER.as_secs();
    let secs = digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10)
            .saturating_add(u64::from(d - b'0'))
            .min(max)
    });
    Some(Duration::from_secs(secs))
}

/// What the bytes of a relay's answer read so far amount to (`eof`: the relay closed the
/// connection after them); `None` while more are needed, never `None` at `eof`.
///
/// - a 200: `Ok(early)`, the bytes after the head (a reaching client's first bytes);
/// - any other status: [`Error::Refused`] once its body is complete (its
///   `Content-Length`, at most [`MAX_REFUSAL_BODY`], or what came before the close),
///   with the code and message of its JSON body and its `Retry-After`;
/// - not an HTTP response, or a head over [`MAX_RESPONSE_HEAD`]: [`Error::BadResponse`];
/// - closed before the head was complete: [`Error::Lost`].
pub fn parse_answer(buf: &[u8], eof: bool) -> Option<Result<Vec<u8>, Error>> {
    let head = match parse_response_head(buf) {
        Ok(Some(head)) => head,
        Ok(None) if eof => {
            return Some(Err(Error::Lost(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the relay closed the connection before answering",
            ))));
        }
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    let after = &buf[head.len..];
    if head.status == 200 {
        return Some(Ok(after.to_vec()));
    }
    let want = head
        .content_length
        .unwrap_or(MAX_REFUSAL_BODY)
        .min(MAX_REFUSAL_BODY);
    if after.len() < want && !eof {
        return None;
    }
    let mut refused = refusal(head.status, &after[..want.min(after.len())]);
    refused.retry_after = head.retry_after;
    Some(Err(Error::Refused(refused)))
}

/// The refusal in a relay error body `{"error":{"code":..,"message":..}}` (without a
/// `Retry-After`: that is in the head, see [`parse_answer`]).
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
        retry_after: None,
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

/// Parks with a ready-made head that asks for a pairing notice (a native head with
/// [`heads::with_pairing_notice`]): the connection once the relay answered 200, the bytes
/// that came with the answer, and whether the relay confirmed it will send
/// [`PAIRING_NOTICE`] at the pairing (a relay without the feature ignores the header
/// and does not confirm).
pub async fn park_noticed(
    relay: &RelayAddr,
    head: &[u8],
    timeouts: &Timeouts,
) -> Result<(RelayStream, Vec<u8>, bool), Error> {
    let mut stream = open(relay, timeouts.connect).await?;
    let (early, notice) = exchange_noticed(&mut stream, head, timeouts.answer).await?;
    Ok((stream, early, notice))
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

    /// Runs [`exchange_exact`] against a server that sends `chunks` (each its own write,
    /// `TCP_NODELAY`) after reading the head; returns its result and every byte read from
    /// the stream afterwards.
    async fn exact_against(chunks: Vec<Vec<u8>>) -> (Result<(), Error>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut head = [0u8; 4];
            s.read_exact(&mut head).await.unwrap();
            for chunk in chunks {
                s.write_all(&chunk).await.unwrap();
                s.flush().await.unwrap();
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let answer = exchange_exact(&mut stream, b"HEAD", Duration::from_secs(10)).await;
        server.await.unwrap();
        let mut rest = Vec::new();
        if answer.is_ok() {
            stream.read_to_end(&mut rest).await.unwrap();
        }
        (answer, rest)
    }

    #[tokio::test]
    async fn an_exact_200_leaves_the_bytes_after_it_on_the_socket() {
        let (answer, rest) = exact_against(vec![
            b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-banner\r\n".to_vec(),
        ])
        .await;
        answer.unwrap();
        assert_eq!(rest, b"SSH-2.0-banner\r\n");
    }

    #[tokio::test]
    async fn an_exact_200_sent_a_byte_at_a_time_is_read_to_its_blank_line_only() {
        let bytes = b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nafter";
        let (answer, rest) = exact_against(bytes.iter().map(|b| vec![*b]).collect()).await;
        answer.unwrap();
        assert_eq!(rest, b"after");
    }

    #[tokio::test]
    async fn an_exact_read_reports_refusals_garbage_and_early_closes() {
        let (answer, _) =
            exact_against(vec![tryst_engine::reject::Rejection::NotParked.response()]).await;
        let err = answer.unwrap_err();
        assert_eq!(err.refusal().map(|r| r.code.as_str()), Some("not_parked"));
        let (answer, _) = exact_against(vec![b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()]).await;
        assert!(matches!(answer, Err(Error::BadResponse)), "{answer:?}");
        let (answer, _) = exact_against(vec![b"HTTP/1.1 200 OK\r\n".to_vec()]).await;
        assert!(matches!(answer, Err(Error::Lost(_))), "{answer:?}");
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.resize(MAX_RESPONSE_HEAD + 100, b'a');
        let (answer, _) = exact_against(vec![long]).await;
        assert!(matches!(answer, Err(Error::BadResponse)), "{answer:?}");
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

    #[tokio::test]
    async fn a_refusal_carries_the_relays_retry_after() {
        use tryst_engine::reject::Rejection;
        // Exactly the relay's bytes: the "retry later" refusals carry `Retry-After: 1`.
        for (rejection, retry_after) in [
            (Rejection::Overloaded, Some(Duration::from_secs(1))),
            (Rejection::RoomFull, Some(Duration::from_secs(1))),
            (Rejection::TooManyWaiting, Some(Duration::from_secs(1))),
            (Rejection::ReplayCacheFull, Some(Duration::from_secs(1))),
            (Rejection::TagTableFull, Some(Duration::from_secs(1))),
            (Rejection::ShuttingDown, None),
            (Rejection::BadProof, None),
        ] {
            let bytes = rejection.response();
            let err = answer_of(Box::leak(bytes.into_boxed_slice()))
                .await
                .unwrap_err();
            let r = err.refusal().unwrap();
            assert_eq!(
                (r.status, r.code.as_str(), r.retry_after),
                (rejection.status(), rejection.code(), retry_after),
                "{rejection:?}"
            );
        }
    }

    #[test]
    fn retry_after_reads_only_bounded_delay_seconds() {
        let secs = |n| Some(Duration::from_secs(n));
        for (value, want) in [
            ("1", secs(1)),
            ("0", secs(0)),
            (" 7\t", secs(7)),
            ("007", secs(7)),
            ("3600", secs(3600)),
            ("3601", secs(3600)),
            ("18446744073709551616", secs(3600)),
            ("99999999999999999999999999999999999999", secs(3600)),
            ("", None),
            ("  ", None),
            ("+5", None),
            ("-1", None),
            ("1.5", None),
            ("1 2", None),
            ("5s", None),
            ("\u{0663}", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ] {
            assert_eq!(retry_after(value.as_bytes()), want, "{value:?}");
        }
    }

    #[test]
    fn the_first_retry_after_counts_whatever_its_spelling() {
        let body = r#"{"error":{"code":"overloaded","message":"relay overloaded"}}"#;
        let answer = |headers: &str| {
            format!(
                "HTTP/1.1 503 Service Unavailable\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let read = |headers: &str| match parse_answer(answer(headers).as_bytes(), false) {
            Some(Err(Error::Refused(r))) => r.retry_after,
            other => panic!("{headers:?}: {other:?}"),
        };
        assert_eq!(read("retry-after: 30\r\n"), Some(Duration::from_secs(30)));
        assert_eq!(
            read("RETRY-AFTER:2\r\nRetry-After: 9\r\n"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(read("Retry-After: soon\r\nRetry-After: 9\r\n"), None);
        assert_eq!(read("X-Retry-After: 9\r\n"), None);
        // A 200 is never a refusal, whatever it carries.
        assert_eq!(
            parse_answer(b"HTTP/1.1 200\r\nRetry-After: 5\r\n\r\nhi", false).map(|r| r.ok()),
            Some(Some(b"hi".to_vec()))
        );
    }

    #[test]
    fn the_answer_is_the_same_read_byte_by_byte() {
        let bytes = tryst_engine::reject::Rejection::RoomFull.response();
        let whole = parse_answer(&bytes, true).unwrap().unwrap_err();
        let mut decided = None;
        for k in 0..=bytes.len() {
            if let Some(answer) = parse_answer(&bytes[..k], false) {
                decided = Some((k, answer));
                break;
            }
        }
        let (k, answer) = decided.unwrap();
        assert_eq!(k, bytes.len(), "decided before the body was complete");
        assert_eq!(answer.unwrap_err().refusal(), whole.refusal());
        // Closed before the body was complete: the refusal still carries its head.
        let cut = parse_answer(&bytes[..bytes.len() - 5], true)
            .unwrap()
            .unwrap_err();
        let r = cut.refusal().unwrap();
        assert_eq!(
            (r.status, r.code.as_str(), r.retry_after),
            (503, "", Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn heads_over_the_limit_are_bad_responses() {
        let mut long = b"HTTP/1.1 503 Service Unavailable\r\nX: ".to_vec();
        long.resize(MAX_RESPONSE_HEAD, b'a');
        assert!(matches!(
            parse_answer(&long, false),
            Some(Err(Error::BadResponse))
        ));
        long.truncate(MAX_RESPONSE_HEAD - 1);
        assert!(parse_answer(&long, false).is_none());
        long.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse_answer(&long, true),
            Some(Err(Error::BadResponse))
        ));
    }

    #[test]
    fn permanence_follows_the_status_and_code() {
        let r = |status, code: &str| Refusal {
            status,
            code: code.into(),
            message: String::new(),
            retry_after: None,
        };
        assert!(r(403, "bad_proof").is_permanent());
        assert!(r(400, "malformed_proof").is_permanent());
        assert!(r(403, "stale_timestamp").is_permanent());
        assert!(!r(403, "replayed_nonce").is_permanent());
        assert!(!r(503, "shutting_down").is_permanent());
        assert!(!r(408, "head_timeout").is_permanent());
        assert_eq!(r(403, "bad_proof").code_or_none(), "bad_proof");
        assert_eq!(r(401, "").code_or_none(), "none (HTTP 401)");
    }
}
