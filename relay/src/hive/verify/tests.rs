use super::*;
use crate::hive::record::{Candidate, Record, parse_rfc3339_utc};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

fn h<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// RFC 8032 §7.1 TEST 1..3: secret key, public key, message, signature.
const RFC8032: &[(&str, &str, &str, &str)] = &[
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn rfc8032_vectors_verify_strictly() {
    for (i, (sk, pk, msg, sig)) in RFC8032.iter().enumerate() {
        let (pk, sig) = (h::<32>(pk), h::<64>(sig));
        let msg = hex::decode(msg).unwrap();
        let signing = SigningKey::from_bytes(&h::<32>(sk));
        assert_eq!(signing.verifying_key().to_bytes(), pk, "TEST {}", i + 1);
        assert_eq!(signing.sign(&msg).to_bytes(), sig, "TEST {}", i + 1);
        assert_eq!(verify_strict(&pk, &msg, &sig), Ok(()), "TEST {}", i + 1);
        // Any flipped bit in message, key or signature is refused.
        let mut other = msg.clone();
        other.push(0);
        assert!(verify_strict(&pk, &other, &sig).is_err());
        for byte in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[byte] ^= 1;
            assert!(verify_strict(&pk, &msg, &bad).is_err(), "sig byte {byte}");
        }
        let mut bad = pk;
        bad[0] ^= 1;
        assert!(verify_strict(&bad, &msg, &sig).is_err());
    }
}

/// RFC 8032 §7.1 TEST 1024 (1023-byte message), from relay/tests/data.
#[test]
fn rfc8032_test_1024_verifies_strictly() {
    let text = include_str!("../../../tests/data/rfc8032-test-1024.txt");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let [sk, pk, msg, sig] = lines[..] else {
        panic!("four lines expected")
    };
    let (pk, sig) = (h::<32>(pk), h::<64>(sig));
    let msg = hex::decode(msg).unwrap();
    assert_eq!(msg.len(), 1023);
    let signing = SigningKey::from_bytes(&h::<32>(sk));
    assert_eq!(signing.verifying_key().to_bytes(), pk);
    assert_eq!(signing.sign(&msg).to_bytes(), sig);
    assert_eq!(verify_strict(&pk, &msg, &sig), Ok(()));
    assert!(verify_strict(&pk, &msg[..1022], &sig).is_err());
}

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    out
}

#[test]
fn non_canonical_s_is_refused() {
    let (_, pk, _, sig) = RFC8032[0];
    let (pk, sig) = (h::<32>(pk), h::<64>(sig));
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    let mut malleated = sig;
    malleated[32..].copy_from_slice(&add_le(&s, &L));
    assert_eq!(
        verify_strict(&pk, b"", &malleated),
        Err(SignatureError::Invalid)
    );
}

/// The identity point (y = 1): order 1, so a "signature" R = identity, S = 0 satisfies
/// the cofactorless equation for every message. Plain `verify` accepts it; we refuse.
#[test]
fn small_order_key_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    let lax = VerifyingKey::from_bytes(&identity).unwrap();
    assert!(
        lax.verify(b"any message", &Signature::from_bytes(&sig))
            .is_ok()
    );
    assert_eq!(
        verify_strict(&identity, b"any message", &sig),
        Err(SignatureError::WeakKey)
    );
    // The order-2 point (y = -1 = p - 1) and an order-4 point (y = 0).
    let mut minus_one = [0xff; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    assert_eq!(
        verify_strict(&minus_one, b"m", &sig),
        Err(SignatureError::WeakKey)
    );
    assert_eq!(
        verify_strict(&[0; 32], b"m", &sig),
        Err(SignatureError::WeakKey)
    );
}

#[test]
fn non_canonical_key_encodings_are_refused() {
    // y = p + 1 (reduces to 1) and "negative zero" (y = 1 with the sign bit of x set).
    let mut p_plus_one = [0xff; 32];
    p_plus_one[0] = 0xee;
    p_plus_one[31] = 0x7f;
    let mut neg_zero = [0u8; 32];
    neg_zero[0] = 1;
    neg_zero[31] = 0x80;
    let sig = [0u8; 64];
    for key in [p_plus_one, neg_zero] {
        assert!(VerifyingKey::from_bytes(&key).is_ok());
        assert_eq!(
            verify_strict(&key, b"m", &sig),
            Err(SignatureError::NonCanonicalKey)
        );
    }
    // A y with no x on the curve.
    let mut off = [0u8; 32];
    off[0] = 2;
    assert!(VerifyingKey::from_bytes(&off).is_err());
    assert_eq!(
        verify_strict(&off, b"m", &sig),
        Err(SignatureError::KeyNotOnCurve)
    );
}

// --- Publications -----------------------------------------------------------------

/// The fixed test-vector key: seed bytes 0x00, 0x01, ..., 0x1f.
pub(crate) fn vector_key() -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    SigningKey::from_bytes(&seed)
}

pub(crate) fn vector_record() -> Record {
    Record {
        workspace: h("0b6c6f1e3c4b4a8e9d2f6a1c2b3d4e5f"),
        account: h("5d1e4c7a2b3f4e6d8c9a0b1c2d3e4f50"),
        device: h("a1b2c3d4e5f647389a0b1c2d3e4f5061"),
        signing_key: vector_key().verifying_key().to_bytes(),
        candidates: vec![
            Candidate {
                kind: "stunReflexive".into(),
                host: "203.0.113.5".into(),
                port: 51820,
                priority: 100,
            },
            Candidate {
                kind: "hostLocal".into(),
                host: "192.168.1.20".into(),
                port: 51820,
                priority: 50,
            },
        ],
        published_at: "2026-11-22T06:00:00Z".into(),
        ttl_seconds: 90,
    }
}

const T0: i64 = 1_795_327_200; // 2026-11-22T06:00:00Z

/// Our preimage test vector (also in docs/protocol-publications.md).
const VECTOR_PREIMAGE: &str = concat!(
    "686976652d72656e64657a766f75732d7631000b6c6f1e3c4b4a8e9d2f6a1c2b",
    "3d4e5f5d1e4c7a2b3f4e6d8c9a0b1c2d3e4f50a1b2c3d4e5f647389a0b1c2d3e",
    "4f50612000000003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1d",
    "dc8664125531b8910000005b7b226b696e64223a227374756e5265666c657869",
    "7665222c22686f7374223a223230332e302e3131332e35222c22706f7274223a",
    "35313832302c227072696f72697479223a3130307d2c7b226b696e64223a2268",
    "6f73744c6f63616c222c22686f7374223a223139322e3136382e312e3230222c",
    "22706f7274223a35313832302c227072696f72697479223a35307d5d14000000",
    "323032362d31312d32325430363a30303a30305a5a000000",
);
const VECTOR_SIGNATURE: &str =
    "cW1rY7Me9iBd35C95CaVnoUVsbp0ClJA+7ME+kdwsXL2xtnLa0i0Ao1bXlISSao1/+Nq/6PLViSR2iRcUA9SBQ==";
const VECTOR_KEY: &str = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";

#[test]
fn preimage_vector() {
    let rec = vector_record();
    let pre = preimage(&rec);
    let body = sign_publication(&vector_key(), &rec);
    let sig = vector_key().sign(&pre).to_bytes();
    assert_eq!(STANDARD.encode(rec.signing_key), VECTOR_KEY);
    assert_eq!(hex::encode(&pre), VECTOR_PREIMAGE);
    assert_eq!(STANDARD.encode(sig), VECTOR_SIGNATURE);
    let v = verify_publication(&body, T0, &PublicationPolicy::default()).unwrap();
    assert_eq!(v.body, body);
}

fn signed_at(published_at: &str, ttl: u32) -> Vec<u8> {
    let mut rec = vector_record();
    rec.published_at = published_at.into();
    rec.ttl_seconds = ttl;
    sign_publication(&vector_key(), &rec)
}

fn at(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // T0 is midnight-free; the fixtures stay within the same day.
    assert_eq!(days, T0.div_euclid(86_400));
    format!(
        "2026-11-22T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[test]
fn verified_fields_and_ttl_cap() {
    let policy = PublicationPolicy::default();
    let v = verify_publication(&signed_at(&at(T0), 90), T0, &policy).unwrap();
    assert_eq!(v.workspace, vector_record().workspace);
    assert_eq!(v.device, vector_record().device);
    assert_eq!(v.account, vector_record().account);
    assert_eq!(v.signing_key, vector_key().verifying_key().to_bytes());
    assert_eq!(v.published_at_unix, T0);
    assert_eq!(v.expires_at_unix, T0 + 90);
    // Capped at max_ttl, whatever was requested.
    let v = verify_publication(&signed_at(&at(T0), u32::MAX), T0, &policy).unwrap();
    assert_eq!(v.expires_at_unix, T0 + 300);
    let short = PublicationPolicy {
        max_ttl_secs: 30,
        ..policy
    };
    let v = verify_publication(&signed_at(&at(T0), 90), T0, &short).unwrap();
    assert_eq!(v.expires_at_unix, T0 + 30);
    assert!(v.is_fresh(T0 + 29));
    assert!(!v.is_fresh(T0 + 30));
}

#[test]
fn skew_edges_both_directions() {
    let policy = PublicationPolicy::default();
    let body = signed_at(&at(T0), 90);
    for now in [T0 - 300, T0, T0 + 300] {
        assert!(verify_publication(&body, now, &policy).is_ok(), "{now}");
    }
    for now in [T0 - 301, T0 + 301, i64::MIN, i64::MAX] {
        let e = verify_publication(&body, now, &policy).unwrap_err();
        assert_eq!(e, PublicationError::Skew);
        assert_eq!(e.status(), 400);
        assert_eq!(e.body(), r#"{"error":"publishedAt out of skew window"}"#);
    }
    // Fractions are truncated: 300.9 s in the future is still 300.
    let body = signed_at("2026-11-22T06:05:00.900Z", 90);
    assert_eq!(
        parse_rfc3339_utc("2026-11-22T06:05:00.900Z").unwrap().0,
        T0 + 300
    );
    assert!(verify_publication(&body, T0, &policy).is_ok());
}

#[test]
fn bad_signature_and_bad_keys() {
    let policy = PublicationPolicy::default();
    let mut rec = vector_record();
    let good = sign_publication(&vector_key(), &rec);
    // Signed, then a field changed: the signature no longer covers it.
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"ttlSeconds\":90", "\"ttlSeconds\":91");
    let e = verify_publication(tampered.as_bytes(), T0, &policy).unwrap_err();
    assert_eq!(e, PublicationError::BadSignature(SignatureError::Invalid));
    assert_eq!(e.body(), r#"{"error":"bad signature"}"#);
    // A weak key with the all-accepting signature.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    rec.signing_key = identity;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    let e = verify_publication(&publication_body(&rec, &sig), T0, &policy).unwrap_err();
    assert_eq!(
        e.body(),
        r#"{"error":"bad signature: small-order public key"}"#
    );
    let mut neg_zero = identity;
    neg_zero[31] = 0x80;
    rec.signing_key = neg_zero;
    let e = verify_publication(&publication_body(&rec, &sig), T0, &policy).unwrap_err();
    assert_eq!(
        e.body(),
        r#"{"error":"bad signature: non-canonical public key encoding"}"#
    );
    let mut off = [0u8; 32];
    off[0] = 2;
    rec.signing_key = off;
    let e = verify_publication(&publication_body(&rec, &sig), T0, &policy).unwrap_err();
    assert_eq!(
        e.body(),
        r#"{"error":"bad signature: public key not on the curve"}"#
    );
    // Upper-case UUIDs are signed as sent and accepted (identity is the raw bytes).
    let upper = String::from_utf8(good).unwrap().replace(
        "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f",
        "0B6C6F1E-3C4B-4A8E-9D2F-6A1C2B3D4E5F",
    );
    assert!(verify_publication(upper.as_bytes(), T0, &policy).is_ok());
}

#[test]
fn malformed_bodies_name_the_reason() {
    let policy = PublicationPolicy::default();
    let good = String::from_utf8(signed_at(&at(T0), 90)).unwrap();
    let cases: &[(String, &str)] = &[
        (
            "not json".into(),
            "malformed record: expected ident at line 1 column 2",
        ),
        (
            good.replacen('{', "{\"extra\":1,", 1),
            "malformed record: unknown field `extra`, expected `record` or `signature` at line 1 column 8",
        ),
        (
            good.replace("\"ttlSeconds\":90", "\"ttlSeconds\":90,\"x\":1"),
            "malformed record: unknown field `x`, expected one of `workspaceID`, `publisherAccountID`, `publisherDeviceID`, `publisherSigningPublicKey`, `candidates`, `publishedAt`, `ttlSeconds` at line 1 column 473",
        ),
        (
            good.replace("\"ttlSeconds\":90", "\"ttlSeconds\":90,\"ttlSeconds\":90"),
            "malformed record: duplicate field `ttlSeconds` at line 1 column 482",
        ),
        (
            good.replace(
                r#"{"kind":"stunReflexive","host":"203.0.113.5","port":51820,"priority":100}"#,
                r#"["stunReflexive","203.0.113.5",51820,100]"#,
            ),
            "malformed record: each candidate must be a JSON object",
        ),
        (
            format!(
                "[{}]",
                &good[1..good.len() - 1]
                    .replacen("\"record\":", "", 1)
                    .replacen(",\"signature\":", ",", 1)
            ),
            "malformed record: the publication must be a JSON object",
        ),
        (
            r#"{"record":["x"],"signature":"x"}"#.to_owned(),
            "malformed record: record must be a JSON object",
        ),
        (
            good.replace("\"ttlSeconds\":90", "\"ttlSeconds\":0"),
            "malformed record: ttlSeconds must be at least 1",
        ),
        (
            good.replace("\"ttlSeconds\":90", "\"ttlSeconds\":-1"),
            "malformed record: invalid value: integer `-1`, expected u32 at line 1 column 469",
        ),
        (
            good.replace(
                "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f",
                "0b6c6f1e3c4b4a8e9d2f6a1c2b3d4e5f",
            ),
            "malformed record: workspaceID is not a hyphenated UUID",
        ),
        (
            good.replace("2026-11-22T06:00:00Z", "2026-11-22T06:00:00+00:00"),
            "malformed record: publishedAt is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.f]Z)",
        ),
        (
            good.replace("\"port\":51820", "\"port\":0"),
            "malformed record: candidate port must be 1..=65535",
        ),
        (
            good.replace("\"port\":51820", "\"port\":65536"),
            "malformed record: invalid value: integer `65536`, expected u16 at line 1 column 329",
        ),
        (
            good.replace("\"signature\":\"", "\"signature\":\"A"),
            "malformed record: signature is not base64 of 64 bytes",
        ),
        (
            good.replace(
                "\"publisherSigningPublicKey\":\"",
                "\"publisherSigningPublicKey\":\"AAAA",
            ),
            "malformed record: publisherSigningPublicKey is not base64 of 32 bytes",
        ),
    ];
    for (body, want) in cases {
        let e = verify_publication(body.as_bytes(), T0, &policy).unwrap_err();
        assert_eq!(e.status(), 400, "{body}");
        assert_eq!(e.reason(), *want, "{body}");
        assert_eq!(e.body(), serde_json::json!({ "error": want }).to_string());
    }
    // 17 candidates.
    let mut rec = vector_record();
    rec.candidates = vec![rec.candidates[0].clone(); 17];
    let e = verify_publication(&sign_publication(&vector_key(), &rec), T0, &policy).unwrap_err();
    assert_eq!(
        e.body(),
        r#"{"error":"malformed record: more than 16 candidates"}"#
    );
    rec.candidates.truncate(16);
    assert!(verify_publication(&sign_publication(&vector_key(), &rec), T0, &policy).is_ok());
    // Over the size limit: 413.
    let big = vec![b' '; MAX_PUBLICATION_BYTES + 1];
    let e = verify_publication(&big, T0, &policy).unwrap_err();
    assert_eq!(
        (e.status(), e.body().as_str()),
        (413, r#"{"error":"publication too large"}"#)
    );
}
