//! Hive publications, publisher side: the [`Record`] a device signs, its canonical
//! preimage (the exact bytes the Ed25519 signature covers), and the signed JSON body of
//! `POST /v1/rendezvous` (also carried base64-encoded in the `Hive-Publication` header
//! of a `hive:` park). The relay (`tryst_relay::hive`) re-exports these and verifies
//! publications over the same [`preimage`], so the signed bytes cannot drift.
//! docs/protocol-publications.md states the format byte by byte with test vectors.
//!
//! Canonical preimage (project-defined, following hive-core's convention):
//!
//! ```text
//! "hive-rendezvous-v1" 0x00            domain tag, 19 bytes
//! workspaceID                          16 raw bytes
//! publisherAccountID                   16 raw bytes
//! publisherDeviceID                    16 raw bytes
//! u32le(32) ‖ publisherSigningPublicKey (32 raw bytes)
//! u32le(len) ‖ candidates JSON          canonical compact JSON, see below
//! u32le(len) ‖ publishedAt              the string's bytes exactly as sent
//! u32le(ttlSeconds)                    as requested, before any cap
//! ```
//!
//! Candidates JSON: `[` then, comma-separated in the order sent,
//! `{"kind":K,"host":H,"port":P,"priority":R}` with K and H as JSON strings and P and R
//! as decimal integers without sign or leading zeros, then `]`; no whitespace.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};

/// The domain tag that starts every publication preimage.
pub const DOMAIN: &[u8] = b"hive-rendezvous-v1\0";

/// One connection candidate of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Candidate {
    /// The candidate kind (`stunReflexive`, `hostLocal`, ...): 1..=32 ASCII letters/digits.
    pub kind: String,
    /// The host: 1..=255 bytes of visible ASCII other than `"` and `\`.
    pub host: String,
    /// The UDP port, 1..=65535.
    pub port: u16,
    /// The priority (higher is preferred by clients; the relay does not interpret it).
    pub priority: u32,
}

/// A publication record (the relay validates one field by field before checking its
/// signature).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Record {
    /// `workspaceID`, raw.
    pub workspace: [u8; 16],
    /// `publisherAccountID`, raw.
    pub account: [u8; 16],
    /// `publisherDeviceID`, raw.
    pub device: [u8; 16],
    /// `publisherSigningPublicKey`, raw.
    pub signing_key: [u8; 32],
    /// The candidates, in the order sent.
    pub candidates: Vec<Candidate>,
    /// `publishedAt` exactly as sent (after JSON string decoding).
    pub published_at: String,
    /// `ttlSeconds` as requested (1..=u32::MAX; the relay caps it).
    pub ttl_seconds: u32,
}

/// The canonical compact JSON of `candidates` (keys in the fixed order kind, host, port,
/// priority).
pub fn candidates_json(candidates: &[Candidate]) -> String {
    let mut out = String::from("[");
    for (i, c) in candidates.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"kind\":");
        push_json_string(&mut out, &c.kind);
        out.push_str(",\"host\":");
        push_json_string(&mut out, &c.host);
        out.push_str(&format!(
            ",\"port\":{},\"priority\":{}}}",
            c.port, c.priority
        ));
    }
    out.push(']');
    out
}

/// A JSON string literal: `"` and `\` escaped, control characters as `\u00XX`, other
/// characters as themselves. (Validated records only contain visible ASCII other than
/// `"` and `\`; the escaping keeps the builder total over arbitrary strings.)
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_prefixed(out: &mut Vec<u8>, field: &[u8]) {
    // Fields longer than u32::MAX cannot come from a bounded body; saturate to keep the
    // builder total (such a preimage can never match a real signature anyway).
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(field);
}

/// The canonical preimage of `record`.
pub fn preimage(record: &Record) -> Vec<u8> {
    let candidates = candidates_json(&record.candidates);
    let mut out = Vec::with_capacity(
        DOMAIN.len() + 48 + 4 + 32 + 4 + candidates.len() + 4 + record.published_at.len() + 4,
    );
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&record.workspace);
    out.extend_from_slice(&record.account);
    out.extend_from_slice(&record.device);
    push_prefixed(&mut out, &record.signing_key);
    push_prefixed(&mut out, candidates.as_bytes());
    push_prefixed(&mut out, record.published_at.as_bytes());
    out.extend_from_slice(&record.ttl_seconds.to_le_bytes());
    out
}

/// Builds a signed publication body for `record` with `key` (whose public half replaces
/// `record.signing_key`). The JSON uses the record's field order and lower-case UUIDs.
pub fn sign_publication(key: &SigningKey, record: &Record) -> Vec<u8> {
    let mut record = record.clone();
    record.signing_key = key.verifying_key().to_bytes();
    let signature = key.sign(&preimage(&record)).to_bytes();
    publication_body(&record, &signature)
}

/// The JSON body `{"record":{..},"signature":".."}` for `record` and a raw `signature`,
/// fields in the documented order, candidates as their canonical JSON.
pub fn publication_body(record: &Record, signature: &[u8; 64]) -> Vec<u8> {
    format!(
        "{{\"record\":{{\"workspaceID\":\"{}\",\"publisherAccountID\":\"{}\",\"publisherDeviceID\":\"{}\",\"publisherSigningPublicKey\":\"{}\",\"candidates\":{},\"publishedAt\":{},\"ttlSeconds\":{}}},\"signature\":\"{}\"}}",
        format_uuid(&record.workspace),
        format_uuid(&record.account),
        format_uuid(&record.device),
        STANDARD.encode(record.signing_key),
        candidates_json(&record.candidates),
        serde_json::Value::from(record.published_at.as_str()),
        record.ttl_seconds,
        STANDARD.encode(signature),
    )
    .into_bytes()
}

/// The canonical lower-case hyphenated spelling of 16 UUID bytes.
pub fn format_uuid(id: &[u8; 16]) -> String {
    let h = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (years 0000..=9999; others clamp).
pub fn format_rfc3339_utc(unix: i64) -> String {
    let unix = unix.clamp(-62_167_219_200, 253_402_300_799);
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
