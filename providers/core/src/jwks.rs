//! JSON Web Key Sets (RFC 7517) as tollbridge accepts them: public signing keys only.
//!
//! The translator checks inline key sets with [`parse`] so that a bad one is reported on the
//! QuotaPolicy; the local proxy builds its verifiers from the same [`Jwk`]s, and the Azure
//! provider writes the RSA ones into `validate-jwt`.

use serde::Deserialize;
use serde_json::Value;

/// Most keys one set may hold.
pub const MAX_KEYS: usize = 64;

/// One public signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`: the key a token's header names.
    pub kid: Option<String>,
    /// `alg` when the set pins it (checked against the key type).
    pub alg: Option<Algorithm>,
    pub key: PublicKey,
}

/// The key material, base64url-encoded as in the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Rsa { n: String, e: String },
    Ec { curve: Curve, x: String, y: String },
    Ed25519 { x: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

/// The signature algorithms tollbridge verifies: asymmetric ones only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    const RSA: [Algorithm; 6] =
        [Self::RS256, Self::RS384, Self::RS512, Self::PS256, Self::PS384, Self::PS512];

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }
}

impl Jwk {
    /// The algorithms a token signed with this key may name: the pinned one, or every one the
    /// key's type allows.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        if let Some(alg) = self.alg {
            return vec![alg];
        }
        match &self.key {
            PublicKey::Rsa { .. } => Algorithm::RSA.to_vec(),
            PublicKey::Ec { curve: Curve::P256, .. } => vec![Algorithm::ES256],
            PublicKey::Ec { curve: Curve::P384, .. } => vec![Algorithm::ES384],
            PublicKey::Ed25519 { .. } => vec![Algorithm::EdDSA],
        }
    }
}

/// Why a key set is refused; the message names the key by position and `kid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwksError(String);

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<Value>,
}

/// Parses a key set, refusing symmetric keys, private keys, keys not meant for signatures and
/// algorithms that do not fit the key.
pub fn parse(json: &str) -> Result<Vec<Jwk>, JwksError> {
    let set: RawSet = serde_json::from_str(json)
        .map_err(|e| JwksError(format!("not a JSON Web Key Set ({{\"keys\": [...]}}): {e}")))?;
    if set.keys.is_empty() {
        return Err(JwksError("the key set has no keys".into()));
    }
    if set.keys.len() > MAX_KEYS {
        return Err(JwksError(format!(
            "the key set has {} keys; at most {MAX_KEYS} are accepted",
            set.keys.len()
        )));
    }
    set.keys.iter().enumerate().map(|(i, raw)| parse_key(raw).map_err(|e| name_key(i, raw, e))).collect()
}

/// Parses a key set an issuer serves: keys tollbridge cannot use (encryption keys, other
/// curves, symmetric ones) are left out and described, as an issuer's set often holds some;
/// an error only when no usable key is left.
pub fn parse_usable(json: &str) -> Result<(Vec<Jwk>, Vec<JwksError>), JwksError> {
    let set: RawSet = serde_json::from_str(json)
        .map_err(|e| JwksError(format!("not a JSON Web Key Set ({{\"keys\": [...]}}): {e}")))?;
    let (mut keys, mut skipped) = (Vec::new(), Vec::new());
    for (i, raw) in set.keys.iter().enumerate() {
        match parse_key(raw) {
            Ok(key) if keys.len() < MAX_KEYS => keys.push(key),
            Ok(_) => skipped.push(name_key(i, raw, format!("beyond the first {MAX_KEYS} keys"))),
            Err(message) => skipped.push(name_key(i, raw, message)),
        }
    }
    if keys.is_empty() {
        let why = skipped.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return Err(JwksError(format!("the key set has no usable signing key ({why})")));
    }
    Ok((keys, skipped))
}

fn name_key(index: usize, raw: &Value, message: String) -> JwksError {
    match raw.get("kid").and_then(Value::as_str) {
        Some(kid) => JwksError(format!("key {index} (kid {kid:?}): {message}")),
        None => JwksError(format!("key {index}: {message}")),
    }
}

fn parse_key(raw: &Value) -> Result<Jwk, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match raw.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let member = |name: &str| -> Result<String, String> {
        let value = text(name)?.ok_or_else(|| format!("{name} is missing"))?;
        if value.is_empty() || !value.bytes().all(is_base64url) {
            return Err(format!("{name} is not base64url"));
        }
        Ok(value)
    };
    if raw.get("d").is_some() {
        return Err("holds a private key (d); give the public key only".into());
    }
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return Err(format!("use is {usage:?}, not \"sig\""));
        }
    }
    let kty = text("kty")?.ok_or("kty is missing")?;
    let key = match kty.as_str() {
        "RSA" => PublicKey::Rsa { n: member("n")?, e: member("e")? },
        "EC" => {
            let curve = match text("crv")?.as_deref() {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                other => return Err(format!("curve {other:?} is not supported; use P-256 or P-384")),
            };
            PublicKey::Ec { curve, x: member("x")?, y: member("y")? }
        }
        "OKP" => match text("crv")?.as_deref() {
            Some("Ed25519") => PublicKey::Ed25519 { x: member("x")? },
            other => return Err(format!("curve {other:?} is not supported; use Ed25519")),
        },
        "oct" => {
            return Err(
                "symmetric (oct) keys are not accepted: tokens must be signed with a private key".into()
            )
        }
        other => return Err(format!("key type {other:?} is not supported; use RSA, EC or OKP")),
    };
    let kid = text("kid")?;
    let alg = match text("alg")? {
        None => None,
        Some(name) => {
            let alg = Algorithm::from_name(&name).ok_or_else(|| {
                format!("algorithm {name:?} is not accepted; use RS*, PS*, ES256, ES384 or EdDSA")
            })?;
            let jwk = Jwk { kid: None, alg: None, key: key.clone() };
            if !jwk.algorithms().contains(&alg) {
                return Err(format!("algorithm {name} does not fit a {kty} key"));
            }
            Some(alg)
        }
    };
    Ok(Jwk { kid, alg, key })
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_public_keys_of_each_type() {
        let keys = parse(
            r#"{"keys": [
                {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB", "use": "sig"},
                {"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE", "alg": "ES256"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qY"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].kid.as_deref(), Some("r"));
        assert_eq!(keys[0].algorithms().len(), 6);
        assert_eq!(keys[1].algorithms(), [Algorithm::ES256]);
        assert_eq!(keys[2].algorithms(), [Algorithm::EdDSA]);
    }

    #[test]
    fn refuses_what_could_be_forged_or_leaked() {
        let error = |json: &str| parse(json).unwrap_err().to_string();
        assert!(error(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).contains("symmetric"));
        assert!(error(r#"{"keys": [{"kty": "RSA", "kid": "a", "n": "x", "e": "AQAB", "d": "y"}]}"#)
            .contains("key 0 (kid \"a\"): holds a private key"));
        assert!(
            error(r#"{"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "alg": "HS256"}]}"#).contains("HS256")
        );
        assert!(error(r#"{"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "alg": "none"}]}"#).contains("none"));
        assert!(error(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "alg": "RS256"}]}"#)
            .contains("does not fit"));
        assert!(error(r#"{"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "use": "enc"}]}"#).contains("use"));
        assert!(error(r#"{"keys": [{"kty": "RSA", "n": "x+/=", "e": "AQAB"}]}"#).contains("base64url"));
        assert!(error(r#"{"keys": [{"kty": "EC", "crv": "P-521", "x": "a", "y": "b"}]}"#).contains("P-521"));
        assert!(error(r#"{"keys": []}"#).contains("no keys"));
        // An issuer's set: encryption and unsupported keys are left out, not fatal.
        let served = r#"{"keys": [{"kty": "RSA", "kid": "enc", "use": "enc", "n": "x", "e": "AQAB"},
                                  {"kty": "RSA", "kid": "sig", "use": "sig", "n": "x", "e": "AQAB"}]}"#;
        let (keys, skipped) = parse_usable(served).unwrap();
        assert_eq!((keys.len(), keys[0].kid.as_deref()), (1, Some("sig")));
        assert!(skipped[0].to_string().contains("kid \"enc\""), "{skipped:?}");
        assert!(parse_usable(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
        assert!(error("[1]").contains("not a JSON Web Key Set"));
    }
}
