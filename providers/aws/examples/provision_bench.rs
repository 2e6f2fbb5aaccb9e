//! Calls and wall time to provision N routes on an HTTP API, a no-op resync, and a one-route
//! change, against an API Gateway endpoint (moto's server in `bench/aws.sh`).
//!
//! `provision_bench ENDPOINT ROUTES [limited|unlimited]`; prints Markdown table rows.

use std::time::{Duration, Instant};

use tollbridge_aws::{AwsOptions, AwsProvider};
use tollbridge_provider::ratelimit::Limits;
use tollbridge_provider::*;

fn gateway(settings: &AwsSettings, routes: usize, changed: Option<usize>) -> GatewayIr {
    let routes = (0..routes)
        .map(|i| {
            let host = if changed == Some(i) { format!("changed-{i}") } else { format!("svc-{}", i % 10) };
            RouteIr {
                id: RouteId { namespace: "bench".into(), name: format!("r{i}"), ..RouteId::default() },
                attachments: Vec::new(),
                matcher: MatchIr {
                    path: PathMatch::Exact(format!("/r{i}")),
                    method: None,
                    headers: Vec::new(),
                    query_params: Vec::new(),
                },
                filters: FiltersIr::default(),
                action: ActionIr::Forward {
                    backends: vec![BackendIr {
                        name: format!("bench/{host}:443"),
                        weight: 1,
                        target: BackendTarget::Url { url: format!("https://{host}.example.com") },
                        protocol: Default::default(),
                        tls: None,
                        request_headers: HeaderModifier::default(),
                        response_headers: HeaderModifier::default(),
                    }],
                },
                timeouts: TimeoutsIr::default(),
                retry: None,
                policy: None,
            }
        })
        .collect();
    GatewayIr {
        key: GatewayKey { namespace: "bench".into(), name: "gw".into(), uid: "u".into(), generation: 1 },
        provider: ProviderSettings::Aws(settings.clone()),
        listeners: Vec::new(),
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes,
        policies: Vec::new(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(endpoint), Some(routes)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok()))
    else {
        eprintln!("usage: provision_bench ENDPOINT ROUTES [limited|unlimited]");
        std::process::exit(2);
    };
    let limited = args.get(3).map(String::as_str) != Some("unlimited");
    let settings = AwsSettings {
        region: "us-east-1".into(),
        api_type: "HTTP".into(),
        endpoint_url: Some(endpoint.clone()),
        ..AwsSettings::default()
    };
    let options = AwsOptions {
        limits: if limited { tollbridge_aws::account_limits() } else { Limits::unlimited() },
        attempt_timeout: Duration::from_secs(20),
        http_client: None,
    };
    let aws = AwsProvider::new(&settings, "bench", options).await;
    let label = if limited { "account limits (10 rps, burst 40)" } else { "no client-side limit" };

    let started = Instant::now();
    aws.apply(&gateway(&settings, routes, None)).await.expect("provision");
    let (first, first_writes) = (started.elapsed(), aws.calls().writes());

    let writes = aws.calls().writes();
    let started = Instant::now();
    aws.apply(&gateway(&settings, routes, None)).await.expect("no-op");
    let (noop, noop_writes) = (started.elapsed(), aws.calls().writes() - writes);

    let writes = aws.calls().writes();
    let started = Instant::now();
    aws.apply(&gateway(&settings, routes, Some(routes / 2))).await.expect("one route");
    let (one, one_writes) = (started.elapsed(), aws.calls().writes() - writes);

    println!("| {routes} routes, {label} | provision: {first_writes} writes, {:.1} s | no-op resync: {noop_writes} writes, {:.2} s | one route changed: {one_writes} writes, {:.2} s |",
        first.as_secs_f64(), noop.as_secs_f64(), one.as_secs_f64());
    aws.delete(&gateway(&settings, routes, None).key).await.expect("delete");
}
