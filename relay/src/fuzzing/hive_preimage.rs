//! `hive_preimage`: the canonical preimage builder over arbitrary records (any strings,
//! any numbers): never panics; the layout is exact; the candidates JSON reads back to
//! the same values; a valid record signed and serialised parses back to itself and
//! verifies.
use crate::hive::preimage::{DOMAIN, candidates_json, preimage};
use crate::hive::record::{Record, parse_publication, parse_rfc3339_utc, validate_candidate};
use crate::hive::verify::{PublicationPolicy, sign_publication, verify_publication};
use arbitrary::Arbitrary as _;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(record) = Record::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
        return;
    };
    let p = preimage(&record);
    let cj = candidates_json(&record.candidates);
    assert!(p.starts_with(DOMAIN));
    assert_eq!(
        p.len(),
        DOMAIN.len() + 48 + 4 + 32 + 4 + cj.len() + 4 + record.published_at.len() + 4
    );
    assert!(p.ends_with(&record.ttl_seconds.to_le_bytes()));
    let v: serde_json::Value = serde_json::from_str(&cj).expect("candidates JSON is JSON");
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), record.candidates.len());
    for (c, j) in record.candidates.iter().zip(arr) {
        assert_eq!(j["kind"].as_str(), Some(c.kind.as_str()));
        assert_eq!(j["host"].as_str(), Some(c.host.as_str()));
        assert_eq!(j["port"].as_u64(), Some(u64::from(c.port)));
        assert_eq!(j["priority"].as_u64(), Some(u64::from(c.priority)));
    }
    let valid = record.candidates.len() <= 16
        && record
            .candidates
            .iter()
            .all(|c| validate_candidate(c).is_ok())
        && record.ttl_seconds > 0;
    if let (true, Some((at, _))) = (valid, parse_rfc3339_utc(&record.published_at)) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
        let body = sign_publication(&key, &record);
        let parsed = parse_publication(&body).expect("a signed valid record parses");
        let mut want = record.clone();
        want.signing_key = key.verifying_key().to_bytes();
        assert_eq!(parsed.record, want);
        let v = verify_publication(&body, at, &PublicationPolicy::default())
            .expect("a signed valid record verifies at its own time");
        assert_eq!(v.published_at_unix, at);
    }
}
