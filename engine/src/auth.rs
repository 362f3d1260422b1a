//! The native park proof: HMAC-SHA256 over a domain-separated message, a time window and
//! a bounded replay cache that fails closed.
//!
//! Header: `Proxy-Authorization: Tryst ts=<unix seconds>, nonce=<hex>, mac=<base64url>`.
//!
//! Message (bytes, `\n`-separated, no trailing newline):
//! `tryst-proof-v1\n<operation>\n<canonical id>\n<ts>\n<nonce lower-case hex>`, where
//! `<operation>` is `park`. The MAC is HMAC-SHA256 under the id's secret, sent as unpadded
//! base64url (43 characters). Nonces are 16 to 64 hex digits (8 to 32 bytes).
//!
//! Check order: parse, secret lookup, time window, MAC (constant time), replay cache.
//! The replay cache is consulted only after the MAC verified, so nobody without the
//! secret can fill it.

use crate::target::RendezvousId;
use std::fmt;

/// A per-id shared secret. Its `Debug` never prints the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The secret bytes, for MAC computation.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a proof authorises; part of the signed message (domain separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// A hidden server parks a connection under its id.
    Park,
}

impl Operation {
    /// The operation's name inside the signed message.
    pub fn label(self) -> &'static str {
        match self {
            Self::Park => "park",
        }
    }
}

/// A parsed `Tryst` proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Claimed unix time in seconds.
    pub ts: u64,
    /// Nonce bytes (8 to 32).
    pub nonce: Vec<u8>,
    /// The 32-byte HMAC-SHA256 tag.
    pub mac: [u8; 32],
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No `Proxy-Authorization` header (peer).
    #[error("missing proof")]
    Missing,
    /// The header is not a well-formed `Tryst` proof (peer).
    #[error("malformed proof")]
    Malformed,
    /// No secret for this id, or the MAC does not verify (peer). One variant for both so
    /// the answer does not reveal which ids exist.
    #[error("proof does not verify")]
    BadMac,
    /// `|now - ts|` exceeds the window (peer clock or replay).
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// This nonce was already used within the window (peer replay).
    #[error("nonce already used")]
    ReplayedNonce,
    /// The replay cache is full; refused rather than forgetting (relay under load).
    #[error("replay cache full")]
    ReplayCacheFull,
}

/// Builds the signed message for `op`, `id`, `ts` and `nonce`.
pub fn proof_message(op: Operation, id: &RendezvousId, ts: u64, nonce: &[u8]) -> Vec<u8> {
    let _ = (op, id, ts, nonce);
    todo!("implemented by the auth work")
}

/// Computes the MAC for a proof.
pub fn sign(secret: &Secret, op: Operation, id: &RendezvousId, ts: u64, nonce: &[u8]) -> [u8; 32] {
    let _ = (secret, op, id, ts, nonce);
    todo!("implemented by the auth work")
}

/// Formats a complete `Proxy-Authorization` value (`Tryst ts=…, nonce=…, mac=…`), as a
/// hidden server sends it.
pub fn proof_header(secret: &Secret, op: Operation, id: &RendezvousId, ts: u64, nonce: &[u8]) -> String {
    let _ = (secret, op, id, ts, nonce);
    todo!("implemented by the auth work")
}

/// Parses a `Proxy-Authorization` value. Bounded and panic-free.
pub fn parse_proof(value: &[u8]) -> Result<Proof, ProofError> {
    let _ = value;
    todo!("implemented by the auth work")
}

/// Verifies window and MAC (not replay): `|now - ts| <= window_secs`, then the MAC in
/// constant time. `secret` is `None` for an unknown id (answered as [`ProofError::BadMac`]).
pub fn verify(
    secret: Option<&Secret>,
    op: Operation,
    id: &RendezvousId,
    proof: &Proof,
    now_unix: u64,
    window_secs: u64,
) -> Result<(), ProofError> {
    let _ = (secret, op, id, proof, now_unix, window_secs);
    todo!("implemented by the auth work")
}

/// Remembers (id, nonce) pairs seen within the window. Bounded: when full of unexpired
/// entries it refuses new proofs ([`ProofError::ReplayCacheFull`]) instead of forgetting.
#[derive(Debug)]
pub struct ReplayCache {
    _private: (),
}

impl ReplayCache {
    /// A cache holding at most `capacity` entries, each kept for `2 * window_secs` past
    /// its timestamp (long enough to cover the whole accepted window).
    pub fn new(capacity: usize, window_secs: u64) -> Self {
        let _ = (capacity, window_secs);
        todo!("implemented by the auth work")
    }

    /// Records a verified proof's nonce. Errors if it was seen before or the cache is full.
    /// Expired entries are dropped first, in amortised O(1) per entry.
    pub fn check_and_insert(
        &mut self,
        id: &RendezvousId,
        proof: &Proof,
        now_unix: u64,
    ) -> Result<(), ProofError> {
        let _ = (id, proof, now_unix);
        todo!("implemented by the auth work")
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        todo!("implemented by the auth work")
    }

    /// True when no entries are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
