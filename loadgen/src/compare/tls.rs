//! The sink's TLS side for the `-tls` targets: a self-signed certificate for 127.0.0.1
//! made for this run, the acceptor the sink's TLS listener uses, the PEM file HAProxy
//! presents to the generator, and the client that trusts it.

use crate::transport::TlsClient;
use anyhow::{Context as _, Result};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A certificate for 127.0.0.1 and everything the TLS targets need of it.
pub(super) struct SinkTls {
    /// What the sink's TLS listener terminates with (TLS 1.3 and 1.2, rustls with ring).
    pub(super) acceptor: TlsAcceptor,
    /// A client trusting the certificate (the generator's, to direct-tls and
    /// haproxy-tls).
    pub(super) client: TlsClient,
    /// Certificate and key in one PEM file (HAProxy's `crt`).
    pub(super) combined_pem: PathBuf,
    /// The sink's TLS listener, once bound.
    pub(super) addr: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl SinkTls {
    /// A fresh self-signed certificate for 127.0.0.1, its files in a private temp dir.
    pub(super) fn generate() -> Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .context("generating the sink's certificate")?;
        let cert_pem = cert.cert.pem();
        let key_pem = cert.key_pair.serialize_pem();
        let dir = tempfile::Builder::new()
            .prefix("loadgen-compare-tls-")
            .tempdir()?;
        let combined_pem = dir.path().join("sink.pem");
        crate::proto::write_private_atomic(&combined_pem, &format!("{cert_pem}{key_pem}"))?;
        let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes())?];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the sink's TLS configuration")?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client: TlsClient::from_pem(cert_pem.as_bytes(), "127.0.0.1")?,
            combined_pem,
            addr: None,
            _dir: dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(flavor = "current_thread")]
    async fn the_generated_certificate_is_accepted_by_its_client() {
        let tls = SinkTls::generate().unwrap();
        let pem = std::fs::read_to_string(&tls.combined_pem).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(tcp).await.unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = tls.client.handshake(tcp).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
        server.await.unwrap();
    }
}
