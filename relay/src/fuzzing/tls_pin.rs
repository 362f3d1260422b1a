//! The certificate pin syntax (`tryst_client::tls::Pin::parse`, used by `--pin` and the
//! agent config) on arbitrary text: never panics; an accepted pin's canonical spelling
//! (`sha256:<64 lower-case hex>`) parses back to the same digest and is what the input
//! says, case and colons aside.

use tryst_client::tls::Pin;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pin) = Pin::parse(text) else {
        return;
    };
    let canonical = pin.to_string();
    assert_eq!(Pin::parse(&canonical), Ok(pin));
    let squashed: String = text
        .to_ascii_lowercase()
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let want: String = canonical.chars().filter(|c| *c != ':').collect();
    assert_eq!(squashed, want);
}
