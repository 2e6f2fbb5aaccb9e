//! An OpenID Connect issuer on 127.0.0.1 (HTTPS, its certificate for `localhost`): a discovery
//! document and a key set the test can change or take down, and the keys to sign tokens with.

use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

use super::tls::TestCert;

/// A private key and its public JWK.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    private: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    /// A P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
        // The uncompressed point: 0x04, x, y.
        let point = pair.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwk =
            json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])});
        let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC signing key");
        Self { alg: Algorithm::ES256, kid: kid.to_string(), private, jwk }
    }

    /// An Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x});
        let private = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("Ed25519 signing key");
        Self { alg: Algorithm::EdDSA, kid: kid.to_string(), private, jwk }
    }

    /// A token of `claims`, naming this key.
    pub fn sign(&self, claims: &Value) -> String {
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(self.alg) };
        jsonwebtoken::encode(&header, claims, &self.private).expect("sign token")
    }
}

/// The key set of `keys`, as JSON.
pub fn key_set(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// The key set of `keys` as an issuer serves it: with an encryption key too (as Keycloak's
/// sets have), which verifiers must leave out rather than refuse the set for.
pub fn served_key_set(keys: &[&SigningKey]) -> String {
    let mut set: Value = serde_json::from_str(&key_set(keys)).expect("key set");
    let encryption =
        json!({"kty": "RSA", "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"});
    set["keys"].as_array_mut().expect("keys").push(encryption);
    set.to_string()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A running issuer.
pub struct Issuer {
    /// `https://localhost:<port>`.
    pub url: String,
    /// The certificate its clients must trust (write it to a file for `SSL_CERT_FILE`).
    pub cert: TestCert,
    keys: Arc<Mutex<Option<String>>>,
    served: Arc<Mutex<usize>>,
}

impl Issuer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let cert = TestCert::self_signed("localhost");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.der.clone()], key)
                .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let url = format!("https://localhost:{}", listener.local_addr().expect("address").port());
        let issuer = Self {
            url,
            cert,
            keys: Arc::new(Mutex::new(Some(served_key_set(keys)))),
            served: Arc::default(),
        };
        let (url, keys, served) = (issuer.url.clone(), issuer.keys.clone(), issuer.served.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, url, keys, served) =
                    (acceptor.clone(), url.clone(), keys.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let answer = answer(req.uri().path(), &url, &keys, &served);
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        issuer
    }

    /// Serves `keys` from now on; `None` answers 503 (the key set endpoint is down).
    pub fn serve(&self, keys: Option<String>) {
        *self.keys.lock().expect("keys") = keys;
    }

    /// Key set documents served so far.
    pub fn key_sets_served(&self) -> usize {
        *self.served.lock().expect("served")
    }

    /// Claims valid for an hour, for `audience` and consumer `sub`.
    pub fn claims(&self, audience: &str, sub: &str) -> Value {
        json!({"iss": self.url, "aud": audience, "sub": sub, "exp": now() + 3600, "iat": now()})
    }
}

fn answer(
    path: &str,
    url: &str,
    keys: &Mutex<Option<String>>,
    served: &Mutex<usize>,
) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/.well-known/openid-configuration" => {
            (StatusCode::OK, json!({"issuer": url, "jwks_uri": format!("{url}/keys")}).to_string())
        }
        "/keys" => match keys.lock().expect("keys").clone() {
            Some(set) => {
                *served.lock().expect("served") += 1;
                (StatusCode::OK, set)
            }
            None => (StatusCode::SERVICE_UNAVAILABLE, "down".to_string()),
        },
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
