//! The canonical preimage of a publication record: the exact bytes the Ed25519
//! signature covers (project-defined, following hive-core's convention for signed
//! objects; docs/protocol-publications.md states it byte by byte with test vectors).
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

use super::record::{Candidate, Record};

/// The domain tag that starts every publication preimage.
pub const DOMAIN: &[u8] = b"hive-rendezvous-v1\0";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            workspace: [0x11; 16],
            account: [0x22; 16],
            device: [0x33; 16],
            signing_key: [0x44; 32],
            candidates: vec![
                Candidate {
                    kind: "stunReflexive".into(),
                    host: "203.0.113.5".into(),
                    port: 51820,
                    priority: 100,
                },
                Candidate {
                    kind: "hostLocal".into(),
                    host: "192.168.1.7".into(),
                    port: 1,
                    priority: 0,
                },
            ],
            published_at: "2026-11-22T06:00:00Z".into(),
            ttl_seconds: 90,
        }
    }

    #[test]
    fn candidates_json_is_compact_in_fixed_key_order() {
        assert_eq!(candidates_json(&[]), "[]");
        assert_eq!(
            candidates_json(&record().candidates),
            r#"[{"kind":"stunReflexive","host":"203.0.113.5","port":51820,"priority":100},{"kind":"hostLocal","host":"192.168.1.7","port":1,"priority":0}]"#
        );
        let odd = Candidate {
            kind: "a\"\\\u{1}".into(),
            host: "é".into(),
            port: 65535,
            priority: u32::MAX,
        };
        let json = candidates_json(std::slice::from_ref(&odd));
        assert_eq!(
            json,
            "[{\"kind\":\"a\\\"\\\\\\u0001\",\"host\":\"é\",\"port\":65535,\"priority\":4294967295}]"
        );
        // It is real JSON that reads back to the same values.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["kind"], odd.kind.as_str());
    }

    #[test]
    fn preimage_layout() {
        let r = record();
        let p = preimage(&r);
        let cj = candidates_json(&r.candidates);
        let mut want = b"hive-rendezvous-v1\0".to_vec();
        want.extend([0x11; 16]);
        want.extend([0x22; 16]);
        want.extend([0x33; 16]);
        want.extend([32, 0, 0, 0]);
        want.extend([0x44; 32]);
        want.extend(u32::try_from(cj.len()).unwrap().to_le_bytes());
        want.extend(cj.as_bytes());
        want.extend([20, 0, 0, 0]);
        want.extend(b"2026-11-22T06:00:00Z");
        want.extend([90, 0, 0, 0]);
        assert_eq!(p, want);
        // Every field is bound: changing any one changes the preimage.
        let mut other = r.clone();
        other.ttl_seconds = 91;
        assert_ne!(preimage(&other), p);
        let mut other = r.clone();
        other.candidates.swap(0, 1);
        assert_ne!(preimage(&other), p);
        let mut other = r;
        other.published_at = "2026-11-22T06:00:00.0Z".into();
        assert_ne!(preimage(&other), p);
    }
}
