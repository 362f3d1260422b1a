//! `client_answer`: the agents' reading of a relay's answer (`tryst_client::conn`:
//! `parse_answer`, `parse_response_head`, `retry_after`, `refusal`,
//! `pairing_notice_confirmed`) on arbitrary bytes,
//! and the input as a `Retry-After` value in an otherwise real `503 overloaded`.
//!
//! Defends: no panic; a closed connection always decides; a 200 is `Ok` with exactly the
//! bytes after its head; a refusal's status, code and message come from its head and
//! body (code and message at most 200 characters, no control characters); its
//! `Retry-After` is the first such header read as delay-seconds (digits only, optional
//! spaces or tabs) and never more than `MAX_RETRY_AFTER`, which an independent reading
//! confirms; bytes fed one prefix at a time decide as the whole does (a 200 as soon as
//! its head is complete, a refusal once its body is, a bad response stays bad).

use std::time::Duration;
use tryst_client::conn::{
    Error, MAX_REFUSAL_BODY, MAX_RESPONSE_HEAD, MAX_RETRY_AFTER, parse_answer, parse_response_head,
    retry_after,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    answer(data);
    as_retry_after(data);
}

/// The input as a whole answer, and as its prefixes.
fn answer(data: &[u8]) {
    let whole = parse_answer(data, true).expect("a closed connection decides");
    let head = parse_response_head(data);
    match &whole {
        Ok(early) => {
            let head = head.unwrap().unwrap();
            assert_eq!(head.status, 200);
            assert_eq!(early.as_slice(), &data[head.len..]);
            // A confirmed pairing notice names its header in the head.
            if tryst_client::conn::pairing_notice_confirmed(data) {
                let text = String::from_utf8_lossy(&data[..head.len]).to_ascii_lowercase();
                assert!(text.contains("tryst-pairing-notice"));
            }
        }
        Err(Error::Refused(r)) => {
            let head = head.unwrap().unwrap();
            assert_ne!(r.status, 200);
            assert_eq!(r.status, head.status);
            assert_eq!(r.retry_after, head.retry_after);
            assert_eq!(r.retry_after, oracle_retry_after(&data[..head.len]));
            for text in [&r.code, &r.message] {
                assert!(text.chars().count() <= 200, "{text:?}");
                assert!(!text.chars().any(char::is_control), "{text:?}");
            }
            let body = &data[head.len..];
            let want = head
                .content_length
                .unwrap_or(MAX_REFUSAL_BODY)
                .min(MAX_REFUSAL_BODY);
            let mut expected = tryst_client::conn::refusal(r.status, &body[..want.min(body.len())]);
            expected.retry_after = r.retry_after;
            assert_eq!(r, &expected);
        }
        Err(Error::BadResponse) => assert!(head.is_err()),
        Err(Error::Lost(_)) => {
            assert!(matches!(head, Ok(None)));
            assert!(data.len() < MAX_RESPONSE_HEAD);
        }
        Err(e) => panic!("unexpected {e}"),
    }
    // Push-style reading, one byte more each time (bounded: past a full head and body
    // nothing new can happen).
    let limit = data.len().min(MAX_RESPONSE_HEAD + MAX_REFUSAL_BODY + 1);
    let first = (0..=limit).find_map(|k| parse_answer(&data[..k], false).map(|a| (k, a)));
    match (first, &whole) {
        (None, Ok(_) | Err(Error::BadResponse)) => {
            panic!("the whole decided, no prefix did: {whole:?}")
        }
        (None, _) => {}
        (Some((k, Ok(early))), Ok(all)) => {
            assert!(early.is_empty(), "a 200 is decided as soon as its head is");
            assert_eq!(k + all.len(), data.len());
        }
        (Some((_, Err(Error::Refused(a)))), Err(Error::Refused(b))) => assert_eq!(a, *b),
        (Some((_, Err(Error::BadResponse))), Err(Error::BadResponse)) => {}
        (Some((k, a)), _) => panic!("prefix {k} decided {a:?}, the whole {whole:?}"),
    }
}

/// The input as the value of `Retry-After` in the bytes a relay at its socket budget
/// sends (`Rejection::Overloaded.response()`, whose value is `1`).
fn as_retry_after(value: &[u8]) {
    if value.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        return;
    }
    let real = tryst_engine::reject::Rejection::Overloaded.response();
    let at = real
        .windows(15)
        .position(|w| w == b"Retry-After: 1\r")
        .expect("overloaded carries Retry-After: 1")
        + b"Retry-After: ".len();
    let mut bytes = real[..at].to_vec();
    bytes.extend_from_slice(value);
    bytes.extend_from_slice(&real[at + 1..]);
    let read = retry_after(value);
    assert_eq!(read, oracle_value(value));
    match parse_answer(&bytes, false) {
        Some(Err(Error::Refused(r))) => {
            assert_eq!((r.status, r.code.as_str()), (503, "overloaded"));
            // httparse may refuse a value byte (a control character): then no refusal.
            assert_eq!(r.retry_after, read, "{value:?}");
        }
        Some(Err(Error::BadResponse)) => {}
        other => panic!("{value:?}: {other:?}"),
    }
}

/// An independent reading of the first `Retry-After` of `head`: its lines, split by hand.
fn oracle_retry_after(head: &[u8]) -> Option<Duration> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|b| *b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"retry-after")
            .then(|| oracle_value(&line[colon + 1..]))
    })?
}

/// Delay-seconds by the book: trim spaces and tabs, all digits, leading zeros dropped,
/// more than four significant digits is over the cap.
fn oracle_value(value: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = s.trim_start_matches('0');
    let cap = MAX_RETRY_AFTER.as_secs();
    let secs = if significant.len() > 4 {
        cap
    } else {
        significant.parse::<u64>().unwrap_or(0).min(cap)
    };
    Some(Duration::from_secs(secs))
}
