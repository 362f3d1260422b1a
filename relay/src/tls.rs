//! The TLS listener's certificate: the operator's PEM files, or a self-signed pair
//! generated once into the data directory (as node-rendezvous's `make-cert` did), and
//! its SHA-256 fingerprint for hidden servers to pin.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names of the generated pair inside the data directory.
pub const GENERATED_CERT: &str = "tls-cert.pem";
/// See [`GENERATED_CERT`].
pub const GENERATED_KEY: &str = "tls-key.pem";

/// Why the TLS configuration could not be built. Caused by the operator's files or the
/// data directory.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate for {name:?}: {what}")]
    Generate {
        /// The certificate name.
        name: String,
        /// What went wrong.
        what: String,
    },
    /// rustls refused the certificate and key.
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A ready server configuration and what to tell the operator about it.
#[derive(Debug, Clone)]
pub struct LoadedTls {
    /// The rustls configuration every worker uses.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), as colon-separated upper-case hex.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
    /// True when it was generated just now.
    pub generated: bool,
}

/// Loads the operator's pair, or the generated pair in `data_dir` (generating it on
/// first use). Only the supervisor passes `generate = true`; workers load what the
/// supervisor wrote.
pub fn load(tls: &TlsConfig, data_dir: &Path, generate: bool) -> Result<LoadedTls, TlsError> {
    let (cert_path, key_path, generated) = match &tls.cert_and_key {
        Some((c, k)) => (c.clone(), k.clone(), false),
        None => {
            let c = data_dir.join(GENERATED_CERT);
            let k = data_dir.join(GENERATED_KEY);
            let fresh = generate && !c.exists();
            if fresh {
                generate_self_signed(&tls.name, &c, &k)?;
            }
            (c, k, fresh)
        }
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    let cert_pem = std::fs::read(&cert_path).map_err(io(&cert_path))?;
    let key_pem = std::fs::read(&key_path).map_err(io(&key_path))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "no certificate in the file".into(),
        });
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(LoadedTls {
        config: Arc::new(config),
        fingerprint,
        cert_path,
        generated,
    })
}

/// SHA-256 over a certificate's DER, `AB:CD:…`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn generate_self_signed(name: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let failed = |what: String| TlsError::Generate {
        name: name.to_owned(),
        what,
    };
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| failed(e.to_string()))?;
    params.subject_alt_names = vec![match name.parse::<std::net::IpAddr>() {
        Ok(ip) => rcgen::SanType::IpAddress(ip),
        Err(_) => rcgen::SanType::DnsName(
            name.to_owned()
                .try_into()
                .map_err(|e: rcgen::Error| failed(e.to_string()))?,
        ),
    }];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().map_err(|e| failed(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed(e.to_string()))?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    write_private(cert_path, cert.pem().as_bytes())?;
    Ok(())
}

/// Writes a file readable only by its owner ([`crate::files::write_private`], mode
/// 0600); an error names `path`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::files::write_private(path, bytes, 0o600).map_err(|e| TlsError::Io {
        path: path.to_path_buf(),
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_config(name: &str) -> TlsConfig {
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_and_key: None,
            name: name.into(),
        }
    }

    #[test]
    fn generates_once_then_reuses_the_same_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(&tls_config("127.0.0.1"), dir.path(), true).unwrap();
        assert!(first.generated);
        let second = load(&tls_config("127.0.0.1"), dir.path(), true).unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(GENERATED_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by others");
    }

    #[test]
    fn a_dns_name_is_accepted_and_workers_do_not_generate() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(&tls_config("relay.example"), dir.path(), false),
            Err(TlsError::Io { .. })
        ));
        assert!(load(&tls_config("relay.example"), dir.path(), true).is_ok());
    }

    #[test]
    fn garbage_pem_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let mut t = tls_config("x");
        t.cert_and_key = Some((cert.clone(), key));
        let err = load(&t, dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("c.pem"), "{err}");
    }
}
