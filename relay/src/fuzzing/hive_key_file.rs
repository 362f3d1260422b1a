//! The Hive device key file parser (`agent::hive_key::parse`, `tryst expose
//! --hive-key-file`) on arbitrary text: never panics; an accepted file has a TTL in range
//! and its canonical text (`to_text`) parses back to the same device, account, key and
//! TTL; a refusal never quotes the file's `signing_key` value.

use crate::agent::hive_key::{TTL, parse, to_text};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(key) => {
            assert!(TTL.contains(&key.ttl));
            let again = parse(&to_text(&key)).expect("the canonical text parses");
            assert_eq!(again.device.target, key.device.target);
            assert_eq!(again.device.account, key.device.account);
            assert_eq!(again.device.key.to_bytes(), key.device.key.to_bytes());
            assert_eq!(again.ttl, key.ttl);
        }
        Err(e) => {
            // A 64-hex-digit value anywhere in the input never shows up in the message.
            let message = e.to_string();
            for word in text.split(|c: char| !c.is_ascii_hexdigit()) {
                if word.len() == 64 {
                    assert!(!message.contains(word), "{message}");
                }
            }
        }
    }
}
