//! Code paths moto does not implement, tested with the SDK's own replay client: the calls the
//! provider sends are recorded and answered from a script, as API Gateway would answer them.
//! Here: changing a route's throttling updates the HTTP API's `$default` stage (moto has no
//! `UpdateStage` for HTTP APIs).

use std::time::Duration;

use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use serde_json::{json, Value};
use tollbridge_aws::{AwsOptions, AwsProvider};
use tollbridge_provider::ratelimit::Limits;
use tollbridge_provider::*;

const OWNER: &str = "cluster/shop/web";

/// One scripted exchange: the request expected (method and path only are checked below) and
/// the JSON answer.
fn exchange(method: &str, path: &str, answer: Value) -> ReplayEvent {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("https://apigateway.us-east-1.amazonaws.com{path}"))
        .body(SdkBody::empty())
        .expect("request");
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(SdkBody::from(answer.to_string()))
        .expect("response");
    ReplayEvent::new(request, response)
}

/// A provider for `api_type` in us-east-1 whose calls are answered by `script`.
async fn replayed(
    api_type: &str,
    script: Vec<ReplayEvent>,
) -> (StaticReplayClient, AwsSettings, AwsProvider) {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let replay = StaticReplayClient::new(script);
    let settings =
        AwsSettings { region: "us-east-1".into(), api_type: api_type.into(), ..AwsSettings::default() };
    let options = AwsOptions {
        limits: Limits::unlimited(),
        attempt_timeout: Duration::from_secs(5),
        http_client: Some(aws_smithy_runtime_api::client::http::SharedHttpClient::new(replay.clone())),
    };
    let aws = AwsProvider::new(&settings, "cluster", options).await;
    (replay, settings, aws)
}

fn gateway(settings: &AwsSettings, rate: u32) -> GatewayIr {
    GatewayIr {
        key: GatewayKey { namespace: "shop".into(), name: "web".into(), uid: "u".into(), generation: 2 },
        provider: ProviderSettings::Aws(settings.clone()),
        listeners: Vec::new(),
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes: vec![RouteIr {
            id: RouteId { namespace: "shop".into(), name: "a".into(), ..RouteId::default() },
            attachments: Vec::new(),
            matcher: MatchIr {
                path: PathMatch::Exact("/a".into()),
                method: None,
                headers: Vec::new(),
                query_params: Vec::new(),
            },
            filters: FiltersIr::default(),
            action: ActionIr::Forward {
                backends: vec![BackendIr {
                    name: "shop/a:443".into(),
                    weight: 1,
                    target: BackendTarget::Url { url: "https://a.example.com".into() },
                    protocol: Default::default(),
                    tls: None,
                    request_headers: HeaderModifier::default(),
                    response_headers: HeaderModifier::default(),
                }],
            },
            timeouts: TimeoutsIr::default(),
            retry: None,
            policy: Some("shop/limit".into()),
        }],
        policies: vec![QuotaPolicyIr {
            jwt: None,
            id: "shop/limit".into(),
            api_key: None,
            rate_limit: Some(RateLimitIr { requests: rate, period_seconds: 1, burst: rate * 2 }),
            quota: None,
            keys: Vec::new(),
        }],
    }
}

#[tokio::test]
async fn a_changed_throttle_updates_the_default_stage() {
    let tags = json!({ "tollbridge.dev/owner": OWNER });
    let script = vec![
        exchange(
            "GET",
            "/v2/apis",
            json!({ "items": [{ "apiId": "api1", "name": "tollbridge-shop-web", "protocolType": "HTTP", "routeSelectionExpression": "$request.method $request.path", "tags": tags }] }),
        ),
        exchange("GET", "/v2/apis/api1/integrations", json!({ "items": [] })),
        exchange("GET", "/v2/apis/api1/authorizers", json!({ "items": [] })),
        exchange("GET", "/v2/apis/api1/routes", json!({ "items": [] })),
        exchange(
            "GET",
            "/v2/apis/api1/stages",
            json!({ "items": [{ "stageName": "$default", "autoDeploy": true, "tags": tags,
                "routeSettings": { "ANY /a": { "throttlingRateLimit": 5.0, "throttlingBurstLimit": 10 } } }] }),
        ),
        exchange("GET", "/v2/domainnames", json!({ "items": [] })),
        exchange("GET", "/restapis", json!({ "item": [] })),
        exchange("GET", "/apikeys", json!({ "item": [] })),
        exchange("GET", "/usageplans", json!({ "item": [] })),
        exchange("GET", "/domainnames", json!({ "item": [] })),
        exchange("POST", "/v2/apis/api1/integrations", json!({ "integrationId": "int1" })),
        exchange("POST", "/v2/apis/api1/routes", json!({ "routeId": "r1", "routeKey": "ANY /a" })),
        exchange("PATCH", "/v2/apis/api1/stages/%24default", json!({ "stageName": "$default" })),
    ];
    let (replay, settings, aws) = replayed("HTTP", script).await;

    let provisioned = aws.apply(&gateway(&settings, 50)).await.expect("apply");
    assert_eq!(provisioned.resource_ids["api"], "api1");

    let sent: Vec<(String, String)> =
        replay.actual_requests().map(|r| (r.method().to_string(), r.uri().to_string())).collect();
    let paths: Vec<String> = sent
        .iter()
        .map(|(m, u)| {
            format!("{m} {}", u.split("amazonaws.com").nth(1).unwrap_or(u).split('?').next().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        paths[10..],
        [
            "POST /v2/apis/api1/integrations",
            "POST /v2/apis/api1/routes",
            "PATCH /v2/apis/api1/stages/%24default"
        ]
    );
    let update = replay.actual_requests().last().expect("the stage update");
    let body: Value =
        serde_json::from_slice(update.body().bytes().expect("a buffered body")).expect("JSON body");
    assert_eq!(body["autoDeploy"], true);
    assert_eq!(body["routeSettings"]["ANY /a"]["throttlingRateLimit"], 50.0);
    assert_eq!(body["routeSettings"]["ANY /a"]["throttlingBurstLimit"], 100);
    let route: Value =
        serde_json::from_slice(replay.actual_requests().nth(11).unwrap().body().bytes().unwrap()).unwrap();
    assert_eq!(route["target"], "integrations/int1");
    assert_eq!(aws.calls().writes(), 3);
}

#[tokio::test]
async fn key_usage_sums_the_days_api_gateway_counted_for_our_keys_only() {
    let ours = |resource: &str| json!({ "tollbridge.dev/owner": OWNER, "tollbridge.dev/resource": resource });
    let theirs = |resource: &str| json!({ "tollbridge.dev/owner": "cluster/other/web", "tollbridge.dev/resource": resource });
    let script = vec![
        exchange(
            "GET",
            "/usageplans",
            json!({ "item": [{ "id": "p-theirs", "tags": theirs("shop/gold") }, { "id": "p1", "tags": ours("shop/gold") }] }),
        ),
        exchange(
            "GET",
            "/apikeys",
            json!({ "item": [
                { "id": "k1", "tags": ours("shop/alice 1a2b3c4d") },
                { "id": "k2", "tags": ours("shop/dave 5e6f7a8b") },
                { "id": "k-theirs", "tags": theirs("shop/bob 99aa88bb") },
                { "id": "k-untagged" }
            ] }),
        ),
        exchange(
            "GET",
            "/usageplans/p1/usage",
            json!({ "usagePlanId": "p1", "startDate": "2026-12-01", "endDate": "2026-12-06",
                    "values": { "k1": [[3, 97], [2, 95], [0, 95]], "k2": [[1, 99]] } }),
        ),
    ];
    let (replay, settings, aws) = replayed("REST", script).await;
    let request = |api_key: &str| UsageRequest {
        policy: "shop/gold".into(),
        api_key: api_key.into(),
        first_day: "2026-12-01".into(),
        last_day: "2026-12-06".into(),
    };
    let requests = [request("shop/alice"), request("shop/bob"), request("shop/carol"), request("shop/dave")];
    let used = aws.key_usage(&gateway(&settings, 5), &requests).await.expect("usage");
    // Alice: 3 + 2 + 0 on our plan; Bob's key belongs to another Gateway; Carol has none; Dave
    // comes from the same answer as Alice.
    assert_eq!(used, [Some(5), None, None, Some(1)]);

    let usage = replay.actual_requests().nth(2).expect("the GetUsage call");
    let uri = usage.uri().to_string();
    assert!(uri.contains("/usageplans/p1/usage?"), "{uri}");
    for part in ["startDate=2026-12-01", "endDate=2026-12-06"] {
        assert!(uri.contains(part), "{part} missing from {uri}");
    }
    assert_eq!(replay.actual_requests().count(), 3, "one GetUsage per usage plan, not per key");
    assert_eq!(aws.calls().writes(), 0);
}
