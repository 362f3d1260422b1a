//! The publication record of `POST /v1/rendezvous`: the exact JSON shape, its limits,
//! and the typed [`Record`] it validates into.
//!
//! Wire shape (protocols.md §5.2), every field required, no other field allowed:
//!
//! ```json
//! {"record":{"workspaceID":"<uuid>","publisherAccountID":"<uuid>",
//!            "publisherDeviceID":"<uuid>","publisherSigningPublicKey":"<base64 32 bytes>",
//!            "candidates":[{"kind":"stunReflexive","host":"203.0.113.5","port":51820,"priority":100}],
//!            "publishedAt":"2026-11-22T06:00:00Z","ttlSeconds":90},
//!  "signature":"<base64 64 bytes>"}
//! ```
//!
//! Encodings (project-defined, docs/protocol-publications.md): UUIDs hyphenated
//! 8-4-4-4-12 in any letter case (the record is signed as sent; identity is the 16 raw
//! bytes); base64 is RFC 4648 standard alphabet with padding, strict; `publishedAt` is
//! RFC 3339 UTC with an upper-case `T` and `Z` and an optional fraction of 1..=9 digits.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// Most candidates in one record.
pub const MAX_CANDIDATES: usize = 16;
/// Longest candidate `host`, in bytes.
pub const MAX_HOST_LEN: usize = 255;
/// Longest candidate `kind`, in bytes.
pub const MAX_KIND_LEN: usize = 32;
/// Largest publication body (the whole `{"record":..,"signature":..}` JSON), in bytes.
/// Larger bodies are refused with 413 before parsing.
pub const MAX_PUBLICATION_BYTES: usize = 8 * 1024;

/// One connection candidate and the record (defined in tryst-client, where devices
/// build and sign them; re-exported here for the parser and the verifier).
pub use tryst_client::publication::{Candidate, Record};

/// A parsed publication: the record, its signature and the parsed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The record.
    pub record: Record,
    /// The detached Ed25519 signature, raw.
    pub signature: [u8; 64],
    /// `publishedAt` as unix seconds (fraction truncated toward the past).
    pub published_at_unix: i64,
    /// The fraction of `publishedAt`, in nanoseconds.
    pub published_at_nanos: u32,
}

/// Why a publication body is malformed. The display text is the detail after
/// `malformed record: ` in the 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The body is not the expected JSON shape (serde's detail).
    #[error("{0}")]
    Json(String),
    /// A UUID field is not hyphenated 8-4-4-4-12 hex.
    #[error("{0} is not a hyphenated UUID")]
    Uuid(&'static str),
    /// `publisherSigningPublicKey` is not strict padded base64 of 32 bytes.
    #[error("publisherSigningPublicKey is not base64 of 32 bytes")]
    Key,
    /// `signature` is not strict padded base64 of 64 bytes.
    #[error("signature is not base64 of 64 bytes")]
    Signature,
    /// More than [`MAX_CANDIDATES`] candidates.
    #[error("more than 16 candidates")]
    TooManyCandidates,
    /// A candidate's kind is empty, too long or not ASCII alphanumeric.
    #[error("candidate kind must be 1..=32 ASCII letters or digits")]
    Kind,
    /// A candidate's host is empty, too long or has forbidden bytes.
    #[error("candidate host must be 1..=255 visible ASCII bytes other than quote and backslash")]
    Host,
    /// A candidate's port is 0.
    #[error("candidate port must be 1..=65535")]
    Port,
    /// `publishedAt` is not RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`).
    #[error("publishedAt is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.f]Z)")]
    PublishedAt,
    /// `ttlSeconds` is 0.
    #[error("ttlSeconds must be at least 1")]
    Ttl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePublication {
    record: WireRecord,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord {
    #[serde(rename = "workspaceID")]
    workspace_id: String,
    #[serde(rename = "publisherAccountID")]
    account_id: String,
    #[serde(rename = "publisherDeviceID")]
    device_id: String,
    #[serde(rename = "publisherSigningPublicKey")]
    signing_key: String,
    candidates: Vec<WireCandidate>,
    #[serde(rename = "publishedAt")]
    published_at: String,
    #[serde(rename = "ttlSeconds")]
    ttl_seconds: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCandidate {
    kind: String,
    host: String,
    port: u16,
    priority: u32,
}

/// Parses a publication body: shape, encodings and limits. Does not check the signature
/// or the time window. The caller enforces [`MAX_PUBLICATION_BYTES`] first.
pub fn parse_publication(body: &[u8]) -> Result<Publication, RecordError> {
    // serde's derived structs also accept the JSON *array* form of a struct; the wire
    // shape is objects only, so check the shape on a `Value` first. The typed parse then
    // refuses unknown and duplicate fields (a `Value` would keep the last duplicate).
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| RecordError::Json(e.to_string()))?;
    check_shape(&value)?;
    let wire: WirePublication =
        serde_json::from_slice(body).map_err(|e| RecordError::Json(e.to_string()))?;
    let r = wire.record;
    if r.candidates.len() > MAX_CANDIDATES {
        return Err(RecordError::TooManyCandidates);
    }
    let workspace = parse_uuid(&r.workspace_id).ok_or(RecordError::Uuid("workspaceID"))?;
    let account = parse_uuid(&r.account_id).ok_or(RecordError::Uuid("publisherAccountID"))?;
    let device = parse_uuid(&r.device_id).ok_or(RecordError::Uuid("publisherDeviceID"))?;
    let signing_key: [u8; 32] = decode_fixed(&r.signing_key).ok_or(RecordError::Key)?;
    let signature: [u8; 64] = decode_fixed(&wire.signature).ok_or(RecordError::Signature)?;
    let candidates = r
        .candidates
        .into_iter()
        .map(|c| {
            let c = Candidate {
                kind: c.kind,
                host: c.host,
                port: c.port,
                priority: c.priority,
            };
            validate_candidate(&c).map(|()| c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (published_at_unix, published_at_nanos) =
        parse_rfc3339_utc(&r.published_at).ok_or(RecordError::PublishedAt)?;
    if r.ttl_seconds == 0 {
        return Err(RecordError::Ttl);
    }
    Ok(Publication {
        record: Record {
            workspace,
            account,
            device,
            signing_key,
            candidates,
            published_at: r.published_at,
            ttl_seconds: r.ttl_seconds,
        },
        signature,
        published_at_unix,
        published_at_nanos,
    })
}

/// Refuses the array forms serde would accept for the publication, the record and the
/// candidates.
fn check_shape(value: &serde_json::Value) -> Result<(), RecordError> {
    let shape = |what: &str| RecordError::Json(format!("{what} must be a JSON object"));
    let outer = value.as_object().ok_or_else(|| shape("the publication"))?;
    if let Some(record) = outer.get("record") {
        let record = record.as_object().ok_or_else(|| shape("record"))?;
        if let Some(serde_json::Value::Array(candidates)) = record.get("candidates")
            && !candidates.iter().all(serde_json::Value::is_object)
        {
            return Err(shape("each candidate"));
        }
    }
    Ok(())
}

/// Checks one candidate's limits.
pub fn validate_candidate(c: &Candidate) -> Result<(), RecordError> {
    if c.kind.is_empty()
        || c.kind.len() > MAX_KIND_LEN
        || !c.kind.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(RecordError::Kind);
    }
    if c.host.is_empty()
        || c.host.len() > MAX_HOST_LEN
        || !c
            .host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(RecordError::Host);
    }
    if c.port == 0 {
        return Err(RecordError::Port);
    }
    Ok(())
}

/// Strict RFC 4648 standard base64 with padding, decoding to exactly `N` bytes.
pub fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = STANDARD.decode(text).ok()?;
    bytes.try_into().ok()
}

/// Parses a hyphenated UUID (8-4-4-4-12 hex digits, any letter case) into its 16 bytes.
/// Braces, `urn:uuid:`, the simple form and whitespace are refused.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        let slot = out.get_mut(nibbles / 2)?;
        *slot = (*slot << 4) | v;
        nibbles += 1;
    }
    Some(out)
}

/// The canonical spellings of a UUID and a time (tryst-client's, re-exported).
pub use tryst_client::publication::{format_rfc3339_utc, format_uuid};

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (upper-case `T` and `Z`, seconds 00..=59, years
/// 0000..=9999) into unix seconds and nanoseconds.
pub fn parse_rfc3339_utc(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let rest = b.get(19..)?;
    let nanos = match rest {
        [b'Z'] => 0,
        [b'.', frac @ .., b'Z'] if (1..=9).contains(&frac.len()) => {
            let mut n: u32 = 0;
            for &d in frac {
                if !d.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + u32::from(d - b'0');
            }
            n * 10u32.pow(9 - u32::try_from(frac.len()).ok()?)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second, nanos))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_hyphenated_any_case_only() {
        let lower = parse_uuid("0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f").unwrap();
        let upper = parse_uuid("0B6C6F1E-3C4B-4A8E-9D2F-6A1C2B3D4E5F").unwrap();
        assert_eq!(lower, upper);
        assert_eq!(format_uuid(&lower), "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f");
        for bad in [
            "{0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f}",
            "urn:uuid:0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f",
            "0b6c6f1e3c4b4a8e9d2f6a1c2b3d4e5f",
            " 0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5",
            "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5g",
            "0b6c6f1e-3c4b-4a8e-9d2f+6a1c2b3d4e5f",
            "",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        for t in [
            0,
            951_868_799,
            1_795_327_200,
            -1,
            253_402_300_799,
            -62_167_219_200,
        ] {
            let text = format_rfc3339_utc(t);
            assert_eq!(parse_rfc3339_utc(&text), Some((t, 0)), "{text}");
        }
        assert_eq!(format_rfc3339_utc(1_795_327_200), "2026-11-22T06:00:00Z");
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339_utc("2026-11-22T06:00:00Z"),
            Some((1_795_327_200, 0))
        );
        assert_eq!(
            parse_rfc3339_utc("2000-02-29T23:59:59.5Z"),
            Some((951_868_799, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339_utc("1969-12-31T23:59:59.123456789Z"),
            Some((-1, 123_456_789))
        );
        for bad in [
            "2026-11-22t06:00:00Z",
            "2026-11-22T06:00:00z",
            "2026-11-22T06:00:00+00:00",
            "2026-11-22T06:00:00",
            "2026-11-22T06:00:00.Z",
            "2026-11-22T06:00:00.1234567890Z",
            "2026-11-22T06:00:60Z",
            "2026-11-22T24:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-11-22 06:00:00Z",
            "+2026-11-22T06:00:00Z",
            "2026-11-22T06:00:0aZ",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64_is_strict_standard_padded() {
        let key = [7u8; 32];
        let good = STANDARD.encode(key);
        assert_eq!(decode_fixed::<32>(&good), Some(key));
        assert_eq!(decode_fixed::<32>(good.trim_end_matches('=')), None);
        assert_eq!(decode_fixed::<32>(&format!(" {good}")), None);
        assert_eq!(decode_fixed::<31>(&good), None);
        let urlsafe = base64::engine::general_purpose::URL_SAFE.encode([0xfb; 32]);
        assert!(urlsafe.contains('-') || urlsafe.contains('_'));
        assert_eq!(decode_fixed::<32>(&urlsafe), None);
        // Non-zero trailing bits are refused (one encoding per value).
        let mut bad_tail = good.clone().into_bytes();
        bad_tail[42] = b'x';
        assert_eq!(
            decode_fixed::<32>(std::str::from_utf8(&bad_tail).unwrap()),
            None
        );
    }

    #[test]
    fn candidate_limits() {
        let ok = Candidate {
            kind: "stunReflexive".into(),
            host: "203.0.113.5".into(),
            port: 51820,
            priority: 100,
        };
        assert_eq!(validate_candidate(&ok), Ok(()));
        let with = |f: &dyn Fn(&mut Candidate)| {
            let mut c = ok.clone();
            f(&mut c);
            validate_candidate(&c)
        };
        assert_eq!(with(&|c| c.kind = String::new()), Err(RecordError::Kind));
        assert_eq!(with(&|c| c.kind = "a".repeat(33)), Err(RecordError::Kind));
        assert_eq!(with(&|c| c.kind = "a-b".into()), Err(RecordError::Kind));
        assert_eq!(with(&|c| c.host = String::new()), Err(RecordError::Host));
        assert_eq!(with(&|c| c.host = "h".repeat(256)), Err(RecordError::Host));
        assert_eq!(with(&|c| c.host = "h".repeat(255)), Ok(()));
        assert_eq!(with(&|c| c.host = "a b".into()), Err(RecordError::Host));
        assert_eq!(with(&|c| c.host = "a\"b".into()), Err(RecordError::Host));
        assert_eq!(with(&|c| c.host = "fe80::1%eth0".into()), Ok(()));
        assert_eq!(with(&|c| c.port = 0), Err(RecordError::Port));
    }
}
