//! `tollbridge operator` and `tollbridge proxy` against the real API server of the test cluster
//! (tests/support/cluster.rs). Each test scopes its operator to its own namespace and holds the
//! cluster lock, because GatewayClasses and ProviderConfigs are cluster-wide.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::cluster::{exclusive, unique_name, Cluster, Operator, Proxy, TestNamespace, CONTROLLER_NAME};
use support::eventually;
use support::moto::MotoServer;
use support::process::free_port;
use support::redis::{Redis, RedisOptions};

const CONVERGE: Duration = Duration::from_secs(30);

/// Starts an operator for `ns` with a short lease; returns it and its metrics port.
async fn operator(ns: &TestNamespace<'_>, identity: &str) -> (Operator, u16) {
    operator_with(ns, identity, &[]).await
}

/// [`operator`] with `extra` arguments.
async fn operator_with(ns: &TestNamespace<'_>, identity: &str, extra: &[&str]) -> (Operator, u16) {
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut op = Operator::spawn(
        ns.cluster(),
        &[
            "--namespace",
            ns.name(),
            "--lease-namespace",
            ns.name(),
            "--metrics-address",
            &metrics,
            "--identity",
            identity,
            "--lease-duration-seconds",
            "3",
            "--resync-seconds",
            "2",
            "--proxy-image",
            "example.test/tollbridge:dev",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    op.wait_for_log("metrics and health endpoint listening", Duration::from_secs(20)).await;
    (op, port)
}

async fn metrics(port: u16) -> String {
    let client = support::client::Client::new();
    client
        .try_get(&format!("http://127.0.0.1:{port}/metrics"), &[])
        .await
        .map(|r| r.text())
        .unwrap_or_default()
}

/// The value of a metric line `name{labels} value` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// Waits until the operator on `port` has run `passes` whole passes after the call. A pass is
/// counted as it starts and passes run one after another, so `passes + 1` starts mean `passes`
/// passes ran from start to end.
async fn whole_passes(port: u16, passes: u32) {
    const SERIES: &str = "tollbridge_operator_reconciles_total";
    let target = metric(&metrics(port).await, SERIES) + f64::from(passes) + 1.0;
    eventually(&format!("{passes} more reconcile passes"), CONVERGE, || async {
        metric(&metrics(port).await, SERIES) >= target
    })
    .await;
}

/// Condition `type_` in `conditions` (null when absent).
fn condition_of(conditions: &Value, type_: &str) -> Value {
    conditions.as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned()).unwrap_or_default()
}

/// The status of condition `type_` in `conditions` ("" when absent).
fn condition<'a>(conditions: &'a Value, type_: &str) -> (&'a str, &'a str) {
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| (c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or("")))
        .unwrap_or(("", ""))
}

fn class_yaml(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\n\
         spec: {{controllerName: {CONTROLLER_NAME}}}\n"
    )
}

fn gateway_yaml(class: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec:\n  gatewayClassName: {class}\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
    )
}

fn backend_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{tollbridge.dev/backend-url: \
         \"http://127.0.0.1:{port}\"}}\nspec: {{ports: [{{port: 80}}]}}\n"
    )
}

fn route_yaml(name: &str, prefix: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  \
         parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    \
         backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

/// Marks the proxy's pod Running and Ready with an address, as a kubelet would, and lists it as
/// a ready endpoint of its Service, as the EndpointSlice controller would for a pod on a node
/// (this test cluster has no node; tests/node_cluster.rs runs real pods). The Deployment then
/// reports an available replica and the Service a ready endpoint.
async fn make_proxy_available(ns: &TestNamespace<'_>) {
    let selector = "app.kubernetes.io/instance=tollbridge-gw";
    let mut pod = String::new();
    eventually("the proxy pod", CONVERGE, || {
        pod = ns
            .kubectl_ok(&["get", "pods", "-l", selector, "-o", "name"], None)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let found = !pod.is_empty();
        async move { found }
    })
    .await;
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"10.99.0.1","podIPs":[{{"ip":"10.99.0.1"}}],"conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{now}"}}]}}}}"#
    );
    ns.kubectl_ok(&["patch", &pod, "--subresource=status", "--type=merge", "-p", &patch], None);
    ns.apply(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: tollbridge-gw-test\n  \
         labels: {kubernetes.io/service-name: tollbridge-gw}\naddressType: IPv4\n\
         endpoints: [{addresses: [10.99.0.1], conditions: {ready: true}}]\nports: [{port: 80, protocol: TCP}]\n",
    );
}

/// An HTTPRoute `orders` on Gateway `gw`: `/orders` to an ExternalName Service (HTTPS, port 443).
fn apply_orders_route(ns: &TestNamespace<'_>) {
    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: orders}\n\
         spec: {type: ExternalName, externalName: orders.example.com, ports: [{name: https, port: 443}]}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: orders}\nspec:\n  \
         parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /orders}}]\n    \
         backendRefs: [{name: orders, port: 443}]\n",
    );
}

/// Moves Gateway `gateway` to GatewayClass `class`.
fn set_class(ns: &TestNamespace<'_>, gateway: &str, class: &str) {
    let patch = format!(r#"{{"spec":{{"gatewayClassName":"{class}"}}}}"#);
    ns.kubectl_ok(&["patch", "gateway", gateway, "--type=merge", "-p", &patch], None);
}

fn resource_version(ns: &TestNamespace<'_>, kind: &str, name: &str) -> String {
    ns.get_json(kind, name)["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string()
}

/// The proxy configuration the operator wrote for Gateway `gateway`, decompressed.
fn proxy_config(ns: &TestNamespace<'_>, gateway: &str) -> String {
    use base64::Engine as _;
    let secret = ns.get_json("secret", &tollbridge::controller::infra::config_secret_name(gateway));
    let encoded = secret["data"][tollbridge::controller::infra::CONFIG_KEY].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64 config");
    tollbridge::controller::gunzip(&bytes).expect("gzipped config")
}

#[tokio::test]
async fn a_local_gateway_gets_statuses_events_and_its_proxy_objects() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("local-gw");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("local"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18080));
    ns.apply(&backend_yaml("echo", 19999));
    ns.apply(&route_yaml("orders", "/orders", "echo"));
    ns.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: orders}\nspec:\n  \
         parentRefs: [{name: gw}]\n  rules:\n  - matches: [{method: {service: shop.Orders}}]\n    \
         backendRefs: [{name: echo, port: 80}]\n",
    );
    let (_op, port) = operator(&ns, "solo").await;

    eventually("GatewayClass Accepted", CONVERGE, || async {
        let class = cluster.get_cluster_scoped_json("gatewayclass", class.name());
        let features = class["status"]["supportedFeatures"].as_array().map_or(0, Vec::len);
        condition(&class["status"]["conditions"], "Accepted").0 == "True" && features > 10
    })
    .await;
    eventually("Gateway accepted, waiting for its proxy, with an address", CONVERGE, || async {
        let gw = ns.get_json("gateway", "gw");
        condition(&gw["status"]["conditions"], "Accepted") == ("True", "Accepted")
            && condition(&gw["status"]["conditions"], "Programmed") == ("False", "Pending")
            && gw["status"]["addresses"][0]["value"].as_str().is_some_and(|a| a.starts_with("10.0.0."))
            && gw["status"]["listeners"][0]["attachedRoutes"] == 2
    })
    .await;
    // An HTTPRoute and a GRPCRoute of the same name, each with its own status.
    for kind in ["httproute", "grpcroute"] {
        let route = ns.get_json(kind, "orders");
        let parent = &route["status"]["parents"][0];
        assert_eq!(parent["controllerName"], CONTROLLER_NAME, "{kind}");
        assert_eq!(condition(&parent["conditions"], "Accepted").0, "True", "{kind}");
        assert_eq!(condition(&parent["conditions"], "ResolvedRefs").0, "True", "{kind}");
        assert_eq!(parent["conditions"][0]["observedGeneration"], 1, "{kind}");
    }
    let kinds = &ns.get_json("gateway", "gw")["status"]["listeners"][0]["supportedKinds"];
    assert_eq!(kinds[1]["kind"], "GRPCRoute", "{kinds}");

    // The proxy's objects, owned by the Gateway, with a Role that reads only the config Secret.
    let gw_uid = ns.get_json("gateway", "gw")["metadata"]["uid"].clone();
    for kind in ["serviceaccount", "role", "rolebinding", "deployment", "service", "secret"] {
        let name = if kind == "secret" { "tollbridge-gw-config" } else { "tollbridge-gw" };
        let object = ns.get_json(kind, name);
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], gw_uid, "{kind} {name}");
    }
    let role = ns.get_json("role", "tollbridge-gw");
    assert_eq!(role["rules"][0]["resourceNames"][0], "tollbridge-gw-config");
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get", "list", "watch"]));
    let deployment = ns.get_json("deployment", "tollbridge-gw");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example.test/tollbridge:dev");
    assert_eq!(container["args"][2], format!("{}/gw", ns.name()));
    assert_eq!(ns.get_json("service", "tollbridge-gw")["spec"]["type"], "LoadBalancer");

    // Programmed once a replica is available.
    make_proxy_available(&ns).await;
    eventually("Gateway Programmed", CONVERGE, || async {
        condition(&ns.get_json("gateway", "gw")["status"]["conditions"], "Programmed").0 == "True"
    })
    .await;
    let events = ns.kubectl_ok(&["get", "events", "-o", "json"], None);
    assert!(events.contains("Programmed by the Local provider"), "{events}");

    // Hand edits of what we own are repaired.
    ns.kubectl_ok(&["scale", "deployment", "tollbridge-gw", "--replicas=5"], None);
    ns.kubectl_ok(
        &[
            "patch",
            "role",
            "tollbridge-gw",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/rules/0/resources","value":["secrets","configmaps"]}]"#,
        ],
        None,
    );
    eventually("Deployment and Role repaired", CONVERGE, || async {
        ns.get_json("deployment", "tollbridge-gw")["spec"]["replicas"] == 1
            && ns.get_json("role", "tollbridge-gw")["rules"][0]["resources"] == serde_json::json!(["secrets"])
    })
    .await;

    // A changed route: the parent status follows the new generation.
    ns.apply(&route_yaml("orders", "/v2/orders", "echo"));
    eventually("route generation 2 observed", CONVERGE, || async {
        let route = ns.get_json("httproute", "orders");
        route["status"]["parents"][0]["conditions"][0]["observedGeneration"] == 2
    })
    .await;
    // Deleted routes: no longer attached.
    ns.delete("httproute", "orders");
    eventually("only the GRPCRoute attached", CONVERGE, || async {
        ns.get_json("gateway", "gw")["status"]["listeners"][0]["attachedRoutes"] == 1
    })
    .await;
    ns.delete("grpcroute", "orders");
    eventually("no attached routes", CONVERGE, || async {
        ns.get_json("gateway", "gw")["status"]["listeners"][0]["attachedRoutes"] == 0
    })
    .await;

    // Nothing changes: nothing is written.
    let before = (
        resource_version(&ns, "gateway", "gw"),
        metric(&metrics(port).await, "tollbridge_operator_status_writes_total{kind=\"Gateway\"}"),
    );
    whole_passes(port, 2).await;
    let after = (
        resource_version(&ns, "gateway", "gw"),
        metric(&metrics(port).await, "tollbridge_operator_status_writes_total{kind=\"Gateway\"}"),
    );
    assert_eq!(before, after, "a pass without changes wrote the Gateway");
    assert!(metric(&metrics(port).await, "tollbridge_operator_reconciles_total") >= 2.0);

    // Deleting the Gateway removes its objects (garbage collection by owner reference).
    ns.delete("gateway", "gw");
    ns.wait_deleted("deployment", "tollbridge-gw", CONVERGE);
    ns.wait_deleted("secret", "tollbridge-gw-config", CONVERGE);
}

#[tokio::test]
async fn api_keys_get_generated_secrets_and_quota_policies_get_status() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("keys");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("keys"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18081));
    ns.apply(&backend_yaml("echo", 19999));
    ns.apply(&route_yaml("orders", "/orders", "echo"));
    ns.apply(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata: {name: gold}\nspec:\n  \
         targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]\n  \
         apiKey: {required: true, header: X-Api-Key}\n  quota: {requests: 1000, period: Day}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: alice}\nspec:\n  \
         policyRef: {name: gold}\n  secretRef: {name: alice-key}\n",
    );
    let (op, _) = operator(&ns, "solo").await;

    eventually("the ApiKey's Secret", CONVERGE, || async {
        ns.try_get_json("secret", "alice-key").is_some()
    })
    .await;
    let secret = ns.get_json("secret", "alice-key");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "ApiKey");
    let encoded = secret["data"]["api-key"].as_str().expect("data.api-key");
    let key = String::from_utf8(base64_decode(encoded)).expect("utf-8 key");
    assert_eq!(key.len(), 43, "32 random bytes, base64url");
    let key_id = hex::encode(&Sha256::digest(key.as_bytes())[..4]);

    eventually("ApiKey Ready with its key id", CONVERGE, || async {
        let api_key = ns.get_json("apikey", "alice");
        condition(&api_key["status"]["conditions"], "Ready").0 == "True"
            && api_key["status"]["keyId"] == key_id
    })
    .await;
    eventually("QuotaPolicy accepted for the route", CONVERGE, || async {
        let policy = ns.get_json("quotapolicy", "gold");
        let ancestor = &policy["status"]["ancestors"][0];
        ancestor["controllerName"] == CONTROLLER_NAME
            && condition(&ancestor["conditions"], "Accepted").0 == "True"
    })
    .await;
    let events = ns.kubectl_ok(&["get", "events", "-o", "json"], None);
    assert!(events.contains(&format!("Generated a key (id {key_id})")), "{events}");
    for text in [op.log(), events, ns.kubectl_ok(&["get", "apikey", "alice", "-o", "yaml"], None)] {
        assert!(!text.contains(&key), "the key leaked");
    }
    // The config Secret of the proxy carries the key (its only reader is that proxy).
    assert!(ns.try_get_json("secret", "tollbridge-gw-config").is_some());
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

#[tokio::test]
async fn a_cloud_gateway_holds_a_finalizer_until_cleaned_up() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("cloud");
    // Azure without credentials in the environment: the provider cannot be set up (and so
    // never reaches a network); the Gateway says why.
    let config = cluster.delete_on_drop("providerconfig", &unique_name("azure"));
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("azure"));
    cluster.apply_cluster_scoped(&format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: {}}}\n\
         spec: {{provider: Azure, azure: {{subscriptionID: 00000000-0000-0000-0000-000000000000, resourceGroup: rg, serviceName: apim}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {}}}\n\
         spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: {}}}\n",
        config.name(),
        class.name(),
        config.name()
    ));
    ns.apply(&gateway_yaml(class.name(), 80));
    let (_op, port) = operator(&ns, "solo").await;

    eventually("finalizer and an honest Programmed=False", CONVERGE, || async {
        let gw = ns.get_json("gateway", "gw");
        let finalizers = gw["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        let programmed = condition_of(&gw["status"]["conditions"], "Programmed");
        finalizers.contains(&Value::from("tollbridge.dev/cleanup"))
            && programmed["status"] == "False"
            && programmed["message"].as_str().is_some_and(|m| m.contains("Azure"))
    })
    .await;
    // Deleted while its provider cannot act: nothing confirms its API Management entities are
    // gone, so the finalizer stays, an Event and the status say why, and it is tried again.
    ns.kubectl_ok(&["delete", "gateway", "gw", "--wait=false"], None);
    eventually("a DeprovisioningFailed Event and a status saying why", CONVERGE, || async {
        let events = ns.kubectl_ok(&["get", "events", "-o", "json"], None);
        let gw = ns.get_json("gateway", "gw");
        let programmed = condition_of(&gw["status"]["conditions"], "Programmed");
        events.contains("DeprovisioningFailed")
            && programmed["message"].as_str().is_some_and(|m| m.contains("Cannot remove"))
    })
    .await;
    whole_passes(port, 2).await;
    let gw = ns.get_json("gateway", "gw");
    assert_eq!(
        gw["metadata"]["finalizers"][0], "tollbridge.dev/cleanup",
        "the finalizer went without a delete"
    );
    assert!(
        gw["status"]["conditions"].to_string().contains("tollbridge.dev/deletion-policy=Orphan"),
        "the status does not name the way out: {gw:#}"
    );
    // A policy the operator does not know is refused, and nothing is left behind on its say-so.
    ns.kubectl_ok(&["annotate", "gateway", "gw", "tollbridge.dev/deletion-policy=orphan"], None);
    eventually("the misspelled policy named in the status", CONVERGE, || async {
        ns.get_json("gateway", "gw")["status"]["conditions"].to_string().contains("must be Delete or Orphan")
    })
    .await;
    // The way out the status names: leave the entities in place, with an Event saying so.
    ns.kubectl_ok(
        &["annotate", "--overwrite", "gateway", "gw", "tollbridge.dev/deletion-policy=Orphan"],
        None,
    );
    ns.wait_deleted("gateway", "gw", CONVERGE);
    let events = ns.kubectl_ok(&["get", "events", "-o", "json"], None);
    assert!(events.contains("Orphaned") && events.contains("Left in place"), "no Orphaned Event: {events}");
}

#[tokio::test]
async fn a_restart_mid_reconcile_converges_without_duplicates() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("restart");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("restart"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18082));
    ns.apply(&backend_yaml("echo", 19999));
    let routes: String =
        (0..30).map(|i| route_yaml(&format!("r{i}"), &format!("/r{i}"), "echo") + "---\n").collect();
    ns.apply(&routes);

    let (mut first, _) = operator(&ns, "first").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.kill();
    let (_second, _) = operator(&ns, "second").await;
    eventually("every route accepted", Duration::from_secs(60), || async {
        let list: Value = serde_json::from_str(&ns.kubectl_ok(&["get", "httproutes", "-o", "json"], None))
            .unwrap_or_default();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items.len() == 30
            && items.iter().all(|r| {
                let parents = r["status"]["parents"].as_array().map_or(0, Vec::len);
                parents == 1 && condition(&r["status"]["parents"][0]["conditions"], "Accepted").0 == "True"
            })
    })
    .await;
    let gw = ns.get_json("gateway", "gw");
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 30);
    let count = |kind: &str| {
        let list: Value =
            serde_json::from_str(&ns.kubectl_ok(
                &["get", kind, "-l", "app.kubernetes.io/managed-by=tollbridge", "-o", "json"],
                None,
            ))
            .unwrap_or_default();
        list["items"].as_array().map_or(0, Vec::len)
    };
    for kind in ["deployments", "services", "serviceaccounts", "roles", "rolebindings", "secrets"] {
        assert_eq!(count(kind), 1, "{kind}");
    }
    let conditions = gw["status"]["conditions"].as_array().map_or(0, Vec::len);
    assert_eq!(conditions, 2, "one Accepted and one Programmed condition: {gw:#}");
}

#[tokio::test]
async fn two_operators_elect_one_leader_and_fail_over() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("leader");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("leader"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18083));
    ns.apply(&backend_yaml("echo", 19999));

    let (mut a, a_port) = operator(&ns, "replica-a").await;
    a.wait_for_log("acquired leadership", Duration::from_secs(20)).await;
    let (b, b_port) = operator(&ns, "replica-b").await;
    let holder = |ns: &TestNamespace<'_>| {
        ns.get_json("lease", "tollbridge-operator")["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(holder(&ns), "replica-a");
    ns.apply(&route_yaml("one", "/one", "echo"));
    eventually("route accepted by the leader", CONVERGE, || async {
        ns.get_json("httproute", "one")["status"]["parents"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    eventually("metrics show who leads", Duration::from_secs(10), || async {
        metric(&metrics(a_port).await, "tollbridge_operator_leader") == 1.0
            && metric(&metrics(b_port).await, "tollbridge_operator_leader") == 0.0
    })
    .await;
    assert!(!b.log().contains("leading: reconciling"), "the follower reconciled:\n{}", b.log());

    // The leader dies without releasing: the follower takes over after the lease expires.
    let killed = Instant::now();
    a.kill();
    eventually("replica-b holds the lease", Duration::from_secs(20), || async { holder(&ns) == "replica-b" })
        .await;
    let failover = killed.elapsed();
    ns.apply(&route_yaml("two", "/two", "echo"));
    eventually("route accepted by the new leader", CONVERGE, || async {
        ns.get_json("httproute", "two")["status"]["parents"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    eprintln!("failover took {failover:?} (lease duration 3 s)");
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
}

#[tokio::test]
async fn the_proxy_serves_a_new_route_within_two_seconds_of_kubectl_apply() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("proxy");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("proxy"));
    let backend = support::recorder::Recorder::spawn("echo").await;
    let listener_port = free_port();
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), listener_port));
    ns.apply(&backend_yaml("echo", backend.addr.port()));
    ns.apply(&route_yaml("first", "/first", "echo"));
    let (_op, _) = operator(&ns, "solo").await;
    let admin = format!("127.0.0.1:{}", free_port());
    let gateway = format!("{}/gw", ns.name());
    let _proxy = Proxy::spawn(cluster, &["--gateway", &gateway, "--admin-address", &admin]);

    let client = support::client::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{listener_port}{path}");
    eventually("the first route is served", CONVERGE, || async {
        client.try_get(&url("/first"), &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    assert_eq!(client.get(&url("/second"), &[]).await.status, 404);

    ns.apply(&route_yaml("second", "/second", "echo"));
    let applied = Instant::now();
    eventually("the new route is served", Duration::from_secs(2), || async {
        client.try_get(&url("/second"), &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    eprintln!("new HTTPRoute served {:?} after kubectl apply returned", applied.elapsed());
    assert!(backend.count() >= 2);
}

/// Puts a CRD back from `crds/` when dropped, even when the test fails.
struct RestoreCrd<'c>(&'c Cluster, &'static str);

impl Drop for RestoreCrd<'_> {
    fn drop(&mut self) {
        let path = format!("{}/../crds/{}", env!("CARGO_MANIFEST_DIR"), self.1);
        let _ = self.0.kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=tollbridge-test-harness",
                "-f",
                &path,
            ],
            None,
        );
        let _ = self.0.kubectl(
            &["wait", "--for", "condition=Established", "--timeout=60s", "crd/apikeys.tollbridge.dev"],
            None,
        );
    }
}

#[tokio::test]
async fn a_missing_crd_is_reported_and_waited_for() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("no-crd");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("nocrd"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18084));
    let restore = RestoreCrd(cluster, "tollbridge.dev_apikeys.yaml");
    cluster.kubectl_ok(&["delete", "crd", "apikeys.tollbridge.dev", "--wait=true", "--timeout=60s"], None);

    let (mut op, port) = operator(&ns, "solo").await;
    op.wait_for_log("waiting for watches to sync", Duration::from_secs(20)).await;
    assert!(op.log().contains("ApiKey"), "the log names the missing kind:\n{}", op.log());
    let client = support::client::Client::new();
    let readyz = client.get(&format!("http://127.0.0.1:{port}/readyz"), &[]).await;
    assert_eq!(readyz.status, 503);
    assert!(ns.get_json("gateway", "gw")["status"]["conditions"][0]["reason"] != "Accepted");

    drop(restore);
    eventually("ready once the CRD is back", Duration::from_secs(60), || async {
        client.try_get(&format!("http://127.0.0.1:{port}/readyz"), &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    eventually("the Gateway accepted", CONVERGE, || async {
        condition(&ns.get_json("gateway", "gw")["status"]["conditions"], "Accepted").0 == "True"
    })
    .await;
    assert!(op.is_running());
}

#[tokio::test]
async fn an_aws_gateway_is_provisioned_into_moto_and_removed_with_it() {
    let _lock = exclusive().await;
    let moto = MotoServer::start();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let cluster = Cluster::shared();
    let ns = cluster.namespace("aws");
    let config = cluster.delete_on_drop("providerconfig", &unique_name("aws"));
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("aws"));
    cluster.apply_cluster_scoped(&format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: {config}}}\n\
         spec: {{provider: AWS, aws: {{region: us-east-1, apiType: HTTP, endpointURL: \"{url}\"}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}}}\n\
         spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: {config}}}\n",
        config = config.name(),
        class = class.name(),
        url = moto.url,
    ));
    ns.apply(&gateway_yaml(class.name(), 80));
    apply_orders_route(&ns);
    let (_op, _) = operator(&ns, "solo").await;

    eventually("Gateway programmed on API Gateway", Duration::from_secs(60), || async {
        let gw = ns.get_json("gateway", "gw");
        condition(&gw["status"]["conditions"], "Programmed").0 == "True"
            && gw["status"]["addresses"][0]["value"]
                .as_str()
                .is_some_and(|a| a.ends_with(".execute-api.us-east-1.amazonaws.com"))
    })
    .await;
    let gw = ns.get_json("gateway", "gw");
    assert_eq!(gw["metadata"]["finalizers"][0], "tollbridge.dev/cleanup");
    let api_id =
        gw["status"]["addresses"][0]["value"].as_str().unwrap().split('.').next().unwrap().to_string();
    let kube_system = cluster.get_cluster_scoped_json("namespace", "kube-system")["metadata"]["uid"].clone();
    let api = moto.get(&format!("/v2/apis/{api_id}")).await;
    assert_eq!(
        api["tags"]["tollbridge.dev/owner"],
        format!("{}/{}/gw", kube_system.as_str().unwrap(), ns.name())
    );
    let routes = moto.get(&format!("/v2/apis/{api_id}/routes")).await;
    let mut keys: Vec<&str> =
        routes["items"].as_array().unwrap().iter().filter_map(|r| r["routeKey"].as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["ANY /orders", "ANY /orders/{proxy+}"]);
    let events = ns.kubectl_ok(&["get", "events", "-o", "json"], None);
    assert!(events.contains("Programmed by the AWS provider"), "{events}");

    // A route deleted out of band is back after the next resync (every 2 s here).
    let route_id =
        routes["items"].as_array().unwrap().iter().find(|r| r["routeKey"] == "ANY /orders").unwrap()
            ["routeId"]
            .as_str()
            .unwrap()
            .to_string();
    moto.call(hyper::Method::DELETE, &format!("/v2/apis/{api_id}/routes/{route_id}")).await;
    eventually("the deleted route repaired", Duration::from_secs(20), || async {
        let routes = moto.get(&format!("/v2/apis/{api_id}/routes")).await;
        routes["items"].as_array().is_some_and(|rs| rs.iter().any(|r| r["routeKey"] == "ANY /orders"))
    })
    .await;

    // Deleting the Gateway removes the API first, then the finalizer lets the object go.
    ns.delete("gateway", "gw");
    ns.wait_deleted("gateway", "gw", CONVERGE);
    let apis = moto.get("/v2/apis").await;
    let left: Vec<&Value> =
        apis["items"].as_array().unwrap().iter().filter(|a| a["apiId"] == api_id.as_str()).collect();
    assert!(left.is_empty(), "API {api_id} left behind: {apis}");
}

/// An AWS ProviderConfig pointing at moto in `region`, and a class using it.
fn aws_class_yaml(config: &str, class: &str, region: &str, moto: &MotoServer) -> String {
    format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: {config}}}\n\
         spec: {{provider: AWS, aws: {{region: {region}, apiType: HTTP, endpointURL: \"{url}\"}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}}}\n\
         spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: {config}}}\n",
        url = moto.url,
    )
}

/// The ids of the HTTP APIs in moto's `region` tagged as this namespace's Gateway `gw`.
async fn apis_of(moto: &MotoServer, region: &str, ns: &TestNamespace<'_>) -> Vec<String> {
    let apis = moto.get_in(region, "/v2/apis").await;
    apis["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["tags"]["tollbridge.dev/owner"]
                .as_str()
                .is_some_and(|o| o.ends_with(&format!("/{}/gw", ns.name())))
        })
        .filter_map(|a| a["apiId"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_cloud_gateway_is_deleted_from_where_it_was_provisioned_after_its_settings_are_gone() {
    let _lock = exclusive().await;
    let moto = MotoServer::start();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let cluster = Cluster::shared();
    let ns = cluster.namespace("orphan");
    let config = cluster.delete_on_drop("providerconfig", &unique_name("aws"));
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("aws"));
    cluster.apply_cluster_scoped(&aws_class_yaml(config.name(), class.name(), "eu-central-1", &moto));
    ns.apply(&gateway_yaml(class.name(), 80));
    let (_op, _) = operator(&ns, "solo").await;
    eventually("the API provisioned", Duration::from_secs(60), || async {
        apis_of(&moto, "eu-central-1", &ns).await.len() == 1
    })
    .await;
    let record =
        ns.get_json("gateway", "gw")["metadata"]["annotations"]["tollbridge.dev/provisioned-into"].clone();
    assert!(record.as_str().is_some_and(|r| r.contains("eu-central-1")), "record: {record}");

    // The ProviderConfig goes first: the Gateway no longer resolves to a provider...
    cluster.delete_cluster_scoped("providerconfig", config.name());
    eventually("the Gateway not accepted", CONVERGE, || async {
        condition(&ns.get_json("gateway", "gw")["status"]["conditions"], "Accepted").0 == "False"
    })
    .await;
    // ...and is still deleted from where it was recorded, before the finalizer lets it go.
    ns.delete("gateway", "gw");
    ns.wait_deleted("gateway", "gw", Duration::from_secs(60));
    assert!(apis_of(&moto, "eu-central-1", &ns).await.is_empty(), "the API was left behind");
}

#[tokio::test]
async fn changing_where_a_gateway_goes_cleans_the_old_place_and_provisions_the_new() {
    let _lock = exclusive().await;
    let moto = MotoServer::start();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let cluster = Cluster::shared();
    let ns = cluster.namespace("switch");
    let config = cluster.delete_on_drop("providerconfig", &unique_name("aws"));
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("aws"));
    let local = cluster.delete_on_drop("gatewayclass", &unique_name("local"));
    cluster.apply_cluster_scoped(&aws_class_yaml(config.name(), class.name(), "us-west-2", &moto));
    cluster.apply_cluster_scoped(&class_yaml(local.name()));
    ns.apply(&gateway_yaml(class.name(), 80));
    let (_op, _) = operator(&ns, "solo").await;
    eventually("provisioned in us-west-2", Duration::from_secs(60), || async {
        apis_of(&moto, "us-west-2", &ns).await.len() == 1
    })
    .await;

    // Another region: the API moves (created there, deleted here), the record follows.
    cluster.apply_cluster_scoped(&aws_class_yaml(config.name(), class.name(), "ap-south-1", &moto));
    eventually("moved to ap-south-1", Duration::from_secs(60), || async {
        apis_of(&moto, "ap-south-1", &ns).await.len() == 1
            && apis_of(&moto, "us-west-2", &ns).await.is_empty()
    })
    .await;
    eventually("the record names ap-south-1 only", CONVERGE, || async {
        let gw = ns.get_json("gateway", "gw");
        let record = gw["metadata"]["annotations"]["tollbridge.dev/provisioned-into"]
            .as_str()
            .unwrap_or("")
            .to_string();
        record.contains("ap-south-1") && !record.contains("us-west-2")
    })
    .await;

    // AWS → Local: the API goes, and the finalizer with it; the proxy's objects come.
    set_class(&ns, "gw", local.name());
    eventually("Local: API gone, finalizer gone, proxy made", Duration::from_secs(60), || async {
        let gw = ns.get_json("gateway", "gw");
        apis_of(&moto, "ap-south-1", &ns).await.is_empty()
            && gw["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)
            && gw["metadata"]["annotations"]["tollbridge.dev/provisioned-into"].is_null()
            && ns.try_get_json("deployment", "tollbridge-gw").is_some()
    })
    .await;

    // Local → AWS: the proxy's objects go, the API comes back.
    set_class(&ns, "gw", class.name());
    eventually("AWS again: API made, proxy gone", Duration::from_secs(60), || async {
        apis_of(&moto, "ap-south-1", &ns).await.len() == 1
            && ns.try_get_json("deployment", "tollbridge-gw").is_none()
    })
    .await;
    ns.delete("gateway", "gw");
    ns.wait_deleted("gateway", "gw", Duration::from_secs(60));
    assert!(apis_of(&moto, "ap-south-1", &ns).await.is_empty());
}

#[tokio::test]
async fn a_local_gateway_that_stops_being_accepted_keeps_serving() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("keep");
    let config = cluster.delete_on_drop("providerconfig", &unique_name("local"));
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("local"));
    let class_with_config = format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: {config}}}\n\
         spec: {{provider: Local, local: {{serviceType: ClusterIP}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}}}\n\
         spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: {config}}}\n",
        config = config.name(),
        class = class.name(),
    );
    cluster.apply_cluster_scoped(&class_with_config);
    ns.apply(&gateway_yaml(class.name(), 18081));
    let (_op, port) = operator(&ns, "solo").await;
    eventually("the proxy's objects", CONVERGE, || async {
        ns.try_get_json("deployment", "tollbridge-gw").is_some()
            && ns.try_get_json("service", "tollbridge-gw").is_some()
    })
    .await;
    let config_before = proxy_config(&ns, "gw");

    // Its ProviderConfig deleted: not accepted, but nothing is torn down, and the status says so.
    cluster.delete_cluster_scoped("providerconfig", config.name());
    eventually("not accepted, still serving", CONVERGE, || async {
        let gw = ns.get_json("gateway", "gw");
        let programmed = condition_of(&gw["status"]["conditions"], "Programmed");
        condition(&gw["status"]["conditions"], "Accepted").0 == "False"
            && programmed["message"].as_str().is_some_and(|m| m.contains("keeps serving"))
    })
    .await;
    whole_passes(port, 2).await;
    assert!(ns.try_get_json("deployment", "tollbridge-gw").is_some(), "the proxy was deleted");
    assert!(
        ns.try_get_json("service", "tollbridge-gw").is_some(),
        "the Service (and its address) was deleted"
    );
    let config_after = proxy_config(&ns, "gw");
    assert!(config_after == config_before, "the config changed from\n{config_before}\nto\n{config_after}");

    // Fixed again: accepted and programmed as before, with the same objects.
    cluster.apply_cluster_scoped(&class_with_config);
    eventually("accepted again", CONVERGE, || async {
        condition(&ns.get_json("gateway", "gw")["status"]["conditions"], "Accepted").0 == "True"
    })
    .await;
}

/// Two controllers write `parents` of one HTTPRoute. Our status is planned from what the cache
/// held; when the other controller wrote its entry after that, the write must not drop it.
#[tokio::test]
async fn route_parents_written_meanwhile_by_another_controller_are_kept() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("parents");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("local"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18082));
    ns.apply(&backend_yaml("echo", 19999));
    ns.apply(&route_yaml("orders", "/orders", "echo"));

    // What the operator's cache holds: the objects before the other controller's write.
    let typed = |kind: &str, name: &str| ns.get_json(kind, name);
    let snapshot = tollbridge::snapshot::Snapshot {
        now: jiff::Timestamp::now(),
        gateway_classes: vec![serde_json::from_value(
            cluster.get_cluster_scoped_json("gatewayclass", class.name()),
        )
        .unwrap()],
        gateways: vec![serde_json::from_value(typed("gateway", "gw")).unwrap()],
        http_routes: vec![serde_json::from_value(typed("httproute", "orders")).unwrap()],
        namespaces: vec![
            serde_json::from_value(cluster.get_cluster_scoped_json("namespace", ns.name())).unwrap()
        ],
        services: vec![serde_json::from_value(typed("service", "echo")).unwrap()],
        ..Default::default()
    };
    // The other controller writes its entry now.
    let other = r#"{"status":{"parents":[{"parentRef":{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"mesh"},"controllerName":"example.com/other","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"ok","observedGeneration":1,"lastTransitionTime":"2026-01-01T00:00:00Z"}]}]}}"#;
    ns.kubectl_ok(
        &["patch", "httproute", "orders", "--subresource=status", "--type=merge", "-p", other],
        None,
    );

    let translation = tollbridge::translate::translate(&snapshot, &tollbridge::providers::capabilities);
    let client = cluster.client().await;
    let patches = tollbridge::controller::status::plan(&snapshot, &translation.statuses);
    let route_patch =
        patches.iter().find(|p| p.resource.kind == "HTTPRoute").expect("a route status to write");
    tollbridge::controller::status::write(&client, route_patch).await.expect("status written");

    let route = ns.get_json("httproute", "orders");
    let writers: Vec<&str> = route["status"]["parents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["controllerName"].as_str())
        .collect();
    assert!(writers.contains(&CONTROLLER_NAME), "our entry is missing: {writers:?}");
    assert!(writers.contains(&"example.com/other"), "the other controller's entry was dropped: {writers:?}");
}

/// The record of where a Gateway is provisioned (and its finalizer) is written only to the
/// Gateway it was meant for: one deleted and created again under the same name gets neither.
#[tokio::test]
async fn the_record_and_finalizer_go_only_to_the_gateway_they_were_meant_for() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("uid");
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("local"));
    cluster.apply_cluster_scoped(&class_yaml(class.name()));
    ns.apply(&gateway_yaml(class.name(), 18083));
    let old: tollbridge::api::gateway::Gateway =
        serde_json::from_value(ns.get_json("gateway", "gw")).unwrap();
    ns.delete("gateway", "gw");
    ns.wait_deleted("gateway", "gw", CONVERGE);
    ns.apply(&gateway_yaml(class.name(), 18083));
    let target = tollbridge_provider::ProviderSettings::Aws(tollbridge_provider::AwsSettings {
        region: "eu-west-1".into(),
        ..Default::default()
    });
    let client = cluster.client().await;
    let written = tollbridge::controller::set_record(&client, &old, &[target], false).await;
    assert!(written.is_err(), "a record was written over another Gateway of the same name");
    let new = ns.get_json("gateway", "gw");
    assert!(new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty), "{new:#}");
    assert!(new["metadata"]["annotations"]["tollbridge.dev/provisioned-into"].is_null(), "{new:#}");
}

/// `apiType: Auto` moves a Gateway from an HTTP API to a REST API when a QuotaPolicy starts to
/// need API keys: the new hostname is not a silent side effect but a Warning Event and a status
/// message.
#[tokio::test]
async fn an_auto_switch_to_a_rest_api_is_announced() {
    let _lock = exclusive().await;
    let moto = MotoServer::start();
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let cluster = Cluster::shared();
    let ns = cluster.namespace("auto");
    let config = cluster.delete_on_drop("providerconfig", &unique_name("aws"));
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("aws"));
    cluster.apply_cluster_scoped(
        &aws_class_yaml(config.name(), class.name(), "us-east-2", &moto)
            .replace("apiType: HTTP", "apiType: Auto"),
    );
    ns.apply(&gateway_yaml(class.name(), 80));
    apply_orders_route(&ns);
    let (_op, _) = operator(&ns, "solo").await;
    eventually("an HTTP API", Duration::from_secs(60), || async {
        apis_of(&moto, "us-east-2", &ns).await.len() == 1
    })
    .await;

    ns.apply(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata: {name: gold}\nspec:\n  \
         targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]\n  \
         apiKey: {required: true}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: acme}\nstringData: {api-key: acme-key-0001-long-enough-for-aws}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: acme}\nspec: {policyRef: {name: gold}, secretRef: {name: acme}}\n",
    );
    eventually("the replacement announced", Duration::from_secs(90), || async {
        let events = ns.kubectl_ok(&["get", "events", "-o", "json"], None);
        let gw = ns.get_json("gateway", "gw");
        let programmed = condition_of(&gw["status"]["conditions"], "Programmed");
        events.contains("\"reason\": \"Replaced\"")
            && programmed["message"].as_str().is_some_and(|m| m.contains("Replaced:"))
    })
    .await;
    assert!(apis_of(&moto, "us-east-2", &ns).await.is_empty(), "the HTTP API is still there");
    ns.delete("gateway", "gw");
    ns.wait_deleted("gateway", "gw", Duration::from_secs(60));
}

#[tokio::test]
async fn api_key_usage_is_read_from_the_counter_store_and_written_only_when_it_changes() {
    const PASSWORD: &str = "usage-store-password-41c7";
    const KEY: &str = "usage-key-alice-000000001";
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("usage");
    let mut redis = Redis::start(RedisOptions { password: Some(PASSWORD.into()), tls: None });
    let class = cluster.delete_on_drop("gatewayclass", &unique_name("usage"));
    let config = cluster.delete_on_drop("providerconfig", &unique_name("usage"));
    cluster.apply_cluster_scoped(&format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: {config}}}\nspec:\n  \
         provider: Local\n  local:\n    counterStore: {{url: \"{url}\", passwordSecretRef: {{name: redis-auth}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}}}\n\
         spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: {config}}}\n",
        config = config.name(),
        class = class.name(),
        url = redis.url(),
    ));
    let backend = support::recorder::Recorder::spawn("echo").await;
    let listener_port = free_port();
    ns.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: redis-auth}}\nstringData: {{password: {PASSWORD}}}\n"
    ));
    ns.apply(&gateway_yaml(class.name(), listener_port));
    ns.apply(&backend_yaml("echo", backend.addr.port()));
    ns.apply(&route_yaml("orders", "/orders", "echo"));
    ns.apply(&format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata: {{name: gold}}\nspec:\n  \
         targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}}]\n  \
         apiKey: {{required: true}}\n  quota: {{requests: 10, period: Month}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: alice-key}}\nstringData: {{api-key: {KEY}}}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: alice}}\nspec:\n  \
         policyRef: {{name: gold}}\n  secretRef: {{name: alice-key}}\n"
    ));
    let (op, _) = operator_with(&ns, "solo", &["--usage-interval-seconds", "1"]).await;
    // The proxy as its Deployment would run it (this cluster has no node): the store's flags
    // from the ProviderConfig, the password from the Secret.
    let admin = format!("127.0.0.1:{}", free_port());
    let gateway = format!("{}/gw", ns.name());
    let password_file = redis.password_file().display().to_string();
    let url = redis.url();
    let _proxy = Proxy::spawn(
        cluster,
        &[
            "--gateway",
            &gateway,
            "--admin-address",
            &admin,
            "--counter-store",
            &url,
            "--counter-store-password-file",
            &password_file,
        ],
    );
    let client = support::client::Client::new();
    let orders = format!("http://127.0.0.1:{listener_port}/orders");
    eventually("the route is served with the key", CONVERGE, || async {
        client.try_get(&orders, &[("x-api-key", KEY)]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    for _ in 0..2 {
        assert_eq!(client.get(&orders, &[("x-api-key", KEY)]).await.status, 200);
    }

    let usage = |field: &str| ns.get_json("apikey", "alice")["status"]["usage"][field].as_i64();
    eventually("ApiKey status.usage from the store", CONVERGE, || async {
        usage("used") == Some(3) && usage("remaining") == Some(7) && usage("limit") == Some(10)
    })
    .await;
    let last_seen = &ns.get_json("apikey", "alice")["status"]["usage"]["lastSeen"];
    assert!(last_seen.as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "lastSeen {last_seen}");
    let table = ns.kubectl_ok(&["get", "apikey", "alice"], None);
    let (head, row) = table.split_once('\n').expect("kubectl table");
    // Columns are aligned; an empty one (CONSUMER here) is blank, so read by position.
    let cell = |name: &str| {
        let at = head.find(name).unwrap_or_else(|| panic!("no {name} column:\n{table}"));
        row.get(at..).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default()
    };
    assert_eq!((cell("USED"), cell("REMAINING")), ("3", "7"), "{table}");

    // Unchanged counts are not written again; a new request is.
    let version = resource_version(&ns, "apikey", "alice");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(resource_version(&ns, "apikey", "alice"), version, "usage written again while unchanged");
    assert_eq!(client.get(&orders, &[("x-api-key", KEY)]).await.status, 200);
    eventually("the new count", CONVERGE, || async { usage("used") == Some(4) }).await;
    // The status writer's passes (every 2 s here) leave the usage alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(usage("used"), Some(4));
    let yaml = ns.kubectl_ok(&["get", "apikey", "alice", "-o", "yaml"], None);
    for text in [op.log(), yaml] {
        assert!(!text.contains(PASSWORD) && !text.contains(KEY), "a secret leaked:\n{text}");
    }

    // The store goes away and comes back: the Gateway says so.
    let degraded = || {
        let gateway = ns.get_json("gateway", "gw");
        let condition = condition_of(&gateway["status"]["conditions"], "Degraded");
        (
            condition["status"].as_str().unwrap_or_default().to_owned(),
            condition["reason"].as_str().unwrap_or_default().to_owned(),
        )
    };
    eventually("Degraded=False while the store answers", CONVERGE, || async {
        degraded() == ("False".into(), "CounterStoreAvailable".into())
    })
    .await;
    redis.kill();
    eventually("Degraded=True once the store is gone", CONVERGE, || async {
        degraded() == ("True".into(), "CounterStoreUnavailable".into())
    })
    .await;
    let message =
        condition_of(&ns.get_json("gateway", "gw")["status"]["conditions"], "Degraded")["message"].clone();
    assert!(!message.to_string().contains(PASSWORD), "{message}");
    redis.start_again();
    eventually("Degraded=False when it is back", CONVERGE, || async {
        degraded() == ("False".into(), "CounterStoreAvailable".into())
    })
    .await;
}
