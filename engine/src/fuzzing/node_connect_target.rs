//! `node_connect_target`: node-rendezvous CONNECT targets (`uuid:<ID>?response=<TOKEN>`): the target parser
//! never panics and splits the target as documented, and the combined router answers
//! every CONNECT with this target, on both transports, with a decision whose refusal
//! bytes are an HTTP response.
use crate::auth::MacKey;
use crate::head::{HeadLimits, HeadStatus, parse_head};
use crate::node::{CompatRouter, CompatRouterConfig, looks_like_node_connect, parse_node_connect};
use crate::route::{ReloadError, Route, Router, SecretSource, Transport};
use crate::target::RendezvousId;
use crate::totp::{TotpAlgorithm, TotpRecord};

struct OneRecord(TotpRecord);

impl SecretSource for OneRecord {
    fn mac_key(&self, _id: &RendezvousId) -> Option<&MacKey> {
        None
    }
    fn totp(&self, _id: &RendezvousId) -> Option<&TotpRecord> {
        Some(&self.0)
    }
    fn reload(&mut self) -> Result<(), ReloadError> {
        Ok(())
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_node_connect(text) {
        Ok(t) => {
            let (scheme, rest) = text.split_once(':').expect("a scheme was matched");
            assert!(scheme.eq_ignore_ascii_case("uuid"));
            assert!(rest.starts_with(t.host));
            assert!(!t.host.contains(['/', '?', '#']));
            if let Some(r) = t.response {
                assert!(!r.is_empty());
                assert!(!r.contains(['&', '#']));
                assert!(text.contains("response="));
            }
        }
        Err(_) => assert!(!looks_like_node_connect(text)),
    }
    // Through the router, when the target fits in a request line.
    if text
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return;
    }
    let request = format!("CONNECT {text} HTTP/1.1\r\nHost: relay\r\n\r\n");
    let Ok(HeadStatus::Complete(head)) = parse_head(request.as_bytes(), &HeadLimits::default())
    else {
        return;
    };
    let record = TotpRecord::new(
        b"12345678901234567890".to_vec(),
        30,
        TotpAlgorithm::Sha1,
        None,
    )
    .expect("a valid record");
    let mut router = CompatRouter::new(OneRecord(record), CompatRouterConfig::default());
    for transport in [Transport::Plain, Transport::Tls] {
        let _ = router.classify(&head, transport);
        for early in [&b""[..], b"x"] {
            match router.route(&head, early, 59, transport) {
                Route::RejectWith(_, bytes) => assert!(bytes.starts_with(b"HTTP/1.1 ")),
                Route::Park { .. } => assert!(early.is_empty()),
                _ => {}
            }
        }
    }
}
