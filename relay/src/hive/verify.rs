//! The verification of a whole publication ([`verify_publication`]), under the strict
//! Ed25519 policy of [`crate::ed25519`] (re-exported here as [`verify_strict`]).

use super::preimage::preimage;
use super::record::{MAX_PUBLICATION_BYTES, Publication, RecordError, parse_publication};

pub use crate::ed25519::{SignatureError, verify_strict};

/// What the relay checks a publication against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicationPolicy {
    /// The TTL cap (`--max-ttl`, default 300 s): the stored TTL is
    /// `min(ttlSeconds, max_ttl_secs)`.
    pub max_ttl_secs: u64,
    /// Largest accepted `|publishedAt - now|`, in seconds (300). Both directions:
    /// a publication dated more than this in the future is refused too.
    pub skew_secs: u64,
}

impl Default for PublicationPolicy {
    fn default() -> Self {
        Self {
            max_ttl_secs: 300,
            skew_secs: 300,
        }
    }
}

/// A publication that passed [`verify_publication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPublication {
    /// `workspaceID`, raw.
    pub workspace: [u8; 16],
    /// `publisherDeviceID`, raw.
    pub device: [u8; 16],
    /// `publisherAccountID`, raw.
    pub account: [u8; 16],
    /// `publisherSigningPublicKey`, raw; a strictly valid key.
    pub signing_key: [u8; 32],
    /// `publishedAt` in unix seconds (fraction truncated).
    pub published_at_unix: i64,
    /// `published_at_unix + min(ttlSeconds, max_ttl)`.
    pub expires_at_unix: i64,
    /// The exact `{"record":..,"signature":..}` bytes as received.
    pub body: Vec<u8>,
    /// The fraction of `publishedAt` in nanoseconds (orders publications within a second).
    pub published_at_nanos: u32,
}

impl VerifiedPublication {
    /// The publication's time as a sortable (seconds, nanoseconds) pair.
    pub fn published_at(&self) -> (i64, u32) {
        (self.published_at_unix, self.published_at_nanos)
    }

    /// Whether it is still fresh at `now_unix` (expiry is exclusive).
    pub fn is_fresh(&self, now_unix: i64) -> bool {
        now_unix < self.expires_at_unix
    }
}

/// Why a publication was refused. [`PublicationError::status`] and
/// [`PublicationError::body`] give the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicationError {
    /// The body exceeds [`MAX_PUBLICATION_BYTES`] (413).
    #[error("publication too large")]
    TooLarge,
    /// The body is not a well-formed record (400).
    #[error("malformed record: {0}")]
    Malformed(#[from] RecordError),
    /// The key or signature failed strict verification (400).
    #[error("bad signature")]
    BadSignature(SignatureError),
    /// `|publishedAt - now| > skew` (400).
    #[error("publishedAt out of skew window")]
    Skew,
}

impl PublicationError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 413,
            _ => 400,
        }
    }

    /// The reason text of the JSON body `{"error":"<reason>"}`.
    pub fn reason(&self) -> String {
        match self {
            Self::BadSignature(SignatureError::Invalid) => "bad signature".to_owned(),
            Self::BadSignature(e) => format!("bad signature: {e}"),
            other => other.to_string(),
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.reason() }).to_string()
    }
}

/// Parses and verifies one publication body (the POST /v1/rendezvous JSON) at `now_unix`:
/// JSON shape, strict Ed25519 over the canonical preimage, skew window, TTL cap.
pub fn verify_publication(
    body: &[u8],
    now_unix: i64,
    policy: &PublicationPolicy,
) -> Result<VerifiedPublication, PublicationError> {
    if body.len() > MAX_PUBLICATION_BYTES {
        return Err(PublicationError::TooLarge);
    }
    let Publication {
        record,
        signature,
        published_at_unix,
        published_at_nanos,
    } = parse_publication(body)?;
    verify_strict(&record.signing_key, &preimage(&record), &signature)
        .map_err(PublicationError::BadSignature)?;
    let skew = i128::from(published_at_unix) - i128::from(now_unix);
    if skew.unsigned_abs() > u128::from(policy.skew_secs) {
        return Err(PublicationError::Skew);
    }
    let ttl = u64::from(record.ttl_seconds).min(policy.max_ttl_secs);
    let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
    Ok(VerifiedPublication {
        workspace: record.workspace,
        device: record.device,
        account: record.account,
        signing_key: record.signing_key,
        published_at_unix,
        expires_at_unix: published_at_unix.saturating_add(ttl),
        body: body.to_vec(),
        published_at_nanos,
    })
}

/// Builds a signed publication body (devices, tests and tools; the relay itself never
/// signs), and the JSON body for a record and a raw signature: tryst-client's builders.
pub use tryst_client::publication::{publication_body, sign_publication};

#[cfg(test)]
mod tests;
