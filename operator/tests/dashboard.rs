//! The Grafana dashboard shipped in the chart (`charts/tollbridge/dashboards/tollbridge.json`):
//! every metric its queries name must be one the binaries export. The proxy's are scraped from
//! a real `tollbridge run` that served every kind of request the panels show (answered, refused
//! by key, rate-limited, a backend refusing connections, retried); the operator's from its
//! metrics registry, each family used once (what `/metrics` serves).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use http::Method;
use tollbridge::controller::metrics::{KindLabels, Metrics as OperatorMetrics, ProviderCallLabels};

use support::client::Client;
use support::process::{free_port, ConfigDir, Tollbridge};
use support::yaml::{self, docs};

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// Every `tollbridge_…` name in the dashboard's queries (and its variables' queries).
fn dashboard_metrics() -> BTreeSet<String> {
    let path = repo_root().join("charts/tollbridge/dashboards/tollbridge.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = variable["query"].as_str() {
            queries.push(query.to_string());
        }
    }
    assert!(queries.len() > 15, "{} queries", queries.len());
    let mut names = BTreeSet::new();
    for query in queries {
        let mut rest = query.as_str();
        while let Some(start) = rest.find("tollbridge_") {
            let name: String =
                rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[start + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// The names of the samples in a Prometheus text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

async fn echo(name: &str) -> SocketAddr {
    tollbridge_local::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), name).await.expect("echo backend")
}

/// A proxy that has served every kind of request the dashboard shows; its `/metrics`.
async fn proxy_exposition() -> String {
    let backend = echo("echo").await;
    let refusing = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &docs(&[yaml::backend("echo", backend), yaml::backend("refusing", refusing)]));
    let rules = "  - matches: [{path: {type: PathPrefix, value: /open}}]
    retry: {codes: [500], attempts: 1, backoff: 1ms}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /down}}]
    backendRefs: [{name: refusing, port: 80}]
";
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("open", None, &[], rules),
            yaml::route("keyed", None, &[], &yaml::prefix_rule("/keyed", "echo")),
        ]),
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy(
                "keyed",
                "keyed",
                "  apiKey: {required: true}\n  rateLimit: {requests: 1, unit: Minute, burst: 1}\n  quota: {requests: 100, period: Month}\n",
            ),
            yaml::api_key("acme", "keyed", "keyed-key-acme-0001", "  consumer: acme\n"),
        ]),
    );
    // A body over 4 bytes is not kept for a retry (counted as a retry skipped).
    let tollbridge = Tollbridge::start(&dir, &["--retry-body-limit", "4"]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let key = [("x-api-key", "keyed-key-acme-0001")];
    let answered = [
        client.get(&format!("{base}/open"), &[]).await.status.as_u16(),
        client.get(&format!("{base}/open"), &[("x-echo-status", "500")]).await.status.as_u16(),
        client
            .request(Method::PUT, &format!("{base}/open"), &[("x-echo-status", "500")], "too long")
            .await
            .status
            .as_u16(),
        client.get(&format!("{base}/down"), &[]).await.status.as_u16(),
        client.get(&format!("{base}/nowhere"), &[]).await.status.as_u16(),
        client.get(&format!("{base}/keyed"), &[]).await.status.as_u16(),
        client.request(Method::GET, &format!("{base}/keyed"), &key, "").await.status.as_u16(),
        client.request(Method::GET, &format!("{base}/keyed"), &key, "").await.status.as_u16(),
    ];
    assert_eq!(answered, [200, 500, 500, 502, 404, 401, 200, 429]);
    tollbridge.admin_get("/metrics").await.text()
}

/// The operator's registry with each family used once.
fn operator_exposition() -> String {
    let metrics = OperatorMetrics::default();
    metrics.reconciles.inc();
    metrics.error("transient");
    metrics
        .provider_calls
        .get_or_create(&ProviderCallLabels { provider: "aws".into(), operation: "apply".into() })
        .observe(0.2);
    metrics.status_writes.get_or_create(&KindLabels { kind: "Gateway".into() }).inc();
    metrics.queue_depth.set(1);
    metrics.leader.set(1);
    metrics.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let wanted = dashboard_metrics();
    let proxy = proxy_exposition().await;
    let operator = operator_exposition();
    let exported: BTreeSet<String> =
        sample_names(&proxy).into_iter().chain(sample_names(&operator)).collect();
    let missing: Vec<&String> = wanted.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nothing exports: {missing:?}\nexported: {exported:?}"
    );
    // Not vacuous: the proxy's and the operator's families are both in the dashboard.
    assert!(wanted.contains("tollbridge_http_request_duration_seconds_bucket"), "{wanted:?}");
    assert!(wanted.contains("tollbridge_operator_errors_total"), "{wanted:?}");
    assert!(wanted.len() >= 14, "{wanted:?}");
}
