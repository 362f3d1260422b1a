//! `http_framing`: request heads (arbitrary bytes) through `head::parse_head`, then the
//! relay's framing check (`framing::check`) and, for a refused head, its refusal in the
//! owning family's shape. No panic; a check that passes agrees with a plain reading of
//! the `Content-Length` fields; every refusal is a complete `400` with its body length.
use crate::framing::{FramingError, check, refusal};
use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
use tryst_engine::route::Transport;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(HeadStatus::Complete(head)) = parse_head(data, &HeadLimits::default()) else {
        return;
    };
    let lengths: Vec<Option<u64>> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value.trim_ascii())
                .ok()?
                .parse::<u64>()
                .ok()
        })
        .collect();
    match check(&head) {
        Ok(None) => assert!(lengths.is_empty()),
        Ok(Some(n)) => {
            assert!(!lengths.is_empty() && lengths.iter().all(|l| *l == Some(n)));
            assert_eq!(head.header_count("transfer-encoding"), 0);
        }
        Err(e) => {
            match e {
                // `u64::from_str` also takes a leading '+'; the check does not.
                FramingError::BadContentLength => assert!(!lengths.is_empty()),
                FramingError::ConflictingContentLength => assert!(lengths.len() > 1),
                FramingError::LengthWithTransferEncoding => {
                    assert!(head.header_count("transfer-encoding") > 0);
                }
            }
            for transport in [Transport::Plain, Transport::Tls] {
                let bytes = refusal(&head.target, transport);
                let text = std::str::from_utf8(&bytes).expect("ASCII response");
                assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
                let (head_text, body) = text.split_once("\r\n\r\n").expect("a complete head");
                assert!(head_text.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
            }
        }
    }
}
