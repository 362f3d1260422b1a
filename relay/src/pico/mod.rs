//! The Pico Rendezvous Point API (protocols.md §2): `GET /new` and long-poll channels
//! under `/channel/<name>`, served exactly as the released mypico server does, so jpico
//! and libpico clients work unchanged. See docs/compat/pico.md.
//!
//! - [`channel`]: the sans-IO channel table (states, caps, expiry), taking `now`.
//! - [`Pico`]: the async adapter. A waiting GET or POST is a future holding a
//!   `oneshot::Receiver` and a timer; it costs no thread. If its connection closes, hyper
//!   drops the future and a guard puts the channel back to standby.
//! - [`route`]: which paths and methods belong to this family (pure).
//! - `service.rs`: the HTTP adapter ([`Pico`], [`route`], the exact responses) and its
//!   [`crate::family::ServiceFamily`].
//! - here also: [`PicoSettings`] (its flags) and [`resolve`] (its [`PicoLimits`]).
//!
//! Pico has no `CONNECT` side, so no `connect.rs`.

pub mod channel;
mod service;

use crate::duration::HumanDuration;
use channel::Limits;

pub use channel::Limits as PicoLimits;
pub use service::{Pico, PicoResponse, Route, channel_name, new_name, owns, route};

/// Largest accepted POST body: the production deployment's nginx default
/// (`client_max_body_size 1m`); larger bodies get 413.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Longest channel name accepted (bytes after percent-decoding); longer names get 404.
pub const MAX_NAME: usize = 256;

/// `{"status": "ok", "code": 0}` + newline: a write delivered, or a DELETE done.
pub const OK_JSON: &str = "{\"status\": \"ok\", \"code\": 0}\n";
/// Code 1: the reader vanished before the message could be handed over.
pub const PEER_GONE_JSON: &str = "{\"status\": \"error\", \"code\": 1, \"message\": \"peer disconnected whilst writing data\"}\n";
/// Code 2: the wait elapsed; the client polls (or reposts) again.
pub const TIMEOUT_JSON: &str =
    "{\"status\": \"error\", \"code\": 2, \"message\": \"request timed out\"}\n";
/// Code -1: the channel was deleted or expired.
pub const CLOSED_JSON: &str =
    "{\"status\": \"ok\", \"code\": -1, \"message\": \"channel closed\"}\n";
/// Twisted's `NoResource` page, the released server's answer to a second waiting party.
pub const NO_RESOURCE_HTML: &str = "\n<html>\n  <head><title>404 - No Such Resource</title></head>\n  <body>\n    <h1>No Such Resource</h1>\n    <p>Sorry. No luck finding that resource.</p>\n  </body>\n</html>\n";

/// The preflight trio nginx adds in the production deployment.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// See [`ALLOW_METHODS`].
pub const ALLOW_HEADERS: &str = "Origin, X-Requested-With, Content-Type, Accept";

/// The Pico flags (`tryst serve --pico-*`, config keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct PicoSettings {
    /// How long a Pico channel GET or POST waits for its peer before the code-2 answer [default: 40s].
    #[arg(long, env = "TRYST_PICO_WAIT", value_name = "DURATION")]
    pub pico_wait: Option<HumanDuration>,
    /// A Pico channel is removed this long after its creation (not extended by use) [default: 30m].
    #[arg(long, env = "TRYST_PICO_CHANNEL_TTL", value_name = "DURATION")]
    pub pico_channel_ttl: Option<HumanDuration>,
    /// Most Pico channels at once; creating one more is answered 503 [default: 65536].
    #[arg(long, env = "TRYST_PICO_MAX_CHANNELS", value_name = "N")]
    pub pico_max_channels: Option<usize>,
    /// Most waiting Pico GETs and POSTs at once; one more is answered 503 [default: 256].
    #[arg(long, env = "TRYST_PICO_MAX_WAITING", value_name = "N")]
    pub pico_max_waiting: Option<usize>,
}

crate::config_keys::impl_settings_or!(PicoSettings {
    pico_wait,
    pico_channel_ttl,
    pico_max_channels,
    pico_max_waiting,
});

/// The Pico limits from `s` (defaults where unset), validated.
pub fn resolve(
    s: &PicoSettings,
    _cx: &crate::families::ResolveContext<'_>,
) -> Result<Limits, crate::config::ConfigError> {
    use crate::config::{invalid, positive};
    let pico_defaults = Limits::default();
    let pico = Limits {
        wait: positive("pico-wait", s.pico_wait.map_or(pico_defaults.wait, |d| d.0))?,
        channel_ttl: positive(
            "pico-channel-ttl",
            s.pico_channel_ttl
                .map_or(pico_defaults.channel_ttl, |d| d.0),
        )?,
        max_channels: s.pico_max_channels.unwrap_or(pico_defaults.max_channels),
        max_waiting: s.pico_max_waiting.unwrap_or(pico_defaults.max_waiting),
    };
    if pico.max_channels == 0 {
        return Err(invalid("pico-max-channels", "must be at least 1"));
    }
    if pico.max_waiting == 0 {
        return Err(invalid("pico-max-waiting", "must be at least 1"));
    }
    Ok(pico)
}

/// Its settings as `tryst serve` resolves them (flags, config keys, refusals).
#[cfg(test)]
mod settings_tests {
    use super::*;
    use crate::cli::Settings;
    use crate::config::tests::resolve;
    use crate::config::{ConfigError, parse_config};
    use std::time::Duration;

    #[test]
    fn pico_settings_default_parse_and_validate() {
        let c = resolve(Settings::default()).unwrap();
        assert_eq!(c.families.pico, PicoLimits::default());
        assert_eq!(c.families.pico.wait, Duration::from_secs(40));
        assert_eq!(c.families.pico.channel_ttl, Duration::from_secs(1800));
        let s = parse_config(
            "pico-wait = \"300ms\"\npico-channel-ttl = \"2m\"\npico-max-channels = 9\npico-max-waiting = 3\n",
        )
        .unwrap();
        let c = resolve(s).unwrap();
        assert_eq!(
            c.families.pico,
            PicoLimits {
                wait: Duration::from_millis(300),
                channel_ttl: Duration::from_secs(120),
                max_channels: 9,
                max_waiting: 3,
            }
        );
        for (text, key) in [
            ("pico-wait = \"0s\"\n", "pico-wait"),
            ("pico-channel-ttl = \"0s\"\n", "pico-channel-ttl"),
            ("pico-max-channels = 0\n", "pico-max-channels"),
            ("pico-max-waiting = 0\n", "pico-max-waiting"),
        ] {
            match resolve(parse_config(text).unwrap()) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
    }
}
