//! The `tag:` target and header parsers on arbitrary request heads: the head goes
//! through `parse_head`, then the tag family's classify and route (a fresh table), and
//! the raw bytes through the target, option, challenge and hello-frame parsers. Never
//! panics; a route agrees with its classification; a responder's plan always forwards
//! a well-formed hello frame; a park is under the room key of its parsed tag.

use crate::tag::table::{TagLimits, room_key};
use crate::tag::{TagFamily, wire};
use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
use tryst_engine::route::{Classified, Route, Router, Transport};

/// The fixed clock of the harness (proofs in seeds are stamped near it).
const NOW: u64 = 1_700_000_000;

/// Runs one input.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(tag) = wire::parse_target(&text) {
        assert!(text.eq_ignore_ascii_case(&tag.target()));
    }
    let _ = wire::parse_owner_key(data);
    let _ = wire::parse_proof(data);
    if let Ok((challenge, len)) = wire::parse_hello(data) {
        assert_eq!(len, 10 + challenge.len());
        assert_eq!(wire::hello_frame(Some(&challenge)), data[..len]);
    }
    let Ok(HeadStatus::Complete(head)) = parse_head(data, &HeadLimits::default()) else {
        return;
    };
    let _ = wire::parse_create_options(&head);
    let _ = wire::parse_challenge(&head);
    let mut family = TagFamily::new(TagLimits {
        max_tags: 4,
        replay_capacity: 16,
        ..TagLimits::default()
    });
    let classified = family.classify(&head, Transport::Plain);
    let early = data.get(head.head_len..).unwrap_or_default();
    for _ in 0..2 {
        let route = family.route(&head, early, NOW, Transport::Plain);
        match &route {
            Route::Reject(_) => {}
            Route::Park { key, .. } => {
                assert_eq!(classified, Ok(Classified::Rendezvous(*key)));
                let tag = wire::parse_target(&head.target).expect("parked under a parsed tag");
                assert_eq!(*key, room_key(&tag));
            }
            Route::Reach(plan) => {
                assert_eq!(classified, Ok(Classified::Rendezvous(plan.key)));
                assert!(wire::parse_hello(&plan.forward).is_ok());
                assert_eq!(plan.greeting, tryst_engine::reject::OK_RESPONSE);
            }
            other => panic!("tag family routed to {other:?}"),
        }
        // A fresh table knows no tag: a responder can only follow a park.
        if matches!(route, Route::Reach(_)) {
            assert!(!family.table().is_empty());
        }
    }
    let mut out = Vec::new();
    family.evictions(NOW + 48 * 3600, &mut out);
    assert!(out.len() <= 4);
    assert!(family.table().len() <= 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The park seeds were signed by python3's `cryptography` Ed25519 over the message
    /// layout of `tag::wire` (an independent implementation): they must park, with the
    /// derived key, a registered key and signed options alike.
    #[test]
    fn python_signed_seeds_park() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tag_target");
        for (seed, parks) in [
            ("park_derived_key", true),
            ("park_single_shot_duration", true),
            ("park_registered_key", true),
            ("park_stale", false),
            ("park_early_data", false),
        ] {
            let data = std::fs::read(dir.join(seed)).expect("seed");
            let Ok(HeadStatus::Complete(head)) = parse_head(&data, &HeadLimits::default()) else {
                panic!("{seed}: head");
            };
            let mut family = TagFamily::new(TagLimits::default());
            let early = &data[head.head_len..];
            let route = family.route(&head, early, NOW, Transport::Plain);
            assert_eq!(
                matches!(route, Route::Park { .. }),
                parks,
                "{seed}: {route:?}"
            );
        }
    }
}
