//! TLS termination: a rustls server configuration per port whose certificate is chosen by SNI.
//!
//! The listener is chosen first (exact hostname, then wildcards most specific first, then the
//! listener without hostname); within it, the first certificate valid for the SNI name wins,
//! else its first certificate.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tollbridge_provider::{CertificateIr, ListenerIr};

use crate::hostmatch::{host_matches, listener_rank};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Secret {secret}: {message}")]
    Certificate { secret: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

struct Loaded {
    cert: Arc<CertifiedKey>,
    /// The end-entity certificate, for name checks.
    leaf: CertificateDer<'static>,
}

/// Certificates of the HTTPS listeners of one port.
pub struct SniResolver {
    /// (listener hostname, certificates), most specific hostname first.
    listeners: Vec<(Option<String>, Vec<Loaded>)>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").field("listeners", &self.listeners.len()).finish()
    }
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let listener = match sni {
            Some(name) => {
                self.listeners.iter().find(|(h, _)| h.as_deref().is_none_or(|h| host_matches(h, name)))
            }
            None => self.listeners.iter().find(|(h, _)| h.is_none()).or(self.listeners.first()),
        }?;
        let certs = &listener.1;
        let by_name = sni.and_then(|name| {
            let dns = DnsName::try_from(name.to_string()).ok()?;
            let server_name = ServerName::DnsName(dns);
            certs.iter().find(|c| {
                webpki::EndEntityCert::try_from(&c.leaf)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
            })
        });
        by_name.or(certs.first()).map(|c| c.cert.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The rustls configuration for the HTTPS listeners of one port; `None` when none is HTTPS.
pub fn server_config(listeners: &[&ListenerIr]) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let mut entries: Vec<(Option<String>, Vec<Loaded>)> = Vec::new();
    for listener in listeners.iter().filter(|l| !l.certificates.is_empty()) {
        let certs = listener.certificates.iter().map(load).collect::<Result<Vec<_>, _>>()?;
        entries.push((listener.hostname.clone(), certs));
    }
    if entries.is_empty() {
        return Ok(None);
    }
    entries.sort_by_key(|(h, _)| listener_rank(h.as_deref()));
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { listeners: entries }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn load(cert: &CertificateIr) -> Result<Loaded, TlsError> {
    let fail = |message: String| TlsError::Certificate { secret: cert.secret.clone(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.cert_chain_pem.expose())
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("tls.crt: {e}")))?;
    let leaf = chain.first().cloned().ok_or_else(|| fail("tls.crt holds no certificate".into()))?;
    let key = PrivateKeyDer::from_pem_slice(cert.private_key_pem.expose())
        .map_err(|e| fail(format!("tls.key: {e}")))?;
    let signing_key = ring::sign::any_supported_type(&key).map_err(|e| fail(format!("tls.key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| fail(format!("tls.key does not match tls.crt: {e}")))?;
    Ok(Loaded { cert: Arc::new(certified), leaf })
}
