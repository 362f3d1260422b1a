//! Socket helpers shared by every workload: dialling from a spread of loopback source
//! addresses, the verified echo round trip, and the exact-answer read.

use crate::pattern::Pattern;
use crate::proto::{Answer, OK_RESPONSE, ParkAuth, classify};
use crate::transport::{Conn, SplitIo, TlsClient, tls_failure};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// A failed step, already named for the errors table (`"<role>/<step>: <what>"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure(pub(crate) String);

impl Failure {
    /// An I/O error during `step`.
    pub(crate) fn io(step: &str, e: &io::Error) -> Self {
        Self(format!("{step}: {:?}", e.kind()))
    }
    /// A step that did not finish within its timeout.
    pub(crate) fn timeout(step: &str) -> Self {
        Self(format!("{step}: timeout"))
    }
}

/// Source addresses `127.0.0.1 ..= 127.0.0.n` for spreading connections over 127/8, or
/// none when the target is not on loopback.
pub(crate) fn source_ips(target: SocketAddr, n: u8) -> Vec<Ipv4Addr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (1..=n.max(1))
            .map(|x| Ipv4Addr::new(127, 0, 0, x))
            .collect(),
        _ => Vec::new(),
    }
}

/// Connects to `to`, first binding `from` (port chosen at connect time thanks to
/// `IP_BIND_ADDRESS_NO_PORT`, so each 4-tuple gets its own port range). Sets TCP_NODELAY.
pub(crate) async fn dial(to: SocketAddr, from: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (Some(ip), true) = (from, to.is_ipv4()) {
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(io::Error::from)?;
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs `fut` under `limit`, mapping expiry to [`Failure::timeout`] for `step`.
pub(crate) async fn within<T>(
    limit: Duration,
    step: &str,
    fut: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(Failure::timeout(step)),
    }
}

/// Reads the relay's answer to a head: exactly [`OK_RESPONSE`] or a failure named by
/// status code. Never reads past the answer's length, so tunnel bytes stay in the socket.
pub(crate) async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
    role: &str,
) -> Result<(), Failure> {
    let mut buf = [0u8; OK_RESPONSE.len()];
    let mut got = 0usize;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await {
            Ok(0) => {
                // A short answer may still carry a status line worth reporting.
                return Err(match classify_prefix(&buf[..got]) {
                    Some(code) => Failure(format!("{role}/status {code}")),
                    None => Failure(format!("{role}/answer: closed after {got} bytes")),
                });
            }
            Ok(n) => got += n,
            Err(e) => return Err(Failure::io(&format!("{role}/answer"), &e)),
        }
    }
    match classify(&buf) {
        Answer::Ok => Ok(()),
        Answer::Status(code) => Err(Failure(format!("{role}/status {code}"))),
        Answer::Garbage => Err(Failure(format!(
            "{role}/answer: not an HTTP/1.1 status line"
        ))),
    }
}

fn classify_prefix(prefix: &[u8]) -> Option<u16> {
    let rest = prefix.strip_prefix(b"HTTP/1.1 ")?;
    let code = rest.get(..3)?;
    code.iter().all(u8::is_ascii_digit).then(|| {
        code.iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'))
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Connects to the relay as `role` (`hidden` or `client`): TCP from `from`, then the TLS
/// handshake when `tls` is given. Each step is bounded by `limit`.
pub(crate) async fn connect(
    relay: SocketAddr,
    from: Option<Ipv4Addr>,
    tls: Option<&TlsClient>,
    role: &str,
    limit: Duration,
) -> Result<Conn, Failure> {
    let step = format!("{role}/connect");
    let tcp = within(limit, &step, async {
        dial(relay, from).await.map_err(|e| Failure::io(&step, &e))
    })
    .await?;
    match tls {
        None => Ok(Conn::Plain(tcp)),
        Some(tls) => {
            let step = format!("{role}/tls handshake");
            within(limit, &step, async {
                tls.handshake(tcp)
                    .await
                    .map(|s| Conn::Tls(Box::new(s)))
                    .map_err(|e| tls_failure(&step, &e))
            })
            .await
        }
    }
}

/// Parks one hidden-server connection under `id`: connect (and TLS handshake), send the
/// head with a fresh proof or TOTP code, read exactly the `200`. Each step is bounded by
/// `limit`.
pub(crate) async fn park(
    relay: SocketAddr,
    from: Option<Ipv4Addr>,
    id: &uuid::Uuid,
    auth: &ParkAuth,
    tls: Option<&TlsClient>,
    limit: Duration,
) -> Result<Conn, Failure> {
    let mut s = connect(relay, from, tls, "hidden", limit).await?;
    // A TOTP code must reach the relay within its step; right at a step's end, wait for
    // the next one (callers already wait before connecting, so this is rare).
    if let Some(step) = auth.totp_step()
        && let Some(ms) = crate::proto::totp_boundary_wait(unix_now_ms(), step, TOTP_SEND_GUARD_MS)
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let head = auth.head(id, unix_now());
    within(limit, "hidden/park", async {
        s.write_all(&head)
            .await
            .map_err(|e| Failure::io("hidden/park write", &e))?;
        read_answer(&mut s, "hidden/park").await
    })
    .await?;
    Ok(s)
}

/// At send time, how much of a TOTP step must be left to send its code (else wait for
/// the next step).
pub(crate) const TOTP_SEND_GUARD_MS: u64 = 1000;

/// Unix time in milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Times of one verified echo round trip.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Echoed {
    /// When the first echoed byte arrived.
    pub(crate) first_byte: Instant,
    /// When the last echoed byte arrived and verified.
    pub(crate) done: Instant,
}

/// Sends `size` pattern bytes at stream offset `offset` and reads them back, verifying
/// every byte. Writes and reads run together, so sizes beyond the socket buffers cannot
/// deadlock against an echo server.
pub(crate) async fn echo_round(
    stream: &mut impl SplitIo,
    pattern: &Pattern,
    offset: u64,
    size: usize,
    role: &str,
) -> Result<Echoed, Failure> {
    let mut out = vec![0u8; size];
    pattern.fill(offset, &mut out);
    let (mut rd, mut wr) = stream.io_split();
    let write = async {
        wr.write_all(&out)
            .await
            .map_err(|e| Failure::io(&format!("{role}/echo write"), &e))
    };
    let read = async {
        let mut buf = vec![0u8; size.clamp(1, 64 * 1024)];
        let mut got = 0usize;
        let mut first = None;
        while got < size {
            let want = (size - got).min(buf.len());
            let n = rd
                .read(&mut buf[..want])
                .await
                .map_err(|e| Failure::io(&format!("{role}/echo read"), &e))?;
            if n == 0 {
                return Err(Failure(format!(
                    "{role}/echo: closed after {got} of {size} bytes"
                )));
            }
            first.get_or_insert_with(Instant::now);
            pattern
                .verify(offset + got as u64, &buf[..n])
                .map_err(|m| {
                    Failure(format!(
                        "{role}/echo: corrupt byte (offset {} expected {} got {})",
                        m.offset, m.expected, m.got
                    ))
                })?;
            got += n;
        }
        let now = Instant::now();
        Ok(Echoed {
            first_byte: first.unwrap_or(now),
            done: now,
        })
    };
    let (w, r) = tokio::join!(write, read);
    w?;
    r
}

/// Shuts down the write side and expects a clean end of stream with no extra bytes.
pub(crate) async fn close_clean(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    role: &str,
) -> Result<(), Failure> {
    stream
        .shutdown()
        .await
        .map_err(|e| Failure::io(&format!("{role}/shutdown"), &e))?;
    let mut b = [0u8; 1];
    match stream.read(&mut b).await {
        Ok(0) => Ok(()),
        Ok(_) => Err(Failure(format!(
            "{role}/close: unexpected bytes after the last echo"
        ))),
        Err(e) => Err(Failure::io(&format!("{role}/close"), &e)),
    }
}

/// The echo buffer's first size: small echoes (the capacity run's 64 B rounds, 100,000
/// tunnels at once) need no more; it doubles up to [`ECHO_BUF_MAX`] while reads fill it.
const ECHO_BUF_START: usize = 2 * 1024;
/// The echo buffer's largest size (bulk workloads).
const ECHO_BUF_MAX: usize = 64 * 1024;

/// Echoes everything from `stream` back to it, starting with `first` (bytes already
/// read), until end of stream; then shuts down the write side. Returns bytes echoed.
pub(crate) async fn echo_serve(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    first: &[u8],
    role: &str,
) -> Result<u64, Failure> {
    let mut total = first.len() as u64;
    stream
        .write_all(first)
        .await
        .map_err(|e| Failure::io(&format!("{role}/echo write"), &e))?;
    let mut buf = vec![0u8; ECHO_BUF_START];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| Failure::io(&format!("{role}/echo read"), &e))?;
        if n == 0 {
            break;
        }
        stream
            .write_all(&buf[..n])
            .await
            .map_err(|e| Failure::io(&format!("{role}/echo write"), &e))?;
        total += n as u64;
        if n == buf.len() && buf.len() < ECHO_BUF_MAX {
            buf.resize(buf.len() * 2, 0);
        }
    }
    stream
        .shutdown()
        .await
        .map_err(|e| Failure::io(&format!("{role}/shutdown"), &e))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        assert_eq!(
            source_ips(lo, 3),
            vec![
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3)
            ]
        );
        assert_eq!(source_ips(lo, 0).len(), 1);
        let remote: SocketAddr = "10.0.0.1:7400".parse().unwrap();
        assert!(source_ips(remote, 8).is_empty());
    }

    #[test]
    fn prefix_status() {
        assert_eq!(classify_prefix(b"HTTP/1.1 404"), Some(404));
        assert_eq!(classify_prefix(b"HTTP/1.1 4"), None);
        assert_eq!(classify_prefix(b""), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn echo_round_trip_over_loopback_with_spread_source() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.unwrap();
            let n = echo_serve(&mut s, b"", "test").await.unwrap();
            (peer, n)
        });
        let mut c = dial(addr, Some(Ipv4Addr::new(127, 0, 0, 7))).await.unwrap();
        let p = Pattern::new(1, 1);
        // Larger than loopback socket buffers would hold one way.
        let e = echo_round(&mut c, &p, 0, 3_000_000, "client")
            .await
            .unwrap();
        assert!(e.first_byte <= e.done);
        echo_round(&mut c, &p, 3_000_000, 64, "client")
            .await
            .unwrap();
        close_clean(&mut c, "client").await.unwrap();
        let (peer, n) = server.await.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)));
        assert_eq!(n, 3_000_064);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn echo_round_detects_cross_talk() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            s.read_exact(&mut buf).await.unwrap();
            // Answer with another client's bytes.
            let mut other = [0u8; 64];
            Pattern::new(1, 2).fill(0, &mut other);
            s.write_all(&other).await.unwrap();
        });
        let mut c = dial(addr, None).await.unwrap();
        let err = echo_round(&mut c, &Pattern::new(1, 1), 0, 64, "client")
            .await
            .unwrap_err();
        assert!(err.0.starts_with("client/echo: corrupt byte"), "{err:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn read_answer_names_the_status() {
        let (mut a, mut b) = tokio::io::duplex(256);
        b.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_answer(&mut a, "client").await,
            Err(Failure("client/status 404".into()))
        );
        let (mut a, mut b) = tokio::io::duplex(256);
        b.write_all(b"HTTP/1.1 200\r\n\r\nhello").await.unwrap();
        assert_eq!(read_answer(&mut a, "client").await, Ok(()));
        let mut rest = [0u8; 5];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello", "bytes after the answer stay unread");
        let (mut a, b) = tokio::io::duplex(256);
        drop(b);
        assert_eq!(
            read_answer(&mut a, "hidden").await,
            Err(Failure("hidden/answer: closed after 0 bytes".into()))
        );
    }
}
