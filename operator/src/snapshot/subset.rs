//! The part of a snapshot one Gateway depends on, and its YAML form.
//!
//! The operator hands each in-cluster proxy only this subset (in a Secret), and the proxy runs
//! the same translator over it. A test checks that the subset translates to the same IR as the
//! whole snapshot.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::referenced_secret_ids;
use super::{name_of, namespace_of, Snapshot};
use crate::api::gateway::Gateway;
use crate::translate::SERVICE_NAME_LABEL;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The objects the Gateway `namespace/name` depends on: itself, its class, the ProviderConfigs
/// they name, the HTTPRoutes and GRPCRoutes whose parentRefs name it and the Namespaces of it
/// and them, the
/// Services and EndpointSlices those routes send to, the QuotaPolicies in the namespaces of the
/// Gateway and its routes, their ApiKeys, the Secrets of its listeners and keys, and the
/// ReferenceGrants in the namespaces those Services and Secrets live in. The config Secret is
/// readable in the Gateway's namespace, so nothing of another tenant's (its namespaces, its
/// provider settings, its grants) is in it, and a change there does not reload this proxy.
pub fn for_gateway(snapshot: &Snapshot, namespace: &str, name: &str) -> Option<Snapshot> {
    let gateway = snapshot
        .gateways
        .iter()
        .find(|g| namespace_of(&g.metadata) == namespace && name_of(&g.metadata) == name)?;
    let http_routes: Vec<_> = snapshot
        .http_routes
        .iter()
        .filter(|r| names_gateway(&r.metadata, &r.spec.parent_refs, gateway))
        .cloned()
        .collect();
    let grpc_routes: Vec<_> = snapshot
        .grpc_routes
        .iter()
        .filter(|r| names_gateway(&r.metadata, &r.spec.parent_refs, gateway))
        .cloned()
        .collect();

    let mut backends = BTreeSet::new();
    let specs = (http_routes.iter().map(|r| (&r.metadata, serde_json::to_value(&r.spec))))
        .chain(grpc_routes.iter().map(|r| (&r.metadata, serde_json::to_value(&r.spec))));
    for (metadata, spec) in specs {
        collect_backends(&spec.unwrap_or_default(), namespace_of(metadata), &mut backends);
    }
    // The Gateway's namespace and its routes': where its policies and Namespace objects come from.
    let mut namespaces: BTreeSet<&str> = [namespace].into();
    namespaces.extend(http_routes.iter().map(|r| namespace_of(&r.metadata)));
    namespaces.extend(grpc_routes.iter().map(|r| namespace_of(&r.metadata)));
    let quota_policies: Vec<_> = snapshot
        .quota_policies
        .iter()
        .filter(|p| namespaces.contains(namespace_of(&p.metadata)))
        .cloned()
        .collect();
    let policies: BTreeSet<(&str, &str)> =
        quota_policies.iter().map(|p| (namespace_of(&p.metadata), name_of(&p.metadata))).collect();
    let api_keys: Vec<_> = snapshot
        .api_keys
        .iter()
        .filter(|k| policies.contains(&(namespace_of(&k.metadata), k.spec.policy_ref.name.as_str())))
        .cloned()
        .collect();
    let class = &gateway.spec.gateway_class_name;
    let gateway_classes: Vec<_> =
        snapshot.gateway_classes.iter().filter(|c| name_of(&c.metadata) == class).collect();
    let config_names: BTreeSet<&str> = gateway_classes
        .iter()
        .filter_map(|c| c.spec.parameters_ref.as_ref().map(|p| p.name.as_str()))
        .chain(
            gateway
                .spec
                .infrastructure
                .as_ref()
                .and_then(|i| i.parameters_ref.as_ref())
                .map(|p| p.name.as_str()),
        )
        .collect();

    // The BackendTLSPolicies of the Services its routes send to, and their CA ConfigMaps.
    let backend_tls_policies: Vec<_> = snapshot
        .backend_tls_policies
        .iter()
        .filter(|p| {
            let namespace = namespace_of(&p.metadata);
            p.spec.target_refs.iter().any(|t| backends.contains(&(namespace.to_string(), t.name.clone())))
        })
        .cloned()
        .collect();
    let mut subset = Snapshot {
        now: snapshot.now,
        gateway_classes: gateway_classes.into_iter().cloned().collect(),
        gateways: vec![gateway.clone()],
        reference_grants: Vec::new(),
        namespaces: snapshot
            .namespaces
            .iter()
            .filter(|n| namespaces.contains(name_of(&n.metadata)))
            .cloned()
            .collect(),
        services: snapshot
            .services
            .iter()
            .filter(|s| {
                backends.contains(&(namespace_of(&s.metadata).to_string(), name_of(&s.metadata).to_string()))
            })
            .cloned()
            .collect(),
        endpoint_slices: snapshot
            .endpoint_slices
            .iter()
            .filter(|s| {
                let service = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
                service.is_some_and(|svc| {
                    backends.contains(&(namespace_of(&s.metadata).to_string(), svc.clone()))
                })
            })
            .cloned()
            .collect(),
        secrets: Vec::new(),
        provider_configs: snapshot
            .provider_configs
            .iter()
            .filter(|p| config_names.contains(name_of(&p.metadata)))
            .cloned()
            .collect(),
        http_routes,
        grpc_routes,
        backend_tls_policies,
        config_maps: Vec::new(),
        quota_policies,
        api_keys,
    };
    let config_maps = super::referenced_config_map_ids(&subset);
    subset.config_maps = snapshot
        .config_maps
        .iter()
        .filter(|c| {
            config_maps.contains(&(namespace_of(&c.metadata).to_string(), name_of(&c.metadata).to_string()))
        })
        .cloned()
        .collect();
    let secrets = referenced_secret_ids(&subset);
    subset.secrets = snapshot
        .secrets
        .iter()
        .filter(|s| {
            secrets.contains(&(namespace_of(&s.metadata).to_string(), name_of(&s.metadata).to_string()))
        })
        .map(|s| hash_key_secret(s, &subset))
        .collect();
    // A grant matters only where something this Gateway refers to lives.
    let targets: BTreeSet<&str> = backends.iter().chain(&secrets).map(|(ns, _)| ns.as_str()).collect();
    subset.reference_grants = snapshot
        .reference_grants
        .iter()
        .filter(|g| targets.contains(namespace_of(&g.metadata)))
        .cloned()
        .collect();
    Some(subset)
}

/// The suffix of a Secret key holding the lower-case hex SHA-256 of an API key instead of the
/// key itself (`api-key.sha256`); the translator accepts either.
pub const HASHED_KEY_SUFFIX: &str = ".sha256";

/// A Secret as the proxy may see it: when it holds API keys (and no listener certificate), only
/// the keys' hashes, so the config Secret (readable in the Gateway's namespace) never carries
/// the keys of other namespaces.
fn hash_key_secret(secret: &Secret, subset: &Snapshot) -> Secret {
    let (ns, name) = (namespace_of(&secret.metadata), name_of(&secret.metadata));
    let keys: Vec<&str> = subset
        .api_keys
        .iter()
        .filter(|k| namespace_of(&k.metadata) == ns && k.spec.secret_ref.name == name)
        .map(|k| k.spec.secret_ref.key_or_default())
        .collect();
    let certificate = subset.gateways.iter().any(|g| {
        g.spec
            .listeners
            .iter()
            .flat_map(|l| l.tls.iter().flat_map(|t| &t.certificate_refs))
            .any(|c| c.name == name && c.namespace.as_deref().unwrap_or(namespace_of(&g.metadata)) == ns)
    });
    if keys.is_empty() || certificate {
        return secret.clone();
    }
    let mut data = std::collections::BTreeMap::new();
    for key in keys {
        if let Some(value) = crate::translate::secret_value(secret, key) {
            let value = String::from_utf8_lossy(&value);
            let digest = hex::encode(Sha256::digest(value.trim().as_bytes()));
            data.insert(format!("{key}{HASHED_KEY_SUFFIX}"), ByteString(digest.into_bytes()));
        }
    }
    // Only the metadata the translator reads: annotations such as kubectl's
    // last-applied-configuration hold the Secret's data.
    let metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: secret.metadata.name.clone(),
        namespace: secret.metadata.namespace.clone(),
        uid: secret.metadata.uid.clone(),
        creation_timestamp: secret.metadata.creation_timestamp.clone(),
        ..Default::default()
    };
    Secret { metadata, type_: secret.type_.clone(), data: Some(data), ..Secret::default() }
}

/// Whether one of a route's parentRefs names the Gateway.
fn names_gateway(
    route: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    parent_refs: &[crate::api::gateway::ParentReference],
    gateway: &Gateway,
) -> bool {
    let route_ns = namespace_of(route);
    parent_refs.iter().any(|p| {
        p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
            && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            && p.name == name_of(&gateway.metadata)
            && p.namespace.as_deref().unwrap_or(route_ns) == namespace_of(&gateway.metadata)
    })
}

/// Adds `(namespace, name)` of every core Service named by a `backendRef(s)` anywhere in a
/// route spec: rules, mirrors, and filters of backends alike.
fn collect_backends(value: &Value, route_ns: &str, out: &mut BTreeSet<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("backendRefs", Value::Array(refs)) => {
                        refs.iter().for_each(|r| add_backend(r, route_ns, out));
                    }
                    ("backendRef", r @ Value::Object(_)) => add_backend(r, route_ns, out),
                    _ => {}
                }
                collect_backends(child, route_ns, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_backends(v, route_ns, out)),
        _ => {}
    }
}

fn add_backend(reference: &Value, route_ns: &str, out: &mut BTreeSet<(String, String)>) {
    let text = |key: &str| reference.get(key).and_then(Value::as_str);
    let core = text("group").unwrap_or("").is_empty() && text("kind").unwrap_or("Service") == "Service";
    if let (true, Some(name)) = (core, text("name")) {
        out.insert((text("namespace").unwrap_or(route_ns).to_string(), name.to_string()));
    }
}

/// The snapshot as multi-document YAML that [`crate::source::files::load_str`] reads back.
/// Fields the translator does not read and that change on every write (status,
/// resourceVersion, managedFields) are left out, so a status write does not change it.
pub fn to_yaml(snapshot: &Snapshot) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    let mut push = |object: &dyn erased::Object| -> Result<(), serde_yaml::Error> {
        out.push_str("---\n");
        out.push_str(&object.yaml()?);
        Ok(())
    };
    for o in &snapshot.namespaces {
        push(o)?;
    }
    for o in &snapshot.gateway_classes {
        push(o)?;
    }
    for o in &snapshot.provider_configs {
        push(o)?;
    }
    for o in &snapshot.gateways {
        push(o)?;
    }
    for o in &snapshot.http_routes {
        push(o)?;
    }
    for o in &snapshot.grpc_routes {
        push(o)?;
    }
    for o in &snapshot.backend_tls_policies {
        push(o)?;
    }
    for o in &snapshot.config_maps {
        push(o)?;
    }
    for o in &snapshot.reference_grants {
        push(o)?;
    }
    for o in &snapshot.services {
        push(o)?;
    }
    for o in &snapshot.endpoint_slices {
        push(o)?;
    }
    for o in &snapshot.secrets {
        push(o)?;
    }
    for o in &snapshot.quota_policies {
        push(o)?;
    }
    for o in &snapshot.api_keys {
        push(o)?;
    }
    Ok(out)
}

mod erased {
    /// Any serializable object, so `to_yaml` can walk lists of different kinds.
    pub trait Object {
        fn yaml(&self) -> Result<String, serde_yaml::Error>;
    }

    impl<T: super::Serialize> Object for T {
        fn yaml(&self) -> Result<String, serde_yaml::Error> {
            let mut value =
                serde_json::to_value(self).map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
            if let Some(object) = value.as_object_mut() {
                object.remove("status");
                if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    meta.remove("resourceVersion");
                    meta.remove("managedFields");
                }
            }
            serde_yaml::to_string(&value)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::files;

    const OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: local}
spec: {controllerName: tollbridge.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: local
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders, namespace: team-a}
spec:
  parentRefs: [{name: web, namespace: shop}]
  rules: [{backendRefs: [{name: orders, port: 80}]}]
---
apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata: {name: gold, namespace: team-a}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]
  apiKey: {required: true}
---
apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata: {name: acme, namespace: team-a}
spec: {policyRef: {name: gold}, secretRef: {name: acme}}
---
apiVersion: v1
kind: Secret
metadata:
  name: acme
  namespace: team-a
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"api-key":"team-a-secret-key-0001"}}'
stringData: {api-key: team-a-secret-key-0001}
"#;

    #[test]
    fn the_keys_of_other_namespaces_reach_the_proxy_as_hashes_only() {
        let loaded = files::load_str(Path::new("objects.yaml"), OBJECTS).expect("objects load");
        let subset = for_gateway(&loaded.snapshot, "shop", "web").expect("the gateway's subset");
        let yaml = to_yaml(&subset).expect("subset serializes");
        assert!(!yaml.contains("team-a-secret-key-0001"), "{yaml}");
        assert!(!yaml.contains("last-applied-configuration"), "{yaml}");
        let secret = &subset.secrets[0];
        let hashed = secret.data.as_ref().unwrap().get("api-key.sha256").expect("the key's hash");
        assert_eq!(hashed.0, hex::encode(Sha256::digest(b"team-a-secret-key-0001")).into_bytes());
    }

    /// What another tenant has: a namespace, a class's ProviderConfig, a grant in its namespace.
    const OTHER_TENANT: &str = r#"
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {tier: gold}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata: {name: team-b-aws}
spec: {provider: AWS, aws: {region: eu-west-1, roleARN: "arn:aws:iam::123456789012:role/team-b"}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: to-team-b, namespace: team-b}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-c}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: to-team-a, namespace: team-a}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service}]
"#;

    #[test]
    fn another_tenants_namespaces_settings_and_grants_stay_out() {
        let text = format!("{OBJECTS}{OTHER_TENANT}");
        let loaded = files::load_str(Path::new("objects.yaml"), &text).expect("objects load");
        let subset = for_gateway(&loaded.snapshot, "shop", "web").expect("the gateway's subset");
        let names = |metas: Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            metas.into_iter().map(|m| name_of(m).to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(subset.namespaces.iter().map(|n| &n.metadata).collect()), ["team-a", "shop"]);
        assert!(subset.provider_configs.is_empty(), "{:?}", subset.provider_configs);
        assert_eq!(names(subset.reference_grants.iter().map(|g| &g.metadata).collect()), ["to-team-a"]);
        let yaml = to_yaml(&subset).expect("subset serializes");
        assert!(!yaml.contains("team-b"), "{yaml}");
    }
}
