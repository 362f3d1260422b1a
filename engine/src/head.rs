//! Request-head parsing: bounded, push-style, never panics.
//!
//! The caller accumulates bytes and calls [`parse_head`] after each read. The parser
//! returns [`HeadStatus::Partial`] until a whole head (up to and including the blank line)
//! is present, then an owned [`RequestHead`] and the head's length, so the caller can keep
//! the bytes that followed the head.

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
        Self { max_head_bytes: 16 * 1024, max_headers: 64 }
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
        self.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count()
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

/// Parses the bytes received so far (the buffer always starts at the head's first byte).
///
/// Returns `Partial` while the head is incomplete and within limits; never panics,
/// whatever the input.
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<HeadStatus, HeadError> {
    let _ = (buf, limits);
    todo!("implemented by the head-parser work")
}
