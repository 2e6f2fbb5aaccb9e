//! The configuration of an in-cluster proxy: one Secret, written by the operator, holding the
//! gzipped YAML of the objects its Gateway depends on.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::watch;

use crate::controller::{gunzip, infra::CONFIG_KEY};

/// The latest YAML of the Secret `namespace/name`: `None` until it is first read. A Secret
/// that cannot be decoded yields an error naming it; a deleted Secret keeps the last value.
pub fn watch(client: Client, namespace: &str, name: &str) -> watch::Receiver<Option<Result<String, String>>> {
    let (sender, receiver) = watch::channel(None);
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let id = format!("{namespace}/{name}");
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(secret) => {
                    failing = false;
                    let _ = sender.send(Some(decode(&id, &secret)));
                }
                Err(error) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(secret = %id, %error, "cannot watch the configuration Secret; retrying");
                    }
                }
            }
        }
    });
    receiver
}

fn decode(id: &str, secret: &Secret) -> Result<String, String> {
    let data = secret.data.as_ref().and_then(|d| d.get(CONFIG_KEY));
    let bytes = data.ok_or_else(|| format!("Secret {id} has no key {CONFIG_KEY}"))?;
    gunzip(&bytes.0).map_err(|e| format!("Secret {id}: {e}"))
}
