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
//!
//! The builder lives in tryst-client ([`tryst_client::publication`]), where devices sign
//! with it; the relay re-exports it and verifies over the same bytes.

pub use tryst_client::publication::{DOMAIN, candidates_json, preimage};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::record::{Candidate, Record};

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
