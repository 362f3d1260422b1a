//! `hive_record`: the publication JSON parser and the whole verification on arbitrary
//! bytes: never panics; whatever parses re-serialises (canonical body) to the same
//! record; nothing verifies without a real signature.
use crate::hive::record::{MAX_CANDIDATES, parse_publication, validate_candidate};
use crate::hive::verify::{PublicationPolicy, publication_body, verify_publication};

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Ok(p) = parse_publication(data) {
        assert!(p.record.candidates.len() <= MAX_CANDIDATES);
        for c in &p.record.candidates {
            assert_eq!(validate_candidate(c), Ok(()));
        }
        assert!(p.record.ttl_seconds > 0);
        let again = parse_publication(&publication_body(&p.record, &p.signature))
            .expect("a canonical body of a parsed record parses");
        assert_eq!(again, p);
    }
    let now = data.first().map_or(0, |&b| i64::from(b) << 24);
    let policy = PublicationPolicy::default();
    if let Ok(v) = verify_publication(data, now, &policy) {
        // Only possible with a genuine signature, which random bytes do not carry; the
        // corpus holds none that is in its skew window at this `now`.
        assert!(v.expires_at_unix > v.published_at_unix);
        assert_eq!(v.body, data);
    }
}
