//! `hive_signature`: strict Ed25519 verification of arbitrary key, signature and message
//! bytes, and the Hive proof-header parser: never panics; whatever verifies strictly
//! also verifies under plain dalek and has a canonical, non-weak key; a fixture
//! signature verifies and any single flipped bit of it does not.
use crate::hive::forward::{DRAIN_DOMAIN, DRAIN_SCHEME, check_proof, parse_proof};
use crate::hive::verify::verify_strict;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// Runs one input: `key (32) ‖ signature (64) ‖ message`, and the whole input as a
/// proof header.
pub fn run(data: &[u8]) {
    if data.len() >= 96 {
        let key: [u8; 32] = data[..32].try_into().unwrap_or([0; 32]);
        let sig: [u8; 64] = data[32..96].try_into().unwrap_or([0; 64]);
        let msg = &data[96..];
        if verify_strict(&key, msg, &sig).is_ok() {
            let vk = VerifyingKey::from_bytes(&key).expect("strictly valid key decodes");
            assert!(!vk.is_weak());
            assert_eq!(vk.to_edwards().compress().to_bytes(), key);
            assert!(
                vk.verify(msg, &ed25519_dalek::Signature::from_bytes(&sig))
                    .is_ok()
            );
        }
    }
    let fixture = SigningKey::from_bytes(&[7; 32]);
    let pk = fixture.verifying_key().to_bytes();
    let sig = fixture.sign(data).to_bytes();
    assert_eq!(verify_strict(&pk, data, &sig), Ok(()));
    let bit = data.first().map_or(0, |&b| usize::from(b)) % 512;
    let mut flipped = sig;
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(verify_strict(&pk, data, &flipped).is_err());

    let text = String::from_utf8_lossy(data);
    if let Ok(proof) = parse_proof(&text, DRAIN_SCHEME) {
        // No arbitrary header carries the fixture's signature over its own fields.
        let now = i64::try_from(proof.ts).unwrap_or(i64::MAX);
        let ids = (&[1; 16], &[2; 16]);
        assert!(check_proof(&proof, DRAIN_DOMAIN, &pk, ids, now, 60).is_err());
    }
}
