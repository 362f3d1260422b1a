//! TLS to the relay with its certificate pinned by SHA-256 fingerprint, the way
//! `tryst serve` prints it (`tryst: tls certificate ... sha256 AA:BB:...`).
//!
//! Pin syntax ([`Pin::parse`]): `sha256:` (any case) followed by the 32-byte digest as 64
//! hex digits, optionally as 32 colon-separated pairs (the relay's spelling); hex digits in
//! any case; nothing else (no whitespace). Only the leaf certificate's digest is compared:
//! no CA, name or expiry check, so a self-signed relay certificate works and nothing but
//! that certificate does. The handshake signature is still verified with the pinned
//! certificate's key.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest pin text looked at (`sha256:` plus 32 pairs and 31 colons).
pub const MAX_PIN_LEN: usize = 7 + 95;

/// A pinned SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

/// Why a pin did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// Not `sha256:` followed by something.
    #[error("a pin starts with sha256:")]
    Scheme,
    /// The digest is not 64 hex digits (optionally colon-separated pairs).
    #[error("a pin is sha256: and 64 hex digits, optionally as colon-separated pairs")]
    Digest,
}

impl Pin {
    /// Parses `sha256:<64 hex>` or `sha256:<AA:BB:...>` (see the module docs).
    pub fn parse(text: &str) -> Result<Self, PinError> {
        if text.len() > MAX_PIN_LEN {
            return Err(PinError::Digest);
        }
        let digest = text
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sha256:"))
            .map(|_| &text[7..])
            .ok_or(PinError::Scheme)?;
        let hex: String = if digest.contains(':') {
            let pairs: Vec<&str> = digest.split(':').collect();
            if pairs.len() != 32 || pairs.iter().any(|p| p.len() != 2) {
                return Err(PinError::Digest);
            }
            pairs.concat()
        } else {
            digest.to_owned()
        };
        if hex.len() != 64 {
            return Err(PinError::Digest);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&hex, &mut out).map_err(|_| PinError::Digest)?;
        Ok(Self(out))
    }

    /// The pin of a DER certificate.
    pub fn of(cert: &[u8]) -> Self {
        Self(Sha256::digest(cert).into())
    }
}

impl FromStr for Pin {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// The relay presented another certificate than the pinned one (its digest is public:
/// `tryst serve` prints it).
#[derive(Debug, thiserror::Error)]
#[error("the relay's certificate is {got}, not the pinned {pinned} (--pin)")]
pub struct PinMismatch {
    /// The presented leaf certificate's fingerprint.
    pub got: Pin,
    /// The pin it was checked against.
    pub pinned: Pin,
}

/// A failed handshake's error, with a pin mismatch said in words: rustls prints a
/// [`PinMismatch`] inside its certificate error with `Debug`. Other errors are returned
/// as they are.
pub fn explain_pin_mismatch(e: std::io::Error) -> std::io::Error {
    let mismatch = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<PinMismatch>()
            }
            _ => None,
        })
        .map(ToString::to_string);
    match mismatch {
        Some(message) => std::io::Error::new(std::io::ErrorKind::InvalidData, message),
        None => e,
    }
}

/// Accepts exactly the pinned leaf certificate.
#[derive(Debug)]
struct PinVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Pin::of(end_entity.as_ref());
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    got,
                    pinned: self.pin,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client configuration that trusts only the certificate with `pin`.
pub fn pinned_config(pin: Pin) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default protocol versions.
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
        .with_no_client_auth();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn both_spellings_and_any_case_parse_to_the_same_pin() {
        let plain = Pin::parse(&format!("sha256:{HEX}")).unwrap();
        let pairs: Vec<String> = HEX
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap().to_uppercase())
            .collect();
        let colons = Pin::parse(&format!("SHA256:{}", pairs.join(":"))).unwrap();
        assert_eq!(plain, colons);
        assert_eq!(plain.to_string(), format!("sha256:{HEX}"));
        assert_eq!(Pin::parse(&plain.to_string()), Ok(plain));
    }

    #[test]
    fn malformed_pins_are_refused() {
        for (text, err) in [
            ("", PinError::Scheme),
            ("sha1:00", PinError::Scheme),
            (HEX, PinError::Scheme),
            ("sha256:", PinError::Digest),
            ("sha256:00", PinError::Digest),
            (&format!("sha256:{HEX}00")[..], PinError::Digest),
            (&format!("sha256:{}zz", &HEX[..62])[..], PinError::Digest),
            (&format!("sha256: {}", &HEX[1..])[..], PinError::Digest),
            ("sha256:0:011:22", PinError::Digest),
            ("sha256é", PinError::Scheme),
        ] {
            assert_eq!(Pin::parse(text), Err(err), "{text:?}");
        }
    }
}
