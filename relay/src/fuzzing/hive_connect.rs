//! `hive_connect`: the `hive:` CONNECT family on arbitrary heads: the target parser, the
//! `Hive` proof header parser, and the whole route decision.
//!
//! Invariants: nothing panics; classification and routing agree on the key; a park is
//! only ever granted for a well-formed target with a `Hive` proof and no early bytes, and
//! a reach only without `Proxy-Authorization`; every refusal is a complete response.

use crate::hive::connect::{HiveConnect, parse_park_proof, parse_target};

use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
use tryst_engine::route::{Classified, Route, Router, Transport};
use tryst_engine::target::RendezvousId;

/// Runs one input: the first byte picks `now` and early data, the rest is tried as a
/// target, as a proof header value, and as a request head (prefixed with
/// `CONNECT hive:` when it does not parse on its own).
pub fn run(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if let Some(t) = std::str::from_utf8(rest)
        .ok()
        .and_then(|text| parse_target(text).ok())
    {
        // The canonical spelling names the same device.
        let canonical = format!(
            "hive:{}/{}",
            RendezvousId(t.workspace),
            RendezvousId(t.device)
        );
        assert_eq!(parse_target(&canonical), Ok(t));
    }
    let _ = parse_park_proof(rest);

    let now = 1_800_000_000u64.wrapping_add(u64::from(control & 0x7f));
    let early: &[u8] = if control & 0x80 != 0 { b"x" } else { b"" };
    let mut family = HiveConnect::default();
    for candidate in [rest.to_vec(), [&b"CONNECT hive:"[..], rest].concat()] {
        let Ok(HeadStatus::Complete(head)) = parse_head(&candidate, &HeadLimits::default()) else {
            continue;
        };
        if !head.target.to_ascii_lowercase().starts_with("hive:") {
            continue;
        }
        let classified = family.classify(&head, Transport::Plain);
        match family.route(&head, early, now, Transport::Plain) {
            Route::Park { key, .. } => {
                assert_eq!(classified, Ok(Classified::Rendezvous(key)));
                assert!(early.is_empty());
                assert!(head.header("proxy-authorization").is_some());
            }
            Route::Reach(plan) => {
                assert_eq!(classified, Ok(Classified::Rendezvous(plan.key)));
                assert!(head.header("proxy-authorization").is_none());
            }
            Route::Reject(r) | Route::RejectWith(r, _) => {
                assert!(r.response().starts_with(b"HTTP/1.1 "));
            }
            Route::Http => panic!("the hive family never hands to HTTP"),
        }
    }
}
