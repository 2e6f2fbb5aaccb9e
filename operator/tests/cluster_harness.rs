//! The test cluster itself (tests/support/cluster.rs), without the operator: a real
//! kube-apiserver with the Gateway API standard CRDs and ours installed, validating what
//! is applied to it as it would in production.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, CONTROLLER_NAME};

/// Panics unless `stderr` contains every one of `needles`.
fn assert_mentions(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in kubectl's error:\n{stderr}");
    }
}

/// The Kubernetes minor the tests run against: the newest supported by default, the oldest in
/// the compatibility run (`TOLLBRIDGE_TEST_KUBE_MINOR`, e.g. `v1.33`).
fn minor_under_test() -> String {
    std::env::var("TOLLBRIDGE_TEST_KUBE_MINOR").unwrap_or_else(|_| "v1.37".into())
}

#[test]
fn the_server_is_the_kubernetes_version_under_test() {
    let cluster = Cluster::shared();
    assert!(cluster.api_server().starts_with("https://127.0.0.1:"), "api server {}", cluster.api_server());
    let out = cluster.kubectl_ok(&["version", "-o", "json"], None);
    let version: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl version -o json: {e}:\n{out}"));
    let minor = format!("{}.", minor_under_test());
    let server = version["serverVersion"]["gitVersion"].as_str().unwrap_or_default();
    assert!(server.starts_with(&minor), "server version {server:?}, expected {minor}x, in:\n{out}");
    let client = version["clientVersion"]["gitVersion"].as_str().unwrap_or_default();
    assert!(client.starts_with(&minor), "kubectl version {client:?}, expected {minor}x, in:\n{out}");
}

#[test]
fn the_crds_are_established() {
    let cluster = Cluster::shared();
    for crd in [
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "providerconfigs.tollbridge.dev",
        "quotapolicies.tollbridge.dev",
        "apikeys.tollbridge.dev",
    ] {
        let out = cluster.kubectl_ok(
            &["get", "crd", crd, "-o", r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#],
            None,
        );
        assert_eq!(out.trim(), "True", "CRD {crd} not Established");
    }
}

#[test]
fn gateway_api_objects_are_accepted() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-gateway-api");
    let class = cluster.unique_name("harness-class");
    let _class_guard = cluster.delete_on_drop("gatewayclass", &class);

    cluster.apply_cluster_scoped(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: {class}
spec:
  controllerName: {CONTROLLER_NAME}
"
    ));
    ns.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
spec:
  gatewayClassName: {class}
  listeners:
  - name: http
    protocol: HTTP
    port: 80
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api
spec:
  parentRefs:
  - name: web
  hostnames: [api.example.com]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /v1}}
    backendRefs:
    - name: backend
      port: 8080
"
    ));

    let gc = cluster.get_cluster_scoped_json("gatewayclass", &class);
    assert_eq!(gc["spec"]["controllerName"], CONTROLLER_NAME, "{gc:#}");

    let gateway = ns.get_json("gateway", "web");
    assert_eq!(gateway["metadata"]["namespace"], ns.name(), "{gateway:#}");
    assert_eq!(gateway["spec"]["gatewayClassName"], class.as_str(), "{gateway:#}");
    assert_eq!(gateway["spec"]["listeners"][0]["port"], 80, "{gateway:#}");

    let route = ns.get_json("httproute", "api");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "web", "{route:#}");
    assert_eq!(route["spec"]["rules"][0]["matches"][0]["path"]["value"], "/v1", "{route:#}");
    // Defaults of the upstream CRD were applied by the API server.
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 1, "{route:#}");

    ns.delete("httproute", "api");
    ns.wait_deleted("httproute", "api", Duration::from_secs(30));
}

#[test]
fn valid_tollbridge_objects_are_accepted() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-valid");
    ns.apply(
        "apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata:
  name: gold
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}
  apiKey: {header: x-api-key}
  rateLimit: {requests: 10, unit: Second, burst: 20}
  quota: {requests: 1000, period: Day}
---
apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata:
  name: alice
spec:
  policyRef: {name: gold}
  secretRef: {name: alice-key}
",
    );
    let policy = ns.get_json("quotapolicy", "gold");
    assert_eq!(policy["spec"]["rateLimit"]["burst"], 20, "{policy:#}");
    let key = ns.get_json("apikey", "alice");
    assert_eq!(key["spec"]["secretRef"]["name"], "alice-key", "{key:#}");

    let pc = cluster.unique_name("harness-pc");
    let _pc_guard = cluster.delete_on_drop("providerconfig", &pc);
    cluster.apply_cluster_scoped(&format!(
        "apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata:
  name: {pc}
spec:
  local: {{replicas: 2}}
"
    ));
    let config = cluster.get_cluster_scoped_json("providerconfig", &pc);
    // `provider` defaults to Local.
    assert_eq!(config["spec"]["provider"], "Local", "{config:#}");
}

#[test]
fn quota_policy_burst_below_requests_is_refused() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-burst");
    let err = ns.apply_err(
        "apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata:
  name: bursty
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}
  rateLimit: {requests: 10, unit: Second, burst: 5}
",
    );
    assert_mentions(&err, &["QuotaPolicy", "spec.rateLimit.burst", "burst must be at least requests"]);
    assert!(ns.try_get_json("quotapolicy", "bursty").is_none(), "a refused QuotaPolicy was stored");
}

#[test]
fn quota_policy_without_any_limit_is_refused() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-empty-policy");
    let err = ns.apply_err(
        "apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata:
  name: empty
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: web}
",
    );
    assert_mentions(
        &err,
        &["spec", "Required value", "at least one of apiKey, jwt, rateLimit or quota must be set"],
    );
}

#[test]
fn api_key_without_secret_ref_is_refused() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-apikey");
    let err = ns.apply_err(
        "apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata:
  name: nosecret
spec:
  policyRef: {name: gold}
",
    );
    assert_mentions(&err, &["ApiKey", "spec.secretRef", "Required value"]);
}

#[test]
fn provider_config_with_unknown_provider_is_refused() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-provider");
    let name = cluster.unique_name("harness-gcp");
    let _guard = cluster.delete_on_drop("providerconfig", &name);
    let err = ns.apply_err(&format!(
        "apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata:
  name: {name}
spec:
  provider: GCP
"
    ));
    assert_mentions(
        &err,
        &["ProviderConfig", "spec.provider", r#"Unsupported value: "GCP""#, r#""Local", "AWS", "Azure""#],
    );
}

#[test]
fn provider_config_aws_without_settings_is_refused() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-aws");
    let name = cluster.unique_name("harness-aws");
    let _guard = cluster.delete_on_drop("providerconfig", &name);
    let err = ns.apply_err(&format!(
        "apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata:
  name: {name}
spec:
  provider: AWS
"
    ));
    assert_mentions(&err, &["spec.aws", "Required value", "aws is required when provider is AWS"]);
}

#[test]
fn httproute_with_relative_path_is_refused() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-route");
    let err = ns.apply_err(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: relative
spec:
  parentRefs:
  - name: web
  rules:
  - matches:
    - path: {type: PathPrefix, value: api}
",
    );
    assert_mentions(&err, &["HTTPRoute", "spec.rules[0].matches[0].path", "must be an absolute path"]);
}

#[tokio::test]
async fn the_kube_client_reaches_the_api_server() {
    use k8s_openapi::api::core::v1::Namespace;

    let cluster = Cluster::shared();
    let ns = cluster.namespace("harness-client");
    let client = cluster.client().await;
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let got = namespaces.get(ns.name()).await.unwrap_or_else(|e| panic!("get namespace {}: {e}", ns.name()));
    assert_eq!(got.metadata.name.as_deref(), Some(ns.name()));

    let version = client.apiserver_version().await.unwrap_or_else(|e| panic!("GET /version: {e}"));
    let minor = minor_under_test();
    assert_eq!(format!("v{}.{}", version.major, version.minor), minor, "{version:?}");
}

#[test]
fn namespace_names_are_dns_labels() {
    let cluster = Cluster::shared();
    let long = "A_Very/Long.Prefix-".repeat(8);
    for prefix in ["x", "--Weird__Prefix--", long.as_str(), "", "ünïcode"] {
        let name = cluster.unique_name(prefix);
        assert!(name.len() <= 63, "{name:?} longer than 63");
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name:?} is not a DNS label"
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'), "{name:?} starts or ends with '-'");
    }
    let a = cluster.unique_name("same");
    let b = cluster.unique_name("same");
    assert_ne!(a, b);

    let ns = cluster.namespace(&long);
    let got = cluster.get_cluster_scoped_json("namespace", ns.name());
    assert_eq!(got["status"]["phase"], "Active", "{got:#}");
}
