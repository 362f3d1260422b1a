//! `hive_preimage`: the canonical preimage builder over arbitrary records (any strings,
//! any numbers): never panics; the layout is exact; the candidates JSON reads back to
//! the same values; a valid record signed and serialised parses back to itself and
//! verifies.
use crate::hive::preimage::{DOMAIN, candidates_json, preimage};
use crate::hive::record::{
    Record, format_rfc3339_utc, parse_publication, parse_rfc3339_utc, validate_candidate,
};
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
    round_trip(&record);
    round_trip(&sanitised(record));
}

/// A valid record derived from an arbitrary one (so the round trip always runs).
fn sanitised(mut r: Record) -> Record {
    r.candidates.truncate(16);
    for c in &mut r.candidates {
        c.kind = c
            .kind
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(32)
            .collect();
        if c.kind.is_empty() {
            c.kind.push('k');
        }
        c.host = c
            .host
            .chars()
            .filter(|ch| ch.is_ascii_graphic() && *ch != '"' && *ch != '\\')
            .take(255)
            .collect();
        if c.host.is_empty() {
            c.host.push('h');
        }
        c.port = c.port.max(1);
    }
    r.ttl_seconds = r.ttl_seconds.max(1);
    let seed = r
        .published_at
        .bytes()
        .fold(0i64, |a, b| a.wrapping_mul(31).wrapping_add(i64::from(b)));
    let mut at = format_rfc3339_utc(seed.rem_euclid(253_402_300_800));
    let digits = r.published_at.len() % 10;
    if digits > 0 {
        at.pop();
        at.push('.');
        at.push_str(&"7".repeat(digits));
        at.push('Z');
    }
    r.published_at = at;
    r
}

/// A valid record signed and serialised parses back to itself and verifies at its own
/// time; an invalid one is skipped.
fn round_trip(record: &Record) {
    let valid = record.candidates.len() <= 16
        && record
            .candidates
            .iter()
            .all(|c| validate_candidate(c).is_ok())
        && record.ttl_seconds > 0;
    if let (true, Some((at, _))) = (valid, parse_rfc3339_utc(&record.published_at)) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
        let body = sign_publication(&key, record);
        let parsed = parse_publication(&body).expect("a signed valid record parses");
        let mut want = record.clone();
        want.signing_key = key.verifying_key().to_bytes();
        assert_eq!(parsed.record, want);
        let v = verify_publication(&body, at, &PublicationPolicy::default())
            .expect("a signed valid record verifies at its own time");
        assert_eq!(v.published_at_unix, at);
    }
}
