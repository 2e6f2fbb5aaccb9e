//! Lookup tables over a [`Snapshot`], built once per translation.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::backend_tls::BackendTlsTable;
use crate::api::gateway::{GRPCRoute, HTTPRoute, ReferenceGrant};
use crate::api::tollbridge::{ProviderConfig, QuotaPolicy};
use crate::snapshot::{name_of, namespace_of, Snapshot};

/// The label an EndpointSlice carries naming its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label the API server sets on every Namespace.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `namespace/name`.
type Key = String;

pub struct Index<'a> {
    namespace_labels: HashMap<&'a str, &'a BTreeMap<String, String>>,
    services: HashMap<Key, &'a Service>,
    slices: HashMap<Key, Vec<&'a EndpointSlice>>,
    secrets: HashMap<Key, &'a Secret>,
    grants: HashMap<&'a str, Vec<&'a ReferenceGrant>>,
    provider_configs: HashMap<&'a str, &'a ProviderConfig>,
    routes: HashMap<Key, (usize, &'a HTTPRoute)>,
    grpc_routes: HashMap<Key, &'a GRPCRoute>,
    policies: HashMap<Key, (usize, &'a QuotaPolicy)>,
    /// Which BackendTLSPolicy applies to which Service port.
    pub backend_tls: BackendTlsTable,
}

/// One side of a cross-namespace reference: API group, kind and namespace.
pub struct RefEnd<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

impl<'a> Index<'a> {
    pub fn new(snap: &'a Snapshot) -> Self {
        let mut slices: HashMap<Key, Vec<&'a EndpointSlice>> = HashMap::new();
        for slice in &snap.endpoint_slices {
            if let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                slices.entry(join(namespace_of(&slice.metadata), service)).or_default().push(slice);
            }
        }
        let mut grants: HashMap<&'a str, Vec<&'a ReferenceGrant>> = HashMap::new();
        for grant in &snap.reference_grants {
            grants.entry(namespace_of(&grant.metadata)).or_default().push(grant);
        }
        Self {
            namespace_labels: snap
                .namespaces
                .iter()
                .filter_map(|ns| Some((name_of(&ns.metadata), ns.metadata.labels.as_ref()?)))
                .collect(),
            services: snap.services.iter().map(|s| (key(&s.metadata), s)).collect(),
            slices,
            secrets: snap.secrets.iter().map(|s| (key(&s.metadata), s)).collect(),
            grants,
            provider_configs: snap.provider_configs.iter().map(|p| (name_of(&p.metadata), p)).collect(),
            routes: snap.http_routes.iter().enumerate().map(|(i, r)| (key(&r.metadata), (i, r))).collect(),
            grpc_routes: snap.grpc_routes.iter().map(|r| (key(&r.metadata), r)).collect(),
            policies: snap
                .quota_policies
                .iter()
                .enumerate()
                .map(|(i, p)| (key(&p.metadata), (i, p)))
                .collect(),
            backend_tls: BackendTlsTable::new(snap),
        }
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(&join(namespace, name)).copied()
    }

    pub fn endpoint_slices(&self, namespace: &str, service: &str) -> &[&'a EndpointSlice] {
        self.slices.get(&join(namespace, service)).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets.get(&join(namespace, name)).copied()
    }

    pub fn provider_config(&self, name: &str) -> Option<&'a ProviderConfig> {
        self.provider_configs.get(name).copied()
    }

    pub fn route(&self, namespace: &str, name: &str) -> Option<(usize, &'a HTTPRoute)> {
        self.routes.get(&join(namespace, name)).copied()
    }

    pub fn grpc_route(&self, namespace: &str, name: &str) -> Option<&'a GRPCRoute> {
        self.grpc_routes.get(&join(namespace, name)).copied()
    }

    pub fn policy(&self, namespace: &str, name: &str) -> Option<(usize, &'a QuotaPolicy)> {
        self.policies.get(&join(namespace, name)).copied()
    }

    /// Whether the labels of `namespace` satisfy `selector`.
    /// Like the API server, every namespace carries `kubernetes.io/metadata.name: <name>`.
    pub fn namespace_matches(&self, namespace: &str, selector: &LabelSelector) -> bool {
        let mut labels = self.namespace_labels.get(namespace).map(|l| (*l).clone()).unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
        selector_matches(selector, &labels)
    }

    /// Whether a ReferenceGrant in the target namespace allows `from` to refer to the named
    /// object. References within one namespace need no grant.
    pub fn reference_allowed(&self, from: RefEnd<'_>, to: RefEnd<'_>, to_name: &str) -> bool {
        if from.namespace == to.namespace {
            return true;
        }
        self.grants.get(to.namespace).into_iter().flatten().any(|grant| {
            grant
                .spec
                .from
                .iter()
                .any(|f| f.group == from.group && f.kind == from.kind && f.namespace == from.namespace)
                && grant.spec.to.iter().any(|t| {
                    t.group == to.group
                        && t.kind == to.kind
                        && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to_name)
                })
        })
    }
}

fn key(meta: &ObjectMeta) -> Key {
    join(namespace_of(meta), name_of(meta))
}

fn join(namespace: &str, name: &str) -> Key {
    format!("{namespace}/{name}")
}

/// Kubernetes label selector semantics: all `matchLabels` and all `matchExpressions` hold.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|expr| {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> =
            [("env".to_string(), "prod".to_string())].into_iter().collect();
        let by_label = LabelSelector {
            match_labels: Some([("env".to_string(), "prod".to_string())].into_iter().collect()),
            ..Default::default()
        };
        assert!(selector_matches(&by_label, &labels));
        assert!(!selector_matches(&by_label, &BTreeMap::new()));
        let not_in = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            }]),
            ..Default::default()
        };
        assert!(!selector_matches(&not_in, &labels));
        assert!(selector_matches(&not_in, &BTreeMap::new()));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }
}
