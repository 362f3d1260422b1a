//! Request-head parsing: bounded, push-style, never panics.
//!
//! The caller accumulates bytes and calls [`parse_head`] after each read. The parser
//! returns [`HeadStatus::Partial`] until a whole head (up to and including the blank line)
//! is present, then an owned [`RequestHead`] and the head's length, so the caller can keep
//! the bytes that followed the head.

use std::mem::MaybeUninit;

/// Limits applied to every request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest head accepted, in bytes, including the terminating blank line.
    pub max_head_bytes: usize,
    /// Largest number of header fields accepted.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// The request method, with the ones the relay routes on named.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// `CONNECT`
    Connect,
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// Any other token.
    Other(String),
}

/// One header field as received (name as sent, value as raw bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, as sent.
    pub name: String,
    /// Field value, raw.
    pub value: Vec<u8>,
}

/// A complete, parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target exactly as sent (e.g. `uuid:…` or `/healthz`).
    pub target: String,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
    /// Length of the head in bytes, including the blank line; bytes after it are body
    /// or tunnel payload.
    pub head_len: usize,
}

impl RequestHead {
    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// How many headers carry this name (ASCII case-insensitive).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    }
}

/// Outcome of feeding the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadStatus {
    /// More bytes are needed; nothing is wrong yet.
    Partial,
    /// A whole head was parsed.
    Complete(RequestHead),
}

/// Why a head was refused. Every variant is caused by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The head grew past [`HeadLimits::max_head_bytes`] without ending.
    #[error("request head larger than the limit")]
    TooLarge,
    /// More header fields than [`HeadLimits::max_headers`].
    #[error("too many header fields")]
    TooManyHeaders,
    /// Not a well-formed HTTP/1.x request head.
    #[error("malformed request head")]
    Malformed,
}

/// Header slots kept on the stack; larger `max_headers` limits fall back to one heap
/// array per call. The slots are left uninitialised (httparse's safe
/// `parse_with_uninit_headers`), so a call does not clear 4 KiB first.
const STACK_HEADERS: usize = 128;

/// Parses the bytes received so far (the buffer always starts at the head's first byte).
///
/// Returns `Partial` while the head is incomplete and within limits; never panics,
/// whatever the input.
///
/// Only the first `max_head_bytes` bytes are examined, so the work per call is bounded
/// by the limit however much the caller has buffered. A head that has not ended within
/// them is [`HeadError::TooLarge`] once more bytes than the limit are present (until
/// then it is `Partial`). Nothing is allocated until the head is complete (unless
/// `max_headers` exceeds 128); then the owned [`RequestHead`] is built once.
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<HeadStatus, HeadError> {
    if limits.max_headers <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        let slots = slots.get_mut(..limits.max_headers).unwrap_or_default();
        parse_with(buf, limits, slots)
    } else {
        let mut slots = Vec::with_capacity(limits.max_headers);
        slots.resize_with(limits.max_headers, MaybeUninit::uninit);
        parse_with(buf, limits, &mut slots)
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<HeadStatus, HeadError> {
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head_bytes {
                Err(HeadError::TooLarge)
            } else if !request_line_viable(window) {
                // httparse waits for more bytes in places where no continuation could
                // make a request line (e.g. before any line end); refuse now rather
                // than at the head deadline.
                Err(HeadError::Malformed)
            } else {
                Ok(HeadStatus::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_len > limits.max_head_bytes {
        // Unreachable while only `window` is parsed; kept so the limit holds regardless.
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Malformed);
    };
    if minor_version > 1 {
        return Err(HeadError::Malformed);
    }
    let headers = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect();
    Ok(HeadStatus::Complete(RequestHead {
        method: Method::from_token(method),
        target: target.to_owned(),
        minor_version,
        headers,
        head_len,
    }))
}

/// Where [`request_line_viable`] is in the request line.
#[derive(Clone, Copy)]
enum LineState {
    /// Before the method: skipping empty lines (RFC 9112 §2.2, as httparse does).
    Start,
    /// After a CR of an empty line: only LF may follow.
    EmptyLineCr,
    /// In the method token (at least one byte read).
    Method,
    /// Just after the SP that ends the method: the target's first byte comes next.
    TargetStart,
    /// In the request target.
    Target,
    /// After the SP that ends the target: this many bytes of `HTTP/` matched.
    Version(usize),
}

/// Whether `buf` (the bytes received so far, from the head's first byte) can still be
/// the start of a valid request line: optional empty lines, then a method token
/// (RFC 9110 `tchar`s), one SP, a target of visible bytes, one SP and `HTTP/`.
///
/// `false` as soon as a byte rules that out, so bytes that can never be HTTP (NULs, a
/// TLS ClientHello on a plain port, `\x80abc`) are refused at once instead of being
/// held until the head deadline. Looks at most at the request line (it stops after the
/// version's `HTTP/`), so it is cheap to call after every read. Deliberately no stricter
/// than httparse: every prefix of a head httparse accepts is viable, so this never
/// refuses what a complete read would have accepted.
pub fn request_line_viable(buf: &[u8]) -> bool {
    let mut state = LineState::Start;
    for &b in buf {
        state = match state {
            LineState::Start => match b {
                b'\r' => LineState::EmptyLineCr,
                b'\n' => LineState::Start,
                _ if is_tchar(b) => LineState::Method,
                _ => return false,
            },
            LineState::EmptyLineCr => match b {
                b'\n' => LineState::Start,
                _ => return false,
            },
            LineState::Method => match b {
                b' ' => LineState::TargetStart,
                _ if is_tchar(b) => LineState::Method,
                _ => return false,
            },
            LineState::TargetStart | LineState::Target => match b {
                b' ' if matches!(state, LineState::Target) => LineState::Version(0),
                // Visible ASCII and any byte >= 0x80 (httparse decides on those).
                0x21..=0x7e | 0x80..=0xff => LineState::Target,
                _ => return false,
            },
            LineState::Version(n) => {
                if b != b"HTTP/"[n] {
                    return false;
                }
                if n + 1 == 5 {
                    return true;
                }
                LineState::Version(n + 1)
            }
        };
    }
    true
}

/// An RFC 9110 `tchar`: the bytes a method token is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Method {
    /// Maps a method token (case-sensitive, as RFC 9110 says) to the enum.
    fn from_token(token: &str) -> Self {
        match token {
            "CONNECT" => Self::Connect,
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            "PATCH" => Self::Patch,
            other => Self::Other(other.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARK: &[u8] = b"CONNECT uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8 HTTP/1.1\r\n\
Proxy-Authorization: Tryst ts=1700000000, nonce=00112233445566778899aabbccddeeff, mac=a5Qoa7nQz0vmiYW6Y1cz5U51DOo4PdOkHY-336S7QaI\r\n\r\n";

    fn complete(buf: &[u8], limits: &HeadLimits) -> RequestHead {
        match parse_head(buf, limits) {
            Ok(HeadStatus::Complete(head)) => head,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    /// A head of exactly `len` bytes: request line, one padding header, blank line.
    fn head_of_len(len: usize) -> Vec<u8> {
        let start = b"GET / HTTP/1.1\r\nX-Pad: ";
        let end = b"\r\n\r\n";
        let pad = len - start.len() - end.len();
        let mut v = start.to_vec();
        v.extend(std::iter::repeat_n(b'a', pad));
        v.extend_from_slice(end);
        assert_eq!(v.len(), len);
        v
    }

    fn head_with_headers(n: usize) -> Vec<u8> {
        let mut v = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            v.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    #[test]
    fn parses_a_park_head() {
        let head = complete(PARK, &HeadLimits::default());
        assert_eq!(head.method, Method::Connect);
        assert_eq!(head.target, "uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.head_len, PARK.len());
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.headers[0].name, "Proxy-Authorization");
        assert!(head.headers[0].value.starts_with(b"Tryst ts=1700000000, "));
    }

    #[test]
    fn partial_at_every_byte_before_the_end() {
        let limits = HeadLimits::default();
        for n in 0..PARK.len() {
            assert_eq!(
                parse_head(&PARK[..n], &limits),
                Ok(HeadStatus::Partial),
                "at {n}"
            );
        }
        assert_eq!(complete(PARK, &limits).head_len, PARK.len());
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let mut buf =
            b"CONNECT uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8 HTTP/1.1\r\n\r\n".to_vec();
        let head_len = buf.len();
        buf.extend_from_slice(b"hello, early bytes\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        let head = complete(&buf, &HeadLimits::default());
        assert_eq!(head.head_len, head_len);
        assert!(head.headers.is_empty());
        assert_eq!(&buf[head.head_len..head.head_len + 5], b"hello");
    }

    #[test]
    fn http_1_0_is_accepted_and_other_versions_refused() {
        let head = complete(b"GET /healthz HTTP/1.0\r\n\r\n", &HeadLimits::default());
        assert_eq!(head.minor_version, 0);
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/healthz");
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad, &HeadLimits::default()),
                Err(HeadError::Malformed)
            );
        }
    }

    #[test]
    fn methods_map_to_the_enum() {
        let cases = [
            ("CONNECT", Method::Connect),
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Patch),
            ("BREW", Method::Other("BREW".into())),
            ("connect", Method::Other("connect".into())),
        ];
        for (token, want) in cases {
            let buf = format!("{token} / HTTP/1.1\r\n\r\n");
            assert_eq!(
                complete(buf.as_bytes(), &HeadLimits::default()).method,
                want
            );
        }
    }

    #[test]
    fn head_size_limit_both_sides_of_16_kib() {
        let limits = HeadLimits::default();
        assert_eq!(limits.max_head_bytes, 16 * 1024);
        let exact = head_of_len(16 * 1024);
        assert_eq!(complete(&exact, &limits).head_len, 16 * 1024);
        let over = head_of_len(16 * 1024 + 1);
        assert_eq!(parse_head(&over, &limits), Err(HeadError::TooLarge));
        // The exact-limit head followed by payload is still fine.
        let mut with_payload = exact.clone();
        with_payload.extend_from_slice(&[0xff; 100]);
        assert_eq!(complete(&with_payload, &limits).head_len, 16 * 1024);
        // Unfinished: Partial up to the limit, TooLarge one byte past it.
        assert_eq!(
            parse_head(&over[..16 * 1024], &limits),
            Ok(HeadStatus::Partial)
        );
        assert_eq!(
            parse_head(&over[..16 * 1024 + 1], &limits),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn oversized_header_line_without_end_is_too_large() {
        let mut buf = b"CONNECT uuid:x HTTP/1.1\r\nX-Long: ".to_vec();
        buf.extend(std::iter::repeat_n(b'b', 20_000));
        assert_eq!(
            parse_head(&buf, &HeadLimits::default()),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn small_custom_size_limit() {
        let limits = HeadLimits {
            max_head_bytes: 18,
            max_headers: 4,
        };
        assert_eq!(complete(b"GET / HTTP/1.1\r\n\r\n", &limits).head_len, 18);
        assert_eq!(
            parse_head(b"GET /a HTTP/1.1\r\n\r\n", &limits),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn header_count_limit_64_and_65() {
        let limits = HeadLimits::default();
        assert_eq!(limits.max_headers, 64);
        assert_eq!(complete(&head_with_headers(64), &limits).headers.len(), 64);
        assert_eq!(
            parse_head(&head_with_headers(65), &limits),
            Err(HeadError::TooManyHeaders)
        );
        // Zero allowed headers: any header is one too many.
        let none = HeadLimits {
            max_headers: 0,
            ..limits
        };
        assert_eq!(complete(b"GET / HTTP/1.1\r\n\r\n", &none).headers.len(), 0);
        assert_eq!(
            parse_head(&head_with_headers(1), &none),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn header_limits_above_the_stack_array_use_the_heap() {
        let limits = HeadLimits {
            max_head_bytes: 64 * 1024,
            max_headers: 300,
        };
        assert_eq!(
            complete(&head_with_headers(300), &limits).headers.len(),
            300
        );
        assert_eq!(
            parse_head(&head_with_headers(301), &limits),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        let bad: &[&[u8]] = &[
            b"\r\n\r\nGET\r\n\r\n",
            b"\r\n \r\n",
            b"GET\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo Colon Here\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
            b"CONNECT uuid:\xc3\x28 HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for buf in bad {
            assert_eq!(
                parse_head(buf, &HeadLimits::default()),
                Err(HeadError::Malformed),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn bytes_that_cannot_start_a_request_line_are_refused_at_once() {
        // Issue #12 item 7: none of these has a line end, so before this check they were
        // held (Partial) until the head deadline.
        let mut client_hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        client_hello.extend_from_slice(&[0x03, 0x03]);
        let cases: &[&[u8]] = &[
            &[0u8; 100],
            &[0u8],
            &client_hello,
            &[0x16],
            b"\x80abc",
            b" GET",
            b"GET\t/",
            b"GET\x00",
            b"G(T",
            b"GET  ",
            b"GET /\x00",
            b"GET / \x00",
            b"GET / HTTX",
            b"GET / http/",
            b"\r\r",
            b"\r\n\r\n\x00",
            b"\r\n \r\n",
        ];
        for buf in cases {
            assert!(!request_line_viable(buf), "{buf:?}");
            assert_eq!(
                parse_head(buf, &HeadLimits::default()),
                Err(HeadError::Malformed),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn every_prefix_of_a_valid_request_line_is_viable() {
        let lines: &[&[u8]] = &[
            PARK,
            b"GET /healthz HTTP/1.0\r\n\r\n",
            b"\r\n\nBREW /pot?x=1 HTTP/1.1\r\n\r\n",
            b"M-SEARCH * HTTP/1.1\r\n\r\n",
            b"CONNECT uuid:\xc3\xa9 HTTP/1.1\r\n\r\n",
        ];
        for line in lines {
            for n in 0..=line.len() {
                assert!(request_line_viable(&line[..n]), "{:?} at {n}", line);
            }
        }
        // Once `HTTP/` is matched the rest is httparse's to judge.
        assert!(request_line_viable(b"GET / HTTP/9\x00"));
    }

    #[test]
    fn leading_empty_lines_are_skipped_but_bounded() {
        // RFC 9112 §2.2 lets a server ignore CRLFs before the request line; httparse does.
        let head = complete(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", &HeadLimits::default());
        assert_eq!(head.head_len, 22);
        let limits = HeadLimits {
            max_head_bytes: 64,
            max_headers: 4,
        };
        let crlfs = b"\r\n".repeat(32);
        assert_eq!(parse_head(&crlfs, &limits), Ok(HeadStatus::Partial));
        let crlfs = b"\r\n".repeat(33);
        assert_eq!(parse_head(&crlfs, &limits), Err(HeadError::TooLarge));
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let buf = b"CONNECT uuid:x HTTP/1.1\r\nproxy-AUTHORIZATION: one\r\nX-Other: 2\r\nProxy-Authorization: two\r\n\r\n";
        let head = complete(buf, &HeadLimits::default());
        assert_eq!(head.header("Proxy-Authorization"), Some(&b"one"[..]));
        assert_eq!(head.header("PROXY-AUTHORIZATION"), Some(&b"one"[..]));
        assert_eq!(head.header_count("proxy-authorization"), 2);
        assert_eq!(head.header("x-other"), Some(&b"2"[..]));
        assert_eq!(head.header("missing"), None);
        assert_eq!(head.header_count("missing"), 0);
        assert_eq!(
            head.headers[0].name, "proxy-AUTHORIZATION",
            "names are kept as sent"
        );
    }

    #[test]
    fn arbitrary_prefixes_never_panic() {
        // A cheap, deterministic sweep; the fuzz target `connect_head` goes further.
        let limits = HeadLimits {
            max_head_bytes: 64,
            max_headers: 2,
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(state % 90) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let alphabet = b"GET CONNECT / :\r\n\tHTTP/1.1\xff";
                buf.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = parse_head(&buf, &limits);
        }
    }
}
