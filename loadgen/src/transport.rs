//! How hidden servers and clients reach the relay: plain TCP or TLS (rustls with the ring
//! provider, through tokio-rustls), behind one stream type, [`Conn`].

use crate::net::Failure;
use anyhow::{Context as _, Result, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where the trust anchors come from when `--tls-ca` is not given with `--relay`.
pub(crate) const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a worker needs to speak TLS to the relay (sent in its spec).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TlsSpec {
    /// PEM file with the certificates to trust (the relay's own for a self-signed one).
    pub(crate) ca: PathBuf,
    /// The name (DNS name or IP address) the relay's certificate must carry.
    pub(crate) name: String,
}

/// Checks that `name` can be a TLS server name (a DNS name or an IP address).
pub(crate) fn check_server_name(name: &str) -> Result<()> {
    match ServerName::try_from(name.to_owned()) {
        Ok(_) => Ok(()),
        Err(_) => bail!("--tls-name {name:?} is neither a DNS name nor an IP address"),
    }
}

/// A TLS client ready to handshake with the relay.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts every certificate in the PEM file `ca` and expects `name` on the relay's.
    pub(crate) fn load(spec: &TlsSpec) -> Result<Self> {
        let pem =
            std::fs::read(&spec.ca).with_context(|| format!("reading {}", spec.ca.display()))?;
        Self::from_pem(&pem, &spec.name).with_context(|| format!("in {}", spec.ca.display()))
    }

    /// As [`TlsClient::load`], from PEM bytes.
    pub(crate) fn from_pem(pem: &[u8], name: &str) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| anyhow::anyhow!("unreadable PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("certificate not usable as a trust anchor: {e}"))?;
        }
        if roots.is_empty() {
            bail!("no certificate found");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| anyhow::anyhow!("{name:?} is neither a DNS name nor an IP address"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Runs the client handshake over `tcp`.
    pub(crate) async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// Names an I/O error of a TLS stream for the errors table: the rustls error when there
/// is one (e.g. `invalid peer certificate: UnknownIssuer`), else the I/O error kind.
pub(crate) fn tls_failure(step: &str, e: &io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Failure(format!("{step}: {tls}")),
        None => Failure::io(step, e),
    }
}

/// Whether `path` exists, for the default trust anchors.
pub(crate) fn system_ca_bundle() -> Option<PathBuf> {
    let p = Path::new(SYSTEM_CA_BUNDLE);
    p.is_file().then(|| p.to_path_buf())
}

/// A connection to the relay, plain or TLS.
pub(crate) enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream whose read and write sides can run at the same time (the echo round trip
/// writes and reads together so large sizes cannot deadlock).
pub(crate) trait SplitIo {
    /// The two sides, borrowed.
    fn io_split(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_);
}

impl SplitIo for TcpStream {
    fn io_split(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
        self.split()
    }
}

impl SplitIo for Conn {
    fn io_split(&mut self) -> (impl AsyncRead + Unpin + '_, impl AsyncWrite + Unpin + '_) {
        // A rustls stream has one state for both directions: tokio's split shares it.
        let (r, w): (
            Box<dyn AsyncRead + Unpin + '_>,
            Box<dyn AsyncWrite + Unpin + '_>,
        ) = match self {
            Self::Plain(s) => {
                let (r, w) = s.split();
                (Box::new(r), Box::new(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(s.as_mut());
                (Box::new(r), Box::new(w))
            }
        };
        (r, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(check_server_name("127.0.0.1").is_ok());
        assert!(check_server_name("::1").is_ok());
        assert!(check_server_name("relay.example.org").is_ok());
        assert!(check_server_name("not a name").is_err());
        assert!(check_server_name("").is_err());
    }

    #[test]
    fn refuses_pem_without_certificates() {
        assert!(TlsClient::from_pem(b"", "127.0.0.1").is_err());
        assert!(TlsClient::from_pem(b"hello\n", "127.0.0.1").is_err());
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(TlsClient::from_pem(junk, "127.0.0.1").is_err());
    }

    #[test]
    fn tls_failure_names_the_rustls_error() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let f = tls_failure("client/tls handshake", &e);
        assert!(
            f.0.starts_with("client/tls handshake: invalid peer certificate"),
            "{f:?}"
        );
        let f = tls_failure(
            "client/tls handshake",
            &io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert_eq!(f.0, "client/tls handshake: ConnectionReset");
    }
}
