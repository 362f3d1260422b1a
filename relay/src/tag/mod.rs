//! Qredo-style tag rendezvous on the engine (`CONNECT tag:<hashedTag>`).
//!
//! A publisher announces a tag by parking under its hashed tag with an Ed25519
//! ownership proof; responders who know the tag `CONNECT` to the same hashed tag without
//! a proof and get a tunnel of their own to one parked publisher connection. Only the
//! Qredo KDF of the tag ([`kdf`]) ever reaches the relay.
//!
//! - [`kdf`]: the Qredo hashed tag and the derived ownership key.
//! - [`wire`]: the target, proof, options and challenge parsers; the pairing frames.
//! - [`table`]: the sans-IO tag table (modes, durations, tombstones, replay cache).
//! - [`sync`]: the messages that share the table with Qredo's `/services` (one tag
//!   table for RPC and `CONNECT tag:`).
//! - [`connect`]: [`TagFamily`], the `CONNECT` side: the [`crate::router::SchemeFamily`]
//!   plugging the table into the workers' router.
//! - here: [`TagSettings`] (its flags) and [`resolve`] (their limits).
//!
//! The family has no HTTP side, so no `service.rs`: Qredo's `/services`
//! ([`crate::qredo`]) is the HTTP face of the same tags, with its own table.
//!
//! Exact wire and security notes: `docs/compat/qredo.md`.

pub mod connect;
pub mod kdf;
pub mod sync;
pub mod table;
pub mod wire;

use crate::duration::HumanDuration;
use std::time::Duration;
use table::TagLimits;

pub use connect::TagFamily;

/// What `tryst tag` prints for `tag` under `app_id`: the hashed tag, the derived
/// ownership public key (unpadded base64url and hex) and the `CONNECT` target.
pub fn describe(app_id: &str, tag: &str) -> String {
    use base64::Engine as _;
    let hashed = kdf::hashed_tag(app_id, tag);
    let owner = hashed.derived_public_key();
    format!(
        "hashed tag   {}\n\
         owner key    {} (Ed25519, derived: seed = hashed tag; hex {})\n\
         target       CONNECT {} HTTP/1.1\n",
        hashed.to_hex(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(owner.as_bytes()),
        hex::encode(owner.as_bytes()),
        hashed.target(),
    )
}

/// The `tag:` flags (`tryst serve --tag-*`, config keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct TagSettings {
    /// Longest lifetime of a published tag; longer Tag-Duration requests are capped, and a tag created without one gets this [default: 24h].
    #[arg(long, env = "TRYST_TAG_MAX_DURATION", value_name = "DURATION")]
    pub tag_max_duration: Option<HumanDuration>,
    /// Most tags (live and recently dead) per worker; creating one more is answered 503 [default: 100000].
    #[arg(long, env = "TRYST_TAG_MAX_TAGS", value_name = "N")]
    pub tag_max_tags: Option<usize>,
}

crate::config_keys::impl_settings_or!(TagSettings {
    tag_max_duration,
    tag_max_tags,
});

/// Prefix of a single-shot tag's consumption claim (`tryst:tag-once:<hashed tag hex>`).
pub const TAG_ONCE_PREFIX: &str = "tryst:tag-once:";

/// The `tag:` table limits: the tag flags, the proof window, and a publisher grace of
/// the client wait rounded up to whole seconds.
pub fn resolve(
    s: &TagSettings,
    cx: &crate::families::ResolveContext<'_>,
) -> Result<TagLimits, crate::config::ConfigError> {
    let (proof_window_secs, client_wait) = (cx.proof_window.as_secs(), cx.client_wait);
    use crate::config::invalid;
    let defaults = TagLimits::default();
    let max_duration = s
        .tag_max_duration
        .map_or_else(|| Duration::from_secs(defaults.max_duration_secs), |d| d.0);
    if max_duration < Duration::from_secs(1) || max_duration.subsec_nanos() != 0 {
        return Err(invalid(
            "tag-max-duration",
            "must be a whole number of seconds, at least 1s",
        ));
    }
    let max_tags = s.tag_max_tags.unwrap_or(defaults.max_tags);
    if !(1..=100_000_000).contains(&max_tags) {
        return Err(invalid("tag-max-tags", "must be between 1 and 100000000"));
    }
    Ok(TagLimits {
        max_tags,
        max_duration_secs: max_duration.as_secs(),
        proof_window_secs,
        // In a cluster the winning responder is paired only once its claim is decided
        // (at most the claim deadline later): the publisher is kept that much longer.
        publisher_grace_secs: client_wait.as_secs()
            + u64::from(client_wait.subsec_nanos() > 0)
            + if cx.clustered {
                tryst_engine::claim::CLAIM_DEADLINE.as_secs()
            } else {
                0
            },
        ..defaults
    })
}

/// Its settings as `tryst serve` resolves them (flags, config keys, refusals).
#[cfg(test)]
mod settings_tests {
    use crate::cli::Settings;
    use crate::config::tests::resolve;
    use crate::config::{ConfigError, parse_config};

    #[test]
    fn tag_settings_default_parse_and_validate() {
        let c = resolve(Settings::default()).unwrap();
        assert_eq!(c.families.tag.max_duration_secs, 24 * 3600);
        assert_eq!(c.families.tag.max_tags, 100_000);
        assert_eq!(c.families.tag.proof_window_secs, 60);
        // The publisher grace is the client wait (2 s by default), rounded up.
        assert_eq!(c.families.tag.publisher_grace_secs, 2);
        let s = parse_config(
            "tag-max-duration = \"10m\"\ntag-max-tags = 7\nclient-wait = \"1500ms\"\nproof-window = \"30s\"\n",
        )
        .unwrap();
        let c = resolve(s).unwrap();
        assert_eq!(c.families.tag.max_duration_secs, 600);
        assert_eq!(c.families.tag.max_tags, 7);
        assert_eq!(c.families.tag.publisher_grace_secs, 2);
        assert_eq!(c.families.tag.proof_window_secs, 30);
        for (text, key) in [
            ("tag-max-duration = \"0s\"\n", "tag-max-duration"),
            ("tag-max-duration = \"1500ms\"\n", "tag-max-duration"),
            ("tag-max-tags = 0\n", "tag-max-tags"),
        ] {
            match resolve(parse_config(text).unwrap()) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
    }
}
