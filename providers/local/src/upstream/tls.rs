//! TLS to backends: what a connection checks (the CAs it trusts, the name the certificate must
//! carry) and says (SNI), made once per backend when a configuration is compiled.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use tollbridge_provider::SubjectAltNameIr;

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
    /// TLS for `hostname` (SNI, and the name the certificate must be valid for unless
    /// `subject_alt_names` are given: then it must carry one of those), trusting the CAs in
    /// `ca_pem`, or the system's when there are none.
    pub fn new(
        hostname: &str,
        ca_pem: &[String],
        subject_alt_names: &[SubjectAltNameIr],
    ) -> Result<Arc<Self>, String> {
        let server_name = ServerName::try_from(hostname.to_string())
            .map_err(|_| format!("{hostname:?} is not a DNS name or IP address"))?;
        let pems: Vec<&[u8]> = ca_pem.iter().map(|pem| pem.as_bytes()).collect();
        let roots = trusted_roots(&pems)?;
        let trusted = if ca_pem.is_empty() {
            "system".to_string()
        } else {
            let digest = ca_pem.iter().fold(Sha256::new(), |digest, pem| digest.chain_update(pem.as_bytes()));
            hex::encode(&digest.finalize()[..8])
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let (config, checked) = if subject_alt_names.is_empty() {
            (builder.with_root_certificates(roots).with_no_client_auth(), hostname.to_string())
        } else {
            let verifier = SubjectAltNameVerifier::new(roots, provider, subject_alt_names.to_vec())?;
            let names: Vec<String> = subject_alt_names.iter().map(|n| format!("{n:?}")).collect();
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            (config, format!("{hostname}|{}", names.join(",")))
        };
        Ok(Arc::new(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            pool_suffix: format!("|tls|{checked}|{trusted}").into(),
        }))
    }

    /// The pool's name for connections to `address` made this way.
    pub fn pool_key(&self, address: &str) -> Arc<str> {
        Arc::from(format!("{address}{}", self.pool_suffix))
    }

    pub(crate) async fn handshake(&self, tcp: TcpStream) -> std::io::Result<UpstreamStream> {
        let tls = self.connector.connect(self.server_name.clone(), tcp).await?;
        Ok(UpstreamStream::Tls(Box::new(tls)))
    }
}

/// The address a pool key names (what precedes its TLS part, if any).
pub fn address_of(pool_key: &str) -> &str {
    pool_key.split('|').next().unwrap_or(pool_key)
}

/// The CAs to trust: the certificates in `ca_pem`, or the system's well-known CAs when it is
/// empty. Shared by every TLS client of the proxy (backends, the counter store).
pub(crate) fn trusted_roots(ca_pem: &[&[u8]]) -> Result<Arc<RootCertStore>, String> {
    if ca_pem.is_empty() {
        return system_roots();
    }
    let mut roots = RootCertStore::empty();
    for pem in ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("the CA certificate cannot be used: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err("the CA certificates hold no certificate".into());
    }
    Ok(Arc::new(roots))
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

/// Checks a backend's chain against the trusted CAs as rustls does, and then that its
/// certificate carries one of the policy's subject alternative names instead of the name it was
/// asked by (SNI): a DNS name as rustls matches names, a URI exactly.
#[derive(Debug)]
struct SubjectAltNameVerifier {
    roots: Arc<RootCertStore>,
    names: Vec<SubjectAltNameIr>,
    /// For the handshake's signatures, which are checked as usual.
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SubjectAltNameVerifier {
    fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        names: Vec<SubjectAltNameIr>,
    ) -> Result<Self, String> {
        let algorithms = provider.signature_verification_algorithms;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { roots, names, webpki, algorithms })
    }

    fn carries_one(&self, end_entity: &CertificateDer<'_>, parsed: &ParsedCertificate<'_>) -> bool {
        let uris: Vec<String> = webpki::EndEntityCert::try_from(end_entity)
            .map(|cert| cert.valid_uri_names().map(str::to_string).collect())
            .unwrap_or_default();
        self.names.iter().any(|name| match name {
            SubjectAltNameIr::Hostname(host) => ServerName::try_from(host.as_str())
                .is_ok_and(|server_name| verify_server_name(parsed, &server_name).is_ok()),
            SubjectAltNameIr::Uri(uri) => uris.iter().any(|presented| presented == uri),
        })
    }
}

impl ServerCertVerifier for SubjectAltNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.carries_one(end_entity, &parsed) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
