//! ARM calls and wall time to provision 100 routes into the API Management fake, a no-op
//! resync, a one-route change, and a resync that reads every policy (an audit: a restarted
//! operator's first pass, after a failed write, hourly). Ignored by default: run by
//! `bench/azure.sh`, which prints the Markdown row (numbers are measured, nothing is asserted
//! about time).

mod support;

use std::sync::Arc;
use std::time::Instant;

use support::Apim;
use tollbridge_azure::arm::StaticToken;
use tollbridge_azure::AzureProvider;
use tollbridge_provider::*;

fn gateway(routes: usize, changed: Option<usize>) -> GatewayIr {
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
        provider: ProviderSettings::Local(LocalSettings::default()),
        listeners: Vec::new(),
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes,
        policies: Vec::new(),
    }
}

async fn measure(endpoint: &str, apim: &Apim, label: &str) {
    let settings = AzureSettings {
        subscription_id: apim.subscription_id().into(),
        resource_group: apim.resource_group().into(),
        service_name: apim.service_name().into(),
        endpoint: Some(endpoint.into()),
        credential: "WorkloadIdentity".into(),
        tier: None,
    };
    let new =
        || AzureProvider::new(&settings, "bench", Some(Arc::new(StaticToken(apim.token().into())))).unwrap();
    let azure = new();
    let total = |a: &AzureProvider| a.calls().snapshot().values().sum::<u64>();
    let started = Instant::now();
    azure.apply(&gateway(100, None)).await.expect("provision");
    let (first, first_calls, first_writes) = (started.elapsed(), total(&azure), azure.calls().writes());
    let (calls, writes) = (total(&azure), azure.calls().writes());
    let started = Instant::now();
    azure.apply(&gateway(100, None)).await.expect("no-op");
    let noop = (started.elapsed(), total(&azure) - calls, azure.calls().writes() - writes);
    let (calls, writes) = (total(&azure), azure.calls().writes());
    let started = Instant::now();
    azure.apply(&gateway(100, Some(50))).await.expect("one route");
    let one = (started.elapsed(), total(&azure) - calls, azure.calls().writes() - writes);
    // A new provider (a restarted operator) audits on its first pass.
    let auditing = new();
    let started = Instant::now();
    auditing.apply(&gateway(100, Some(50))).await.expect("audit");
    let audit = (started.elapsed(), total(&auditing), auditing.calls().writes());
    println!(
        "| 100 routes, {label} | provision: {first_calls} calls ({first_writes} writes), {:.2} s | no-op resync: {} calls ({} writes), {:.2} s | one route changed: {} calls ({} writes), {:.2} s | no-op resync with a policy audit: {} calls ({} writes), {:.2} s |",
        first.as_secs_f64(),
        noop.1,
        noop.2,
        noop.0.as_secs_f64(),
        one.1,
        one.2,
        one.0.as_secs_f64(),
        audit.1,
        audit.2,
        audit.0.as_secs_f64()
    );
    azure.delete(&gateway(0, None).key).await.expect("delete");
}

#[tokio::test]
#[ignore = "benchmark: run by bench/azure.sh"]
async fn provision_100_routes() {
    let apim = Apim::start().await;
    measure(apim.fake_url(), &apim, "fake only").await;
    measure(apim.url(), &apim, "through the spec validator").await;
}
