//! Cleaning up cloud Gateways: from every place their record names, when they are deleted or
//! move elsewhere; the record itself (an annotation, see [`super::targets`]) and the finalizer
//! that goes with it.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};
use serde_json::json;
use tollbridge_provider::{GatewayKey, ProviderSettings};

use super::workers::{self, Cloud};
use super::{targets, Controller, FINALIZER, FINALIZER_MANAGER};
use crate::api::gateway::Gateway;
use crate::snapshot::{name_of, namespace_of, object_id};

/// The annotation that says what becomes of a deleted Gateway's cloud resources.
pub const DELETION_POLICY: &str = "tollbridge.dev/deletion-policy";

/// What deleting a Gateway does to what it provisioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeletionPolicy {
    /// Deleted from every place it was provisioned into (the default).
    Delete,
    /// Left in place, no longer managed: the way out when the provider can never act again
    /// (a credential that never worked, an account that is gone).
    Orphan,
}

/// The Gateway's deletion policy, or what is wrong with its annotation.
pub(super) fn deletion_policy(gateway: &Gateway) -> Result<DeletionPolicy, String> {
    match gateway.metadata.annotations.as_ref().and_then(|a| a.get(DELETION_POLICY)).map(String::as_str) {
        None | Some("Delete") => Ok(DeletionPolicy::Delete),
        Some("Orphan") => Ok(DeletionPolicy::Orphan),
        Some(other) => Err(format!("annotation {DELETION_POLICY} is {other:?}; it must be Delete or Orphan")),
    }
}

impl Controller {
    /// Deletes a deleted Gateway from every place it is recorded as provisioned into (or, for a
    /// Gateway provisioned before records existed, from where it resolves to now); the
    /// finalizer goes once the record is empty.
    pub(super) fn delete_everywhere(&self, gateway: &Gateway, current: Option<&ProviderSettings>) {
        let id = object_id(&gateway.metadata);
        let targets = match targets::recorded(gateway) {
            Ok(recorded) if !recorded.is_empty() => recorded,
            Ok(_) => match current {
                Some(ProviderSettings::Local(_)) => Vec::new(),
                Some(cloud) => vec![cloud.clone()],
                None => {
                    let why = "no record of where this Gateway was provisioned, and its class no longer \
                               resolves to a provider: remove the finalizer tollbridge.dev/cleanup by hand \
                               once its cloud resources are gone";
                    self.set_cleanup_error(&id, Some(why.to_string()));
                    return;
                }
            },
            Err(e) => {
                self.set_cleanup_error(&id, Some(e));
                return;
            }
        };
        match deletion_policy(gateway) {
            Ok(policy) => self.clean_targets(gateway.clone(), targets, policy),
            Err(e) => self.set_cleanup_error(&id, Some(e)),
        }
    }

    pub(super) fn set_cleanup_error(&self, id: &str, error: Option<String>) {
        if let Ok(mut errors) = self.cleanup_errors.lock() {
            match error {
                Some(e) => errors.insert(id.to_string(), e),
                None => errors.remove(id),
            };
        }
    }

    /// Why the cleanup of a Gateway's old or last targets failed, if it did.
    pub(super) fn cleanup_error(&self, id: &str) -> Option<String> {
        self.cleanup_errors.lock().ok().and_then(|e| e.get(id).cloned())
    }

    /// Deletes the Gateway's resources from each of `stale` in the background, dropping each from
    /// the record once its provider confirmed; with the record empty, the finalizer goes too. A
    /// target that cannot be cleaned (its provider fails, or cannot even be set up) stays in the
    /// record and is tried again at a later pass; an Event and the Gateway's status say why.
    /// With [`DeletionPolicy::Orphan`] nothing is deleted: each target is dropped from the record
    /// with an Event naming what was left in place.
    pub(super) fn clean_targets(
        &self,
        gateway: Gateway,
        stale: Vec<ProviderSettings>,
        policy: DeletionPolicy,
    ) {
        let id = object_id(&gateway.metadata);
        if !self.cleaning.lock().map(|mut c| c.insert(id.clone())).unwrap_or(false) {
            return;
        }
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let recorder = self.recorder.clone();
        let cleaning = self.cleaning.clone();
        let errors = self.cleanup_errors.clone();
        let clouds = self.clouds.clone();
        let leading = self.leading.clone();
        let task = tokio::spawn(async move {
            let key = GatewayKey {
                namespace: namespace_of(&gateway.metadata).into(),
                name: name_of(&gateway.metadata).into(),
                uid: gateway.metadata.uid.clone().unwrap_or_default(),
                generation: gateway.metadata.generation.unwrap_or(1),
            };
            let object = gateway.object_ref(&());
            let mut failure = None;
            for target in &stale {
                if !*leading.borrow() {
                    break;
                }
                let result = match policy {
                    DeletionPolicy::Delete => {
                        let deployer = Cloud(target.kind_name(), clouds.get(target).await);
                        workers::delete_with_retries(&deployer, &key, &metrics, 4).await
                    }
                    DeletionPolicy::Orphan => Ok(()),
                };
                let (type_, reason, note) = match &result {
                    Ok(()) if policy == DeletionPolicy::Orphan => (
                        EventType::Warning,
                        "Orphaned",
                        format!(
                            "Left in place, no longer managed ({DELETION_POLICY}: Orphan): everything \
                             provisioned for the gateway in {}",
                            describe(target)
                        ),
                    ),
                    Ok(()) => (
                        EventType::Normal,
                        "Deprovisioned",
                        format!("Removed everything provisioned for the gateway in {}", describe(target)),
                    ),
                    Err(e) => (
                        EventType::Warning,
                        "DeprovisioningFailed",
                        format!(
                            "Cannot remove what was provisioned in {}: {e}; retrying (to leave it in \
                             place instead: annotate the Gateway {DELETION_POLICY}=Orphan)",
                            describe(target)
                        ),
                    ),
                };
                let event = Event {
                    type_,
                    reason: reason.into(),
                    note: Some(note.clone()),
                    action: "Delete".into(),
                    secondary: None,
                };
                let _ = recorder.publish(&event, &object).await;
                if result.is_err() {
                    failure = Some(note);
                    break;
                }
                if let Err(e) = drop_from_record(&client, &gateway, Some(target)).await {
                    failure =
                        Some(format!("cannot update the record of where the gateway is provisioned: {e}"));
                    break;
                }
            }
            if stale.is_empty() {
                if let Err(e) = drop_from_record(&client, &gateway, None).await {
                    failure = Some(format!("cannot remove the finalizer: {e}"));
                }
            }
            if failure.is_some() {
                metrics.error("cleanup");
            }
            if let Ok(mut errors) = errors.lock() {
                match failure {
                    Some(why) => errors.insert(key.id(), why),
                    None => errors.remove(&key.id()),
                };
            }
            if let Ok(mut c) = cleaning.lock() {
                c.remove(&key.id());
            }
        });
        if let Ok(mut tasks) = self.cleanups.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }
}

/// Writes where a Gateway is provisioned (the annotation of [`targets`]) and the finalizer
/// that goes with a non-empty record, by server-side apply under its own field manager. The
/// write is for this Gateway only (its uid) and, with `as_seen`, only if it is unchanged since
/// it was read (its resourceVersion): concurrent writers of the record never drop an entry.
pub async fn set_record(
    client: &Client,
    gateway: &Gateway,
    record: &[ProviderSettings],
    as_seen: bool,
) -> Result<(), kube::Error> {
    let api: Api<Gateway> = Api::namespaced(client.clone(), namespace_of(&gateway.metadata));
    let finalizers: Vec<&str> = if record.is_empty() { Vec::new() } else { vec![FINALIZER] };
    let annotations = if record.is_empty() {
        json!({})
    } else {
        json!({ targets::PROVISIONED_INTO: targets::encode(record) })
    };
    let mut metadata = json!({
        "name": name_of(&gateway.metadata),
        "uid": gateway.metadata.uid,
        "finalizers": finalizers,
        "annotations": annotations,
    });
    if as_seen {
        metadata["resourceVersion"] = json!(gateway.metadata.resource_version);
    }
    let body = json!({
        "apiVersion": Gateway::api_version(&()),
        "kind": Gateway::kind(&()),
        "metadata": metadata,
    });
    match api
        .patch(name_of(&gateway.metadata), &PatchParams::apply(FINALIZER_MANAGER), &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 && record.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Drops `cleaned`'s target (or nothing) from the record of the Gateway as it is now: read
/// afresh and written only if unchanged meanwhile, retried a few times on conflict. A Gateway
/// that is gone, or was replaced by another of the same name, needs nothing.
async fn drop_from_record(
    client: &Client,
    gateway: &Gateway,
    cleaned: Option<&ProviderSettings>,
) -> Result<(), String> {
    let api: Api<Gateway> = Api::namespaced(client.clone(), namespace_of(&gateway.metadata));
    let name = name_of(&gateway.metadata);
    for _ in 0..5 {
        let live = match api.get_opt(name).await.map_err(|e| e.to_string())? {
            Some(live) if live.metadata.uid == gateway.metadata.uid => live,
            _ => return Ok(()),
        };
        let recorded = targets::recorded(&live)?;
        let record = cleaned.map_or(recorded.clone(), |c| targets::without(&recorded, c));
        match set_record(client, &live, &record, true).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the gateway kept changing while its record was updated".into())
}

/// A provider target in words, for Events and statuses.
fn describe(target: &ProviderSettings) -> String {
    match target {
        ProviderSettings::Local(_) => "the cluster".into(),
        ProviderSettings::Aws(aws) => format!("AWS region {}", aws.region),
        ProviderSettings::Azure(azure) => format!(
            "Azure API Management {}/{}/{}",
            azure.subscription_id, azure.resource_group, azure.service_name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(policy: Option<&str>) -> Gateway {
        let annotations =
            policy.map_or(String::new(), |p| format!(", annotations: {{{DELETION_POLICY}: {p}}}"));
        serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps{annotations}}}\n\
             spec: {{gatewayClassName: c, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn deletion_deletes_unless_the_gateway_says_orphan() {
        assert_eq!(deletion_policy(&gateway(None)), Ok(DeletionPolicy::Delete));
        assert_eq!(deletion_policy(&gateway(Some("Delete"))), Ok(DeletionPolicy::Delete));
        assert_eq!(deletion_policy(&gateway(Some("Orphan"))), Ok(DeletionPolicy::Orphan));
        let wrong = deletion_policy(&gateway(Some("orphan"))).unwrap_err();
        assert!(wrong.contains(DELETION_POLICY) && wrong.contains("\"orphan\""), "{wrong}");
    }
}
