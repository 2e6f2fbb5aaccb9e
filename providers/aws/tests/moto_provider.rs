//! The Amazon API Gateway provider against moto's server (tests/support): full lifecycles of
//! HTTP and REST APIs, the mapping rows, usage plans and keys, call counts for no-op and
//! one-route changes, faults injected in front of moto, drift repair, untagged look-alikes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Fault, FaultProxy, Moto, Rule};
use tollbridge_aws::changes::Kind;
use tollbridge_aws::{AwsOptions, AwsProvider};
use tollbridge_provider::ratelimit::Limits;
use tollbridge_provider::*;

const CLUSTER: &str = "test-cluster";
const OWNER: &str = "tollbridge.dev/owner";

fn settings(url: &str, api_type: &str) -> AwsSettings {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    AwsSettings {
        region: "us-east-1".into(),
        api_type: api_type.into(),
        endpoint_url: Some(url.into()),
        certificate_arn: Some("arn:aws:acm:us-east-1:123456789012:certificate/test".into()),
        tags: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        ..AwsSettings::default()
    }
}

async fn provider(settings: &AwsSettings) -> AwsProvider {
    limited_provider(settings, Limits::unlimited()).await
}

async fn limited_provider(settings: &AwsSettings, limits: Limits) -> AwsProvider {
    let options = AwsOptions { limits, attempt_timeout: Duration::from_secs(2), http_client: None };
    AwsProvider::new(settings, CLUSTER, options).await
}

fn backend(url: &str) -> BackendIr {
    BackendIr {
        name: "shop/orders:443".into(),
        weight: 1,
        target: BackendTarget::Url { url: url.into() },
        protocol: Default::default(),
        tls: None,
        request_headers: HeaderModifier::default(),
        response_headers: HeaderModifier::default(),
    }
}

fn route(name: &str, path: PathMatch, url: &str) -> RouteIr {
    RouteIr {
        id: RouteId { namespace: "shop".into(), name: name.into(), ..RouteId::default() },
        attachments: vec![AttachmentIr { listener: "https".into(), hostnames: Vec::new() }],
        matcher: MatchIr { path, method: None, headers: Vec::new(), query_params: Vec::new() },
        filters: FiltersIr::default(),
        action: ActionIr::Forward { backends: vec![backend(url)] },
        timeouts: TimeoutsIr::default(),
        retry: None,
        policy: None,
    }
}

fn gateway(
    name: &str,
    settings: &AwsSettings,
    routes: Vec<RouteIr>,
    policies: Vec<QuotaPolicyIr>,
) -> GatewayIr {
    GatewayIr {
        key: GatewayKey { namespace: "shop".into(), name: name.into(), uid: "uid".into(), generation: 1 },
        provider: ProviderSettings::Aws(settings.clone()),
        listeners: vec![ListenerIr {
            name: "https".into(),
            port: 443,
            protocol: ListenerProtocol::Https,
            hostname: Some("api.shop.example".into()),
            certificates: Vec::new(),
        }],
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes,
        policies,
    }
}

/// Routes covering the HTTP API mapping rows: exact, prefix, method, header modifiers,
/// prefix rewrite, timeout, throttling, and the root.
fn http_routes() -> Vec<RouteIr> {
    let mut orders = route("orders", PathMatch::Prefix("/orders".into()), "https://orders.example.com/v1");
    orders.filters.request_headers.set.push(HeaderValue { name: "x-env".into(), value: "prod".into() });
    orders.filters.request_headers.add.push(HeaderValue { name: "x-via".into(), value: "tollbridge".into() });
    orders.filters.request_headers.remove.push("x-debug".into());
    orders.timeouts.request_ms = Some(5_000);
    orders.policy = Some("shop/public-limit".into());
    let mut health = route("health", PathMatch::Exact("/healthz".into()), "https://status.example.com");
    health.matcher.method = Some("GET".into());
    let mut legacy = route("legacy", PathMatch::Prefix("/old".into()), "https://legacy.example.com");
    legacy.filters.url_rewrite = Some(UrlRewrite {
        hostname: None,
        path: Some(PathModifier::Prefix { matched: "/old".into(), replacement: "/new".into() }),
    });
    let root = route("web", PathMatch::Prefix("/".into()), "https://web.example.com");
    vec![health, orders, legacy, root]
}

fn throttle_policy() -> QuotaPolicyIr {
    QuotaPolicyIr {
        jwt: None,
        id: "shop/public-limit".into(),
        api_key: None,
        rate_limit: Some(RateLimitIr { requests: 50, period_seconds: 1, burst: 100 }),
        quota: None,
        keys: Vec::new(),
    }
}

fn key(id: &str, value: &str) -> ApiKeyIr {
    use sha2_free::sha256_hex;
    ApiKeyIr {
        id: id.into(),
        consumer: id.rsplit('/').next().unwrap_or(id).into(),
        sha256: sha256_hex(value),
        value: SecretString::new(value),
        disabled: false,
        expires_at: None,
    }
}

/// A stand-in for the translator's key hashing: any stable 64-hex digest does for the provider.
mod sha2_free {
    pub fn sha256_hex(value: &str) -> String {
        use std::hash::{Hash, Hasher};
        let mut out = String::new();
        for salt in 0..4u8 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, value).hash(&mut h);
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    }
}

fn gold_policy(keys: Vec<ApiKeyIr>) -> QuotaPolicyIr {
    QuotaPolicyIr {
        jwt: None,
        id: "shop/gold".into(),
        api_key: Some(ApiKeySettingsIr {
            required: true,
            header: Some("x-api-key".into()),
            query_param: None,
            consumer_header: "x-consumer".into(),
        }),
        rate_limit: Some(RateLimitIr { requests: 10, period_seconds: 1, burst: 20 }),
        quota: Some(QuotaIr { requests: 1000, period: QuotaPeriod::Day }),
        keys,
    }
}

fn rest_gateway(settings: &AwsSettings, keys: Vec<ApiKeyIr>) -> GatewayIr {
    let mut orders = route("orders", PathMatch::Prefix("/orders".into()), "https://orders.example.com");
    orders.policy = Some("shop/gold".into());
    orders.timeouts.backend_request_ms = Some(60_000);
    let mut status = route("status", PathMatch::Exact("/status".into()), "https://status.example.com");
    status.filters.request_headers.set.push(HeaderValue { name: "x-env".into(), value: "prod".into() });
    gateway("rest", settings, vec![orders, status], vec![gold_policy(keys)])
}

/// Everything in moto, by resource type, as `(id, name)`.
async fn inventory(inspector: &AwsProvider) -> BTreeMap<&'static str, Vec<(String, String)>> {
    let (v2, v1) = inspector.sdk();
    let mut out = BTreeMap::new();
    let apis = v2.get_apis().send().await.expect("GetApis");
    out.insert(
        "http-apis",
        apis.items()
            .iter()
            .map(|a| (a.api_id().unwrap_or("").into(), a.name().unwrap_or("").into()))
            .collect(),
    );
    let domains = v2.get_domain_names().send().await.expect("GetDomainNames");
    out.insert(
        "domain-names",
        domains.items().iter().map(|d| (d.domain_name().unwrap_or("").into(), String::new())).collect(),
    );
    let rest = v1.get_rest_apis().send().await.expect("GetRestApis");
    out.insert(
        "rest-apis",
        rest.items().iter().map(|a| (a.id().unwrap_or("").into(), a.name().unwrap_or("").into())).collect(),
    );
    let plans = v1.get_usage_plans().send().await.expect("GetUsagePlans");
    out.insert(
        "usage-plans",
        plans.items().iter().map(|p| (p.id().unwrap_or("").into(), p.name().unwrap_or("").into())).collect(),
    );
    let rest_domains = v1.get_domain_names().send().await.expect("GetDomainNames (REST)");
    out.insert(
        "rest-domain-names",
        rest_domains.items().iter().map(|d| (d.domain_name().unwrap_or("").into(), String::new())).collect(),
    );
    let keys = v1.get_api_keys().send().await.expect("GetApiKeys");
    out.insert(
        "api-keys",
        keys.items().iter().map(|k| (k.id().unwrap_or("").into(), k.name().unwrap_or("").into())).collect(),
    );
    out
}

fn owned_http_api<'a>(
    apis: &'a [aws_sdk_apigatewayv2::types::Api],
    gateway: &str,
) -> Vec<&'a aws_sdk_apigatewayv2::types::Api> {
    let owner = format!("{CLUSTER}/shop/{gateway}");
    apis.iter().filter(|a| a.tags().and_then(|t| t.get(OWNER)) == Some(&owner)).collect()
}

#[tokio::test]
async fn http_api_lifecycle_and_every_mapping_row() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "HTTP");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    let gw = gateway("web", &settings, http_routes(), vec![throttle_policy()]);

    let provisioned = aws.apply(&gw).await.expect("apply");
    assert!(provisioned.unprovisioned.is_empty(), "{:?}", provisioned.unprovisioned);
    let api_id = provisioned.resource_ids["api"].clone();
    assert_eq!(
        provisioned.addresses,
        [format!("{api_id}.execute-api.us-east-1.amazonaws.com"), "api.shop.example".into()]
    );

    let (v2, _) = inspector.sdk();
    let api = v2.get_api().api_id(&api_id).send().await.expect("GetApi");
    assert_eq!(api.name(), Some("tollbridge-shop-web"));
    assert_eq!(api.tags().unwrap()[OWNER], format!("{CLUSTER}/shop/web"));
    assert_eq!(api.tags().unwrap()["team"], "payments");

    let routes = v2.get_routes().api_id(&api_id).send().await.expect("GetRoutes");
    let mut keys: Vec<&str> = routes.items().iter().filter_map(|r| r.route_key()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "$default",
            "ANY /",
            "ANY /old",
            "ANY /old/{proxy+}",
            "ANY /orders",
            "ANY /orders/{proxy+}",
            "GET /healthz"
        ]
    );

    let integrations = v2.get_integrations().api_id(&api_id).send().await.expect("GetIntegrations");
    let by_route = |route_key: &str| {
        let target = routes
            .items()
            .iter()
            .find(|r| r.route_key() == Some(route_key))
            .and_then(|r| r.target())
            .unwrap();
        let id = target.trim_start_matches("integrations/");
        integrations.items().iter().find(|i| i.integration_id() == Some(id)).unwrap().clone()
    };
    let orders = by_route("ANY /orders/{proxy+}");
    assert_eq!(orders.integration_uri(), Some("https://orders.example.com"));
    assert_eq!(orders.timeout_in_millis(), Some(5_000));
    let params = orders.request_parameters().unwrap();
    assert_eq!(params["overwrite:path"], "/v1$request.path");
    assert_eq!(params["overwrite:header.x-env"], "prod");
    assert_eq!(params["append:header.x-via"], "tollbridge");
    assert_eq!(params["remove:header.x-debug"], "''");
    let legacy = by_route("ANY /old/{proxy+}");
    assert_eq!(legacy.request_parameters().unwrap()["overwrite:path"], "/new/$request.path.proxy");
    assert_eq!(by_route("ANY /old").request_parameters().unwrap()["overwrite:path"], "/new");
    assert_eq!(by_route("GET /healthz").timeout_in_millis(), Some(30_000));

    let stages = v2.get_stages().api_id(&api_id).send().await.expect("GetStages");
    let stage = &stages.items()[0];
    assert_eq!((stage.stage_name(), stage.auto_deploy()), (Some("$default"), Some(true)));
    let throttled = stage.route_settings().unwrap();
    assert_eq!(throttled["ANY /orders"].throttling_rate_limit(), Some(50.0));
    assert_eq!(throttled["ANY /orders/{proxy+}"].throttling_burst_limit(), Some(100));
    assert!(!throttled.contains_key("$default"));

    let domain = v2.get_domain_name().domain_name("api.shop.example").send().await.expect("GetDomainName");
    assert_eq!(domain.tags().unwrap()[OWNER], format!("{CLUSTER}/shop/web"));
    let mappings =
        v2.get_api_mappings().domain_name("api.shop.example").send().await.expect("GetApiMappings");
    assert_eq!(
        (mappings.items()[0].api_id(), mappings.items()[0].stage()),
        (Some(api_id.as_str()), Some("$default"))
    );

    // A second apply of the same Gateway writes nothing.
    let writes = aws.calls().writes();
    aws.apply(&gw).await.expect("no-op apply");
    assert_eq!(aws.calls().writes() - writes, 0, "calls: {:?}", aws.calls().snapshot());

    // One changed route: a new integration, the route pointed at it, the old one removed.
    let mut changed = gw.clone();
    changed.routes[0].action = ActionIr::Forward { backends: vec![backend("https://status-v2.example.com")] };
    let writes = aws.calls().writes();
    let plan = aws.plan(&changed).await.expect("plan");
    let steps: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    aws.execute(&plan).await.expect("execute");
    assert_eq!(aws.calls().writes() - writes, 3, "calls: {:?}", aws.calls().snapshot());
    assert_eq!(by_route_uri(&inspector, &api_id, "GET /healthz").await, "https://status-v2.example.com");

    // Delete leaves nothing behind.
    aws.delete(&changed.key).await.expect("delete");
    let left = inventory(&inspector).await;
    assert!(left.values().all(Vec::is_empty), "left behind: {left:?}");
    aws.delete(&changed.key).await.expect("deleting twice is fine");
}

async fn by_route_uri(inspector: &AwsProvider, api_id: &str, route_key: &str) -> String {
    let (v2, _) = inspector.sdk();
    let routes = v2.get_routes().api_id(api_id).send().await.expect("GetRoutes");
    let target =
        routes.items().iter().find(|r| r.route_key() == Some(route_key)).and_then(|r| r.target()).unwrap();
    let integration = v2
        .get_integration()
        .api_id(api_id)
        .integration_id(target.trim_start_matches("integrations/"))
        .send()
        .await
        .expect("GetIntegration");
    integration.integration_uri().unwrap_or_default().to_string()
}

#[tokio::test]
async fn rest_api_with_usage_plans_and_keys() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "Auto");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    let alice = key("shop/alice", "alice-0123456789-abcdefghij");
    let bob = key("shop/bob", "bob-0123456789-abcdefghijkl");
    let gw = rest_gateway(&settings, vec![alice.clone(), bob.clone()]);

    let provisioned = aws.apply(&gw).await.expect("apply");
    assert!(provisioned.unprovisioned.is_empty(), "{:?}", provisioned.unprovisioned);
    let api_id = provisioned.resource_ids["api"].clone();
    let (_, v1) = inspector.sdk();
    let resources = v1.get_resources().rest_api_id(&api_id).send().await.expect("GetResources");
    let mut paths: Vec<&str> = resources.items().iter().filter_map(|r| r.path()).collect();
    paths.sort();
    assert_eq!(paths, ["/", "/orders", "/orders/{proxy+}", "/status"]);
    let proxy = resources.items().iter().find(|r| r.path() == Some("/orders/{proxy+}")).unwrap();
    let method = v1
        .get_method()
        .rest_api_id(&api_id)
        .resource_id(proxy.id().unwrap())
        .http_method("ANY")
        .send()
        .await
        .unwrap();
    assert_eq!(method.api_key_required(), Some(true));
    let integration = method.method_integration().unwrap();
    assert_eq!(integration.uri(), Some("https://orders.example.com/orders/{proxy}"));
    assert_eq!(integration.timeout_in_millis(), 29_000, "capped at the REST maximum");
    let status = resources.items().iter().find(|r| r.path() == Some("/status")).unwrap();
    let method = v1
        .get_method()
        .rest_api_id(&api_id)
        .resource_id(status.id().unwrap())
        .http_method("ANY")
        .send()
        .await
        .unwrap();
    assert_eq!(method.api_key_required(), Some(false));
    assert_eq!(
        method.method_integration().unwrap().request_parameters().unwrap()
            ["integration.request.header.x-env"],
        "'prod'"
    );
    let stages = v1.get_stages().rest_api_id(&api_id).send().await.expect("GetStages");
    assert_eq!(stages.item()[0].stage_name(), Some("live"));
    let domain = v1.get_domain_name().domain_name("api.shop.example").send().await.expect("GetDomainName");
    assert_eq!(domain.regional_certificate_arn(), settings.certificate_arn.as_deref());
    let mappings = v1
        .get_base_path_mappings()
        .domain_name("api.shop.example")
        .send()
        .await
        .expect("GetBasePathMappings");
    assert_eq!(
        (mappings.items()[0].rest_api_id(), mappings.items()[0].stage()),
        (Some(api_id.as_str()), Some("live"))
    );

    let plans = v1.get_usage_plans().send().await.expect("GetUsagePlans");
    let plan = &plans.items()[0];
    assert_eq!(plan.throttle().map(|t| (t.rate_limit(), t.burst_limit())), Some((10.0, 20)));
    assert_eq!(plan.quota().map(|q| q.limit()), Some(1000));
    assert_eq!(plan.api_stages()[0].api_id(), Some(api_id.as_str()));
    let keys = v1.get_api_keys().include_values(true).send().await.expect("GetApiKeys");
    let mut values: Vec<(&str, bool)> =
        keys.items().iter().map(|k| (k.value().unwrap_or(""), k.enabled())).collect();
    values.sort();
    assert_eq!(values, [(alice.value.expose(), true), (bob.value.expose(), true)]);
    let links =
        v1.get_usage_plan_keys().usage_plan_id(plan.id().unwrap()).send().await.expect("GetUsagePlanKeys");
    assert_eq!(links.items().len(), 2);

    let writes = aws.calls().writes();
    aws.apply(&gw).await.expect("no-op apply");
    assert_eq!(aws.calls().writes() - writes, 0, "calls: {:?}", aws.calls().snapshot());

    // Bob disabled, Alice's key rotated (a new value is a new API key), Carol added.
    let mut rotated = key("shop/alice", "alice-rotated-0123456789-xyz");
    rotated.consumer = "alice".into();
    let mut bob_off = bob.clone();
    bob_off.disabled = true;
    let carol = key("shop/carol", "carol-0123456789-abcdefghij");
    let changed = rest_gateway(&settings, vec![rotated.clone(), bob_off, carol.clone()]);
    aws.apply(&changed).await.expect("apply keys");
    let keys = v1.get_api_keys().include_values(true).send().await.expect("GetApiKeys");
    let mut values: Vec<(&str, bool)> =
        keys.items().iter().map(|k| (k.value().unwrap_or(""), k.enabled())).collect();
    values.sort();
    let mut want =
        vec![(rotated.value.expose(), true), (bob.value.expose(), false), (carol.value.expose(), true)];
    want.sort();
    assert_eq!(values, want);
    let links =
        v1.get_usage_plan_keys().usage_plan_id(plan.id().unwrap()).send().await.expect("GetUsagePlanKeys");
    assert_eq!(links.items().len(), 3);

    // One changed route on a REST API: the method replaced and one deployment.
    let mut one = changed.clone();
    one.routes[1].action = ActionIr::Forward { backends: vec![backend("https://status-v2.example.com")] };
    let plan = aws.plan(&one).await.expect("plan");
    let steps: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    let writes = aws.calls().writes();
    aws.execute(&plan).await.expect("execute");
    // DeleteMethod + PutMethod + PutIntegration + CreateDeployment
    assert_eq!(aws.calls().writes() - writes, 4, "calls: {:?}", aws.calls().snapshot());

    aws.delete(&one.key).await.expect("delete");
    let left = inventory(&inspector).await;
    assert!(left.values().all(Vec::is_empty), "left behind: {left:?}");
}

#[tokio::test]
async fn switching_auto_from_http_to_rest_replaces_the_api() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "Auto");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    let without_keys = gateway(
        "auto",
        &settings,
        vec![route("a", PathMatch::Prefix("/a".into()), "https://a.example.com")],
        Vec::new(),
    );
    let first = aws.apply(&without_keys).await.expect("HTTP API");
    assert!(first.replaced.is_empty(), "{first:?}");
    let http_id = first.resource_ids["api"].clone();
    assert_eq!(inventory(&inspector).await["http-apis"].len(), 1);
    let mut with_keys = without_keys.clone();
    with_keys.routes[0].policy = Some("shop/gold".into());
    with_keys.policies = vec![gold_policy(vec![key("shop/alice", "alice-0123456789-abcdefghij")])];
    let switched = aws.apply(&with_keys).await.expect("REST API");
    let now = inventory(&inspector).await;
    assert_eq!((now["http-apis"].len(), now["rest-apis"].len(), now["api-keys"].len()), (0, 1, 1), "{now:?}");
    // The custom domain moved from the HTTP API's domains to the REST API's.
    assert!(now["domain-names"].is_empty(), "{now:?}");
    assert_eq!(now["rest-domain-names"].len(), 1, "{now:?}");

    // Said, not done silently: the old and the new hostname, and the recreated domain.
    let rest_id = switched.resource_ids["api"].clone();
    let host = |id: &str| format!("{id}.execute-api.us-east-1.amazonaws.com");
    assert_eq!(switched.replaced.len(), 1, "{switched:?}");
    let note = &switched.replaced[0];
    assert!(
        note.contains(&format!("HTTP API {http_id}")) && note.contains(&format!("REST API {rest_id}")),
        "{note}"
    );
    assert!(note.contains(&host(&http_id)) && note.contains(&host(&rest_id)), "{note}");
    assert!(note.contains("api.shop.example"), "{note}");
    assert_eq!(switched.addresses, [host(&rest_id), "api.shop.example".to_string()]);
    assert!(aws.apply(&with_keys).await.expect("resync").replaced.is_empty(), "said once");

    // And back once no policy needs keys.
    let back = aws.apply(&without_keys).await.expect("HTTP API again");
    assert_eq!(back.replaced.len(), 1, "{back:?}");
    let new_http = back.resource_ids["api"].clone();
    assert!(back.replaced[0].contains(&format!("REST API {rest_id}")), "{:?}", back.replaced);
    assert!(back.replaced[0].contains(&host(&new_http)), "{:?}", back.replaced);
    let plan = aws.plan(&with_keys).await.expect("plan");
    let replacement = plan.replacement.expect("the plan says it replaces the HTTP API");
    assert_eq!((replacement.old, replacement.new), ((Kind::Api, new_http), Kind::RestApi));
    aws.delete(&with_keys.key).await.expect("delete");
}

#[tokio::test]
async fn out_of_band_changes_are_repaired() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "HTTP");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    let gw = gateway("drift", &settings, http_routes(), vec![throttle_policy()]);
    let api_id = aws.apply(&gw).await.expect("apply").resource_ids["api"].clone();
    let (v2, _) = inspector.sdk();

    // Someone deletes a route, repoints another integration and adds a route of their own.
    let routes = v2.get_routes().api_id(&api_id).send().await.unwrap();
    let healthz = routes.items().iter().find(|r| r.route_key() == Some("GET /healthz")).unwrap();
    v2.delete_route().api_id(&api_id).route_id(healthz.route_id().unwrap()).send().await.unwrap();
    let orders = routes.items().iter().find(|r| r.route_key() == Some("ANY /orders")).unwrap();
    let integration = orders.target().unwrap().trim_start_matches("integrations/");
    v2.update_integration()
        .api_id(&api_id)
        .integration_id(integration)
        .integration_uri("https://evil.example.com")
        .send()
        .await
        .unwrap();
    let stray = v2
        .create_route()
        .api_id(&api_id)
        .route_key("ANY /stray")
        .target(orders.target().unwrap())
        .send()
        .await
        .unwrap();

    let plan = aws.plan(&gw).await.expect("plan");
    let steps: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert!(steps.iter().any(|s| s.starts_with("+ create route GET /healthz")), "{steps:?}");
    assert!(steps.iter().any(|s| s.starts_with("~ update integration")), "{steps:?}");
    assert!(
        steps.iter().any(|s| s == &format!("- delete route ANY /stray ({})", stray.route_id().unwrap())),
        "{steps:?}"
    );
    aws.execute(&plan).await.expect("repair");
    assert_eq!(by_route_uri(&inspector, &api_id, "ANY /orders").await, "https://orders.example.com");
    let writes = aws.calls().writes();
    aws.apply(&gw).await.expect("converged");
    assert_eq!(aws.calls().writes() - writes, 0, "{:?}", aws.plan(&gw).await.map(|p| p.changes));
    aws.delete(&gw.key).await.expect("delete");
}

#[tokio::test]
async fn untagged_and_foreign_look_alikes_are_never_touched() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "Auto");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    let (v2, v1) = inspector.sdk();
    // Same names as ours, but no owner tag, or another cluster's.
    let untagged = v2
        .create_api()
        .name("tollbridge-shop-web")
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Http)
        .send()
        .await
        .unwrap();
    let foreign = v2
        .create_api()
        .name("tollbridge-shop-web")
        .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Http)
        .tags(OWNER, "other-cluster/shop/web")
        .send()
        .await
        .unwrap();
    let rest = v1.create_rest_api().name("tollbridge-shop-rest").send().await.unwrap();
    let key = v1
        .create_api_key()
        .name("tollbridge shop/rest shop/alice")
        .value("untagged-0123456789-abcdefgh")
        .enabled(true)
        .send()
        .await
        .unwrap();

    let gw = gateway("web", &settings, http_routes(), vec![throttle_policy()]);
    let plan = aws.plan(&gw).await.expect("plan");
    assert!(
        plan.changes.iter().all(|c| matches!(c, tollbridge_aws::changes::Change::Create { .. })),
        "{:?}",
        plan.changes
    );
    aws.apply(&gw).await.expect("apply");
    aws.delete(&gw.key).await.expect("delete");
    aws.apply(&rest_gateway(&settings, vec![key_ir()])).await.expect("apply rest");
    aws.delete(&GatewayKey { namespace: "shop".into(), name: "rest".into(), ..GatewayKey::default() })
        .await
        .expect("delete rest");

    let left = inventory(&inspector).await;
    let ids = |kind: &str| left[kind].iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    let mut apis = ids("http-apis");
    apis.sort();
    let mut want = vec![untagged.api_id().unwrap().to_string(), foreign.api_id().unwrap().to_string()];
    want.sort();
    assert_eq!(apis, want);
    assert_eq!(ids("rest-apis"), [rest.id().unwrap()]);
    assert_eq!(ids("api-keys"), [key.id().unwrap()]);
    let no_domains = left["domain-names"].is_empty() && left["rest-domain-names"].is_empty();
    assert!(left["usage-plans"].is_empty() && no_domains, "{left:?}");
}

#[tokio::test]
async fn a_conflict_is_reported_as_invalid_with_the_resource_named() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "HTTP");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    // Someone else's custom domain with the Gateway's hostname: creating ours is a 409.
    let configuration = aws_sdk_apigatewayv2::types::DomainNameConfiguration::builder()
        .certificate_arn("arn:aws:acm:us-east-1:123456789012:certificate/theirs")
        .build();
    inspector
        .sdk()
        .0
        .create_domain_name()
        .domain_name("api.shop.example")
        .domain_name_configurations(configuration)
        .send()
        .await
        .expect("their domain");

    let gw = gateway("web", &settings, http_routes(), vec![throttle_policy()]);
    let error = aws.apply(&gw).await.expect_err("the hostname is taken");
    assert!(matches!(error, ProviderError::Invalid(_)), "{error:?}");
    assert!(!error.is_retryable(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("create domain-name api.shop.example"), "{message}");
    assert!(message.contains("ConflictException"), "{message}");
    // Not retried by the SDK either: one attempt.
    assert_eq!(aws.calls().snapshot().get("CreateDomainName"), Some(&1), "{:?}", aws.calls().snapshot());

    aws.delete(&gw.key).await.expect("delete");
    let left = inventory(&inspector).await;
    assert_eq!(left["domain-names"], [("api.shop.example".to_string(), String::new())], "theirs stays");
    assert!(left["http-apis"].is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_injected_409_stops_the_apply_after_one_attempt() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    let settings = settings(&proxy.url(), "HTTP");
    let aws = provider(&settings).await;
    proxy.add(
        Rule::always(Fault::Error { status: 409, error_type: "ConflictException".into() })
            .method("POST")
            .path_contains("/routes"),
    );
    let gw = gateway("web", &settings, http_routes(), vec![throttle_policy()]);
    let error = aws.apply(&gw).await.expect_err("every route create conflicts");
    assert!(matches!(&error, ProviderError::Invalid(m) if m.contains("create route ")), "{error:?}");
    let route_posts =
        proxy.seen().iter().filter(|s| s.method == "POST" && s.path.ends_with("/routes")).count();
    assert_eq!(route_posts, 1, "not retried: {}", proxy.log());
    proxy.clear_rules();
    aws.delete(&gw.key).await.expect("delete");
}

#[tokio::test]
async fn retried_attempts_go_through_the_limiter() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    let settings = settings(&proxy.url(), "HTTP");
    let aws = provider(&settings).await;
    // The first two attempts of CreateApi are throttled; the SDK retries them.
    proxy.add(Rule::next(2, Fault::Throttle).method("POST").path_contains("/v2/apis"));
    let gw = gateway(
        "web",
        &settings,
        vec![route("a", PathMatch::Exact("/a".into()), "https://a.example.com")],
        Vec::new(),
    );
    aws.apply(&gw).await.expect("apply through throttling");
    assert_eq!(proxy.injected(), 2, "{}", proxy.log());
    assert_eq!(aws.calls().snapshot()["CreateApi"], 3);
    assert_eq!(aws.limiter().granted("CreateApi"), 3, "every attempt is let through by the limiter");
    // Every attempt of every operation, reads included.
    for (operation, attempts) in aws.calls().snapshot() {
        assert_eq!(aws.limiter().granted(&operation), attempts, "{operation}");
    }
    aws.delete(&gw.key).await.expect("delete");
}

#[tokio::test]
async fn an_operation_waiting_for_its_interval_does_not_hold_up_others() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "HTTP");
    let interval = Duration::from_secs(4);
    let limits = Limits {
        rate: f64::INFINITY,
        burst: f64::INFINITY,
        per_operation: std::collections::HashMap::from([("CreateApi", interval)]),
    };
    let aws = limited_provider(&settings, limits).await;
    let one_route = || vec![route("a", PathMatch::Exact("/a".into()), "https://a.example.com")];
    // No listener hostnames: the two gateways would claim the same custom domain.
    let bare =
        |name: &str| GatewayIr { listeners: Vec::new(), ..gateway(name, &settings, one_route(), Vec::new()) };
    let (first, second) = (bare("first"), bare("second"));
    let pending = aws.plan(&second).await.expect("plan of the second gateway");
    assert!(pending.changes[0].action().starts_with("create api"), "{:?}", pending.changes);

    // The first gateway's CreateApi starts the interval: the second's must wait for it.
    aws.apply(&first).await.expect("first gateway");
    let started = std::time::Instant::now();
    let (executed, (planned, creates_when_planned)) = tokio::join!(aws.execute(&pending), async {
        let plan = aws.plan(&first).await;
        (plan, aws.calls().snapshot()["CreateApi"])
    });
    executed.expect("second gateway");
    assert!(planned.expect("plan of the first gateway").changes.is_empty());
    assert_eq!(creates_when_planned, 1, "the plan's reads waited behind the pending CreateApi");
    assert_eq!(aws.calls().snapshot()["CreateApi"], 2);
    // The interval still holds for CreateApi itself (bounded from below only).
    assert!(started.elapsed() >= interval / 2, "{:?}", started.elapsed());
    aws.delete(&first.key).await.expect("delete first");
    aws.delete(&second.key).await.expect("delete second");
}

/// `n` resources of someone else of every kind the provider lists (HTTP APIs, domain names,
/// REST APIs, API keys, usage plans), made before ours so that ours come after them.
async fn foreign_resources(inspector: &AwsProvider, n: usize) {
    let (v2, v1) = inspector.sdk();
    for i in 0..n {
        v2.create_api()
            .name(format!("theirs-{i}"))
            .protocol_type(aws_sdk_apigatewayv2::types::ProtocolType::Http)
            .send()
            .await
            .expect("their HTTP API");
        let configuration = aws_sdk_apigatewayv2::types::DomainNameConfiguration::builder()
            .certificate_arn("arn:aws:acm:us-east-1:123456789012:certificate/theirs")
            .build();
        v2.create_domain_name()
            .domain_name(format!("h{i}.theirs.example"))
            .domain_name_configurations(configuration)
            .send()
            .await
            .expect("their domain");
        v1.create_rest_api().name(format!("theirs-{i}")).send().await.expect("their REST API");
        v1.create_api_key()
            .name(format!("theirs-{i}"))
            .value(foreign_key_value(i))
            .enabled(true)
            .send()
            .await
            .expect("their API key");
        v1.create_usage_plan().name(format!("theirs-{i}")).send().await.expect("their usage plan");
        v1.create_domain_name()
            .domain_name(format!("r{i}.theirs.example"))
            .regional_certificate_arn("arn:aws:acm:us-east-1:123456789012:certificate/theirs")
            .send()
            .await
            .expect("their REST domain");
    }
}

/// The value of someone else's API key number `i`.
fn foreign_key_value(i: usize) -> String {
    format!("their-secret-{i:02}-0123456789abcdef")
}

#[tokio::test]
async fn resources_past_the_first_page_are_found() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    proxy.page_lists(25);
    let inspector = provider(&settings(Moto::shared().url(), "HTTP")).await;
    foreign_resources(&inspector, 30).await;
    let before = inventory(&inspector).await;
    let prefix_routes: Vec<RouteIr> = (0..15)
        .map(|i| {
            route(&format!("r{i}"), PathMatch::Prefix(format!("/r{i}")), &format!("https://r{i}.example.com"))
        })
        .collect();
    let followed =
        |param: &str| proxy.seen().iter().any(|s| s.query.as_deref().is_some_and(|q| q.contains(param)));

    // An HTTP API with 30 routes and 30 integrations (a prefix route: its path and the rest).
    let http_settings = settings(&proxy.url(), "HTTP");
    let aws = provider(&http_settings).await;
    let http = gateway("paged", &http_settings, prefix_routes.clone(), Vec::new());
    aws.apply(&http).await.expect("apply HTTP API");
    let writes = aws.calls().writes();
    aws.apply(&http).await.expect("resync HTTP API");
    assert_eq!(aws.calls().writes() - writes, 0, "{:?}", aws.plan(&http).await.map(|p| p.changes));
    assert!(followed("nextToken="), "{}", proxy.log());
    let apis = inspector.sdk().0.get_apis().send().await.expect("GetApis");
    assert_eq!(owned_http_api(apis.items(), "paged").len(), 1);
    aws.delete(&http.key).await.expect("delete HTTP API");

    // A REST API with 31 resources and a usage plan with 30 keys.
    let rest_settings = settings(&proxy.url(), "REST");
    let aws = provider(&rest_settings).await;
    let keys =
        (0..30).map(|i| key(&format!("shop/k{i}"), &format!("key-{i:02}-0123456789-abcdefghij"))).collect();
    let mut rest = gateway("paged", &rest_settings, prefix_routes, vec![gold_policy(keys)]);
    rest.routes[0].policy = Some("shop/gold".into());
    aws.apply(&rest).await.expect("apply REST API");
    let writes = aws.calls().writes();
    aws.apply(&rest).await.expect("resync REST API");
    assert_eq!(aws.calls().writes() - writes, 0, "{:?}", aws.plan(&rest).await.map(|p| p.changes));
    assert!(followed("position="), "{}", proxy.log());
    let rest_apis = inspector.sdk().1.get_rest_apis().send().await.expect("GetRestApis");
    let owner = format!("{CLUSTER}/shop/paged");
    let ours =
        rest_apis.items().iter().filter(|a| a.tags().and_then(|t| t.get(OWNER)) == Some(&owner)).count();
    assert_eq!(ours, 1);
    aws.delete(&rest.key).await.expect("delete REST API");

    assert_eq!(inventory(&inspector).await, before, "theirs untouched, ours gone");
}

#[tokio::test]
async fn values_of_foreign_api_keys_are_never_read() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    let inspector = provider(&settings(Moto::shared().url(), "REST")).await;
    foreign_resources(&inspector, 3).await;
    // Another cluster's key for a Gateway of the same name: tagged, but not ours.
    let (_, v1) = inspector.sdk();
    let other_cluster = "other-cluster-key-0123456789-abcdef";
    v1.create_api_key()
        .name("tollbridge shop/rest shop/alice")
        .value(other_cluster)
        .enabled(true)
        .tags(OWNER, "other-cluster/shop/rest")
        .tags("tollbridge.dev/resource", "shop/alice 00000000")
        .send()
        .await
        .expect("another cluster's key");
    let foreign: Vec<String> = (0..3).map(foreign_key_value).chain([other_cluster.to_string()]).collect();

    let settings = settings(&proxy.url(), "REST");
    let aws = provider(&settings).await;
    let alice = key("shop/alice", "alice-0123456789-abcdefghij");
    let bob = key("shop/bob", "bob-0123456789-abcdefghijkl");
    let gw = rest_gateway(&settings, vec![alice.clone(), bob.clone()]);
    aws.apply(&gw).await.expect("apply");
    let writes = aws.calls().writes();
    aws.apply(&gw).await.expect("resync");
    assert_eq!(aws.calls().writes() - writes, 0, "{:?}", aws.plan(&gw).await.map(|p| p.changes));
    // Alice's key rotated: a new API key with the new value, the old one deleted.
    let rotated = key("shop/alice", "alice-rotated-0123456789-xyz");
    let plan = aws.plan(&rest_gateway(&settings, vec![rotated.clone(), bob.clone()])).await.expect("plan");
    let shown = format!("{plan:?}");
    assert!(!shown.contains(rotated.value.expose()) && !shown.contains(bob.value.expose()), "{shown}");
    aws.execute(&plan).await.expect("rotate");
    let keys = v1.get_api_keys().include_values(true).send().await.expect("GetApiKeys");
    let mut values: Vec<&str> = keys.items().iter().filter_map(|k| k.value()).collect();
    values.sort();
    let mut want: Vec<&str> = foreign.iter().map(String::as_str).collect();
    want.extend([rotated.value.expose(), bob.value.expose()]);
    want.sort();
    assert_eq!(values, want);
    aws.delete(&gw.key).await.expect("delete");

    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.path == "/apikeys"), "{}", proxy.log());
    for request in &seen {
        let query = request.query.as_deref().unwrap_or_default().to_ascii_lowercase();
        assert!(!query.contains("includevalue"), "values asked for: {request}");
        let body = String::from_utf8_lossy(request.response_body.as_deref().unwrap_or_default()).into_owned();
        for value in &foreign {
            assert!(!body.contains(value.as_str()), "{request} answered a foreign key's value");
        }
    }
}

fn key_ir() -> ApiKeyIr {
    key("shop/alice", "alice-0123456789-abcdefghij")
}

/// Applies until it succeeds (each attempt observes again), at most `attempts` times.
async fn converge(aws: &AwsProvider, gw: &GatewayIr, attempts: usize) -> Provisioned {
    let mut last = None;
    for _ in 0..attempts {
        match aws.apply(gw).await {
            Ok(p) => return p,
            Err(e) => last = Some(e),
        }
    }
    panic!("did not converge in {attempts} applies: {last:?}");
}

#[tokio::test]
async fn throttling_errors_and_timeouts_converge_without_duplicates() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    let settings = settings(&proxy.url(), "Auto");
    let aws = provider(&settings).await;
    let inspector = provider(&self::settings(Moto::shared().url(), "Auto")).await;

    // 429s are retried by the SDK within one apply.
    proxy.add(Rule::next(3, Fault::Throttle).writes());
    let gw = gateway("faulty", &settings, http_routes(), vec![throttle_policy()]);
    aws.apply(&gw).await.expect("apply through throttling");
    assert_eq!(proxy.injected(), 3);

    // Creates that succeed upstream but whose answers are lost (connection dropped, or held
    // past the attempt timeout) are retried; the next apply cleans up what was made twice.
    proxy.clear_rules();
    proxy.add(Rule::next(2, Fault::DropResponse).method("POST").path_contains("/routes"));
    proxy.add(
        Rule::next(1, Fault::DelayResponse(Duration::from_secs(3)))
            .method("POST")
            .path_contains("/integrations"),
    );
    proxy.add(Rule::every(4, Fault::InternalError).writes());
    let mut more = gw.clone();
    more.routes.push(route("extra", PathMatch::Prefix("/extra".into()), "https://extra.example.com"));
    more.routes.push(route("more", PathMatch::Exact("/more".into()), "https://more.example.com"));
    converge(&aws, &more, 10).await;
    proxy.clear_rules();
    let provisioned = converge(&aws, &more, 3).await;

    // Exactly what is desired: one API, each route key once, no orphan integration.
    let (v2, _) = inspector.sdk();
    let apis = v2.get_apis().send().await.unwrap();
    assert_eq!(owned_http_api(apis.items(), "faulty").len(), 1);
    let api_id = &provisioned.resource_ids["api"];
    let routes = v2.get_routes().api_id(api_id).send().await.unwrap();
    let mut keys: Vec<&str> = routes.items().iter().filter_map(|r| r.route_key()).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "duplicated route keys: {keys:?}");
    assert_eq!(keys.len(), 10, "{keys:?}");
    let integrations = v2.get_integrations().api_id(api_id).send().await.unwrap();
    let used: std::collections::BTreeSet<&str> = routes
        .items()
        .iter()
        .filter_map(|r| r.target())
        .map(|t| t.trim_start_matches("integrations/"))
        .collect();
    assert_eq!(integrations.items().len(), used.len(), "orphan integrations");
    let writes = aws.calls().writes();
    let left = aws.plan(&more).await.expect("plan").changes;
    aws.apply(&more).await.expect("converged");
    assert_eq!(aws.calls().writes() - writes, 0, "{left:?}");
    aws.delete(&more.key).await.expect("delete");
}

#[test]
fn kinds_are_ordered_parents_first() {
    assert!(Kind::Api < Kind::Integration && Kind::Integration < Kind::Route && Kind::Route < Kind::Stage);
    assert!(
        Kind::RestApi < Kind::Resource && Kind::Resource < Kind::Method && Kind::Method < Kind::Deployment
    );
    assert!(Kind::UsagePlan < Kind::ApiKey && Kind::ApiKey < Kind::UsagePlanKey);
}

fn jwt_policy(audiences: &[&str]) -> QuotaPolicyIr {
    QuotaPolicyIr {
        id: "shop/sso".into(),
        api_key: None,
        jwt: Some(JwtIr {
            issuer: "https://login.shop.example".into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            jwks: JwksIr::OpenIdDiscovery,
            consumer_claim: "sub".into(),
            required_claims: Vec::new(),
            consumer_header: "x-tollbridge-consumer".into(),
            forward_token: true,
        }),
        rate_limit: None,
        quota: None,
        keys: Vec::new(),
    }
}

#[tokio::test]
async fn http_api_jwt_authorizer_guards_the_policys_routes_and_goes_with_it() {
    let _moto = Moto::fresh().await;
    let settings = settings(Moto::shared().url(), "HTTP");
    let aws = provider(&settings).await;
    let inspector = provider(&settings).await;
    let mut orders = route("orders", PathMatch::Exact("/orders".into()), "https://orders.example.com");
    orders.policy = Some("shop/sso".into());
    let open = route("health", PathMatch::Exact("/healthz".into()), "https://status.example.com");
    let gw = gateway("jwt", &settings, vec![orders.clone(), open.clone()], vec![jwt_policy(&["orders-api"])]);

    let provisioned = aws.apply(&gw).await.expect("apply");
    assert!(provisioned.unprovisioned.is_empty(), "{:?}", provisioned.unprovisioned);
    let api_id = provisioned.resource_ids["api"].clone();
    let (v2, _) = inspector.sdk();
    let routes = v2.get_routes().api_id(&api_id).send().await.expect("GetRoutes");
    let route_of = |key: &str| routes.items().iter().find(|r| r.route_key() == Some(key)).cloned().unwrap();
    let guarded = route_of("ANY /orders");
    assert_eq!(guarded.authorization_type().map(|t| t.as_str()), Some("JWT"));
    let authorizer = v2
        .get_authorizer()
        .api_id(&api_id)
        .authorizer_id(guarded.authorizer_id().expect("an authorizer"))
        .send()
        .await
        .expect("GetAuthorizer");
    let jwt = authorizer.jwt_configuration().expect("a JWT configuration");
    assert_eq!(jwt.issuer(), Some("https://login.shop.example"));
    assert_eq!(jwt.audience(), ["orders-api"]);
    assert_eq!(authorizer.identity_source(), ["$request.header.Authorization"]);
    assert_ne!(route_of("ANY /healthz").authorization_type().map(|t| t.as_str()), Some("JWT"));
    let integration = v2
        .get_integration()
        .api_id(&api_id)
        .integration_id(guarded.target().unwrap().trim_start_matches("integrations/"))
        .send()
        .await
        .expect("GetIntegration");
    assert_eq!(
        integration.request_parameters().unwrap()["overwrite:header.x-tollbridge-consumer"],
        "$context.authorizer.claims.sub"
    );

    // Applied again: nothing to write. A new audience updates the authorizer in place.
    let writes = aws.calls().writes();
    aws.apply(&gw).await.expect("re-apply");
    assert_eq!(aws.calls().writes(), writes, "a no-op apply wrote");
    let wider = gateway(
        "jwt",
        &settings,
        vec![orders.clone(), open.clone()],
        vec![jwt_policy(&["web", "orders-api"])],
    );
    aws.apply(&wider).await.expect("apply wider");
    assert_eq!(aws.calls().writes(), writes + 1, "one UpdateAuthorizer");
    let updated = v2
        .get_authorizer()
        .api_id(&api_id)
        .authorizer_id(guarded.authorizer_id().unwrap())
        .send()
        .await
        .expect("GetAuthorizer");
    assert_eq!(updated.jwt_configuration().unwrap().audience(), ["orders-api", "web"]);

    // Without an audience the route stays, behind an authorizer no token satisfies (left out,
    // a broader route could answer its paths unchecked), and the reason is reported.
    let unchecked = gateway("jwt", &settings, vec![orders.clone(), open.clone()], vec![jwt_policy(&[])]);
    let provisioned = aws.apply(&unchecked).await.expect("apply without audience");
    assert!(
        provisioned
            .unprovisioned
            .iter()
            .any(|u| u.contains("at least one audience; its routes refuse every token")),
        "{:?}",
        provisioned.unprovisioned
    );
    let routes = v2.get_routes().api_id(&api_id).send().await.unwrap();
    let denied =
        routes.items().iter().find(|r| r.route_key() == Some("ANY /orders")).expect("the route stays");
    assert_eq!(denied.authorization_type().map(|t| t.as_str()), Some("JWT"));
    let deny = v2
        .get_authorizer()
        .api_id(&api_id)
        .authorizer_id(denied.authorizer_id().unwrap())
        .send()
        .await
        .expect("GetAuthorizer");
    assert_eq!(deny.jwt_configuration().unwrap().audience(), ["tollbridge.dev/deny-all"]);

    // The policy goes: the route is open again and the authorizer is deleted.
    let mut plain = orders.clone();
    plain.policy = None;
    aws.apply(&gateway("jwt", &settings, vec![plain, open], Vec::new())).await.expect("apply without policy");
    let routes = v2.get_routes().api_id(&api_id).send().await.unwrap();
    let orders_now =
        routes.items().iter().find(|r| r.route_key() == Some("ANY /orders")).expect("route back");
    assert_ne!(orders_now.authorization_type().map(|t| t.as_str()), Some("JWT"));
    let gone =
        v2.get_authorizer().api_id(&api_id).authorizer_id(guarded.authorizer_id().unwrap()).send().await;
    assert!(gone.is_err(), "the authorizer is left: {gone:?}");
    aws.delete(&gw.key).await.expect("delete");
}
