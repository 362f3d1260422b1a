//! `connect_head`: request heads. `parse_head` on arbitrary bytes under two limit sets,
//! then the routing-side parsers on whatever it returns (the target, the proof, a park's
//! `Tryst-Pairing-Notice`). Nothing may panic; a complete
//! head must respect the limits and be found again, identically, in its own prefix, and
//! a `Partial` answer must still be a viable request line (bytes that can never be HTTP
//! are refused at once, not held until the head deadline).

use crate::auth::parse_proof;
use crate::head::{HeadError, HeadLimits, HeadStatus, Method, parse_head, request_line_viable};
use crate::target::parse_connect_target;

/// Runs one input under the default limits and a tiny 256-byte / 4-header set.
pub fn run(data: &[u8]) {
    check(data, &HeadLimits::default());
    check(
        data,
        &HeadLimits {
            max_head_bytes: 256,
            max_headers: 4,
        },
    );
}

fn check(data: &[u8], limits: &HeadLimits) {
    match parse_head(data, limits) {
        Ok(HeadStatus::Complete(head)) => {
            assert!(head.head_len <= data.len());
            assert!(head.head_len <= limits.max_head_bytes);
            assert!(head.headers.len() <= limits.max_headers);
            assert!(head.minor_version <= 1);
            // The head alone parses to the same head; any shorter prefix is Partial.
            let own = &data[..head.head_len];
            assert_eq!(
                parse_head(own, limits),
                Ok(HeadStatus::Complete(head.clone()))
            );
            let cut = data.first().map_or(0, |&b| usize::from(b)) % head.head_len;
            assert_eq!(parse_head(&data[..cut], limits), Ok(HeadStatus::Partial));
            if head.method == Method::Connect {
                let _ = parse_connect_target(&head.target);
                if let Some(value) = head.header("proxy-authorization") {
                    let _ = parse_proof(value);
                }
                // A park's notice request: asked exactly when one header says `1`.
                let name = crate::reject::PAIRING_NOTICE_HEADER;
                let asked = crate::route::pairing_notice(&head);
                let ones =
                    head.header_count(name) == 1 && head.header(name) == Some(b"1".as_slice());
                match asked {
                    Ok(true) => assert!(ones),
                    Ok(false) => assert_eq!(head.header_count(name), 0),
                    Err(r) => {
                        assert_eq!(r, crate::reject::Rejection::MalformedParkOption);
                        assert!(!ones && head.header_count(name) > 0);
                    }
                }
            }
        }
        Ok(HeadStatus::Partial) => {
            assert!(data.len() <= limits.max_head_bytes);
            // Nothing is held that could never become a request line.
            assert!(request_line_viable(data));
        }
        Err(HeadError::TooLarge) => assert!(data.len() > limits.max_head_bytes),
        Err(_) => {}
    }
}
