//! Dead-drop request bodies through the real checker (rate limiter, replay cache,
//! proof verification, HiveMessage parsing): never panics; what is accepted is within
//! the caps.
use crate::deaddrop::DeadDropConfig;
use crate::deaddrop::request::{Action, Checker};
use std::sync::Mutex;

const MAX_PAYLOAD: usize = 4096;
static CHECKER: Mutex<Option<Checker>> = Mutex::new(None);

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = ["/deposit", "/retrieve", "/ack", "/other"][usize::from(selector % 4)];
    let mut guard = CHECKER.lock().unwrap_or_else(|e| e.into_inner());
    let checker = guard.get_or_insert_with(|| {
        let mut config = DeadDropConfig::in_dir(std::path::Path::new("/nonexistent"));
        config.max_payload = MAX_PAYLOAD;
        config.rate_limit = usize::MAX;
        config.require_recipient_fingerprint = selector & 0x80 != 0;
        Checker::new(&config, String::new())
    });
    let now_ms = 1_700_000_000_000 + u64::from(selector) * 1000;
    match checker.check(path, body, None, now_ms) {
        Ok(Action::Deposit(m)) => {
            assert_eq!(path, "/deposit");
            assert!(m.payload.len() <= MAX_PAYLOAD);
            let now = now_ms / 1000;
            assert!(m.expires_at > now && m.expires_at <= now + 604_800);
            assert_eq!(m.deposit_id.len(), 36);
        }
        Ok(Action::Retrieve { .. } | Action::Ack { .. }) => {
            // Needs a valid RSA-PSS signature by the claimed key: not forgeable here.
            panic!("unforgeable proof accepted for {path}");
        }
        Err(_) => {}
    }
}
