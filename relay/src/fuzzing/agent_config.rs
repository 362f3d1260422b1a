//! The `tryst expose --config` parser (`agent::config::parse`) on arbitrary text: never
//! panics; an accepted config has 1 to `MAX_SERVICES` services, each with a pool in
//! range, a parsed id whose canonical form round-trips (no id only for tag and hive), a relay and target that pass the
//! `HOST:PORT` check, a non-empty secret file (native or TOTP, never both), node TOTP
//! settings in range, and a pin only when the file asked for TLS.

use crate::agent::config::{MAX_POOL, MAX_SERVICES, check_host_port, parse};
use tryst_engine::target::RendezvousId;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = parse(text) else {
        return;
    };
    assert!((1..=MAX_SERVICES).contains(&config.services.len()));
    for s in &config.services {
        assert!((1..=MAX_POOL).contains(&s.pool));
        match s.id {
            Some(id) => assert_eq!(RendezvousId::parse(&id.to_string()), Ok(id)),
            None => assert!(matches!(
                s.auth,
                crate::agent::config::AuthSpec::Tag { .. }
                    | crate::agent::config::AuthSpec::Hive { .. }
            )),
        }
        assert!(check_host_port(&s.relay).is_ok());
        assert!(check_host_port(&s.to).is_ok());
        let mut auth = s.auth.clone();
        assert!(!auth.file_mut().as_os_str().is_empty());
        if let crate::agent::config::AuthSpec::Node { step, digits, .. } = s.auth {
            assert!(step >= 1);
            assert!(crate::agent::config::TOTP_DIGITS.contains(&digits));
        }
        if s.pin.is_some() {
            assert!(text.contains("tls"));
        }
    }
}
