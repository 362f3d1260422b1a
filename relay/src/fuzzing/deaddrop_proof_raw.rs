//! The SPKI PEM parser, signature decoding and proof verifier on arbitrary input:
//! never panics, and no signature verifies under the fixture key without its private
//! half.
use crate::deaddrop::proof;

const FIXTURE_PEM: &str = include_str!("../../tests/fixtures/deaddrop/client-pub.pem");

/// Runs one input.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Arbitrary PEM text.
    if let Ok(key) = proof::parse_public_key(&text) {
        use rsa::traits::PublicKeyParts as _;
        assert!(key.size() > 0);
    }
    let _ = proof::mailbox_of(&text);
    // `<pem or relay pem>\0<signature>`: arbitrary signatures under a real key, and
    // arbitrary PEMs.
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));
    if let Ok(sig) = proof::decode_signature(b) {
        assert!(proof::verify_signature(FIXTURE_PEM, a, 1, &sig).is_err());
        assert!(proof::verify_signature(a, "", 1, &sig).is_err() || a == FIXTURE_PEM);
    }
    let ts = data.first().map_or(0, |&x| i64::from(x) - 128);
    assert!(proof::verify(FIXTURE_PEM, a, ts, b, 0).is_err());
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = proof::py_int(&v);
    }
}
