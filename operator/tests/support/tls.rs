//! Self-signed test certificates and a TLS client that trusts exactly them.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for one DNS name, in PEM (for a Secret) and DER (to compare).
pub struct TestCert {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    pub fn self_signed(name: &str) -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("generate certificate");
        Self {
            name: name.to_string(),
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            der: certified.cert.der().clone(),
        }
    }

    /// A `kubernetes.io/tls` Secret named `secret` holding this certificate (stringData).
    pub fn secret_yaml(&self, secret: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\ntype: kubernetes.io/tls\nstringData:\n  \
             tls.crt: |\n{}  tls.key: |\n{}",
            indent(&self.cert_pem, 4),
            indent(&self.key_pem, 4)
        )
    }
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// A client configuration trusting `certs` only, offering `alpn` protocols.
pub fn client_config(certs: &[&TestCert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.der.clone()).expect("trust test certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects to 127.0.0.1:`port` and completes a handshake with SNI `sni`.
pub async fn connect(
    port: u16,
    sni: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("server name {sni}: {e}"))?;
    let handshake = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake with SNI {sni}: {e}")),
        Err(_) => Err(format!("TLS handshake with SNI {sni} timed out")),
    }
}

/// The end-entity certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented no certificate")
        .clone()
        .into_owned()
}

/// The protocol agreed by ALPN.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}
