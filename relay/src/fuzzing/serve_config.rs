//! The `tryst serve --config` parser (`config::parse_config`, which reads the file key by
//! key and hands each key to the settings group that owns it: the relay's own or a
//! family's, see `config_keys`) on arbitrary text: never panics; a file whose top-level
//! table names a key no group owns is refused naming that key; an accepted file names
//! only known keys, and reading it key by key (each `key = value` alone, merged) gives
//! exactly what reading it whole gave; an accepted `id-listen` port reads back from how
//! it is shown; resolving an accepted file never panics.

use crate::cli::Settings;
use crate::config::{HostLimits, ServeConfig, parse_config};
use std::path::Path;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_config(text);
    // The reference: the same text as a plain TOML table.
    let table = text.parse::<toml::Table>().ok();
    let known = Settings::config_keys();
    let unknown = table
        .as_ref()
        .and_then(|t| t.keys().find(|k| !known.contains(&k.as_str())));
    if let (Some(key), Some(table)) = (unknown, &table) {
        assert!(parsed.is_err(), "accepted the unknown key `{key}`");
        // Alone, the key is refused by name, with the list of every key.
        let mut one = toml::Table::new();
        one.insert(key.clone(), table[key].clone());
        let message = parse_config(&one.to_string()).unwrap_err();
        assert!(
            message.contains(&format!("unknown field `{key}`, expected one of `listen`")),
            "{message}"
        );
    }
    match &parsed {
        Err(_) => {}
        Ok(settings) => {
            let table = table.expect("an accepted file is a TOML table");
            // Key by key: each entry alone parses, and the merge is the whole.
            let mut merged = Settings::default();
            for (key, value) in &table {
                let mut one = toml::Table::new();
                one.insert(key.clone(), value.clone());
                let alone = parse_config(&one.to_string())
                    .unwrap_or_else(|e| panic!("`{key}` alone refused: {e}"));
                merged = merged.or(alone);
            }
            assert_eq!(&merged, settings);
            // Every `id-listen` port reads back from how it is shown (the start-up line).
            for entry in settings.id_listen.iter().flatten() {
                let shown = entry.to_string();
                assert_eq!(
                    shown.parse::<crate::cli::IdListen>().as_ref(),
                    Ok(entry),
                    "{shown}"
                );
            }
            let env = |name: &str| (name == "HOME").then(|| "/home/fuzz".into());
            let host = HostLimits {
                nofile_hard: 1 << 16,
                cores: 2,
            };
            let _ = ServeConfig::resolve(settings.clone(), &env, Ok(Path::new("/cwd")), host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_key_and_a_relay_key_merge_as_read_whole() {
        run(b"threads = 3\npico-wait = \"2s\"\nmirror = [\"http://127.0.0.1:1\"]\n");
        run(b"listen = \"127.0.0.1:1\"\nno-such-key = 1\n");
        run(b"[tls]\nlisten = 1\n");
        run(b"id-listen = [\"[::1]:22 = 0B6C6F1E-3C4B-4A8E-9D2F-6A1C2B3D4E5F\"]\n");
        run(b"id-listen = [\"127.0.0.1:22=x\"]\n");
    }
}
