//! The mesh preamble: the first bytes a node writes on a node-to-node connection, before
//! the client's head (sans-IO: no sockets, no clock; `now` is passed in).
//!
//! Layout (all integers big-endian), at most [`MAX_PREAMBLE`] bytes:
//!
//! ```text
//! magic  "TRYSTMESH" (9)   version (1) = 1
//! transport (1)            0 plain, 1 TLS: how the client reached the sending node
//! name_len (1) name        the sending node's name, 1..=64 bytes of [A-Za-z0-9._-]
//! peer family (1)          0 none, 4 IPv4 (4 address bytes), 6 IPv6 (16 address bytes)
//! peer address, port (2)   the client's address as the sending node saw it
//! unix time (8)            seconds
//! nonce (16)               random
//! mac (32)                 HMAC-SHA256(PSK, every byte above)
//! ```
//!
//! [`Verifier::verify`] checks, in order: the MAC (constant time, `hmac`'s
//! `verify_slice`), the time window, then the nonce against a bounded replay cache
//! that fails closed. Bytes that do not start with the magic (a client's `CONNECT`
//! sent to the mesh port) are [`Refusal::NotMesh`] as soon as they differ from it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tryst_engine::route::Transport;

/// The first bytes of every preamble.
pub const MAGIC: &[u8; 9] = b"TRYSTMESH";
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// Longest node name.
pub const MAX_NAME: usize = 64;
/// Longest preamble: magic, version, transport, name, IPv6 peer, time, nonce, MAC.
pub const MAX_PREAMBLE: usize = 9 + 1 + 1 + 1 + MAX_NAME + 1 + 16 + 2 + 8 + 16 + 32;
/// Length of the MAC.
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// What a preamble says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble {
    /// The sending node.
    pub node: String,
    /// How the client reached the sending node (node-rendezvous answers TLS clients in
    /// its TLS style).
    pub transport: Transport,
    /// The client's address as the sending node saw it, when it had one (a TLS
    /// client's plaintext end has none).
    pub peer: Option<SocketAddr>,
    /// Unix seconds when the preamble was made.
    pub unix: u64,
    /// Random, unique per preamble.
    pub nonce: [u8; 16],
}

/// Why a preamble was refused; [`Refusal::label`] is the `reason` label of
/// `tryst_mesh_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bytes do not start with the magic (e.g. a client's `CONNECT`).
    #[error("not a mesh preamble")]
    NotMesh,
    /// Another version.
    #[error("unsupported mesh version")]
    Version,
    /// Structurally wrong (bad transport, name, address family).
    #[error("malformed mesh preamble")]
    Malformed,
    /// The MAC does not verify: another mesh key, or altered bytes.
    #[error("wrong mesh key")]
    BadMac,
    /// Outside the time window.
    #[error("mesh preamble outside the time window")]
    Stale,
    /// A nonce seen before within the window.
    #[error("replayed mesh preamble")]
    Replayed,
    /// The replay cache is full of live nonces (fails closed).
    #[error("mesh replay cache full")]
    CacheFull,
    /// The peer did not finish a preamble before the deadline.
    #[error("no mesh preamble before the deadline")]
    Timeout,
}

impl Refusal {
    /// Every reason, in `/metrics` order.
    pub const ALL: [Self; 8] = [
        Self::NotMesh,
        Self::Version,
        Self::Malformed,
        Self::BadMac,
        Self::Stale,
        Self::Replayed,
        Self::CacheFull,
        Self::Timeout,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotMesh => "not_mesh",
            Self::Version => "version",
            Self::Malformed => "malformed",
            Self::BadMac => "bad_key",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
            Self::CacheFull => "replay_cache_full",
            Self::Timeout => "timeout",
        }
    }

    /// Position in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Whether `name` is a valid node name (1..=64 bytes of `[A-Za-z0-9._-]`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Encodes and MACs `p` with `psk`. `p.node` must satisfy [`valid_name`] (it is
/// truncated to [`MAX_NAME`] bytes otherwise, which the receiver then checks).
pub fn encode(p: &Preamble, psk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_PREAMBLE);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(match p.transport {
        Transport::Plain => 0,
        Transport::Tls => 1,
    });
    let name = &p.node.as_bytes()[..p.node.len().min(MAX_NAME)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    match p.peer {
        None => out.push(0),
        Some(SocketAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
    }
    out.extend_from_slice(&p.unix.to_be_bytes());
    out.extend_from_slice(&p.nonce);
    let mut mac = mac_for(psk);
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

fn mac_for(psk: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(psk).unwrap_or_else(|_| unreachable!())
}

/// A parsed, not yet verified preamble: what it says, and where its MAC starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The fields.
    pub preamble: Preamble,
    /// Bytes the preamble takes (the rest of the input is the client's head).
    pub len: usize,
}

/// Parses a preamble from the start of `buf` (push-style: `Ok(None)` means "read
/// more"; never needs more than [`MAX_PREAMBLE`] bytes to decide). Does not verify.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, Refusal> {
    let m = buf.len().min(MAGIC.len());
    if buf[..m] != MAGIC[..m] {
        return Err(Refusal::NotMesh);
    }
    let mut r = Reader { buf, at: m };
    if m < MAGIC.len() {
        return Ok(None);
    }
    let Some(version) = r.byte() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(Refusal::Version);
    }
    let Some(transport) = r.byte() else {
        return Ok(None);
    };
    let transport = match transport {
        0 => Transport::Plain,
        1 => Transport::Tls,
        _ => return Err(Refusal::Malformed),
    };
    let Some(name_len) = r.byte() else {
        return Ok(None);
    };
    if name_len == 0 || usize::from(name_len) > MAX_NAME {
        return Err(Refusal::Malformed);
    }
    let Some(name) = r.take(usize::from(name_len)) else {
        return Ok(None);
    };
    let node = match std::str::from_utf8(name) {
        Ok(n) if valid_name(n) => n.to_owned(),
        _ => return Err(Refusal::Malformed),
    };
    let Some(family) = r.byte() else {
        return Ok(None);
    };
    let ip = match family {
        0 => None,
        4 => match r.take(4) {
            Some(b) => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            None => return Ok(None),
        },
        6 => match r.take(16) {
            Some(b) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                Some(IpAddr::V6(Ipv6Addr::from(o)))
            }
            None => return Ok(None),
        },
        _ => return Err(Refusal::Malformed),
    };
    let peer = match ip {
        None => None,
        Some(ip) => match r.take(2) {
            Some(p) => Some(SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]]))),
            None => return Ok(None),
        },
    };
    let Some(unix) = r.take(8) else {
        return Ok(None);
    };
    let mut t = [0u8; 8];
    t.copy_from_slice(unix);
    let Some(nonce_bytes) = r.take(16) else {
        return Ok(None);
    };
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(nonce_bytes);
    if r.take(MAC_LEN).is_none() {
        return Ok(None);
    }
    Ok(Some(Parsed {
        preamble: Preamble {
            node,
            transport,
            peer,
            unix: u64::from_be_bytes(t),
            nonce,
        },
        len: r.at,
    }))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
}

/// Checks preambles: the MAC under the mesh key, the time window, and nonce replays.
/// One per mesh listener (the replay cache is its state).
pub struct Verifier {
    psk: Vec<u8>,
    window: u64,
    capacity: usize,
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Verifier")
            .field("window", &self.window)
            .field("capacity", &self.capacity)
            .field("nonces", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `psk` accepting `|now - unix| <= window` seconds and remembering
    /// at most `capacity` nonces (full of live ones: every further preamble is
    /// refused, [`Refusal::CacheFull`]).
    pub fn new(psk: &[u8], window: u64, capacity: usize) -> Self {
        Self {
            psk: psk.to_vec(),
            window,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Parses and verifies the preamble at the start of `buf` at unix second `now`.
    /// `Ok(None)`: incomplete, read more. A verified preamble's nonce is remembered
    /// until it leaves the window, so it verifies once.
    pub fn verify(&mut self, buf: &[u8], now: u64) -> Result<Option<Parsed>, Refusal> {
        let Some(parsed) = parse(buf)? else {
            return Ok(None);
        };
        let body = &buf[..parsed.len - MAC_LEN];
        let tag = &buf[parsed.len - MAC_LEN..parsed.len];
        let mut mac = mac_for(&self.psk);
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| Refusal::BadMac)?;
        let unix = parsed.preamble.unix;
        if unix.abs_diff(now) > self.window {
            return Err(Refusal::Stale);
        }
        self.expire(now);
        if self.seen.contains_key(&parsed.preamble.nonce) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Refusal::CacheFull);
        }
        let until = unix.saturating_add(self.window);
        self.seen.insert(parsed.preamble.nonce, until);
        self.order.push_back((parsed.preamble.nonce, until));
        Ok(Some(parsed))
    }

    /// Nonces remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    fn expire(&mut self, now: u64) {
        // `order` is by insertion; entries may be out of expiry order by at most the
        // window, so scan while the front is expired and let later ones go later.
        while let Some(&(nonce, until)) = self.order.front() {
            if until >= now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&nonce) == Some(&until) {
                self.seen.remove(&nonce);
            }
        }
        if self.seen.len() >= self.capacity {
            // Out-of-order entries can hide expired ones behind a live front: sweep.
            self.seen.retain(|_, until| *until >= now);
            self.order.retain(|(_, until)| *until >= now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSK: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample(nonce: u8) -> Preamble {
        Preamble {
            node: "node-a".into(),
            transport: Transport::Tls,
            peer: Some("192.0.2.7:5555".parse().unwrap()),
            unix: 1_000_000,
            nonce: [nonce; 16],
        }
    }

    #[test]
    fn round_trip_and_every_prefix_is_partial() {
        let p = sample(1);
        let mut bytes = encode(&p, PSK);
        let len = bytes.len();
        assert!(len <= MAX_PREAMBLE);
        for cut in 0..len {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "prefix {cut}");
        }
        bytes.extend_from_slice(b"CONNECT uuid:x HTTP/1.1\r\n\r\n");
        let mut v = Verifier::new(PSK, 30, 16);
        let got = v.verify(&bytes, 1_000_010).unwrap().unwrap();
        assert_eq!(got.preamble, p);
        assert_eq!(got.len, len);
        let v6 = Preamble {
            peer: Some("[2001:db8::1]:9".parse().unwrap()),
            ..sample(2)
        };
        let none = Preamble {
            peer: None,
            transport: Transport::Plain,
            ..sample(3)
        };
        for p in [v6, none] {
            let b = encode(&p, PSK);
            assert_eq!(v.verify(&b, 1_000_000).unwrap().unwrap().preamble, p);
        }
    }

    #[test]
    fn a_client_connect_is_not_mesh_at_its_first_byte() {
        assert_eq!(
            parse(b"CONNECT uuid:0 HTTP/1.1\r\n\r\n"),
            Err(Refusal::NotMesh)
        );
        assert_eq!(parse(b"C"), Err(Refusal::NotMesh));
        assert_eq!(parse(b"TRYSTMESX"), Err(Refusal::NotMesh));
        assert_eq!(parse(b"TRYST"), Ok(None));
    }

    #[test]
    fn wrong_key_altered_bytes_stale_and_replay_are_refused() {
        let p = sample(1);
        let mut v = Verifier::new(PSK, 30, 16);
        let other = encode(&p, b"another key");
        assert_eq!(v.verify(&other, 1_000_000), Err(Refusal::BadMac));
        let good = encode(&p, PSK);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert!(v.verify(&bad, 1_000_000).is_err(), "flipped byte {i}");
        }
        assert_eq!(v.verify(&good, 1_000_031), Err(Refusal::Stale));
        assert_eq!(v.verify(&good, 999_969), Err(Refusal::Stale));
        assert!(v.verify(&good, 1_000_030).unwrap().is_some());
        assert_eq!(v.verify(&good, 1_000_030), Err(Refusal::Replayed));
        assert_eq!(v.remembered(), 1);
    }

    #[test]
    fn the_replay_cache_is_bounded_and_fails_closed() {
        let mut v = Verifier::new(PSK, 30, 2);
        assert!(v.verify(&encode(&sample(1), PSK), 1_000_000).is_ok());
        assert!(v.verify(&encode(&sample(2), PSK), 1_000_000).is_ok());
        assert_eq!(
            v.verify(&encode(&sample(3), PSK), 1_000_000),
            Err(Refusal::CacheFull)
        );
        // Once the first two leave the window there is room again.
        let later = Preamble {
            unix: 1_000_040,
            ..sample(3)
        };
        assert!(v.verify(&encode(&later, PSK), 1_000_040).unwrap().is_some());
        assert_eq!(v.remembered(), 1);
    }

    #[test]
    fn malformed_fields_are_named() {
        let mut b = encode(&sample(1), PSK);
        b[9] = 2;
        assert_eq!(parse(&b), Err(Refusal::Version));
        let mut b = encode(&sample(1), PSK);
        b[10] = 7;
        assert_eq!(parse(&b), Err(Refusal::Malformed));
        let mut b = encode(&sample(1), PSK);
        b[11] = 0;
        assert_eq!(parse(&b), Err(Refusal::Malformed));
        let bad_name = Preamble {
            node: "a b".into(),
            ..sample(1)
        };
        assert_eq!(parse(&encode(&bad_name, PSK)), Err(Refusal::Malformed));
        assert!(valid_name("node-1.eu_west"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
