//! The cluster's mesh preamble (`cluster::preamble`): the raw bytes as the mesh listener
//! reads them, then a preamble built from the input and really MACed.
//!
//! Raw: `parse` and `Verifier::verify` (fixed mesh key) on arbitrary bytes never panic;
//! a parse never claims more bytes than it was given nor more than `MAX_PREAMBLE`;
//! nothing forged verifies under the key; bytes not starting with the magic are
//! `NotMesh`.
//!
//! Built: a preamble made from the input (name, transport, peer, time offset, nonce)
//! and encoded under the key verifies exactly when its time is inside the window and
//! reads back to the same fields; every shorter prefix is incomplete; once verified, a
//! second use is `Replayed`; a flipped byte (position from the input) never verifies;
//! under another key it is `BadMac`.

use crate::cluster::preamble::{self, MAX_PREAMBLE, Preamble, Refusal, Verifier};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tryst_engine::route::Transport;

const PSK: &[u8] = b"fuzzing mesh key, 32 bytes long!";
const NOW: u64 = 1_800_000_000;
const WINDOW: u64 = 30;

/// Runs one input.
pub fn run(data: &[u8]) {
    raw(data);
    built(data);
}

fn raw(data: &[u8]) {
    match preamble::parse(data) {
        Ok(Some(p)) => {
            assert!(p.len <= data.len() && p.len <= MAX_PREAMBLE);
            assert!(preamble::valid_name(&p.preamble.node));
        }
        Ok(None) => assert!(data.len() < MAX_PREAMBLE),
        Err(Refusal::NotMesh) => {
            let m = data.len().min(preamble::MAGIC.len());
            assert_ne!(data[..m], preamble::MAGIC[..m]);
        }
        Err(_) => {}
    }
    let mut v = Verifier::new(PSK, WINDOW, 4);
    // A forged MAC under a 32-byte key is out of the fuzzer's reach.
    assert!(!matches!(v.verify(data, NOW), Ok(Some(_))));
}

fn built(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let name_len = usize::from(byte(0) % 70);
    let node: String = data
        .iter()
        .skip(1)
        .take(name_len)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    if !preamble::valid_name(&node) {
        return;
    }
    let at = 1 + name_len;
    let transport = if byte(at) & 1 == 0 {
        Transport::Plain
    } else {
        Transport::Tls
    };
    let port = u16::from_be_bytes([byte(at + 1), byte(at + 2)]);
    let peer = match byte(at + 3) % 3 {
        0 => None,
        1 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                byte(at + 4),
                byte(at + 5),
                byte(at + 6),
                byte(at + 7),
            )),
            port,
        )),
        _ => {
            let mut o = [0u8; 16];
            for (k, b) in o.iter_mut().enumerate() {
                *b = byte(at + 4 + k);
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
    };
    let offset = i64::from(i8::from_le_bytes([byte(at + 20)]));
    let unix = NOW.saturating_add_signed(offset);
    let mut nonce = [0u8; 16];
    for (k, b) in nonce.iter_mut().enumerate() {
        *b = byte(at + 21 + k);
    }
    let p = Preamble {
        node,
        transport,
        peer,
        unix,
        nonce,
    };
    let bytes = preamble::encode(&p, PSK);
    assert!(bytes.len() <= MAX_PREAMBLE);
    for cut in 0..bytes.len() {
        assert_eq!(preamble::parse(&bytes[..cut]), Ok(None));
    }
    let mut v = Verifier::new(PSK, WINDOW, 4);
    let inside = offset.unsigned_abs() <= WINDOW;
    match v.verify(&bytes, NOW) {
        Ok(Some(got)) => {
            assert!(inside);
            assert_eq!(got.preamble, p);
            assert_eq!(got.len, bytes.len());
            assert_eq!(v.verify(&bytes, NOW), Err(Refusal::Replayed));
        }
        Err(Refusal::Stale) => assert!(!inside),
        other => panic!("a well-made preamble gave {other:?}"),
    }
    let flip = usize::from(byte(at + 37)) % bytes.len();
    let mut bad = bytes.clone();
    bad[flip] ^= 1 << (byte(at + 38) % 8);
    let mut fresh = Verifier::new(PSK, WINDOW, 4);
    assert!(!matches!(fresh.verify(&bad, NOW), Ok(Some(_))));
    let mut other = Verifier::new(b"another mesh key of enough bytes", WINDOW, 4);
    assert_eq!(other.verify(&bytes, unix), Err(Refusal::BadMac));
}
