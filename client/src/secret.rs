//! The shared secret of a native rendezvous id, read exactly as `tryst provision` prints
//! it: unpadded base64url, surrounding whitespace ignored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::path::{Path, PathBuf};
use tryst_engine::auth::Secret;

/// Fewest secret bytes accepted (the relay's own minimum).
pub const MIN_SECRET_LEN: usize = 16;
/// Most secret bytes accepted (the relay's own maximum).
pub const MAX_SECRET_LEN: usize = 1024;

/// Why a secret could not be read. Never contains the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read.
    #[error("secret file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not unpadded base64url.
    #[error("the secret is not unpadded base64url (as tryst provision prints it)")]
    Encoding,
    /// Too short or too long once decoded.
    #[error("the secret decodes to {0} bytes; {MIN_SECRET_LEN} to {MAX_SECRET_LEN} expected")]
    Length(usize),
}

/// Decodes a secret as printed by `tryst provision` (whitespace around it ignored).
pub fn decode(text: &str) -> Result<Secret, SecretError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| SecretError::Encoding)?;
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
        return Err(SecretError::Length(bytes.len()));
    }
    Ok(Secret::new(bytes))
}

/// Reads and decodes a secret file.
pub fn read_file(path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_provision_prints_and_ignores_whitespace() {
        let text = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(decode(&format!("  {text}\n")).unwrap().expose(), &[7u8; 32]);
    }

    #[test]
    fn refuses_bad_encodings_and_lengths_without_echoing_the_text() {
        let err = decode("not base64!").unwrap_err();
        assert!(matches!(err, SecretError::Encoding));
        assert!(!err.to_string().contains("base64!"));
        assert!(matches!(
            decode(&URL_SAFE_NO_PAD.encode([1u8; 8])),
            Err(SecretError::Length(8))
        ));
        // Padded base64 is not what provision prints.
        assert!(decode("AAAAAAAAAAAAAAAAAAAAAA==").is_err());
    }
}
