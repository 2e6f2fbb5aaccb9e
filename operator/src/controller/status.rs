//! The status writer: compares the translator's statuses with the objects as the API server
//! has them and writes, by server-side apply, only those that differ.
//!
//! Planning is pure ([`plan`]); [`write`] sends the patches.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::gateway::{HTTPRouteStatus, RouteParentStatus};
use crate::api::tollbridge::PolicyStatus;
use crate::snapshot::{name_of, object_id, Snapshot};
use crate::translate::{Statuses, CONTROLLER_NAME};

/// The field manager of every status we write.
pub const FIELD_MANAGER: &str = "tollbridge-operator";

/// One status to write.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
    /// The whole `status` object.
    pub status: Value,
    /// For statuses other controllers write into too (route `parents`): the object's
    /// resourceVersion the patch was planned from; the write fails if it changed meanwhile.
    pub resource_version: Option<String>,
}

impl StatusPatch {
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource.kind, self.name),
            None => format!("{} {}", self.resource.kind, self.name),
        }
    }
}

/// The patches that make the live objects in `snapshot` carry `desired`. Conditions whose
/// status did not change keep their `lastTransitionTime`; route parents written by other
/// controllers are kept as they are.
pub fn plan(snapshot: &Snapshot, desired: &Statuses) -> Vec<StatusPatch> {
    let mut out = Vec::new();
    for class in &snapshot.gateway_classes {
        let Some(want) = desired.gatewayclasses.get(name_of(&class.metadata)) else { continue };
        let mut want = want.clone();
        let live = class.status.clone().unwrap_or_default();
        keep_times(&mut want.conditions, &live.conditions);
        push_if_changed(&mut out, class, &want, &live);
    }
    for gateway in &snapshot.gateways {
        let Some(want) = desired.gateways.get(&object_id(&gateway.metadata)) else { continue };
        let mut want = want.clone();
        let live = gateway.status.clone().unwrap_or_default();
        keep_times(&mut want.conditions, &live.conditions);
        for listener in &mut want.listeners {
            if let Some(old) = live.listeners.iter().find(|l| l.name == listener.name) {
                keep_times(&mut listener.conditions, &old.conditions);
            }
        }
        push_if_changed(&mut out, gateway, &want, &live);
    }
    for route in &snapshot.http_routes {
        let want = desired.httproutes.get(&object_id(&route.metadata));
        plan_route(&mut out, route, want, route.status.as_ref());
    }
    for route in &snapshot.grpc_routes {
        let want = desired.grpcroutes.get(&object_id(&route.metadata));
        plan_route(&mut out, route, want, route.status.as_ref());
    }
    for policy in &snapshot.quota_policies {
        let want = desired.quotapolicies.get(&object_id(&policy.metadata));
        // Only tollbridge reports on its own policies.
        plan_policy(&mut out, policy, want, policy.status.as_ref(), false);
    }
    for policy in &snapshot.backend_tls_policies {
        let want = desired.backendtlspolicies.get(&object_id(&policy.metadata));
        // Other implementations report on the same policy: their ancestors stay.
        plan_policy(&mut out, policy, want, policy.status.as_ref(), true);
    }
    for key in &snapshot.api_keys {
        let Some(want) = desired.apikeys.get(&object_id(&key.metadata)) else { continue };
        let mut want = want.clone();
        let mut live = key.status.clone().unwrap_or_default();
        // `usage` has a writer of its own (usage.rs, its own field manager): not compared here,
        // and never in what this manager applies, so neither undoes the other.
        live.usage = None;
        keep_times(&mut want.conditions, &live.conditions);
        push_if_changed(&mut out, key, &want, &live);
    }
    out
}

/// A route's status patch, if it differs: our parents as desired (their unchanged conditions
/// keeping their times), other controllers' parents as they are.
fn plan_route<K: Resource<DynamicType = ()>>(
    out: &mut Vec<StatusPatch>,
    route: &K,
    want: Option<&HTTPRouteStatus>,
    live: Option<&HTTPRouteStatus>,
) {
    let Some(want) = want else { return };
    let mut want = want.clone();
    let live = live.cloned().unwrap_or_default();
    for parent in &mut want.parents {
        if let Some(old) = live.parents.iter().find(|p| same_parent(p, parent)) {
            keep_times(&mut parent.conditions, &old.conditions);
        }
    }
    let foreign = live.parents.iter().filter(|p| p.controller_name != CONTROLLER_NAME).cloned();
    want.parents.extend(foreign);
    let before = out.len();
    push_if_changed(out, route, &want, &live);
    if let Some(patch) = out.get_mut(before) {
        patch.resource_version = route.meta().resource_version.clone();
    }
}

/// A policy's status patch, if it differs: our ancestors as desired (their unchanged
/// conditions keeping their times), and with `shared`, other controllers' ancestors as they are
/// (the write then fails if the object changed since it was read).
fn plan_policy<K: Resource<DynamicType = ()>>(
    out: &mut Vec<StatusPatch>,
    policy: &K,
    want: Option<&PolicyStatus>,
    live: Option<&PolicyStatus>,
    shared: bool,
) {
    let Some(want) = want else { return };
    let mut want = want.clone();
    let live = live.cloned().unwrap_or_default();
    for ancestor in &mut want.ancestors {
        let old = live.ancestors.iter().find(|a| {
            a.ancestor_ref == ancestor.ancestor_ref && a.controller_name == ancestor.controller_name
        });
        if let Some(old) = old {
            keep_times(&mut ancestor.conditions, &old.conditions);
        }
    }
    if shared {
        let foreign = live.ancestors.iter().filter(|a| a.controller_name != CONTROLLER_NAME).cloned();
        want.ancestors.extend(foreign);
    }
    let before = out.len();
    push_if_changed(out, policy, &want, &live);
    if let (true, Some(patch)) = (shared, out.get_mut(before)) {
        patch.resource_version = policy.meta().resource_version.clone();
    }
}

fn same_parent(a: &RouteParentStatus, b: &RouteParentStatus) -> bool {
    a.parent_ref == b.parent_ref && a.controller_name == b.controller_name
}

/// Keeps the live `lastTransitionTime` of conditions whose type and status are unchanged.
fn keep_times(want: &mut [Condition], live: &[Condition]) {
    for condition in want {
        if let Some(old) = live.iter().find(|c| c.type_ == condition.type_ && c.status == condition.status) {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
}

fn push_if_changed<K, S>(out: &mut Vec<StatusPatch>, object: &K, want: &S, live: &S)
where
    K: Resource<DynamicType = ()>,
    S: Serialize,
{
    let (want, live) =
        (serde_json::to_value(want).unwrap_or_default(), serde_json::to_value(live).unwrap_or_default());
    if want == live {
        return;
    }
    out.push(StatusPatch {
        resource: ApiResource::erase::<K>(&()),
        namespace: object.meta().namespace.clone(),
        name: name_of(object.meta()).to_string(),
        status: want,
        resource_version: None,
    });
}

/// Writes one status by server-side apply (forcing: this manager owns the status it writes).
/// A patch with a resourceVersion is written only over that version: when the object changed
/// meanwhile (another controller wrote its own parent entry, say), the entries of other
/// controllers are taken from the object as it is now and the write is tried again.
pub async fn write(client: &Client, patch: &StatusPatch) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = match &patch.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &patch.resource),
        None => Api::all_with(client.clone(), &patch.resource),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut status = patch.status.clone();
    let mut version = patch.resource_version.clone();
    let mut attempts = 0;
    loop {
        let mut body = json!({
            "apiVersion": patch.resource.api_version,
            "kind": patch.resource.kind,
            "status": status,
        });
        if let Some(version) = &version {
            body["metadata"] = json!({ "resourceVersion": version });
        }
        match api.patch_status(&patch.name, &params, &Patch::Apply(&body)).await {
            Err(kube::Error::Api(s)) if s.code == 409 && version.is_some() && attempts < 5 => {
                attempts += 1;
                let live = api.get_status(&patch.name).await?;
                status = with_foreign_parents(&patch.status, &live.data["status"]);
                version = live.metadata.resource_version;
            }
            result => return result.map(|_| ()),
        }
    }
}

/// `ours` with its `parents` of other controllers replaced by those in `live`.
fn with_foreign_parents(ours: &Value, live: &Value) -> Value {
    let mine = |p: &&Value| p["controllerName"] == CONTROLLER_NAME;
    let mut parents: Vec<Value> =
        ours["parents"].as_array().into_iter().flatten().filter(mine).cloned().collect();
    parents.extend(live["parents"].as_array().into_iter().flatten().filter(|p| !mine(p)).cloned());
    let mut status = ours.clone();
    status["parents"] = Value::Array(parents);
    status
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::providers;
    use crate::source::files;
    use crate::translate::translate;

    const CASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: local}
spec: {controllerName: tollbridge.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: local
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
"#;

    fn snapshot_with_statuses(at: jiff::Timestamp) -> (Snapshot, Statuses) {
        let mut snapshot = files::load_str(Path::new("case.yaml"), CASE).unwrap().snapshot;
        snapshot.now = at;
        let statuses = translate(&snapshot, &providers::capabilities).statuses;
        (snapshot, statuses)
    }

    #[test]
    fn writes_every_changed_status_then_nothing() {
        let (mut snapshot, statuses) = snapshot_with_statuses(jiff::Timestamp::UNIX_EPOCH);
        let patches = plan(&snapshot, &statuses);
        let kinds: Vec<_> = patches.iter().map(|p| p.resource.kind.as_str()).collect();
        assert_eq!(kinds, ["GatewayClass", "Gateway", "HTTPRoute"]);

        // Once written, the same statuses computed later (new timestamps) write nothing.
        snapshot.gateway_classes[0].status = serde_json::from_value(patches[0].status.clone()).unwrap();
        snapshot.gateways[0].status = serde_json::from_value(patches[1].status.clone()).unwrap();
        snapshot.http_routes[0].status = serde_json::from_value(patches[2].status.clone()).unwrap();
        let later = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(3600);
        let (_, again) = snapshot_with_statuses(later);
        assert_eq!(plan(&snapshot, &again), vec![]);
    }

    #[test]
    fn keeps_parents_of_other_controllers() {
        let (mut snapshot, statuses) = snapshot_with_statuses(jiff::Timestamp::UNIX_EPOCH);
        let other = RouteParentStatus {
            parent_ref: Default::default(),
            controller_name: "example.com/other".into(),
            conditions: Vec::new(),
        };
        snapshot.http_routes[0].status = Some(crate::api::gateway::HTTPRouteStatus { parents: vec![other] });
        let patches = plan(&snapshot, &statuses);
        let route = patches.iter().find(|p| p.resource.kind == "HTTPRoute").unwrap();
        let controllers: Vec<_> =
            route.status["parents"].as_array().unwrap().iter().map(|p| p["controllerName"].clone()).collect();
        assert_eq!(controllers, [json!(CONTROLLER_NAME), json!("example.com/other")]);
    }

    #[test]
    fn a_changed_condition_gets_a_new_transition_time() {
        let (mut snapshot, statuses) = snapshot_with_statuses(jiff::Timestamp::UNIX_EPOCH);
        let patches = plan(&snapshot, &statuses);
        snapshot.gateways[0].status = serde_json::from_value(patches[1].status.clone()).unwrap();
        let mut changed = statuses.clone();
        let later = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(60);
        let gw = changed.gateways.get_mut("default/gw").unwrap();
        gw.conditions[0].status = "False".into();
        gw.conditions[0].last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(later);
        let patch = plan(&snapshot, &changed).into_iter().find(|p| p.resource.kind == "Gateway").unwrap();
        assert_eq!(patch.status["conditions"][0]["lastTransitionTime"], json!("1970-01-01T00:01:00Z"));
    }
}
