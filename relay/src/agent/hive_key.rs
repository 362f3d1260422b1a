//! The Hive device key file of `tryst expose --family hive --hive-key-file FILE` (and
//! `hive_key_file` in a `[[service]]` table): a small TOML file naming the device and
//! holding its Ed25519 signing key. It is a secret: keep it mode 0600.
//!
//! ```toml
//! workspace = "7e7e7e7e-7e7e-7e7e-7e7e-7e7e7e7e7e7e"   # workspaceID
//! device = "01010101-0101-0101-0101-010101010101"      # publisherDeviceID
//! account = "11111111-1111-1111-1111-111111111111"     # publisherAccountID
//! signing_key = "<64 hex digits>"                      # the Ed25519 key's 32-byte seed
//! ttl = 120                                            # optional: publication ttlSeconds
//! ```
//!
//! UUIDs are hyphenated 8-4-4-4-12 hex in any letter case; the seed is exactly 64 hex
//! digits (any case). Unknown keys are errors. `ttl` is 2 to 86400 seconds (default 120);
//! keep it within the relay's `--max-ttl`. [`parse`] is pure (the fuzz target
//! `hive_key_file` runs it) and never puts the seed in an error message.

use crate::hive::record::{format_uuid, parse_uuid};
use tryst_client::hive::{DEFAULT_TTL_SECS, Device, HiveTarget};

/// Smallest and largest `ttl` accepted.
pub const TTL: std::ops::RangeInclusive<u32> = 2..=86_400;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    workspace: String,
    device: String,
    account: String,
    signing_key: String,
    ttl: Option<u32>,
}

/// A parsed key file.
#[derive(Debug, Clone)]
pub struct HiveKey {
    /// The device (ids and signing key).
    pub device: Device,
    /// The publications' `ttlSeconds`.
    pub ttl: u32,
}

/// Why a key file was refused (never containing the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HiveKeyError {
    /// Not TOML of the expected shape (unknown or missing keys, wrong types).
    #[error("{0}")]
    Syntax(String),
    /// A UUID field is not a hyphenated UUID.
    #[error("{0} is not a hyphenated UUID")]
    Uuid(&'static str),
    /// The signing key is not 64 hex digits.
    #[error("signing_key is not 64 hex digits (the Ed25519 key's 32-byte seed)")]
    Key,
    /// `ttl` out of range.
    #[error("ttl must be 2 to 86400 seconds")]
    Ttl,
}

/// Parses a key file's text.
pub fn parse(text: &str) -> Result<HiveKey, HiveKeyError> {
    // toml's messages quote the offending line, and serde's quote unknown keys and
    // mistyped values: keep the seed out of them by naming only the position and the
    // file's own field names.
    let file: KeyFile = toml::from_str(text).map_err(|e| {
        let message = scrub(e.message());
        HiveKeyError::Syntax(match e.span() {
            Some(span) => format!("{message} (at byte {})", span.start),
            None => message,
        })
    })?;
    let workspace = parse_uuid(&file.workspace).ok_or(HiveKeyError::Uuid("workspace"))?;
    let device = parse_uuid(&file.device).ok_or(HiveKeyError::Uuid("device"))?;
    let account = parse_uuid(&file.account).ok_or(HiveKeyError::Uuid("account"))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(&file.signing_key, &mut seed).map_err(|_| HiveKeyError::Key)?;
    let ttl = file.ttl.unwrap_or(DEFAULT_TTL_SECS);
    if !TTL.contains(&ttl) {
        return Err(HiveKeyError::Ttl);
    }
    Ok(HiveKey {
        device: Device {
            target: HiveTarget { workspace, device },
            account,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        },
        ttl,
    })
}

/// The key file's field names: the only quoted words a refusal may repeat.
const FIELDS: [&str; 5] = ["workspace", "device", "account", "signing_key", "ttl"];

/// `message` with every quoted part (between backticks or double quotes) that is not one
/// of [`FIELDS`] replaced by `…`, anything after an unclosed quote dropped, and then every
/// run of [`HEX_RUN`] or more hex digits replaced by `…`: a seed pasted under a wrong or
/// misspelt name, or as the wrong type, never reaches a log. The quote pass alone is not
/// enough: a key that itself holds a backtick puts the pairing out of step (the fuzz
/// target `hive_key_file` found one), so the hex pass is what guarantees it.
fn scrub(message: &str) -> String {
    redact_hex_runs(&scrub_quoted(message))
}

/// Shortest run of hex digits [`redact_hex_runs`] replaces: long enough to spare the
/// English of toml's and serde's messages, short enough that no useful part of a 64-digit
/// seed survives.
const HEX_RUN: usize = 4;

/// `text` with every run of [`HEX_RUN`] or more ASCII hex digits replaced by `…`.
fn redact_hex_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |out: &mut String, run: &mut String| {
        if run.len() >= HEX_RUN {
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut out, &mut run);
            out.push(c);
        }
    }
    flush(&mut out, &mut run);
    out
}

/// The quote pass of [`scrub`].
fn scrub_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            out.push('…');
            return out;
        };
        let inner = &after[..close];
        out.push_str(if FIELDS.contains(&inner) {
            inner
        } else {
            "…"
        });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The canonical text of `key` (what [`parse`] reads back to the same key).
pub fn to_text(key: &HiveKey) -> String {
    format!(
        "workspace = \"{}\"\ndevice = \"{}\"\naccount = \"{}\"\nsigning_key = \"{}\"\nttl = {}\n",
        format_uuid(&key.device.target.workspace),
        format_uuid(&key.device.target.device),
        format_uuid(&key.device.account),
        hex::encode(key.device.key.to_bytes()),
        key.ttl
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &str = "7e7e7e7e-7e7e-7e7e-7e7e-7e7e7e7e7e7e";
    const DEV: &str = "01010101-0101-0101-0101-010101010101";
    const ACC: &str = "11111111-1111-1111-1111-111111111111";

    fn file(seed: &str, extra: &str) -> String {
        format!(
            "workspace = \"{WS}\"\ndevice = \"{DEV}\"\naccount = \"{ACC}\"\nsigning_key = \"{seed}\"\n{extra}"
        )
    }

    #[test]
    fn a_key_file_parses_and_round_trips() {
        let seed = "AB".repeat(32);
        let k = parse(&file(&seed, "")).unwrap();
        assert_eq!(k.ttl, DEFAULT_TTL_SECS);
        assert_eq!(k.device.target.workspace, [0x7e; 16]);
        assert_eq!(k.device.target.device, [0x01; 16]);
        assert_eq!(k.device.account, [0x11; 16]);
        assert_eq!(k.device.key.to_bytes(), [0xab; 32]);
        let again = parse(&to_text(&k)).unwrap();
        assert_eq!(again.device.key.to_bytes(), k.device.key.to_bytes());
        assert_eq!(again.device.target, k.device.target);
        assert_eq!(parse(&file(&seed, "ttl = 60")).unwrap().ttl, 60);
    }

    #[test]
    fn bad_key_files_are_refused_without_showing_the_key() {
        let seed = "cd".repeat(32);
        let cases: Vec<(String, HiveKeyError)> = vec![
            (file(&"cd".repeat(31), ""), HiveKeyError::Key),
            (file(&format!("{seed}00"), ""), HiveKeyError::Key),
            (file(&"zz".repeat(32), ""), HiveKeyError::Key),
            (file(&seed, "ttl = 1"), HiveKeyError::Ttl),
            (file(&seed, "ttl = 86401"), HiveKeyError::Ttl),
            (
                file(&seed, "").replace(WS, "7e7e"),
                HiveKeyError::Uuid("workspace"),
            ),
            (
                file(&seed, "").replace(DEV, "x"),
                HiveKeyError::Uuid("device"),
            ),
            (
                file(&seed, "").replace(ACC, ""),
                HiveKeyError::Uuid("account"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(&text).unwrap_err(), want, "{text}");
        }
        for text in [
            file(&seed, "colour = \"blue\""),
            file(&seed, "").replace("account", "acount"),
            file(&seed, "ttl = \"120\""),
            format!("{}\nsigning_key = \"{seed}\"", file(&seed, "")),
            "not toml".to_owned(),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(matches!(err, HiveKeyError::Syntax(_)), "{text}: {err}");
            assert!(!err.to_string().contains(&seed), "{err}");
        }
    }

    /// Found by the `hive_key_file` fuzz target: serde quotes an unknown key, and a
    /// mistyped value, in its message; a seed pasted there must not be repeated.
    #[test]
    fn a_seed_under_a_wrong_name_or_type_is_not_repeated() {
        let seed = "ef".repeat(32);
        for text in [
            format!("{seed} = 1\n{}", file(&seed, "")),
            file(&seed, &format!("ttl = \"{seed}\"")),
            file(&seed, "").replace("signing_key = ", &format!("signing_key{seed} = ")),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(!err.contains(&seed), "{err}");
        }
        // Field names stay readable.
        let err = parse(&file(&seed, "colour = 1")).unwrap_err().to_string();
        assert!(err.contains("unknown field `…`"), "{err}");
        assert!(err.contains("`signing_key`"), "{err}");
    }

    #[test]
    fn a_key_holding_a_backtick_does_not_put_the_seed_in_the_message() {
        // The fuzz finding: `"`d5…5evi@ce"=""` made toml quote a key that itself holds a
        // backtick, so the quote pass paired the wrong backticks.
        let digits = "5".repeat(63);
        let text = format!("\"`d{digits}evi@ce\"=\"\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(!err.contains(&format!("d{digits}")), "{err}");
        assert!(!err.contains("5555"), "{err}");
        assert!(err.contains("`signing_key`"), "{err}");
    }

    #[test]
    fn redact_hex_runs_hides_long_runs_only() {
        assert_eq!(
            redact_hex_runs("at byte 120: abc dead 0123456789"),
            "at byte 120: abc … …"
        );
        assert_eq!(redact_hex_runs("expected `ttl`"), "expected `ttl`");
    }

    #[test]
    fn scrub_keeps_field_names_and_hides_everything_else_quoted() {
        assert_eq!(
            scrub("unknown field `x`, expected `ttl`"),
            "unknown field `…`, expected `ttl`"
        );
        assert_eq!(
            scrub("invalid type: string \"abc\", expected u32"),
            "invalid type: string \"…\", expected u32"
        );
        assert_eq!(scrub("open `quote and more"), "open `…");
        assert_eq!(scrub("no quotes"), "no quotes");
    }
}
