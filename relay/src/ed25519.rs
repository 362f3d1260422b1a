//! Strict Ed25519, the one policy of every Ed25519 check in the relay (Hive
//! publications and proofs, tag ownership proofs, owner keys and challenge answers).
//!
//! Strict policy (relay/tests/data/ed25519-policy.md lists the edge vectors):
//! 1. the public key must decompress to a curve point, and re-compressing that point must
//!    give back the same 32 bytes (no non-canonical `y >= p`, no "negative zero" `x`);
//! 2. the public key must not be of small order ([`VerifyingKey::is_weak`]);
//! 3. `VerifyingKey::verify_strict`: `S < L` (canonical scalar), `R` not of small order,
//!    and the cofactorless equation `[S]B = R + [k]A` with `R` compared byte for byte.

use ed25519_dalek::{Signature, VerifyingKey};

/// Why a strict Ed25519 verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The key bytes are not the encoding of a curve point.
    #[error("public key not on the curve")]
    KeyNotOnCurve,
    /// The key decodes, but not from its canonical encoding.
    #[error("non-canonical public key encoding")]
    NonCanonicalKey,
    /// The key is of small order (a weak key).
    #[error("small-order public key")]
    WeakKey,
    /// The signature does not verify (includes non-canonical S and small-order R).
    #[error("signature does not verify")]
    Invalid,
}

/// A public key that passes rules 1 and 2 of the policy.
pub fn strict_key(key: &[u8; 32]) -> Result<VerifyingKey, SignatureError> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| SignatureError::KeyNotOnCurve)?;
    if vk.to_edwards().compress().to_bytes() != *key {
        return Err(SignatureError::NonCanonicalKey);
    }
    if vk.is_weak() {
        return Err(SignatureError::WeakKey);
    }
    Ok(vk)
}

/// Rule 3 for a key already accepted by [`strict_key`] (or derived from a secret key,
/// which is canonical by construction); the weak-key rule is checked again.
pub fn verify_with(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    if key.is_weak() {
        return Err(SignatureError::WeakKey);
    }
    equation(key, message, signature)
}

/// `signature` by the key encoded as `key`, over `message`, under the whole policy.
pub fn verify_strict(
    key: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    equation(&strict_key(key)?, message, signature)
}

/// Rule 3 alone.
fn equation(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| SignatureError::Invalid)
}
