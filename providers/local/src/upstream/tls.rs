//! TLS to backends: what a connection checks (the CAs it trusts, the name the certificate must
//! carry) and says (SNI), made once per backend when a configuration is compiled.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::UpstreamStream;

/// How to speak TLS to one backend.
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// Tells apart, in the pool, connections to one address checked in different ways.
    pool_suffix: Box<str>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("pool", &self.pool_suffix).finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// TLS for `hostname` (SNI, and the name the certificate must be valid for), trusting the CAs
    /// in `ca_pem`, or the system's when there are none.
    pub fn new(hostname: &str, ca_pem: &[String]) -> Result<Arc<Self>, String> {
        let server_name = ServerName::try_from(hostname.to_string())
            .map_err(|_| format!("{hostname:?} is not a DNS name or IP address"))?;
        let (roots, trusted) = if ca_pem.is_empty() {
            (system_roots()?, "system".to_string())
        } else {
            let mut roots = RootCertStore::empty();
            let mut digest = Sha256::new();
            for pem in ca_pem {
                digest.update(pem.as_bytes());
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| format!("a CA certificate is not PEM: {e}"))?;
                    roots.add(cert).map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
                }
            }
            if roots.is_empty() {
                return Err("the CA certificates hold no certificate".into());
            }
            (Arc::new(roots), hex::encode(&digest.finalize()[..8]))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            pool_suffix: format!("|tls|{hostname}|{trusted}").into(),
        }))
    }

    /// The pool's name for connections to `address` made this way.
    pub fn pool_key(&self, address: &str) -> Arc<str> {
        Arc::from(format!("{address}{}", self.pool_suffix))
    }

    pub(super) async fn handshake(&self, tcp: TcpStream) -> std::io::Result<UpstreamStream> {
        let tls = self.connector.connect(self.server_name.clone(), tcp).await?;
        Ok(UpstreamStream::Tls(Box::new(tls)))
    }
}

/// The address a pool key names (what precedes its TLS part, if any).
pub fn address_of(pool_key: &str) -> &str {
    pool_key.split('|').next().unwrap_or(pool_key)
}

/// The system's well-known CAs, read once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system CA certificates were found".into());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}
