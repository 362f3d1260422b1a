//! `node_authorization`: The `Authorization` parser (Basic and Digest user names) on arbitrary bytes: never
//! panics; and a mobile request carrying the bytes as its header is routed without
//! panicking, with any forwarded head free of `authorization` fields.
use crate::auth::MacKey;
use crate::head::{HeadLimits, HeadStatus, parse_head};
use crate::node::{CompatRouter, CompatRouterConfig, authorization_username};
use crate::route::{ReloadError, Route, Router, SecretSource, Transport};
use crate::target::RendezvousId;

struct NoSecrets;

impl SecretSource for NoSecrets {
    fn mac_key(&self, _id: &RendezvousId) -> Option<&MacKey> {
        None
    }
    fn reload(&mut self) -> Result<(), ReloadError> {
        Ok(())
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Ok(user) = authorization_username(data) {
        assert!(user.len() <= data.len());
    }
    let mut request = b"GET /some/path HTTP/1.1\r\nHost: relay\r\nAuthorization: ".to_vec();
    request.extend_from_slice(data);
    request.extend_from_slice(b"\r\nX-After: 1\r\n\r\n");
    let Ok(HeadStatus::Complete(head)) = parse_head(&request, &HeadLimits::default()) else {
        return;
    };
    let mut router = CompatRouter::new(NoSecrets, CompatRouterConfig::default());
    let _ = router.classify(&head, Transport::Tls);
    match router.route(&head, b"", 0, Transport::Plain) {
        Route::Reach(plan) => {
            let text = String::from_utf8_lossy(&plan.forward).to_ascii_lowercase();
            assert!(!text.contains("\r\nauthorization:"), "{text}");
            assert!(plan.forward.ends_with(b"\r\n\r\n"));
            assert!(plan.greeting.is_empty());
        }
        Route::RejectWith(_, bytes) => assert!(bytes.starts_with(b"HTTP/1.1 ")),
        _ => {}
    }
}
