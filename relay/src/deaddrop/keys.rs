//! The relay's own RSA key pair: loaded from a PKCS#8 PEM file, or generated (2048-bit)
//! into it on first start with mode 0600, written atomically.

use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Size of a generated key.
pub const KEY_BITS: usize = 2048;

/// Why the relay key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("dead-drop key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a PKCS#8 RSA private key PEM.
    #[error("dead-drop key {path}: not a PKCS#8 RSA private key PEM ({message})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The public half as served at `/pubkey`: SubjectPublicKeyInfo PEM, LF line endings,
/// without a trailing newline (as PyCryptodome writes it, and upstream serves).
pub fn public_pem(key: &RsaPublicKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Loads the key at `path`, or generates one there if the file does not exist.
/// Returns the key and whether it was generated now.
pub fn load_or_generate(path: &Path) -> Result<(RsaPrivateKey, bool), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => RsaPrivateKey::from_pkcs8_pem(&text)
            .map(|k| (k, false))
            .map_err(|e| KeyError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS)
                .map_err(|e| io_err(io::Error::other(e.to_string())))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| io_err(io::Error::other(e.to_string())))?;
            let dir = path.parent().unwrap_or_else(|| Path::new("."));
            let tmp = dir.join(format!(
                ".{}.tmp{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
                std::process::id()
            ));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err)?;
            f.write_all(pem.as_bytes()).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
            drop(f);
            std::fs::rename(&tmp, path).map_err(io_err)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok((key, true))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The key a node offers for the cluster (PostgreSQL store): the PKCS#8 PEM at `path`
/// if the file exists, else a new key that is not written to disk (the database keeps
/// the one that wins).
pub fn offer_shared(path: &Path) -> Result<String, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            RsaPrivateKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            Ok(text)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS)
                .map_err(|e| io_err(io::Error::other(e.to_string())))?;
            key.to_pkcs8_pem(LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|e| io_err(io::Error::other(e.to_string())))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The `/pubkey` PEM of a PKCS#8 private key PEM.
pub fn public_pem_of(private_pem: &str) -> Result<String, String> {
    RsaPrivateKey::from_pkcs8_pem(private_pem)
        .map(|k| public_pem(&k.to_public_key()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let (k1, fresh) = load_or_generate(&path).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, fresh) = load_or_generate(&path).unwrap();
        assert!(!fresh);
        let pem = public_pem(&k1.to_public_key());
        assert_eq!(pem, public_pem(&k2.to_public_key()));
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----"));
        assert!(crate::deaddrop::proof::parse_public_key(&pem).is_ok());

        std::fs::write(dir.path().join("bad.pem"), "nope").unwrap();
        assert!(matches!(
            load_or_generate(&dir.path().join("bad.pem")),
            Err(KeyError::Parse { .. })
        ));
    }
}
