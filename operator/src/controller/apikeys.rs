//! Generates the Secret of an ApiKey that names one that does not exist: a random key
//! (32 bytes from the operating system's CSPRNG, base64url), owned by the ApiKey. The value is
//! never logged; the Event names only its key id.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use kube::runtime::events::{Event, EventType};

use super::infra::MANAGED_BY;
use super::Controller;
use crate::api::tollbridge::ApiKey;
use crate::snapshot::{name_of, namespace_of, object_id, Snapshot};

/// Label naming the ApiKey a generated Secret belongs to.
pub const API_KEY_LABEL: &str = "tollbridge.dev/api-key";
/// Bytes of randomness in a generated key.
const KEY_BYTES: usize = 32;

/// A new key: 32 random bytes from the OS, base64url without padding (43 characters).
pub fn new_key() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The public id of a key: the first 8 hex digits of its SHA-256.
pub fn key_id(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..4])
}

/// The Secret holding `key` for `api_key`.
pub fn secret_for(api_key: &ApiKey, key: &str) -> Secret {
    let name = &api_key.spec.secret_ref.name;
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace_of(&api_key.metadata).to_string()),
            labels: Some(
                [
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (API_KEY_LABEL.to_string(), name_of(&api_key.metadata).to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: ApiKey::api_version(&()).into(),
                kind: ApiKey::kind(&()).into(),
                name: name_of(&api_key.metadata).to_string(),
                uid: api_key.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(api_key.spec.secret_ref.key_or_default().to_string(), ByteString(key.as_bytes().to_vec()))]
                .into(),
        ),
        ..Secret::default()
    }
}

/// Creates the ApiKey's Secret with a new key. Returns the key id, or `None` when the Secret
/// appeared meanwhile (never overwritten).
pub async fn generate(client: &Client, api_key: &ApiKey) -> Result<Option<String>, String> {
    let key = new_key().map_err(|e| format!("no randomness from the operating system: {e}"))?;
    let secret = secret_for(api_key, &key);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace_of(&api_key.metadata));
    let params =
        PostParams { field_manager: Some(super::status::FIELD_MANAGER.into()), ..PostParams::default() };
    match api.create(&params, &secret).await {
        Ok(_) => Ok(Some(key_id(&key))),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(format!("cannot create Secret {}: {e}", api_key.spec.secret_ref.name)),
    }
}

impl Controller {
    /// Creates the Secret of every ApiKey that names a missing one.
    pub(super) async fn generate_missing_keys(&self, snapshot: &Snapshot) {
        for api_key in snapshot.api_keys.iter().filter(|k| k.metadata.deletion_timestamp.is_none()) {
            let namespace = namespace_of(&api_key.metadata);
            if self.source.secret_exists(namespace, &api_key.spec.secret_ref.name) {
                continue;
            }
            match generate(&self.client, api_key).await {
                Ok(Some(key_id)) => {
                    tracing::info!(apikey = %object_id(&api_key.metadata), secret = %api_key.spec.secret_ref.name, key_id, "generated an API key");
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "KeyGenerated".into(),
                        note: Some(format!(
                            "Generated a key (id {key_id}) into Secret {}",
                            api_key.spec.secret_ref.name
                        )),
                        action: "GenerateKey".into(),
                        secondary: None,
                    };
                    let _ = self.recorder.publish(&event, &api_key.object_ref(&())).await;
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.error("apikey_secret");
                    tracing::warn!(apikey = %object_id(&api_key.metadata), error = %e, "cannot generate API key");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_url_safe() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    }

    #[test]
    fn the_secret_is_owned_by_the_api_key_and_holds_the_key() {
        let api_key: ApiKey = serde_yaml::from_str(
            "apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: alice, namespace: apps, uid: u1}\n\
             spec: {policyRef: {name: p}, secretRef: {name: alice-key, key: token}}",
        )
        .unwrap();
        let secret = secret_for(&api_key, "value");
        assert_eq!(secret.metadata.name.as_deref(), Some("alice-key"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("ApiKey", "u1"));
        assert_eq!(secret.data.unwrap()["token"].0, b"value");
        assert_eq!(key_id("value").len(), 8);
    }
}
