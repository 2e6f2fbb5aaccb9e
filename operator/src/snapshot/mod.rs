//! Every object the translator may read, gathered from the API server or from YAML files.

pub mod subset;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::gateway::{BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::api::tollbridge::{ApiKey, ProviderConfig, QuotaPolicy};

/// A consistent view of the objects the translator reads. The order of each list is the load
/// order, which stands in for age when objects carry no `creationTimestamp`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The instant used for condition transition times and key expiry.
    pub now: Timestamp,
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HTTPRoute>,
    pub grpc_routes: Vec<GRPCRoute>,
    pub backend_tls_policies: Vec<BackendTLSPolicy>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
    /// ConfigMaps: the CA certificates of BackendTLSPolicies.
    pub config_maps: Vec<ConfigMap>,
    pub provider_configs: Vec<ProviderConfig>,
    pub quota_policies: Vec<QuotaPolicy>,
    pub api_keys: Vec<ApiKey>,
}

/// `namespace/name` of a namespaced object (namespace `default` when unset).
pub fn object_id(meta: &ObjectMeta) -> String {
    format!("{}/{}", namespace_of(meta), name_of(meta))
}

pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

pub fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// A sort key that orders objects from oldest to newest by creation time. Objects without one
/// (loaded from files) count as older than any that have one, in load order; objects created
/// in the same instant compare equal, so callers break the tie by `namespace/name`.
pub fn age_key(meta: &ObjectMeta, load_index: usize) -> (Timestamp, usize) {
    match &meta.creation_timestamp {
        Some(created) => (created.0, 0),
        None => (Timestamp::UNIX_EPOCH, load_index),
    }
}

/// `(namespace, name)` of every Secret a Gateway listener or an ApiKey refers to, sorted.
pub fn referenced_secret_ids(snapshot: &Snapshot) -> std::collections::BTreeSet<(String, String)> {
    let mut ids = std::collections::BTreeSet::new();
    for gateway in &snapshot.gateways {
        let namespace = namespace_of(&gateway.metadata);
        for listener in &gateway.spec.listeners {
            for cert in listener.tls.iter().flat_map(|t| &t.certificate_refs) {
                let core = cert.group.as_deref().unwrap_or("").is_empty();
                if core && cert.kind.as_deref().unwrap_or("Secret") == "Secret" {
                    let ns = cert.namespace.as_deref().unwrap_or(namespace);
                    ids.insert((ns.to_string(), cert.name.clone()));
                }
            }
        }
    }
    for key in &snapshot.api_keys {
        ids.insert((namespace_of(&key.metadata).to_string(), key.spec.secret_ref.name.clone()));
    }
    ids
}

/// `(namespace, name)` of every ConfigMap a BackendTLSPolicy names for its CA certificates.
pub fn referenced_config_map_ids(snapshot: &Snapshot) -> std::collections::BTreeSet<(String, String)> {
    let mut ids = std::collections::BTreeSet::new();
    for policy in &snapshot.backend_tls_policies {
        let namespace = namespace_of(&policy.metadata);
        for reference in &policy.spec.validation.ca_certificate_refs {
            if reference.group.is_empty() && reference.kind == "ConfigMap" {
                ids.insert((namespace.to_string(), reference.name.clone()));
            }
        }
    }
    ids
}
