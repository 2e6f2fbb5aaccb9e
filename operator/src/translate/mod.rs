//! The pure translator: a [`Snapshot`] in, one [`GatewayIr`] per Gateway of our classes and the
//! status of every object looked at out. No IO; the same snapshot always gives the same output.

mod backend_tls;
mod backends;
pub mod conditions;
mod duration;
mod gatewayclass;
mod gateways;
mod grpc;
mod hostnames;
mod index;
pub(crate) mod listeners;
mod policies;
mod precedence;
pub mod programmed;
mod routes;
mod rules;

use std::collections::BTreeMap;

use serde::Serialize;
use tollbridge_provider::{Capabilities, GatewayIr, ProviderSettings};

pub use backends::BACKEND_URL_ANNOTATION;
pub use gatewayclass::settings_from_spec;
pub(crate) use index::SERVICE_NAME_LABEL;
pub use listeners::secret_value;

use crate::api::gateway::{GRPCRouteStatus, GatewayClassStatus, GatewayStatus, HTTPRouteStatus};
use crate::api::tollbridge::{ApiKeyStatus, PolicyStatus};
use crate::snapshot::{name_of, Snapshot};
use conditions::Stamp;
use index::Index;

/// The `controllerName` of GatewayClasses tollbridge implements.
pub const CONTROLLER_NAME: &str = "tollbridge.dev/gateway-controller";

/// Gives the capabilities of the provider a GatewayClass resolves to.
pub type CapabilityLookup<'a> = &'a dyn Fn(&ProviderSettings) -> Capabilities;

/// The status of every object the translator decided about, keyed by `namespace/name`
/// (GatewayClasses by name). Each value is exactly the status object written to Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Statuses {
    pub gatewayclasses: BTreeMap<String, GatewayClassStatus>,
    pub gateways: BTreeMap<String, GatewayStatus>,
    pub httproutes: BTreeMap<String, HTTPRouteStatus>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grpcroutes: BTreeMap<String, GRPCRouteStatus>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backendtlspolicies: BTreeMap<String, PolicyStatus>,
    pub quotapolicies: BTreeMap<String, PolicyStatus>,
    pub apikeys: BTreeMap<String, ApiKeyStatus>,
}

impl Statuses {
    /// One line per condition that reports a problem: `Kind ns/name: Type=Status Reason: message`.
    pub fn problems(&self) -> Vec<String> {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let mut out = Vec::new();
        let mut push = |kind: &str, id: &str, scope: String, conditions: &[Condition]| {
            for c in conditions.iter().filter(|c| conditions::is_problem(c)) {
                out.push(format!("{kind} {id}{scope}: {}={} {}: {}", c.type_, c.status, c.reason, c.message));
            }
        };
        for (id, s) in &self.gatewayclasses {
            push("GatewayClass", id, String::new(), &s.conditions);
        }
        for (id, s) in &self.gateways {
            push("Gateway", id, String::new(), &s.conditions);
            for l in &s.listeners {
                push("Gateway", id, format!(" listener {}", l.name), &l.conditions);
            }
        }
        for (kind, routes) in [("HTTPRoute", &self.httproutes), ("GRPCRoute", &self.grpcroutes)] {
            for (id, s) in routes {
                for p in &s.parents {
                    push(kind, id, format!(" parent {}", p.parent_ref.name), &p.conditions);
                }
            }
        }
        for (kind, policies) in
            [("QuotaPolicy", &self.quotapolicies), ("BackendTLSPolicy", &self.backendtlspolicies)]
        {
            for (id, s) in policies {
                for a in &s.ancestors {
                    push(kind, id, format!(" ancestor {}", a.ancestor_ref.name), &a.conditions);
                }
            }
        }
        for (id, s) in &self.apikeys {
            push("ApiKey", id, String::new(), &s.conditions);
        }
        out
    }
}

/// The translator's whole output.
#[derive(Clone, Debug)]
pub struct Translation {
    pub gateways: Vec<GatewayIr>,
    pub statuses: Statuses,
}

/// Translates a snapshot for the given provider capabilities.
pub fn translate(snapshot: &Snapshot, capabilities: CapabilityLookup<'_>) -> Translation {
    translate_with(snapshot, capabilities, true)
}

/// [`translate`], with many routes' rules translated on every core or all on this thread (the
/// output is the same).
fn translate_with(
    snapshot: &Snapshot,
    capabilities: CapabilityLookup<'_>,
    on_every_core: bool,
) -> Translation {
    let index = Index::new(snapshot);
    let mut statuses = Statuses::default();

    let mut classes = BTreeMap::new();
    for class in snapshot.gateway_classes.iter().filter(|c| c.spec.controller_name == CONTROLLER_NAME) {
        let stamp = Stamp::new(class.metadata.generation, snapshot.now);
        let (info, status) = gatewayclass::resolve(class, &index, capabilities, stamp);
        statuses.gatewayclasses.insert(name_of(&class.metadata).to_string(), status);
        classes.insert(info.name.clone(), info);
    }

    let mut gateways: Vec<gateways::GatewayState<'_>> = snapshot
        .gateways
        .iter()
        .filter_map(|gw| {
            let class = classes.get(&gw.spec.gateway_class_name)?;
            Some(gateways::GatewayState::new(gw, class, &index, capabilities, snapshot.now))
        })
        .collect();

    // HTTPRoutes first, then GRPCRoutes: the order stands in for age where routes have none.
    let lowered: Vec<grpc::Lowered> = snapshot.grpc_routes.iter().map(grpc::lower).collect();
    let routes: Vec<rules::RouteSource<'_>> = (snapshot.http_routes.iter().map(rules::RouteSource::http))
        .chain(lowered.iter().map(rules::RouteSource::grpc))
        .collect();
    let attachments =
        routes::attach_all(&routes, snapshot.now, &index, &mut gateways, &mut statuses, on_every_core);
    policies::resolve(snapshot, &index, &mut gateways, &attachments, &mut statuses);

    // BackendTLSPolicies report to the Gateways whose routes send to a Service they name.
    let mut used = BTreeMap::new();
    let mut capabilities = BTreeMap::new();
    let mut problems = BTreeMap::new();
    for gateway in &gateways {
        used.insert(gateway.id.clone(), gateway.backend_tls_policies.clone());
        problems.insert(gateway.id.clone(), gateway.backend_tls_problems.clone());
        if let Some(caps) = &gateway.capabilities {
            capabilities.insert(gateway.id.clone(), caps.clone());
        }
    }
    statuses.backendtlspolicies = index.backend_tls.statuses(&used, &problems, &capabilities, snapshot.now);

    let mut irs = Vec::new();
    for gateway in gateways {
        let (status, ir) = gateway.finish();
        statuses.gateways.insert(status.0, status.1);
        irs.extend(ir);
    }
    Translation { gateways: irs, statuses }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::files;

    /// Gateways `local`, `aws` (a provider with fewer features) and `broken` (its provider does
    /// not resolve), and `routes` HTTPRoutes naming them in turn, alone, twice or together.
    fn many_routes(routes: usize) -> String {
        let mut text = String::from(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: local}\n\
             spec: {controllerName: tollbridge.dev/gateway-controller}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: aws}\n\
             spec: {controllerName: tollbridge.dev/gateway-controller, \
             parametersRef: {group: tollbridge.dev, kind: ProviderConfig, name: aws}}\n---\n\
             apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {name: aws}\n\
             spec: {provider: AWS, aws: {region: us-east-1, apiType: HTTP}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
        );
        for (name, class, extra) in [
            ("local", "local", ""),
            ("aws", "aws", ""),
            ("broken", "local", ", infrastructure: {parametersRef: {group: tollbridge.dev, kind: ProviderConfig, name: gone}}"),
        ] {
            text += &format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\n\
                 spec: {{gatewayClassName: {class}, listeners: [{{name: http, protocol: HTTP, port: 80}}]{extra}}}\n"
            );
        }
        let parents = [
            "[{name: local}]",
            "[{name: aws}]",
            "[{name: broken}]",
            "[{name: aws}, {name: local}]",
            "[{name: local}, {name: local}]",
            "[{name: gone}, {name: aws}]",
            "[]",
        ];
        for i in 0..routes {
            let backend = if i % 5 == 0 { "missing" } else { "web" };
            let mirror = if i % 3 == 0 {
                ", filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}}}]"
            } else {
                ""
            };
            text += &format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}}}\n\
                 spec: {{parentRefs: {}, rules: [{{matches: [{{path: {{type: PathPrefix, value: /r{i}}}}}], \
                 backendRefs: [{{name: {backend}, port: 80}}]{mirror}}}]}}\n",
                parents[i % parents.len()]
            );
        }
        text
    }

    #[test]
    fn rules_translated_on_every_core_give_the_same_translation() {
        let routes = 3 * 512;
        let loaded = files::load_str(Path::new("many.yaml"), &many_routes(routes)).unwrap();
        let capabilities = &crate::providers::capabilities;
        let split = translate_with(&loaded.snapshot, capabilities, true);
        let alone = translate_with(&loaded.snapshot, capabilities, false);
        assert_eq!(format!("{:?}", split.gateways), format!("{:?}", alone.gateways));
        assert_eq!(split.statuses, alone.statuses);
        // The routes went through every path: attached, dropped for a provider, unresolved.
        assert_eq!(split.gateways.len(), 2, "local and aws are programmed, broken is not");
        assert!(split.statuses.httproutes.len() > routes / 2);
        let problems = split.statuses.problems().join("\n");
        for expected in ["ResolvedRefs=False", "is not accepted", "Accepted=False UnsupportedValue"] {
            assert!(problems.contains(expected), "{expected} in {problems}");
        }
    }
}
