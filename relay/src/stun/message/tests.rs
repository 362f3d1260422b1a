use super::*;

const TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 §2.2, the sample IPv4 response (SOFTWARE, XOR-MAPPED-ADDRESS,
/// MESSAGE-INTEGRITY, FINGERPRINT). Checked independently with python3
/// (`zlib.crc32` for the fingerprint, `hmac` for MESSAGE-INTEGRITY).
const RFC5769_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3, the sample IPv6 response.
const RFC5769_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

fn v4_source() -> SocketAddr {
    "192.0.2.1:32853".parse().unwrap()
}

#[test]
fn crc32_matches_zlib() {
    // zlib.crc32(b"123456789") == 0xcbf43926, the standard check value.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn rfc5769_ipv4_response_parses_with_its_fingerprint() {
    let m = parse(&RFC5769_IPV4_RESPONSE).unwrap();
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.method, METHOD_BINDING);
    assert_eq!(m.transaction_id, TXID);
    assert!(m.has_fingerprint);
    assert_eq!(m.xor_mapped_address(), Some(v4_source()));
    assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"test vector"[..]));
    assert_eq!(fingerprint(&RFC5769_IPV4_RESPONSE[..72]), 0xc07d_4c96);
}

#[test]
fn rfc5769_ipv6_response_parses_with_its_fingerprint() {
    let m = parse(&RFC5769_IPV6_RESPONSE).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.has_fingerprint);
    let want: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(m.xor_mapped_address(), Some(want));
    assert_eq!(fingerprint(&RFC5769_IPV6_RESPONSE[..84]), 0xc8fb_0b4c);
}

#[test]
fn our_encoding_matches_the_rfc5769_xor_mapped_address_bytes() {
    // The same transaction id and address give the vector's attribute bytes exactly.
    let r = binding_success(&TXID, v4_source());
    assert_eq!(&r.as_bytes()[20..32], &RFC5769_IPV4_RESPONSE[36..48]);
    let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    let r = binding_success(&TXID, v6);
    assert_eq!(&r.as_bytes()[20..44], &RFC5769_IPV6_RESPONSE[36..60]);
}

#[test]
fn corrupted_vector_fingerprint_is_refused() {
    for i in [0x13, 30, 45, 70, 79] {
        let mut v = RFC5769_IPV4_RESPONSE;
        v[i] ^= 0x01;
        assert_eq!(parse(&v), Err(ParseError::BadFingerprint), "byte {i}");
    }
}

fn answer(datagram: &[u8], source: SocketAddr) -> Vec<u8> {
    match respond(datagram, source) {
        Outcome::Answer(r) => r.as_bytes().to_vec(),
        Outcome::Drop(why) => panic!("dropped: {why:?}"),
    }
}

#[test]
fn binding_request_gets_an_exact_ipv4_answer() {
    let txid = [7u8; 12];
    let source: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let got = answer(&binding_request(&txid, None, false), source);
    assert_eq!(got.len(), 40);
    // Built by hand: 0x0101, length 20, cookie, txid; XOR-MAPPED-ADDRESS family 1,
    // port 40000 ^ 0x2112, 127.0.0.1 ^ 21 12 a4 42; FINGERPRINT.
    let mut want = vec![0x01, 0x01, 0x00, 0x14, 0x21, 0x12, 0xa4, 0x42];
    want.extend_from_slice(&txid);
    want.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
    want.extend_from_slice(&(40000u16 ^ 0x2112).to_be_bytes());
    want.extend_from_slice(&[127 ^ 0x21, 0x12, 0xa4, 1 ^ 0x42]);
    // CRC-32 of the 32 bytes before FINGERPRINT, computed with python3's zlib.crc32.
    let fp = 0x3d09_5918u32;
    assert_eq!(fp, crc32(&want) ^ 0x5354_554e);
    want.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    want.extend_from_slice(&fp.to_be_bytes());
    assert_eq!(got, want);
    let m = parse(&got).unwrap();
    assert_eq!(m.transaction_id, txid);
    assert_eq!(m.xor_mapped_address(), Some(source));
}

#[test]
fn ipv6_and_mapped_sources() {
    let txid = [0xa5; 12];
    let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
    let got = answer(&binding_request(&txid, Some("client"), true), v6);
    assert_eq!(got.len(), MAX_RESPONSE_LEN);
    assert_eq!(parse(&got).unwrap().xor_mapped_address(), Some(v6));
    let mapped: SocketAddr = "[::ffff:198.51.100.7]:999".parse().unwrap();
    let got = answer(&binding_request(&txid, None, false), mapped);
    assert_eq!(got.len(), 40);
    assert_eq!(
        parse(&got).unwrap().xor_mapped_address(),
        Some("198.51.100.7:999".parse().unwrap())
    );
}

#[test]
fn requests_with_fingerprint_and_software_are_answered() {
    let req = binding_request(&TXID, Some("tryst test"), true);
    let m = parse(&req).unwrap();
    assert!(m.has_fingerprint);
    assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"tryst test"[..]));
    let got = answer(&req, v4_source());
    assert_eq!(&got[8..20], &TXID);
}

#[test]
fn drops() {
    let src = v4_source();
    let good = binding_request(&TXID, Some("x"), true);
    let drop = |bytes: &[u8]| match respond(bytes, src) {
        Outcome::Drop(why) => why,
        Outcome::Answer(r) => panic!("answered {r:?}"),
    };
    // Short, empty, long.
    assert_eq!(drop(b""), DropReason::Malformed);
    assert_eq!(drop(&good[..19]), DropReason::Malformed);
    let mut long = binding_request(&TXID, None, false);
    long.resize(MAX_REQUEST_LEN + 1, 0);
    assert_eq!(drop(&long), DropReason::Malformed);
    // Wrong cookie (an RFC 3489 request) and leading bits set.
    let mut v = good.clone();
    v[4] = 0;
    assert_eq!(drop(&v), DropReason::Malformed);
    let mut v = good.clone();
    v[0] |= 0x80;
    assert_eq!(drop(&v), DropReason::Malformed);
    // Length field not matching, not a multiple of 4, truncated datagram.
    let mut v = good.clone();
    v[3] += 4;
    assert_eq!(drop(&v), DropReason::Malformed);
    let mut v = binding_request(&TXID, None, false);
    v[3] = 2;
    v.extend_from_slice(&[0, 0]);
    assert_eq!(drop(&v), DropReason::Malformed);
    assert_eq!(drop(&good[..good.len() - 4]), DropReason::Malformed);
    // An attribute running past the end.
    let mut v = binding_request(&TXID, None, false);
    v.extend_from_slice(&[0x80, 0x22, 0x00, 0x09, 1, 2, 3, 4]);
    v[3] = 8;
    assert_eq!(drop(&v), DropReason::Malformed);
    // Bad fingerprint value; fingerprint not last.
    let mut v = good.clone();
    let n = v.len();
    v[n - 1] ^= 1;
    assert_eq!(drop(&v), DropReason::BadFingerprint);
    let mut v = good.clone();
    v.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (v.len() - HEADER_LEN) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(drop(&v), DropReason::BadFingerprint);
    // Indications, responses and other methods.
    let mut v = binding_request(&TXID, None, false);
    v[1] = 0x11; // Binding indication
    assert_eq!(drop(&v), DropReason::NotBindingRequest);
    assert_eq!(drop(&RFC5769_IPV4_RESPONSE), DropReason::NotBindingRequest);
    let mut v = binding_request(&TXID, None, false);
    v[1] = 0x03; // Allocate request (TURN)
    assert_eq!(drop(&v), DropReason::NotBindingRequest);
    // A comprehension-required attribute (CHANGE-REQUEST, USERNAME).
    for kind in [0x0003u16, 0x0006, 0x0008] {
        let mut v = binding_request(&TXID, None, false);
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&[0, 4, 0, 0, 0, 0]);
        v[3] = 8;
        assert_eq!(drop(&v), DropReason::UnknownAttribute, "{kind:#x}");
    }
}

#[test]
fn answers_never_exceed_the_fixed_size() {
    // Whatever is accepted, the answer is at most 52 bytes and only for requests.
    let mut seed = 0x1234_5678_9abc_def0u64;
    println!("seed {seed:#x}");
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = HEADER_LEN + (seed % 48) as usize / 4 * 4;
        let mut v = binding_request(&TXID, None, false);
        v.resize(len, 0);
        for (i, b) in v.iter_mut().enumerate().skip(20) {
            *b = (seed >> (i % 8 * 8)) as u8;
        }
        v[2..4].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
        if let Outcome::Answer(r) = respond(&v, v4_source()) {
            assert!(r.as_bytes().len() <= MAX_RESPONSE_LEN);
            assert!(parse(r.as_bytes()).unwrap().has_fingerprint);
        }
    }
}
