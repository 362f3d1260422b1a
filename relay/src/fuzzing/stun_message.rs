//! `stun_message`: the STUN parser and the Binding responder on arbitrary datagrams.
//!
//! Invariants: nothing panics; an answer is only ever given to a datagram that parses as
//! a Binding request, is at most [`MAX_RESPONSE_LEN`] bytes, parses itself (with a valid
//! FINGERPRINT), echoes the transaction id and maps exactly the source address.

use crate::stun::message::{Class, MAX_RESPONSE_LEN, METHOD_BINDING, Outcome, parse, respond};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Runs one input: the first 19 bytes choose the source address, the rest is the datagram
/// (and the whole input is also tried as a datagram from a fixed IPv4 source).
pub fn run(data: &[u8]) {
    check(data, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478));
    if let Some((head, datagram)) = data.split_at_checked(19) {
        let port = u16::from_be_bytes([head[1], head[2]]);
        let source = if head[0] & 1 == 0 {
            let ip = Ipv4Addr::new(head[3], head[4], head[5], head[6]);
            SocketAddr::new(IpAddr::V4(ip), port)
        } else {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&head[3..19]);
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)
        };
        check(datagram, source);
    }
}

fn check(datagram: &[u8], source: SocketAddr) {
    let parsed = parse(datagram);
    if let Ok(m) = &parsed {
        // Attribute iteration terminates and stays inside the message.
        let total: usize = m.attributes().map(|(_, v)| v.len()).sum();
        assert!(total <= datagram.len());
        let _ = m.xor_mapped_address();
    }
    if let Outcome::Answer(response) = respond(datagram, source) {
        let request = parsed.expect("answered a datagram that does not parse");
        assert_eq!(request.class, Class::Request);
        assert_eq!(request.method, METHOD_BINDING);
        let bytes = response.as_bytes();
        assert!(bytes.len() <= MAX_RESPONSE_LEN);
        let answer = parse(bytes).expect("our answer parses");
        assert!(answer.has_fingerprint);
        assert_eq!(answer.class, Class::Success);
        assert_eq!(answer.transaction_id, request.transaction_id);
        let want = SocketAddr::new(source.ip().to_canonical(), source.port());
        assert_eq!(answer.xor_mapped_address(), Some(want));
    }
}
