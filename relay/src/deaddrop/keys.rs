//! The relay's own RSA key pair: loaded from a PKCS#8 PEM file, or generated (2048-bit)
//! into it on first start with mode 0600, written atomically.
//!
//! Only the public half leaves this module: [`load_or_generate`] drops the private key
//! before returning, so no request path can sign or decrypt with it. That is the
//! property that keeps RUSTSEC-2023-0071 (Marvin: timing of `rsa`'s private-key
//! operations) unreachable; `tests::no_rsa_private_key_operation_outside_key_loading`
//! fails if a private-key type or operation appears anywhere else in the relay.

use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use std::io;
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
/// Returns its public half and whether the key was generated now; the private key is
/// dropped here (nothing in the relay signs or decrypts with it).
pub fn load_or_generate(path: &Path) -> Result<(RsaPublicKey, bool), KeyError> {
    load_or_generate_private(path).map(|(key, generated)| (key.to_public_key(), generated))
}

fn load_or_generate_private(path: &Path) -> Result<(RsaPrivateKey, bool), KeyError> {
    if let Some((_, key)) = read_existing(path)? {
        return Ok((key, false));
    }
    let (key, pem) = generate(path)?;
    crate::files::write_private(path, pem.as_bytes(), 0o600).map_err(|e| KeyError::Io {
        path: path.to_owned(),
        source: e.source,
    })?;
    Ok((key, true))
}

/// What `--check-config` can say of the key at `path` without writing anything: an
/// existing file must be a PKCS#8 RSA private key PEM (a missing one is generated at
/// start).
pub fn check(path: &Path) -> Result<(), KeyError> {
    read_existing(path).map(drop)
}

/// The key a node offers for the cluster (PostgreSQL store): the PKCS#8 PEM at `path`
/// if the file exists, else a new key that is not written to disk (the database keeps
/// the one that wins).
pub fn offer_shared(path: &Path) -> Result<String, KeyError> {
    match read_existing(path)? {
        Some((text, _)) => Ok(text),
        None => generate(path).map(|(_, pem)| pem.to_string()),
    }
}

/// The key file at `path` as its PEM text and the key it holds, or `None` when there is
/// no such file. Every reader of the key file (start, `--check-config`, the cluster's
/// offer) goes through here, so all refuse the same files the same way.
fn read_existing(path: &Path) -> Result<Option<(String, RsaPrivateKey)>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = RsaPrivateKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            Ok(Some((text, key)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A new [`KEY_BITS`] key and its PKCS#8 PEM, wiped from memory when dropped (`path`
/// names it in errors only).
fn generate(path: &Path) -> Result<(RsaPrivateKey, Zeroizing<String>), KeyError> {
    let io_err = |e: &dyn std::fmt::Display| KeyError::Io {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    };
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS).map_err(|e| io_err(&e))?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| io_err(&e))?;
    Ok((key, pem))
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
        let pem = public_pem(&k1);
        assert_eq!(pem, public_pem(&k2));
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----"));
        assert!(crate::deaddrop::proof::parse_public_key(&pem).is_ok());

        std::fs::write(dir.path().join("bad.pem"), "nope").unwrap();
        assert!(matches!(
            load_or_generate(&dir.path().join("bad.pem")),
            Err(KeyError::Parse { .. })
        ));
    }

    /// RUSTSEC-2023-0071 is ignored in deny.toml because no RSA private-key operation
    /// (signing, decryption) runs in the relay: the only private key is the dead-drop's
    /// own, loaded or generated at start-up in this file and dropped at once. This scans
    /// every non-test source file of the relay and fails if a private-key type or
    /// operation of `rsa` shows up, or `RsaPrivateKey` outside this file, so the ignore
    /// cannot silently become wrong. Unit tests (`#[cfg(test)] mod tests`, last in each
    /// file, or in a `tests.rs`) and `src/fuzzing/` (built only for tests and fuzzing)
    /// may sign.
    #[test]
    fn no_rsa_private_key_operation_outside_key_loading() {
        // Anything that signs or decrypts with an RSA private key in rsa 0.9.
        const OPERATIONS: &[&str] = &[
            "SigningKey",
            "BlindedSigningKey",
            "RandomizedSigner",
            "sign_with_rng",
            "DecryptingKey",
            "Decryptor",
            "decrypt",
            "Pkcs1v15Encrypt",
            "Pkcs1v15Sign",
            "Oaep",
            "pss::Pss",
            "PrivateKeyParts",
        ];
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path != src.join("fuzzing") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs")
                {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 20, "scanned only {} files", files.len());
        let mut found = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let this_file = path.ends_with("deaddrop/keys.rs");
            // Other families sign and verify Ed25519 (`ed25519_dalek::SigningKey`);
            // only files that use `rsa` are held to the operation list.
            let uses_rsa = code.contains("rsa::");
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or_default();
                let mut bad: Vec<&str> = OPERATIONS
                    .iter()
                    .copied()
                    .filter(|op| uses_rsa && line.contains(op))
                    .collect();
                if !this_file && line.contains("RsaPrivateKey") {
                    bad.push("RsaPrivateKey");
                }
                if !bad.is_empty() {
                    found.push(format!("{}:{}: {bad:?}", path.display(), n + 1));
                }
            }
        }
        assert!(
            found.is_empty(),
            "RSA private-key use outside key loading; RUSTSEC-2023-0071 (deny.toml) \
             would no longer be unreachable:\n{}",
            found.join("\n")
        );
        // The scan sees the key loader itself, so it would see an operation added there.
        let me = std::fs::read_to_string(src.join("deaddrop/keys.rs")).unwrap();
        assert!(me.contains("RsaPrivateKey::new("));
    }
}
