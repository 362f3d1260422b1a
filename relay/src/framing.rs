//! Message framing of the requests the engine hands to the HTTP service: refused here,
//! on the worker, when their `Content-Length` / `Transfer-Encoding` cannot frame a body,
//! so the refusal is counted in `tryst_rejections_total{reason="malformed_head"}` and
//! answered in the shape of the family that owns the path (hyper would answer a bare
//! `400` with an empty body and count nothing).
//!
//! Rules (RFC 9112 §6.3), each a [`FramingError`]:
//! - every `Content-Length` field is one decimal number (optional spaces or tabs around
//!   it) that fits a `u64`: `-1`, `+5`, `0x10`, `5, 5`, an empty value and
//!   `99999999999999999999` are refused;
//! - several `Content-Length` fields must agree;
//! - `Content-Length` together with `Transfer-Encoding` is refused (a request smuggling
//!   vector; hyper refuses it too).
//!
//! Pure: no I/O, no clock.

use tryst_engine::head::RequestHead;
use tryst_engine::reject::Rejection;
use tryst_engine::route::Transport;

/// Why a request's framing headers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A `Content-Length` value that is not one decimal `u64`.
    #[error("Content-Length is not a decimal number that fits 64 bits")]
    BadContentLength,
    /// `Content-Length` fields with different values.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("Content-Length together with Transfer-Encoding")]
    LengthWithTransferEncoding,
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// Checks the framing headers; returns the body length a `Content-Length` announces.
pub fn check(head: &RequestHead) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for h in &head.headers {
        if !h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let n = parse_length(&h.value).ok_or(FramingError::BadContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(FramingError::ConflictingContentLength);
        }
        length = Some(n);
    }
    if length.is_some() && head.header_count("transfer-encoding") > 0 {
        return Err(FramingError::LengthWithTransferEncoding);
    }
    Ok(length)
}

fn bad_request(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The exact refusal for a request to `target` on `transport` whose framing is bad, in
/// the shape of the family that owns the path: the hivemind dead-drop's paths (and, on
/// the plain listener, every path no other family owns, see `http.rs`)
/// `{"reason":"malformed_body","status":"error"}`, Hive's `/v1/` paths
/// `{"error":"malformed request framing"}`, everything else (Pico, `/healthz`,
/// `/metrics`) the service's `{"error":{"code":"malformed_head",...}}`.
pub fn refusal(target: &str, transport: Transport) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or("");
    if crate::hive::Hive::owns(path) {
        return bad_request(r#"{"error":"malformed request framing"}"#);
    }
    let hivemind = crate::deaddrop::DeadDrop::owns(path)
        || (transport == Transport::Plain
            && !crate::pico::owns(path)
            && !matches!(path, "/healthz" | "/metrics")
            && !tryst_engine::node::HTTP_SERVICE_PREFIXES
                .iter()
                .any(|p| path.starts_with(p)));
    if hivemind {
        return bad_request(r#"{"reason":"malformed_body","status":"error"}"#);
    }
    Rejection::MalformedHead.response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};

    fn head(text: &str) -> RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    fn check_text(fields: &str) -> Result<Option<u64>, FramingError> {
        check(&head(&format!("POST /deposit HTTP/1.1\r\n{fields}\r\n")))
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(check_text(""), Ok(None));
        assert_eq!(check_text("Content-Length: 5\r\n"), Ok(Some(5)));
        assert_eq!(check_text("content-length:  007 \r\n"), Ok(Some(7)));
        assert_eq!(
            check_text("Content-Length: 18446744073709551615\r\n"),
            Ok(Some(u64::MAX))
        );
        assert_eq!(
            check_text("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(Some(5))
        );
        assert_eq!(check_text("Transfer-Encoding: chunked\r\n"), Ok(None));
        for bad in [
            "-1",
            "+5",
            "0x10",
            "5, 5",
            "",
            "99999999999999999999",
            "18446744073709551616",
            "1 2",
        ] {
            assert_eq!(
                check_text(&format!("Content-Length: {bad}\r\n")),
                Err(FramingError::BadContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_text("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Err(FramingError::ConflictingContentLength)
        );
        assert_eq!(
            check_text("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Err(FramingError::LengthWithTransferEncoding)
        );
    }

    #[test]
    fn refusals_take_the_owning_family_shape() {
        let body = |b: Vec<u8>| {
            let text = String::from_utf8(b).unwrap();
            assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
            text.split_once("\r\n\r\n").unwrap().1.to_owned()
        };
        let hivemind = r#"{"reason":"malformed_body","status":"error"}"#;
        assert_eq!(body(refusal("/deposit", Transport::Plain)), hivemind);
        assert_eq!(body(refusal("/deposit", Transport::Tls)), hivemind);
        assert_eq!(body(refusal("/elsewhere?x", Transport::Plain)), hivemind);
        assert_eq!(
            body(refusal("/v1/rendezvous", Transport::Plain)),
            r#"{"error":"malformed request framing"}"#
        );
        let service = r#"{"error":{"code":"malformed_head","message":"malformed request head"}}"#;
        for (t, tr) in [
            ("/healthz", Transport::Plain),
            ("/metrics", Transport::Tls),
            ("/new", Transport::Plain),
            ("/channel/a", Transport::Plain),
            ("/elsewhere", Transport::Tls),
        ] {
            assert_eq!(body(refusal(t, tr)), service, "{t}");
        }
    }
}
