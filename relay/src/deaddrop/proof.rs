//! Ownership proofs of hivemind-rendezvous 0.1.2a2, sans-IO.
//!
//! A claimer proves it holds the private key of an RSA public key (SubjectPublicKeyInfo
//! PEM) by signing
//! `b"hivemind-rendezvous-v1\0" ‖ claimer PEM ‖ b"\0" ‖ relay PEM ‖ b"\0" ‖ decimal ts`
//! with RSASSA-PSS (SHA-256, MGF1-SHA-256, salt length 32); the signature travels as
//! standard padded base64. The caller supplies `now`; nothing here reads the clock.
//!
//! The key is parsed with `rsa` (public-key decoding only) and the signature is checked
//! by `ring` (`RSA_PSS_2048_8192_SHA256`: salt length = digest length = 32, moduli of
//! 2048 to 8192 bits). No private key is involved, so RUSTSEC-2023-0071 (Marvin, a
//! timing side channel in `rsa`'s private-key operations) cannot be reached from here;
//! docs/TESTING.md ("Advisories") has the whole argument.

use base64::Engine as _;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest as _, Sha256};

/// Domain-separation prefix of the signed message.
pub const DOMAIN: &[u8] = b"hivemind-rendezvous-v1\0";
/// Accepted `|now - ts|`, seconds (inclusive), as upstream.
pub const WINDOW_SECS: i64 = 60;
/// Longest PEM string considered at all (a 8192-bit SPKI PEM is about 1.5 KiB).
pub const MAX_PEM_LEN: usize = 8 * 1024;
/// Longest base64 signature string considered (8192-bit keys: 1368 characters).
pub const MAX_SIGNATURE_B64_LEN: usize = 2048;

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// `|now - ts|` exceeds [`WINDOW_SECS`].
    #[error("timestamp outside the accepted window")]
    Stale,
    /// The claimer's key is not an RSA SubjectPublicKeyInfo PEM.
    #[error("public key is not an RSA SubjectPublicKeyInfo PEM")]
    BadKey,
    /// The signature is not standard padded base64, or too long.
    #[error("signature is not base64")]
    BadEncoding,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// The exact bytes a claimer signs.
pub fn ownership_message(claimer_pem: &str, relay_pem: &str, ts: i64) -> Vec<u8> {
    let ts = ts.to_string();
    let mut m =
        Vec::with_capacity(DOMAIN.len() + claimer_pem.len() + relay_pem.len() + 2 + ts.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(claimer_pem.as_bytes());
    m.push(0);
    m.extend_from_slice(relay_pem.as_bytes());
    m.push(0);
    m.extend_from_slice(ts.as_bytes());
    m
}

/// Parses an RSA public key from a SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, ProofError> {
    if pem.len() > MAX_PEM_LEN {
        return Err(ProofError::BadKey);
    }
    RsaPublicKey::from_public_key_pem(pem).map_err(|_| ProofError::BadKey)
}

/// Decodes a standard, padded base64 signature.
pub fn decode_signature(b64: &str) -> Result<Vec<u8>, ProofError> {
    if b64.len() > MAX_SIGNATURE_B64_LEN {
        return Err(ProofError::BadEncoding);
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ProofError::BadEncoding)
}

/// `|now - ts| <= WINDOW_SECS`, without overflow.
pub fn fresh(ts: i64, now: i64) -> bool {
    i128::from(now).abs_diff(i128::from(ts)) <= WINDOW_SECS as u128
}

/// Verifies a signature over [`ownership_message`] (no freshness check).
pub fn verify_signature(
    claimer_pem: &str,
    relay_pem: &str,
    ts: i64,
    signature: &[u8],
) -> Result<(), ProofError> {
    let key = parse_public_key(claimer_pem)?;
    ring::signature::RsaPublicKeyComponents {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    }
    .verify(
        &ring::signature::RSA_PSS_2048_8192_SHA256,
        &ownership_message(claimer_pem, relay_pem, ts),
        signature,
    )
    .map_err(|_| ProofError::BadSignature)
}

/// The whole proof as upstream's `verify_ownership`: freshness, base64, signature.
pub fn verify(
    claimer_pem: &str,
    relay_pem: &str,
    ts: i64,
    signature_b64: &str,
    now: i64,
) -> Result<Vec<u8>, ProofError> {
    if !fresh(ts, now) {
        return Err(ProofError::Stale);
    }
    let sig = decode_signature(signature_b64)?;
    verify_signature(claimer_pem, relay_pem, ts, &sig)?;
    Ok(sig)
}

/// The mailbox of a public key: SHA-256 of the exact PEM string (upstream's key is its
/// lower-case hex).
pub fn mailbox_of(pem: &str) -> [u8; 32] {
    Sha256::digest(pem.as_bytes()).into()
}

/// `base64(SHA-256(PEM))`, the envelope's `recipient_fingerprint`.
pub fn recipient_fingerprint(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(mailbox_of(pem))
}

/// Python's `int(value)` on a JSON value, as upstream applies it to `ttl` and
/// timestamps: integers, booleans, finite floats (truncated) and integer strings
/// (surrounding whitespace, a sign, `_` between digits). `None` where Python raises or
/// the value does not fit an `i64`.
pub fn py_int(v: &serde_json::Value) -> Option<i64> {
    use serde_json::Value;
    match v {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i)
            } else if n.is_u64() {
                None
            } else {
                let f = n.as_f64()?;
                let t = f.trunc();
                // 2^63 is the first float that does not fit an i64.
                const LIMIT: f64 = 9_223_372_036_854_775_808.0;
                (t.is_finite() && (-LIMIT..LIMIT).contains(&t)).then_some(t as i64)
            }
        }
        Value::String(s) => py_int_str(s),
        _ => None,
    }
}

fn py_int_str(s: &str) -> Option<i64> {
    let s = s.trim_matches(|c: char| c.is_whitespace());
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let bytes = digits.as_bytes();
    if bytes.is_empty() || bytes[0] == b'_' || bytes[bytes.len() - 1] == b'_' {
        return None;
    }
    let mut value: i128 = 0;
    let mut prev_underscore = false;
    for &b in bytes {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
                if value > i128::from(i64::MAX) + 1 {
                    return None;
                }
                prev_underscore = false;
            }
            b'_' if !prev_underscore => prev_underscore = true,
            _ => return None,
        }
    }
    i64::try_from(if neg { -value } else { value }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const CLIENT_PEM: &str =
        include_str!("../../tests/fixtures/deaddrop/client-pub.pem");

    #[test]
    fn message_layout() {
        assert_eq!(
            ownership_message("A", "B", -5),
            b"hivemind-rendezvous-v1\0A\0B\0-5".to_vec()
        );
        assert_eq!(
            ownership_message("A", "", 1700000000),
            b"hivemind-rendezvous-v1\0A\0\x001700000000".to_vec()
        );
    }

    #[test]
    fn python_int_semantics() {
        for (v, want) in [
            (json!(5), Some(5)),
            (json!(true), Some(1)),
            (json!(false), Some(0)),
            (json!(1.9), Some(1)),
            (json!(-1.9), Some(-1)),
            (json!(" 60\n"), Some(60)),
            (json!("+7"), Some(7)),
            (json!("-7"), Some(-7)),
            (json!("1_000"), Some(1000)),
            (json!("1__0"), None),
            (json!("_1"), None),
            (json!("1_"), None),
            (json!("1.5"), None),
            (json!(""), None),
            (json!("-"), None),
            (json!("0x10"), None),
            (json!(null), None),
            (json!([1]), None),
            (json!({}), None),
            (json!(u64::MAX), None),
            (json!(1e300), None),
            (json!("9223372036854775807"), Some(i64::MAX)),
            (json!("-9223372036854775808"), Some(i64::MIN)),
            (json!("9223372036854775808"), None),
            (json!("99999999999999999999999999999999999999999"), None),
        ] {
            assert_eq!(py_int(&v), want, "{v}");
        }
    }

    #[test]
    fn freshness_is_inclusive_and_overflow_free() {
        assert!(fresh(100, 160));
        assert!(fresh(160, 100));
        assert!(!fresh(100, 161));
        assert!(!fresh(161, 100));
        assert!(!fresh(i64::MIN, i64::MAX));
    }

    #[test]
    fn keys_must_be_spki_pem() {
        assert!(parse_public_key(CLIENT_PEM).is_ok());
        assert!(parse_public_key(CLIENT_PEM.trim_end()).is_ok());
        assert_eq!(parse_public_key(""), Err(ProofError::BadKey));
        let pkcs1 = CLIENT_PEM.replace("PUBLIC KEY", "RSA PUBLIC KEY");
        assert_eq!(parse_public_key(&pkcs1), Err(ProofError::BadKey));
        assert_eq!(
            parse_public_key(&"A".repeat(MAX_PEM_LEN + 1)),
            Err(ProofError::BadKey)
        );
    }

    #[test]
    fn mailbox_is_sha256_of_the_exact_string() {
        assert_ne!(mailbox_of(CLIENT_PEM), mailbox_of(CLIENT_PEM.trim_end()));
        assert_eq!(
            hex::encode(mailbox_of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            recipient_fingerprint("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn python_pss_salt32_signature_verifies_only_as_signed() {
        let sig = include_str!("../../tests/fixtures/deaddrop/sig-salt32.b64");
        let now = 1_700_000_000;
        assert!(verify(CLIENT_PEM, "", now, sig, now + 60).is_ok());
        assert_eq!(
            verify(CLIENT_PEM, "", now, sig, now + 61),
            Err(ProofError::Stale)
        );
        // Bound to the relay key, the timestamp and the exact claimer PEM.
        assert_eq!(
            verify(CLIENT_PEM, "x", now, sig, now),
            Err(ProofError::BadSignature)
        );
        assert_eq!(
            verify(CLIENT_PEM, "", now + 1, sig, now),
            Err(ProofError::BadSignature)
        );
        let other = include_str!("../../tests/fixtures/deaddrop/other-pub.pem");
        assert_eq!(
            verify(other, "", now, sig, now),
            Err(ProofError::BadSignature)
        );
        // Upstream's verifier wants salt length 32; a salt-0 PSS signature is refused.
        let salt0 = include_str!("../../tests/fixtures/deaddrop/sig-salt0.b64");
        assert_eq!(
            verify(CLIENT_PEM, "", now, salt0, now),
            Err(ProofError::BadSignature)
        );
    }

    #[test]
    fn garbage_signatures_are_refused_not_panicking() {
        assert_eq!(
            verify(CLIENT_PEM, "", 10, "not base64!", 10),
            Err(ProofError::BadEncoding)
        );
        assert_eq!(
            verify(CLIENT_PEM, "", 10, "AAAA", 10),
            Err(ProofError::BadSignature)
        );
        assert_eq!(
            verify(CLIENT_PEM, "", 10, "", 10),
            Err(ProofError::BadSignature)
        );
        assert_eq!(
            verify(CLIENT_PEM, "", 10, "AAAA", 71),
            Err(ProofError::Stale)
        );
        assert_eq!(verify("x", "", 10, "AAAA", 10), Err(ProofError::BadKey));
    }

    /// ring verifies moduli of 2048 to 8192 bits and `parse_public_key` takes at most
    /// 4096: a proof by a 1024-bit key is a signature error, a 2048-bit one verifies.
    #[test]
    fn key_sizes_below_2048_bits_are_refused() {
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
        let mut rng = rand::thread_rng();
        for (bits, ok) in [(1024, false), (2048, true)] {
            let key = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
            let pem = key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap();
            let msg = ownership_message(&pem, "relay", 5);
            let sig = rsa::pss::BlindedSigningKey::<Sha256>::new(key)
                .sign_with_rng(&mut rng, &msg)
                .to_vec();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
            let want = if ok {
                Ok(sig)
            } else {
                Err(ProofError::BadSignature)
            };
            assert_eq!(verify(&pem, "relay", 5, &b64, 5), want, "{bits} bits");
        }
    }
}
