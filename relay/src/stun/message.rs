//! The STUN wire format (RFC 8489 §5, §14): a bounded parser for any STUN message and
//! the Binding responder's decision, both pure.
//!
//! [`respond`] turns one received datagram and its source address into either the exact
//! Binding success response to send or the reason it is dropped. Nothing here allocates
//! or panics, whatever the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie every RFC 5389/8489 message carries at bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Largest datagram considered; longer ones are dropped unread. A Binding request needs
/// 20 bytes (plus 8 for FINGERPRINT and a few for SOFTWARE).
pub const MAX_REQUEST_LEN: usize = 1280;
/// Largest response ever sent: header (20), XOR-MAPPED-ADDRESS for IPv6 (4 + 20) and
/// FINGERPRINT (4 + 4). An IPv4 answer is 40 bytes.
pub const MAX_RESPONSE_LEN: usize = HEADER_LEN + 24 + 8;
/// The XOR applied to the CRC-32 in FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The Binding method.
pub const METHOD_BINDING: u16 = 0x001;
/// Attribute types used here.
pub mod attr {
    /// MAPPED-ADDRESS (comprehension-required).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// MESSAGE-INTEGRITY (comprehension-required).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// XOR-MAPPED-ADDRESS (comprehension-required).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// SOFTWARE (comprehension-optional).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT (comprehension-optional).
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The class bits of a message type (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `0b00`: a request.
    Request,
    /// `0b01`: an indication.
    Indication,
    /// `0b10`: a success response.
    Success,
    /// `0b11`: an error response.
    Error,
}

/// Why a datagram is not a well-formed STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the 20-byte header.
    #[error("shorter than a STUN header")]
    TooShort,
    /// Longer than [`MAX_REQUEST_LEN`] (only checked by [`respond`]).
    #[error("longer than the largest request considered")]
    TooLong,
    /// The two leading bits are not zero, or the magic cookie is wrong (not RFC 5389+ STUN).
    #[error("not a STUN message (leading bits or magic cookie)")]
    NotStun,
    /// The length field is not a multiple of 4 or does not match the datagram.
    #[error("length field does not match the datagram")]
    BadLength,
    /// An attribute runs past the end of the message.
    #[error("malformed attribute")]
    MalformedAttribute,
    /// FINGERPRINT is not the last attribute, not 4 bytes, or its CRC does not match.
    #[error("bad FINGERPRINT")]
    BadFingerprint,
}

/// A parsed STUN message borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The message class.
    pub class: Class,
    /// The 12-bit method.
    pub method: u16,
    /// The 96-bit transaction id.
    pub transaction_id: [u8; 12],
    /// Whether a (verified) FINGERPRINT ended the message.
    pub has_fingerprint: bool,
    attributes: &'a [u8],
}

impl<'a> Message<'a> {
    /// The attributes in order as `(type, value)` (padding stripped). FINGERPRINT is
    /// included when present.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            rest: self.attributes,
        }
    }

    /// The value of the first attribute of type `kind`.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == kind).map(|(_, v)| v)
    }

    /// The address in XOR-MAPPED-ADDRESS, if present and well-formed.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        decode_xor_address(
            self.attribute(attr::XOR_MAPPED_ADDRESS)?,
            &self.transaction_id,
        )
    }
}

/// Iterator over a message's attributes; see [`Message::attributes`].
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (kind, value, rest) = split_attribute(self.rest)?;
        self.rest = rest;
        Some((kind, value))
    }
}

/// One TLV off the front of `bytes`: `(type, value, rest after padding)`, or `None` if
/// `bytes` is empty or the attribute (with its padding) does not fit.
fn split_attribute(bytes: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let head = bytes.get(..4)?;
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let padded = len.checked_add(3)? & !3;
    let value = bytes.get(4..4 + len)?;
    let rest = bytes.get(4 + padded..)?;
    Some((kind, value, rest))
}

/// Parses and checks one STUN message: header (leading zero bits, magic cookie, length a
/// multiple of 4 equal to the datagram's remainder), every attribute inside the message,
/// and FINGERPRINT when present (it must be last, 4 bytes, and match).
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    let header = datagram.get(..HEADER_LEN).ok_or(ParseError::TooShort)?;
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if kind & 0xC000 != 0 || cookie != MAGIC_COOKIE {
        return Err(ParseError::NotStun);
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if length % 4 != 0 || HEADER_LEN + length != datagram.len() {
        return Err(ParseError::BadLength);
    }
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&header[8..20]);
    let attributes = &datagram[HEADER_LEN..];

    let mut rest = attributes;
    let mut offset = HEADER_LEN;
    let mut has_fingerprint = false;
    while !rest.is_empty() {
        let (kind, value, after) = split_attribute(rest).ok_or(ParseError::MalformedAttribute)?;
        if kind == attr::FINGERPRINT {
            if !after.is_empty() || value.len() != 4 {
                return Err(ParseError::BadFingerprint);
            }
            let sent = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            if sent != fingerprint(&datagram[..offset]) {
                return Err(ParseError::BadFingerprint);
            }
            has_fingerprint = true;
        }
        offset += rest.len() - after.len();
        rest = after;
    }

    let (class, method) = split_type(kind);
    Ok(Message {
        class,
        method,
        transaction_id,
        has_fingerprint,
        attributes,
    })
}

/// Splits a message type into class and method (RFC 8489 §5: the class bits are 4 and 8).
fn split_type(kind: u16) -> (Class, u16) {
    let class = match ((kind >> 7) & 0b10) | ((kind >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    let method = (kind & 0x000F) | ((kind >> 1) & 0x0070) | ((kind >> 2) & 0x0F80);
    (class, method)
}

/// Decodes an XOR-MAPPED-ADDRESS value (RFC 8489 §14.2) for `transaction_id`.
pub fn decode_xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    let head = value.get(..4)?;
    let port = u16::from_be_bytes([head[2], head[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mask = xor_mask(transaction_id);
    match (head[1], value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// The cookie followed by the transaction id: what addresses are XORed with.
fn xor_mask(transaction_id: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(transaction_id);
    mask
}

/// The FINGERPRINT value of a message whose bytes before the FINGERPRINT attribute are
/// `before` (with the header length already counting FINGERPRINT): CRC-32 (ISO HDLC,
/// as in zlib) XOR [`FINGERPRINT_XOR`].
pub fn fingerprint(before: &[u8]) -> u32 {
    crc32(before) ^ FINGERPRINT_XOR
}

/// CRC-32 table for the reflected polynomial 0xEDB88320, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// Why the responder drops a datagram (the `reason` label of the drop counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a well-formed STUN message (short, long, wrong cookie, bad length or attribute).
    Malformed,
    /// A FINGERPRINT that is misplaced or does not match.
    BadFingerprint,
    /// Well-formed, but not a Binding request (indications, responses, other methods).
    NotBindingRequest,
    /// A Binding request carrying a comprehension-required attribute (type < 0x8000):
    /// none is meaningful in a Binding request, and authentication is not offered.
    UnknownAttribute,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 4] = [
        Self::Malformed,
        Self::BadFingerprint,
        Self::NotBindingRequest,
        Self::UnknownAttribute,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadFingerprint => "bad_fingerprint",
            Self::NotBindingRequest => "not_binding_request",
            Self::UnknownAttribute => "unknown_attribute",
        }
    }

    /// Index into [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An encoded response: at most [`MAX_RESPONSE_LEN`] bytes, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Response {
    buf: [u8; MAX_RESPONSE_LEN],
    len: usize,
}

impl Response {
    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Response({})", hex::encode(self.as_bytes()))
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back to the source.
    Answer(Response),
    /// Send nothing.
    Drop(DropReason),
}

/// The responder's decision for `datagram` received from `source`.
///
/// Answered: exactly a Binding request (class request, method Binding) that parses (see
/// [`parse`]) and carries only comprehension-optional attributes (e.g. SOFTWARE,
/// FINGERPRINT). The answer is a Binding success response echoing the transaction id,
/// with XOR-MAPPED-ADDRESS of `source` (an IPv4-mapped IPv6 source is answered as IPv4)
/// and FINGERPRINT; nothing else (no SOFTWARE, so answers stay 40 or 52 bytes).
///
/// Everything else is dropped silently, including requests with comprehension-required
/// attributes (RFC 8489 §6.3.1 would answer 420, which would be larger than the request
/// that caused it; this responder never sends an error response).
pub fn respond(datagram: &[u8], source: SocketAddr) -> Outcome {
    if datagram.len() > MAX_REQUEST_LEN {
        return Outcome::Drop(DropReason::Malformed);
    }
    let message = match parse(datagram) {
        Ok(m) => m,
        Err(ParseError::BadFingerprint) => return Outcome::Drop(DropReason::BadFingerprint),
        Err(_) => return Outcome::Drop(DropReason::Malformed),
    };
    if message.class != Class::Request || message.method != METHOD_BINDING {
        return Outcome::Drop(DropReason::NotBindingRequest);
    }
    if message.attributes().any(|(kind, _)| kind < 0x8000) {
        return Outcome::Drop(DropReason::UnknownAttribute);
    }
    Outcome::Answer(binding_success(&message.transaction_id, source))
}

/// Encodes a Binding success response for `transaction_id` mapping `mapped`, with
/// XOR-MAPPED-ADDRESS then FINGERPRINT.
pub fn binding_success(transaction_id: &[u8; 12], mapped: SocketAddr) -> Response {
    let mut buf = [0u8; MAX_RESPONSE_LEN];
    let ip = mapped.ip().to_canonical();
    let mask = xor_mask(transaction_id);
    let (family, addr_len): (u8, usize) = match ip {
        IpAddr::V4(_) => (0x01, 4),
        IpAddr::V6(_) => (0x02, 16),
    };
    let xma_len = 4 + addr_len;
    let len = HEADER_LEN + 4 + xma_len + 8;
    buf[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
    // At most 32: fits a u16.
    buf[2..4].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf[8..20].copy_from_slice(transaction_id);
    buf[20..22].copy_from_slice(&attr::XOR_MAPPED_ADDRESS.to_be_bytes());
    buf[22..24].copy_from_slice(&(xma_len as u16).to_be_bytes());
    buf[24] = 0;
    buf[25] = family;
    let port = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    buf[26..28].copy_from_slice(&port.to_be_bytes());
    let octets: [u8; 16] = match ip {
        IpAddr::V4(v4) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&v4.octets());
            o
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    for i in 0..addr_len {
        buf[28 + i] = octets[i] ^ mask[i];
    }
    let fp_at = 28 + addr_len;
    buf[fp_at..fp_at + 2].copy_from_slice(&attr::FINGERPRINT.to_be_bytes());
    buf[fp_at + 2..fp_at + 4].copy_from_slice(&4u16.to_be_bytes());
    let fp = fingerprint(&buf[..fp_at]);
    buf[fp_at + 4..fp_at + 8].copy_from_slice(&fp.to_be_bytes());
    Response { buf, len }
}

/// Encodes a Binding request (for tests and tools): header, optional SOFTWARE, and
/// FINGERPRINT when `with_fingerprint`.
pub fn binding_request(
    transaction_id: &[u8; 12],
    software: Option<&str>,
    with_fingerprint: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0x0001u16.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(transaction_id);
    if let Some(s) = software {
        let bytes = &s.as_bytes()[..s.len().min(763)];
        out.extend_from_slice(&attr::SOFTWARE.to_be_bytes());
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    if with_fingerprint {
        let body = (out.len() - HEADER_LEN + 8) as u16;
        out[2..4].copy_from_slice(&body.to_be_bytes());
        let fp = fingerprint(&out);
        out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&fp.to_be_bytes());
    } else {
        let body = (out.len() - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&body.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
