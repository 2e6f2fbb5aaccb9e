//! JSON Web Tokens: who a bearer token names, checked against its issuer's public keys.
//!
//! A token is accepted when its header names an asymmetric algorithm that one of the issuer's
//! keys allows (the key's `kid` when the token names one), its signature verifies with that key,
//! `iss` is the issuer, `aud` names one of the audiences (when any are configured), `exp` is in
//! the future and `nbf` (if any) in the past, 60 seconds of clock skew allowed, and every
//! required claim has one of its values. The consumer is the consumer claim's value.
//!
//! Symmetric algorithms (HS*) and `none` are never accepted: the keys are public, so a token
//! "signed" with them as an HMAC secret would be forged by anyone.
//!
//! A signature check costs tens to hundreds of microseconds (ES256 the most), and clients send
//! one token many times: accepted tokens are remembered by their SHA-256 until they expire or the
//! key set changes, at most [`MAX_REMEMBERED`] per policy (then forgotten all at once).

use std::sync::{Arc, Mutex};

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollbridge_provider::jwks::{self, Algorithm, PublicKey};
use tollbridge_provider::{JwksIr, JwtIr, RequiredClaimIr};

use super::headers;
use super::key_sets::{self, KeySource, RemoteKeys};
use super::keys::KeyHash;
use super::Decision;
use crate::fast_hash::FastMap;

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;
/// Keys tried for a token that names no `kid`.
const MAX_KEYS_TRIED: usize = 4;
/// Longest consumer name taken from a token.
const MAX_CONSUMER_LEN: usize = 256;
/// Accepted tokens remembered per policy.
const MAX_REMEMBERED: usize = 4096;

/// The verifying keys of one key set.
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

struct VerifyingKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// The keys of a JSON Web Key Set given inline, refused as [`jwks::parse`] refuses them.
    pub(crate) fn parse(json: &str) -> Result<Self, String> {
        Self::from_keys(jwks::parse(json).map_err(|e| e.to_string())?)
    }

    /// The usable keys of a set an issuer serves ([`jwks::parse_usable`]), and what was left
    /// out.
    pub(crate) fn parse_served(json: &str) -> Result<(Self, Vec<String>), String> {
        let (keys, skipped) = jwks::parse_usable(json).map_err(|e| e.to_string())?;
        Ok((Self::from_keys(keys)?, skipped.iter().map(ToString::to_string).collect()))
    }

    fn from_keys(parsed: Vec<jwks::Jwk>) -> Result<Self, String> {
        let keys = parsed
            .into_iter()
            .enumerate()
            .map(|(i, jwk)| {
                let key = match &jwk.key {
                    PublicKey::Rsa { n, e } => DecodingKey::from_rsa_components(n, e),
                    PublicKey::Ec { x, y, .. } => DecodingKey::from_ec_components(x, y),
                    PublicKey::Ed25519 { x } => DecodingKey::from_ed_components(x),
                }
                .map_err(|e| format!("key {i}: {e}"))?;
                Ok(VerifyingKey { algorithms: jwk.algorithms(), kid: jwk.kid, key })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// One policy's token check, compiled on reload.
pub(crate) struct TokenCheck {
    issuer: String,
    audiences: Vec<String>,
    keys: KeySource,
    consumer_claim: String,
    required_claims: Vec<RequiredClaimIr>,
    /// `None` when the configured name is not a valid header name.
    pub(crate) consumer_header: Option<HeaderName>,
    pub(crate) forward_token: bool,
    /// Accepted tokens by SHA-256.
    remembered: Mutex<FastMap<[u8; 32], Remembered>>,
}

/// An accepted token: its consumer, until when, and under which key set.
struct Remembered {
    consumer: TokenConsumer,
    expires_at: i64,
    keys: Arc<KeySet>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCheck")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("keys", &self.keys)
            .field("consumer_claim", &self.consumer_claim)
            .finish_non_exhaustive()
    }
}

/// A token's consumer, once the token is accepted.
#[derive(Clone, Debug)]
pub(crate) struct TokenConsumer {
    pub(crate) name: Arc<str>,
    pub(crate) header: HeaderValue,
    /// The counters' subject: the name's SHA-256, hashed once per accepted token.
    pub(crate) subject: KeyHash,
}

/// Why a request's token is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No bearer token: 401 with a plain challenge.
    Missing,
    /// A token that cannot be accepted: 401 `invalid_token`.
    Invalid(String),
    /// A valid token without the required claims: 403 `insufficient_scope`.
    Insufficient(String),
}

impl Refusal {
    fn invalid(reason: &str) -> Self {
        Self::Invalid(reason.to_string())
    }

    /// The answer, with the `WWW-Authenticate` challenge of RFC 6750.
    pub(crate) fn decision(&self) -> Decision {
        let (status, code, message, challenge) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "a bearer token is required in the Authorization header",
                "Bearer realm=\"tollbridge\"".to_string(),
            ),
            Self::Invalid(reason) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                reason.as_str(),
                format!(
                    "Bearer realm=\"tollbridge\", error=\"invalid_token\", error_description=\"{reason}\""
                ),
            ),
            Self::Insufficient(reason) => (
                StatusCode::FORBIDDEN,
                "insufficient_claims",
                reason.as_str(),
                "Bearer realm=\"tollbridge\", error=\"insufficient_scope\"".to_string(),
            ),
        };
        let mut map = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            map.insert(WWW_AUTHENTICATE, value);
        }
        headers::deny(status, map, code, message)
    }
}

impl TokenCheck {
    /// Compiles a policy's `jwt` section; a remote key set is shared with every policy naming
    /// the same source and fetched in the background.
    pub(crate) fn compile(policy: &str, ir: &JwtIr) -> Self {
        let keys = match &ir.jwks {
            JwksIr::Inline(json) => match KeySet::parse(json) {
                Ok(set) => KeySource::Fixed(Arc::new(set)),
                Err(error) => {
                    // The translator refuses such a policy; a hand-written IR lands here.
                    tracing::error!(policy, %error, "inline key set unusable; every token is refused");
                    KeySource::Fixed(Arc::new(KeySet { keys: Vec::new() }))
                }
            },
            JwksIr::Uri(uri) => {
                KeySource::Fetched(RemoteKeys::shared(key_sets::Location::KeySet(uri.clone())))
            }
            JwksIr::OpenIdDiscovery => {
                KeySource::Fetched(RemoteKeys::shared(key_sets::Location::Discovery {
                    issuer: ir.issuer.clone(),
                    url: ir.discovery_url(),
                }))
            }
        };
        let consumer_header = HeaderName::from_bytes(ir.consumer_header.as_bytes()).ok();
        if consumer_header.is_none() {
            tracing::warn!(policy, header = %ir.consumer_header, "ignoring invalid consumer header name");
        }
        Self {
            issuer: ir.issuer.clone(),
            audiences: ir.audiences.clone(),
            keys,
            consumer_claim: ir.consumer_claim.clone(),
            required_claims: ir.required_claims.clone(),
            consumer_header,
            forward_token: ir.forward_token,
            remembered: Mutex::default(),
        }
    }

    /// The consumer named by the request's bearer token, or why it is refused.
    pub(crate) fn check(&self, req: &http::request::Parts) -> Result<TokenConsumer, Refusal> {
        let token = bearer_token(req)?;
        let Some(keys) = self.keys.current() else {
            return Err(Refusal::invalid("the issuer's signing keys are not available yet"));
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jiff::Timestamp::now().as_second();
        if let Some(consumer) = self.recall(&digest, &keys, now) {
            return Ok(consumer);
        }
        let claims = self.verify(token, &keys)?;
        self.require_claims(&claims)?;
        let consumer = self.consumer(&claims)?;
        if let Some(expires_at) = claims.get("exp").and_then(Value::as_i64) {
            self.remember(digest, &consumer, expires_at, keys);
        }
        Ok(consumer)
    }

    /// The consumer of a token accepted before, while it is unexpired under the same keys.
    fn recall(&self, digest: &[u8; 32], keys: &Arc<KeySet>, now: i64) -> Option<TokenConsumer> {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let hit = remembered.get(digest)?;
        (now < hit.expires_at && Arc::ptr_eq(&hit.keys, keys)).then(|| hit.consumer.clone())
    }

    fn remember(&self, digest: [u8; 32], consumer: &TokenConsumer, expires_at: i64, keys: Arc<KeySet>) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(digest, Remembered { consumer: consumer.clone(), expires_at, keys });
    }

    /// The token's claims, once its signature, issuer, audience and times are good.
    fn verify(&self, token: &str, keys: &KeySet) -> Result<Map<String, Value>, Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::invalid("the token is not a signed JWT"))?;
        let Some(alg) = algorithm(header.alg) else {
            return Err(Refusal::invalid("the token's algorithm is not accepted"));
        };
        let mut named = false;
        let mut tried = 0;
        for key in &keys.keys {
            if let Some(kid) = &header.kid {
                if key.kid.as_ref() != Some(kid) {
                    continue;
                }
                named = true;
            }
            if !key.algorithms.contains(&alg) || tried == MAX_KEYS_TRIED {
                continue;
            }
            tried += 1;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &self.validation(header.alg)) {
                Ok(data) => return Ok(data.claims),
                // Without a kid another key of the set may be the one.
                Err(e) if header.kid.is_none() && is_signature_error(&e) => continue,
                Err(e) => return Err(Refusal::invalid(describe(&e))),
            }
        }
        if header.kid.is_some() && !named {
            self.keys.refresh_soon();
            return Err(Refusal::invalid("the token's signing key is unknown"));
        }
        if tried == 0 {
            return Err(Refusal::invalid("the token's algorithm does not match the issuer's keys"));
        }
        Err(Refusal::invalid("the token's signature is not valid"))
    }

    fn validation(&self, alg: jsonwebtoken::Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        if self.audiences.is_empty() {
            validation.set_required_spec_claims(&["exp", "iss"]);
            validation.validate_aud = false;
        } else {
            // Without `aud` the crate would not check the audience at all.
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.set_audience(&self.audiences);
        }
        validation
    }

    fn require_claims(&self, claims: &Map<String, Value>) -> Result<(), Refusal> {
        for required in &self.required_claims {
            let held = claims
                .get(&required.name)
                .is_some_and(|value| required.values.iter().any(|wanted| claim_holds(value, wanted)));
            if !held {
                return Err(Refusal::Insufficient(format!(
                    "the token's {} claim has none of the required values",
                    required.name
                )));
            }
        }
        Ok(())
    }

    fn consumer(&self, claims: &Map<String, Value>) -> Result<TokenConsumer, Refusal> {
        let name = match claims.get(&self.consumer_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(Refusal::Invalid(format!("the token has no {} claim", self.consumer_claim))),
        };
        let header = (!name.is_empty() && name.len() <= MAX_CONSUMER_LEN)
            .then(|| HeaderValue::from_str(&name).ok())
            .flatten()
            .ok_or_else(|| {
                Refusal::Invalid(format!("the token's {} claim is not a usable name", self.consumer_claim))
            })?;
        Ok(TokenConsumer { subject: KeyHash::of(name.as_bytes()), name: name.into(), header })
    }
}

/// The token of the request's one `Authorization: Bearer` header.
fn bearer_token(req: &http::request::Parts) -> Result<&str, Refusal> {
    let mut values = req.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Err(Refusal::Missing) };
    if values.next().is_some() {
        return Err(Refusal::invalid("the request has more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| Refusal::invalid("the Authorization header is not text"))?;
    let Some((scheme, token)) = value.split_once(' ') else { return Err(Refusal::Missing) };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Missing);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(Refusal::Missing);
    }
    Ok(token)
}

/// Whether a claim holds `wanted`: equal to it, an item of it (a list), or one of its
/// space-separated words (a string such as `scope`).
fn claim_holds(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted || s.split(' ').any(|word| word == wanted),
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(wanted)),
        Value::Number(n) => n.to_string() == wanted,
        Value::Bool(b) => wanted == if *b { "true" } else { "false" },
        _ => false,
    }
}

/// The accepted algorithm a token header names: asymmetric ones only.
fn algorithm(alg: jsonwebtoken::Algorithm) -> Option<Algorithm> {
    use jsonwebtoken::Algorithm as A;
    Some(match alg {
        A::RS256 => Algorithm::RS256,
        A::RS384 => Algorithm::RS384,
        A::RS512 => Algorithm::RS512,
        A::PS256 => Algorithm::PS256,
        A::PS384 => Algorithm::PS384,
        A::PS512 => Algorithm::PS512,
        A::ES256 => Algorithm::ES256,
        A::ES384 => Algorithm::ES384,
        A::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn is_signature_error(error: &jsonwebtoken::errors::Error) -> bool {
    use jsonwebtoken::errors::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_)
    )
}

/// A short reason, never echoing the token.
fn describe(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "the token has no expiry (exp)",
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => "the token has no audience (aud)",
        ErrorKind::MissingRequiredClaim(_) => "the token has no issuer (iss)",
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            "the token's signature is not valid"
        }
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match the issuer's keys",
        _ => "the token is not a valid JWT",
    }
}

#[cfg(test)]
pub(crate) mod test_issuer {
    //! Keys made by the tests, and tokens signed with them.
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    /// A private key and the public JWK of it.
    pub(crate) struct SigningKey {
        pub(crate) alg: Algorithm,
        pub(crate) kid: String,
        pub(crate) private: EncodingKey,
        pub(crate) jwk: Value,
    }

    impl SigningKey {
        pub(crate) fn rsa(kid: &str) -> Self {
            let output = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
                .output()
                .expect("openssl makes the test's RSA key");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            Self::from(Algorithm::RS256, kid, EncodingKey::from_rsa_pem(&output.stdout).unwrap())
        }

        pub(crate) fn ec(kid: &str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            Self::from(
                Algorithm::ES256,
                kid,
                EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            )
        }

        pub(crate) fn ed25519(kid: &str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let private = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid});
            Self { alg: Algorithm::EdDSA, kid: kid.to_string(), private, jwk }
        }

        fn from(alg: Algorithm, kid: &str, private: EncodingKey) -> Self {
            let mut jwk =
                serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&private, alg).unwrap())
                    .unwrap();
            jwk["kid"] = json!(kid);
            Self { alg, kid: kid.to_string(), private, jwk }
        }

        /// A token of these claims, naming this key.
        pub(crate) fn sign(&self, claims: &Value) -> String {
            let header = Header { kid: Some(self.kid.clone()), ..Header::new(self.alg) };
            jsonwebtoken::encode(&header, claims, &self.private).unwrap()
        }
    }

    /// The key set of `keys`, as JSON.
    pub(crate) fn key_set(keys: &[&SigningKey]) -> String {
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
    }

    pub(crate) fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    /// Claims valid for an hour from `https://issuer.test` to audience `orders`.
    pub(crate) fn claims(sub: &str) -> Value {
        json!({"iss": "https://issuer.test", "aud": "orders", "sub": sub, "exp": now() + 3600, "iat": now()})
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::test_issuer::{claims, key_set, now, SigningKey};
    use super::*;

    fn check(keys: &[&SigningKey], required: Vec<RequiredClaimIr>) -> TokenCheck {
        TokenCheck::compile(
            "shop/jwt",
            &JwtIr {
                issuer: "https://issuer.test".into(),
                audiences: vec!["orders".into(), "billing".into()],
                jwks: JwksIr::Inline(key_set(keys)),
                consumer_claim: "sub".into(),
                required_claims: required,
                consumer_header: "x-tollbridge-consumer".into(),
                forward_token: false,
            },
        )
    }

    fn request(authorization: &[&str]) -> http::request::Parts {
        let mut builder = http::Request::get("/orders");
        for value in authorization {
            builder = builder.header(AUTHORIZATION, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn outcome(check: &TokenCheck, token: &str) -> Result<String, Refusal> {
        check.check(&request(&[&format!("Bearer {token}")])).map(|consumer| consumer.name.to_string())
    }

    fn invalid(reason: &str) -> Result<String, Refusal> {
        Err(Refusal::Invalid(reason.into()))
    }

    #[test]
    fn accepts_tokens_of_each_key_type_and_names_the_consumer() {
        let (rsa, ec, ed) = (SigningKey::rsa("r1"), SigningKey::ec("e1"), SigningKey::ed25519("d1"));
        let check = check(&[&rsa, &ec, &ed], Vec::new());
        assert_eq!(outcome(&check, &rsa.sign(&claims("acme"))), Ok("acme".into()));
        assert_eq!(outcome(&check, &ec.sign(&claims("globex"))), Ok("globex".into()));
        assert_eq!(outcome(&check, &ed.sign(&claims("initech"))), Ok("initech".into()));
        // A list audience naming one configured audience is accepted; a numeric sub is a name.
        let mut listed = claims("x");
        listed["aud"] = json!(["other", "billing"]);
        listed["sub"] = json!(42);
        assert_eq!(outcome(&check, &ec.sign(&listed)), Ok("42".into()));
        // Without a kid each key that fits the algorithm is tried.
        let unnamed = jsonwebtoken::encode(&Header::new(ec.alg), &claims("anon"), &ec.private).unwrap();
        assert_eq!(outcome(&check, &unnamed), Ok("anon".into()));
    }

    #[test]
    fn refuses_expired_early_foreign_and_unsigned_tokens() {
        let ec = SigningKey::ec("e1");
        let check = check(&[&ec], Vec::new());
        let with = |field: &str, value: Value| {
            let mut c = claims("acme");
            c[field] = value;
            ec.sign(&c)
        };
        assert_eq!(outcome(&check, &with("exp", json!(now() - 120))), invalid("the token has expired"));
        assert_eq!(outcome(&check, &with("nbf", json!(now() + 600))), invalid("the token is not valid yet"));
        assert_eq!(
            outcome(&check, &with("iss", json!("https://evil.test"))),
            invalid("the token's issuer is not accepted")
        );
        assert_eq!(
            outcome(&check, &with("aud", json!("payments"))),
            invalid("the token's audience is not accepted")
        );
        let mut no_aud = claims("acme");
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(outcome(&check, &ec.sign(&no_aud)), invalid("the token has no audience (aud)"));
        let mut no_exp = claims("acme");
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(outcome(&check, &ec.sign(&no_exp)), invalid("the token has no expiry (exp)"));
        let mut no_sub = claims("acme");
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(outcome(&check, &ec.sign(&no_sub)), invalid("the token has no sub claim"));
        assert_eq!(outcome(&check, "not.a.token"), invalid("the token is not a signed JWT"));
        // `alg: none` with the signature cut off.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let unsigned = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims("acme").to_string())
        );
        assert_eq!(outcome(&check, &unsigned), invalid("the token is not a signed JWT"));
    }

    #[test]
    fn refuses_forged_signatures_unknown_keys_and_algorithm_confusion() {
        let (rsa, ec) = (SigningKey::rsa("r1"), SigningKey::ec("e1"));
        let check = check(&[&rsa, &ec], Vec::new());
        // Another key claiming to be e1.
        let impostor = SigningKey::ec("e1");
        assert_eq!(
            outcome(&check, &impostor.sign(&claims("acme"))),
            invalid("the token's signature is not valid")
        );
        assert_eq!(
            outcome(&check, &SigningKey::ec("e9").sign(&claims("acme"))),
            invalid("the token's signing key is unknown")
        );
        // HS256 "signed" with the public key as the secret, naming the RSA key.
        let public_n = rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();
        let header = Header { kid: Some("r1".into()), ..Header::new(jsonwebtoken::Algorithm::HS256) };
        let forged =
            jsonwebtoken::encode(&header, &claims("acme"), &EncodingKey::from_secret(&public_n).unwrap())
                .unwrap();
        assert_eq!(outcome(&check, &forged), invalid("the token's algorithm is not accepted"));
        // An RSA signature presented as the EC key's.
        let header = Header { kid: Some("e1".into()), ..Header::new(jsonwebtoken::Algorithm::RS256) };
        let crossed = jsonwebtoken::encode(&header, &claims("acme"), &rsa.private).unwrap();
        assert_eq!(
            outcome(&check, &crossed),
            invalid("the token's algorithm does not match the issuer's keys")
        );
    }

    #[test]
    fn accepted_tokens_are_remembered_until_they_expire_and_refused_ones_never() {
        let ec = SigningKey::ec("e1");
        let check = check(&[&ec], Vec::new());
        let token = ec.sign(&claims("acme"));
        assert_eq!(outcome(&check, &token), Ok("acme".into()));
        assert_eq!(outcome(&check, &token), Ok("acme".into()));
        let remembered = |check: &TokenCheck| check.remembered.lock().unwrap().len();
        assert_eq!(remembered(&check), 1);
        let mut old = claims("acme");
        old["exp"] = json!(now() - 3600);
        assert!(outcome(&check, &ec.sign(&old)).is_err());
        assert_eq!(remembered(&check), 1, "a refused token was remembered");
        // Within the leeway a token is accepted but not remembered past its expiry.
        let mut ending = claims("acme");
        ending["exp"] = json!(now() - 1);
        let ending = ec.sign(&ending);
        assert_eq!(outcome(&check, &ending), Ok("acme".into()));
        let digest: [u8; 32] = Sha256::digest(ending.as_bytes()).into();
        assert!(check.recall(&digest, &check.keys.current().unwrap(), now()).is_none());
    }

    #[test]
    fn required_claims_answer_403_and_headers_401() {
        let ec = SigningKey::ec("e1");
        let scope = RequiredClaimIr { name: "scope".into(), values: vec!["orders.write".into()] };
        let check = check(&[&ec], vec![scope]);
        let mut granted = claims("acme");
        granted["scope"] = json!("orders.read orders.write");
        assert_eq!(outcome(&check, &ec.sign(&granted)), Ok("acme".into()));
        granted["scope"] = json!("orders.read");
        let refused = outcome(&check, &ec.sign(&granted)).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Insufficient("the token's scope claim has none of the required values".into())
        );
        let Decision::Deny { status, headers, .. } = refused.decision() else { panic!("allowed") };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers[WWW_AUTHENTICATE].to_str().unwrap().contains("insufficient_scope"));

        assert_eq!(check.check(&request(&[])).unwrap_err(), Refusal::Missing);
        assert_eq!(check.check(&request(&["Basic YWxhZGRpbjpvcGVuc2VzYW1l"])).unwrap_err(), Refusal::Missing);
        granted["scope"] = json!(["orders.write"]);
        let token = format!("bearer {}", ec.sign(&granted));
        assert_eq!(check.check(&request(&[&token])).map(|c| c.name.to_string()), Ok("acme".into()));
        assert_eq!(
            check.check(&request(&[&token, &token])).unwrap_err(),
            Refusal::Invalid("the request has more than one Authorization header".into())
        );
        let Decision::Deny { status, headers, body } = Refusal::Missing.decision() else { panic!("allowed") };
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[WWW_AUTHENTICATE], "Bearer realm=\"tollbridge\"");
        assert!(body.contains("missing_token"), "{body}");
    }
}
