//! The payload of another node's publish notification (`qredo::pg::parse_notice`; any
//! client of the shared database can `NOTIFY` the channel) on arbitrary text: never
//! panics; an accepted payload is exactly the one `notice` makes of what it read.

use crate::qredo::pg::{notice, parse_notice};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((origin, queue, seq)) = parse_notice(text) {
        let again = notice(origin, &queue, seq);
        assert_eq!(parse_notice(&again), Some((origin, queue, seq)));
        // Only case and leading zeros or a plus sign may differ from the canonical text.
        assert_eq!(text.split(' ').count(), 3, "{text:?}");
    }
}
