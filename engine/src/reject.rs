//! Every refusal the engine sends, mapped to a status code and a JSON body in one place.
//!
//! Bodies are `{"error":{"code":"<code>","message":"<message>"}}`; every refusal is
//! followed by a close.

use crate::auth::ProofError;
use crate::head::HeadError;
use crate::target::TargetError;

/// Who caused a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The connecting peer (client or hidden server) sent something we refuse.
    Peer,
    /// The relay is at a limit or shutting down; retrying later may succeed.
    Relay,
}

/// A refusal, sent as an HTTP error response followed by a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The head is not well-formed HTTP/1.x.
    #[error("malformed request head")]
    MalformedHead,
    /// The head exceeded the byte limit.
    #[error("request head too large")]
    HeadTooLarge,
    /// The head had too many header fields.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The head did not complete before its deadline.
    #[error("request head not received in time")]
    HeadTimeout,
    /// A method the relay does not serve.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A CONNECT target with an unknown scheme.
    #[error("unknown CONNECT target")]
    UnknownTarget,
    /// `uuid:` with something that is not a hyphenated UUID.
    #[error("malformed UUID")]
    MalformedUuid,
    /// A park without `Proxy-Authorization`.
    #[error("proof required")]
    ProofRequired,
    /// A `Proxy-Authorization` that is not a well-formed proof.
    #[error("malformed proof")]
    MalformedProof,
    /// A native park's `Tryst-Pairing-Notice` header repeated or not `1`.
    #[error("Tryst-Pairing-Notice must appear once, as 1")]
    MalformedParkOption,
    /// Unknown id or a MAC that does not verify.
    #[error("proof does not verify")]
    BadProof,
    /// Timestamp outside the accepted window.
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// A nonce already used.
    #[error("nonce already used")]
    ReplayedNonce,
    /// The replay cache is full (fails closed).
    #[error("replay cache full")]
    ReplayCacheFull,
    /// A parking hidden server sent bytes before its 200.
    #[error("bytes sent before the 200")]
    EarlyData,
    /// No hidden server parked under the id within the client wait.
    #[error("no hidden server parked under this id")]
    NotParked,
    /// The waiting room is full.
    #[error("waiting room full")]
    RoomFull,
    /// Too many clients waiting.
    #[error("too many clients waiting")]
    TooManyWaiting,
    /// The relay is over a connection or resource limit.
    #[error("relay overloaded")]
    Overloaded,
    /// The relay is shutting down.
    #[error("relay shutting down")]
    ShuttingDown,
    /// `tag:` followed by something that is not 64 hex digits.
    #[error("malformed tag target (expected tag:<64 hex digits>)")]
    MalformedTag,
    /// A malformed or duplicated `Tag-Mode`, `Tag-Duration` or `Tag-Challenge` header.
    #[error("malformed tag option")]
    MalformedTagOption,
    /// A `Tag-Owner-Key` that is not a strong Ed25519 public key.
    #[error("owner key is not a strong Ed25519 public key")]
    BadOwnerKey,
    /// A park registering a different owner key than the tag's.
    #[error("tag is registered to another owner key")]
    OwnerKeyMismatch,
    /// A responder named a tag that is not published (never created, consumed, expired).
    #[error("no such tag")]
    UnknownTag,
    /// A park whose creation options conflict with the tag's.
    #[error("options conflict with the tag's creation options")]
    TagConflict,
    /// A park for a tag that was consumed (single-shot) or has expired.
    #[error("tag consumed or expired")]
    TagGone,
    /// The tag table is full of live tags.
    #[error("tag table full")]
    TagTableFull,
    /// `hive:` followed by something that is not `<workspace UUID>/<device UUID>`.
    #[error("malformed hive target (expected hive:<workspace-uuid>/<device-uuid>)")]
    MalformedHiveTarget,
    /// A Hive park whose `Hive-Publication` is missing, repeated, not base64, does not
    /// verify, or has expired.
    #[error("publication missing, malformed, unverifiable or expired")]
    MalformedPublication,
    /// A Hive park carrying the publication of another workspace or device.
    #[error("publication is for another workspace or device")]
    PublicationMismatch,
    /// A Hive park proof whose Ed25519 signature does not verify under the publication key.
    #[error("hive proof signature does not verify")]
    HiveBadSignature,
}

impl Rejection {
    /// Every variant, for exhaustive tests and metrics labels.
    pub const ALL: [Self; 32] = [
        Self::MalformedHead,
        Self::HeadTooLarge,
        Self::TooManyHeaders,
        Self::HeadTimeout,
        Self::MethodNotAllowed,
        Self::UnknownTarget,
        Self::MalformedUuid,
        Self::ProofRequired,
        Self::MalformedProof,
        Self::MalformedParkOption,
        Self::BadProof,
        Self::StaleTimestamp,
        Self::ReplayedNonce,
        Self::ReplayCacheFull,
        Self::EarlyData,
        Self::NotParked,
        Self::RoomFull,
        Self::TooManyWaiting,
        Self::Overloaded,
        Self::ShuttingDown,
        Self::MalformedTag,
        Self::MalformedTagOption,
        Self::BadOwnerKey,
        Self::OwnerKeyMismatch,
        Self::UnknownTag,
        Self::TagConflict,
        Self::TagGone,
        Self::TagTableFull,
        Self::MalformedHiveTarget,
        Self::MalformedPublication,
        Self::PublicationMismatch,
        Self::HiveBadSignature,
    ];

    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Self::MalformedHead
            | Self::UnknownTarget
            | Self::MalformedUuid
            | Self::MalformedProof
            | Self::MalformedParkOption
            | Self::MalformedTag
            | Self::MalformedTagOption
            | Self::BadOwnerKey
            | Self::MalformedHiveTarget
            | Self::MalformedPublication => 400,
            Self::HiveBadSignature => 401,
            Self::BadProof
            | Self::StaleTimestamp
            | Self::ReplayedNonce
            | Self::OwnerKeyMismatch
            | Self::PublicationMismatch => 403,
            Self::NotParked | Self::UnknownTag => 404,
            Self::MethodNotAllowed => 405,
            Self::ProofRequired => 407,
            Self::HeadTimeout => 408,
            Self::EarlyData | Self::TagConflict => 409,
            Self::TagGone => 410,
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::ReplayCacheFull
            | Self::RoomFull
            | Self::TooManyWaiting
            | Self::Overloaded
            | Self::ShuttingDown
            | Self::TagTableFull => 503,
        }
    }

    /// A stable machine-readable code (also the metrics label).
    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedHead => "malformed_head",
            Self::HeadTooLarge => "head_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::HeadTimeout => "head_timeout",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnknownTarget => "unknown_target",
            Self::MalformedUuid => "malformed_uuid",
            Self::ProofRequired => "proof_required",
            Self::MalformedProof => "malformed_proof",
            Self::MalformedParkOption => "malformed_park_option",
            Self::BadProof => "bad_proof",
            Self::StaleTimestamp => "stale_timestamp",
            Self::ReplayedNonce => "replayed_nonce",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::EarlyData => "early_data",
            Self::NotParked => "not_parked",
            Self::RoomFull => "room_full",
            Self::TooManyWaiting => "too_many_waiting",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::MalformedTag => "malformed_tag",
            Self::MalformedTagOption => "malformed_tag_option",
            Self::BadOwnerKey => "bad_owner_key",
            Self::OwnerKeyMismatch => "owner_key_mismatch",
            Self::UnknownTag => "unknown_tag",
            Self::TagConflict => "tag_conflict",
            Self::TagGone => "tag_gone",
            Self::TagTableFull => "tag_table_full",
            Self::MalformedHiveTarget => "malformed_hive_target",
            Self::MalformedPublication => "malformed_publication",
            Self::PublicationMismatch => "publication_mismatch",
            Self::HiveBadSignature => "hive_bad_signature",
        }
    }

    /// Who caused it.
    pub fn cause(self) -> Cause {
        match self.status() {
            503 => Cause::Relay,
            _ => Cause::Peer,
        }
    }

    /// Index into [`Self::ALL`], for counters.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The complete response bytes: status line, headers, JSON body.
    pub fn response(self) -> Vec<u8> {
        let body = format!(
            "{{\"error\":{{\"code\":\"{}\",\"message\":\"{}\"}}}}",
            self.code(),
            self
        );
        let extra = match self {
            Self::ProofRequired => "Proxy-Authenticate: Tryst\r\n",
            Self::HiveBadSignature => "WWW-Authenticate: Hive\r\n",
            Self::ReplayCacheFull
            | Self::RoomFull
            | Self::TooManyWaiting
            | Self::Overloaded
            | Self::TagTableFull => "Retry-After: 1\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n{}",
            self.status(),
            reason_phrase(self.status()),
            body.len(),
            extra,
            body
        )
        .into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl From<HeadError> for Rejection {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooLarge => Self::HeadTooLarge,
            HeadError::TooManyHeaders => Self::TooManyHeaders,
            HeadError::Malformed => Self::MalformedHead,
        }
    }
}

impl From<TargetError> for Rejection {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::UnknownScheme => Self::UnknownTarget,
            TargetError::MalformedUuid => Self::MalformedUuid,
        }
    }
}

impl From<ProofError> for Rejection {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::Missing => Self::ProofRequired,
            ProofError::Malformed => Self::MalformedProof,
            ProofError::BadMac => Self::BadProof,
            ProofError::StaleTimestamp => Self::StaleTimestamp,
            ProofError::ReplayedNonce => Self::ReplayedNonce,
            ProofError::ReplayCacheFull => Self::ReplayCacheFull,
        }
    }
}

/// The exact success answer to a park or a pairing.
pub const OK_RESPONSE: &[u8] = b"HTTP/1.1 200\r\n\r\n";

/// The request header with which a native park asks to be told of its pairing; its one
/// accepted value is `1`.
pub const PAIRING_NOTICE_HEADER: &str = "Tryst-Pairing-Notice";

/// The success answer to a park that asked for a pairing notice: the header repeated
/// back, so the hidden server knows this relay will send one.
pub const OK_RESPONSE_WITH_NOTICE: &[u8] = b"HTTP/1.1 200\r\nTryst-Pairing-Notice: 1\r\n\r\n";

/// What a hidden server that asked for it receives when it is paired, before any byte of
/// its client's (so a service that speaks first can be opened at once).
pub const PAIRING_NOTICE: &[u8] = b"TRYST PAIRED\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_a_distinct_code_and_an_error_status() {
        let mut codes: Vec<_> = Rejection::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Rejection::ALL.len());
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert!(r.status() >= 400, "{r:?}");
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn response_bytes_are_exact() {
        let got = String::from_utf8(Rejection::NotParked.response()).unwrap();
        let body =
            r#"{"error":{"code":"not_parked","message":"no hidden server parked under this id"}}"#;
        let want = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(got, want);
        let got = String::from_utf8(Rejection::ProofRequired.response()).unwrap();
        assert!(got.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(got.contains("\r\nProxy-Authenticate: Tryst\r\n"));
    }
}
