//! The Azure API Management provider against the fake service (tests/support), every request
//! validated against Microsoft's API description by Prism: the lifecycle, the mapping rows,
//! products and subscriptions, long-running operations, ETag conflicts, injected 429/500,
//! drift repair, no writes on a no-op resync, and nothing left after delete.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{Apim, Fault, Kind, Lro, Recorder, Rule};
use tollbridge_azure::arm::StaticToken;
use tollbridge_azure::AzureProvider;
use tollbridge_provider::*;

fn settings(apim: &Apim) -> AzureSettings {
    AzureSettings {
        subscription_id: apim.subscription_id().into(),
        resource_group: apim.resource_group().into(),
        service_name: apim.service_name().into(),
        endpoint: Some(apim.url().into()),
        credential: "WorkloadIdentity".into(),
        tier: Some("Developer".into()),
    }
}

fn provider(apim: &Apim) -> AzureProvider {
    AzureProvider::new(&settings(apim), "cluster", Some(Arc::new(StaticToken(apim.token().into()))))
        .expect("provider")
}

fn backend(url: &str, weight: u32) -> BackendIr {
    BackendIr {
        name: format!("shop/{url}"),
        weight,
        target: BackendTarget::Url { url: url.into() },
        protocol: Default::default(),
        tls: None,
        request_headers: HeaderModifier::default(),
        response_headers: HeaderModifier::default(),
    }
}

fn route(name: &str, path: PathMatch, backends: Vec<BackendIr>) -> RouteIr {
    RouteIr {
        id: RouteId { namespace: "shop".into(), name: name.into(), ..RouteId::default() },
        attachments: vec![AttachmentIr {
            listener: "https".into(),
            hostnames: vec!["api.shop.example".into()],
        }],
        matcher: MatchIr { path, method: None, headers: Vec::new(), query_params: Vec::new() },
        filters: FiltersIr::default(),
        action: ActionIr::Forward { backends },
        timeouts: TimeoutsIr::default(),
        retry: None,
        policy: None,
    }
}

/// Routes covering the mapping rows: exact and prefix paths, method, header/query/regex
/// matches on one path, weighted backends, header modifiers both ways, rewrite, redirect,
/// mirror, timeout, and a rule guarded by the keyed policy.
fn routes() -> Vec<RouteIr> {
    let mut v2 = route(
        "orders-v2",
        PathMatch::Prefix("/orders".into()),
        vec![backend("https://orders-v2.example.com", 1)],
    );
    v2.matcher
        .headers
        .push(KeyValueMatch { name: "x-version".into(), value: StringMatch::Exact("2".into()) });
    v2.matcher
        .query_params
        .push(KeyValueMatch { name: "beta".into(), value: StringMatch::Regex("t.*".into()) });
    let mut orders =
        route("orders", PathMatch::Prefix("/orders".into()), vec![backend("https://orders.example.com", 1)]);
    orders
        .filters
        .request_headers
        .set
        .push(HeaderValue { name: "x-env".into(), value: "prod & \"blue\"".into() });
    orders.filters.request_headers.remove.push("x-debug".into());
    orders
        .filters
        .response_headers
        .add
        .push(HeaderValue { name: "x-served-by".into(), value: "tollbridge".into() });
    orders.timeouts.request_ms = Some(12_500);
    orders.retry = Some(RetryIr { codes: vec![502, 503], attempts: 2, backoff_ms: Some(1500) });
    orders.policy = Some("shop/gold".into());
    let mut canary = route(
        "canary",
        PathMatch::Exact("/checkout".into()),
        vec![backend("https://checkout-a.example.com", 90), backend("https://checkout-b.example.com", 10)],
    );
    canary.matcher.method = Some("POST".into());
    let mut legacy =
        route("legacy", PathMatch::Prefix("/old".into()), vec![backend("https://legacy.example.com", 1)]);
    legacy.filters.url_rewrite = Some(UrlRewrite {
        hostname: None,
        path: Some(PathModifier::Prefix { matched: "/old".into(), replacement: "/new".into() }),
    });
    legacy.filters.mirrors.push(MirrorIr {
        backend: backend("https://shadow.example.com", 1),
        numerator: 1,
        denominator: 1,
    });
    let mut moved = route("moved", PathMatch::Exact("/moved".into()), Vec::new());
    moved.action = ActionIr::Redirect(RedirectIr {
        scheme: Some("https".into()),
        hostname: Some("www.shop.example".into()),
        port: None,
        path: Some(PathModifier::Full { path: "/new-home".into() }),
        status: 301,
    });
    let regex =
        route("ids", PathMatch::Regex("/items/[0-9]+".into()), vec![backend("https://items.example.com", 1)]);
    vec![v2, orders, canary, legacy, moved, regex]
}

fn key(id: &str, value: &str, sha: &str) -> ApiKeyIr {
    ApiKeyIr {
        id: id.into(),
        consumer: id.rsplit('/').next().unwrap_or(id).into(),
        sha256: sha.repeat(64 / sha.len()),
        value: SecretString::new(value),
        disabled: false,
        expires_at: None,
    }
}

fn gateway(keys: Vec<ApiKeyIr>) -> GatewayIr {
    GatewayIr {
        key: GatewayKey { namespace: "shop".into(), name: "web".into(), uid: "u".into(), generation: 1 },
        provider: ProviderSettings::Local(LocalSettings::default()),
        listeners: Vec::new(),
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes: routes(),
        policies: vec![QuotaPolicyIr {
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
        }],
    }
}

fn alice() -> ApiKeyIr {
    key("shop/alice", "alice-secret-key-0123456789", "a1")
}

fn policy_of(apim: &Apim, kind: Kind, contains: &str) -> String {
    apim.paths(kind)
        .into_iter()
        .filter_map(|p| apim.policy(&p))
        .find(|xml| xml.contains(contains))
        .unwrap_or_else(|| panic!("no {kind:?} policy containing {contains:?}"))
}

#[tokio::test]
async fn lifecycle_and_every_mapping_row() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    let gw = gateway(vec![alice()]);

    let provisioned = azure.apply(&gw).await.expect("apply");
    assert_eq!(provisioned.addresses, [format!("{}.azure-api.net", apim.service_name())]);
    let apis = apim.paths(Kind::Api);
    assert_eq!(apis.len(), 1, "{apis:?}");
    let api = apim.properties(&apis[0]).unwrap();
    assert_eq!(api["path"], "shop-web");
    assert_eq!(api["subscriptionRequired"], true);
    assert_eq!(api["subscriptionKeyParameterNames"]["header"], "x-api-key");

    let mut operations: Vec<String> = apim
        .paths(Kind::Operation)
        .iter()
        .map(|p| {
            let props = apim.properties(p).unwrap();
            format!("{} {}", props["method"].as_str().unwrap(), props["urlTemplate"].as_str().unwrap())
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        ["* /*", "* /moved", "* /old", "* /old/*", "* /orders", "* /orders/*", "POST /checkout"]
    );

    // Two rules on /orders: one <choose>, the header/query rule first, then the plain one.
    let orders = policy_of(&apim, Kind::OperationPolicy, "x-version");
    assert!(orders.find("x-version").unwrap() < orders.find("x-env").unwrap(), "{orders}");
    assert!(orders.contains("beta"), "{orders}");
    assert!(orders.contains("exists-action=\"delete\""), "{orders}");
    assert!(orders.contains("x-served-by"), "response header in <outbound>: {orders}");
    // Another product's subscription cannot open the keyed route.
    assert!(orders.contains("context.Product.Id != ") && orders.contains("code=\"403\""), "{orders}");
    assert!(orders.contains("timeout=\"13\""), "{orders}");
    // Its retry: the rule's own branch of the backend section, the body buffered to be sent
    // again; the other rule on the path is forwarded once.
    let retry = "<retry condition=\"@((context.Response == null || context.Response.StatusCode == 502 ||";
    let compact: String = orders.lines().map(str::trim).collect();
    assert!(compact.contains(retry), "{orders}");
    assert!(
        compact.contains(
            "count=\"2\" interval=\"2\" max-interval=\"20\" delta=\"2\" first-fast-retry=\"false\">\
                          <forward-request timeout=\"13\" buffer-request-body=\"true\" /></retry>"
        ),
        "{orders}"
    );
    assert!(
        compact.contains("<otherwise><forward-request timeout=\"13\" /></otherwise></choose></backend>"),
        "{orders}"
    );
    assert!(
        provisioned
            .unprovisioned
            .iter()
            .any(|p| p.contains("shop/orders rule 0: API Management times each retry attempt")),
        "{:?}",
        provisioned.unprovisioned
    );
    assert!(orders.contains("api.shop.example"), "hostname check: {orders}");
    let legacy = policy_of(&apim, Kind::OperationPolicy, "rewrite-uri");
    assert!(legacy.contains("send-one-way-request"), "{legacy}");
    let moved = policy_of(&apim, Kind::OperationPolicy, "Location");
    assert!(moved.contains("code=\"301\"") && moved.contains("www.shop.example"), "{moved}");
    let regex = policy_of(&apim, Kind::OperationPolicy, "Regex.IsMatch(context.Request.Url.Path");
    assert!(regex.contains("items"), "{regex}");

    // Backends and the weighted pool.
    let backends: Vec<serde_json::Value> =
        apim.paths(Kind::Backend).iter().map(|p| apim.properties(p).unwrap()).collect();
    let pool = backends.iter().find(|b| b["type"] == "Pool").expect("a pool backend");
    let weights: Vec<u64> =
        pool["pool"]["services"].as_array().unwrap().iter().map(|s| s["weight"].as_u64().unwrap()).collect();
    assert_eq!(weights, [90, 10]);
    let orders = backends.iter().find(|b| b["url"] == "https://orders.example.com").expect("orders backend");
    assert_eq!(
        orders["tls"],
        serde_json::json!({"validateCertificateChain": true, "validateCertificateName": true})
    );

    // Product, its API, its policy, the subscription with the Secret's key.
    let products = apim.paths(Kind::Product);
    assert_eq!(products.len(), 1);
    let product = apim.properties(&products[0]).unwrap();
    assert_eq!(
        (product["subscriptionRequired"].clone(), product["state"].clone()),
        (true.into(), "published".into())
    );
    assert_eq!(apim.paths(Kind::ProductApi).len(), 1);
    let limits = policy_of(&apim, Kind::ProductPolicy, "rate-limit");
    assert!(
        limits.contains("calls=\"10\"") && limits.contains("<quota calls=\"1000\" renewal-period=\"86400\""),
        "{limits}"
    );
    let subscriptions = apim.names(Kind::Subscription);
    assert_eq!(subscriptions.len(), 1);
    let subscription = apim.properties(&format!("subscriptions/{}", subscriptions[0])).unwrap();
    assert_eq!(subscription["state"], "active");
    assert_eq!(apim.secrets(&subscriptions[0]).unwrap().0, "alice-secret-key-0123456789");

    // Nothing changed: nothing written (policies compared in canonical form).
    let left: Vec<String> =
        azure.plan(&gw).await.expect("plan").changes.iter().map(ToString::to_string).collect();
    assert!(left.is_empty(), "{left:?}");
    let writes = apim.writes();
    azure.apply(&gw).await.expect("no-op apply");
    assert_eq!(apim.writes() - writes, 0, "{}", apim.log());

    // One (prefix) route changed: a new backend, the policies of its two operations (`/old`,
    // `/old/*`) and their markers, the old backend deleted.
    let mut changed = gw.clone();
    changed.routes[3].action =
        ActionIr::Forward { backends: vec![backend("https://legacy-v2.example.com", 1)] };
    let plan = azure.plan(&changed).await.expect("plan");
    let steps: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    let count = |what: &str| steps.iter().filter(|s| s.starts_with(what)).count();
    assert_eq!(
        [
            count("+ create backend"),
            count("~ update operation "),
            count("~ update operation-policy"),
            count("- delete backend")
        ],
        [1, 2, 2, 1],
        "{steps:?}"
    );
    let writes = apim.writes();
    azure.execute(&plan).await.expect("execute");
    // The plan read what it updates (its ETags come from those reads): writes equal changes.
    assert_eq!(apim.writes() - writes, 6, "{}", apim.log());

    // Alice disabled: her subscription suspended.
    let mut disabled = alice();
    disabled.disabled = true;
    azure.apply(&gateway(vec![disabled])).await.expect("disable");
    let subscription = apim.properties(&format!("subscriptions/{}", subscriptions[0])).unwrap();
    assert_eq!(subscription["state"], "suspended");

    azure.delete(&gw.key).await.expect("delete");
    assert!(
        apim.entities().is_empty(),
        "left behind: {:?}",
        apim.entities().iter().map(|e| e.path.clone()).collect::<Vec<_>>()
    );
    apim.assert_no_refusals();
}

#[tokio::test]
async fn long_running_operations_conflicts_and_faults_converge() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    apim.set_lro(Some(Lro::new(2)));
    apim.add(Rule::next(3, Fault::Throttle).writes());
    apim.add(Rule::every(5, Fault::InternalError).writes());
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply through 429s, 500s and long-running operations");
    assert!(apim.injected() >= 3, "{}", apim.log());
    apim.clear_rules();

    // Someone edits an operation between the plan and its execution: whatever the execution
    // makes of it (a write carrying a stale ETag is refused with 412), the next apply starts
    // over from what is there and converges.
    let changed = with_env(&gw, "staging");
    let plan = azure.plan(&changed).await.expect("plan");
    let policy = apim
        .paths(Kind::OperationPolicy)
        .into_iter()
        .find(|p| apim.policy(p).is_some_and(|x| x.contains("x-env")))
        .unwrap();
    let operation = policy.trim_end_matches("/policies/policy").to_string();
    apim.mutate(&operation, |props| props["description"] = "edited by hand".into());
    let first = azure.execute(&plan).await;
    let converged = match first {
        Ok(_) => azure.apply(&changed).await,
        Err(_) => azure.apply(&changed).await,
    };
    converged.expect("converges after a conflict");
    assert!(policy_of(&apim, Kind::OperationPolicy, "x-env").contains("staging"));
    let writes = apim.writes();
    azure.apply(&changed).await.expect("no-op");
    assert_eq!(apim.writes() - writes, 0, "{}", apim.log());
    azure.delete(&gw.key).await.expect("delete");
    assert!(apim.entities().is_empty());
}

#[tokio::test]
async fn drift_is_repaired_and_look_alikes_are_left_alone() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    // A user's own entities, one with a name like ours.
    apim.seed(
        "apis/orders",
        serde_json::json!({ "displayName": "Orders", "path": "orders", "protocols": ["https"] }),
    );
    apim.seed(
        "backends/tb-0000000000-be-x",
        serde_json::json!({ "url": "https://x.example.com", "protocol": "http" }),
    );
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply");

    // Out-of-band: a policy replaced under its untouched operation; another policy replaced
    // and its operation edited; a backend's URL changed; an operation deleted.
    let empty = "<policies><inbound><base /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>";
    let quiet = policy_path(&apim, "rewrite-uri");
    apim.put_policy(&quiet, empty);
    let moved = policy_path(&apim, "www.shop.example");
    apim.put_policy(&moved, empty);
    apim.mutate(moved.trim_end_matches("/policies/policy"), |props| props["displayName"] = "edited".into());
    let orders = apim
        .paths(Kind::Backend)
        .into_iter()
        .find(|p| apim.properties(p).unwrap()["url"] == "https://orders.example.com")
        .unwrap();
    apim.mutate(&orders, |props| props["url"] = "https://evil.example.com".into());
    let checkout = apim
        .paths(Kind::Operation)
        .into_iter()
        .find(|p| apim.properties(p).unwrap()["urlTemplate"] == "/checkout")
        .unwrap();
    apim.remove(&checkout);

    // A resync sees every change but the quiet policy: its operation's marker vouches for it
    // until the next audit. The edited operation's policy is read, found replaced, repaired.
    let plan = azure.plan(&gw).await.expect("plan");
    let steps: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    let moved_op = moved.trim_end_matches("/policies/policy");
    let mut expected = vec![
        format!("~ update backend {orders}"),
        format!("+ create operation {checkout}"),
        format!("~ update operation {moved_op}"),
        format!("+ create operation-policy {checkout}/policies/policy"),
        format!("~ update operation-policy {moved}"),
    ];
    expected.sort();
    let mut sorted = steps.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "{steps:?}");
    azure.execute(&plan).await.expect("repair");
    assert_eq!(apim.properties(&orders).unwrap()["url"], "https://orders.example.com");
    assert!(apim.policy(&moved).unwrap().contains("www.shop.example"));
    assert!(!apim.policy(&quiet).unwrap().contains("rewrite-uri"), "not read: not repaired yet");

    // An audit (here: a restarted operator's first pass; otherwise hourly) reads every policy
    // and repairs the quiet one.
    let restarted = provider(&apim);
    let plan = restarted.plan(&gw).await.expect("plan");
    let steps: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert_eq!(steps, [format!("~ update operation-policy {quiet}")]);
    restarted.execute(&plan).await.expect("repair");
    assert!(apim.policy(&quiet).unwrap().contains("rewrite-uri"));
    let writes = apim.writes();
    azure.apply(&gw).await.expect("converged");
    restarted.apply(&gw).await.expect("converged");
    assert_eq!(apim.writes() - writes, 0, "{}", apim.log());

    azure.delete(&gw.key).await.expect("delete");
    let left: Vec<String> = apim.entities().iter().map(|e| e.path.clone()).collect();
    assert_eq!(left, ["apis/orders", "backends/tb-0000000000-be-x"]);
}

/// The waits before each poll of the API's long-running operation: from the 202 to the first
/// poll, then between polls (arrival times at the fake).
fn poll_gaps(apim: &Apim) -> Vec<Duration> {
    let seen = apim.seen();
    let Some(start) =
        seen.iter().position(|s| s.method == "PUT" && s.status.is_some_and(|c| c.as_u16() == 202))
    else {
        panic!("no long-running PUT: {}", apim.log());
    };
    let mut times = vec![seen[start].at];
    times.extend(seen[start + 1..].iter().filter(|s| s.path.contains("/operationsStatuses/")).map(|s| s.at));
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn long_running_operations_are_polled_as_retry_after_says_in_seconds_and_as_a_date() {
    // The service's `Retry-After` in seconds (1 s), then on the monitor as an HTTP-date (2 s
    // ahead in whole seconds: at least 1 s): no poll comes sooner.
    for lro in [Lro::new(1).retry_after(1), Lro::new(1).retry_after_date(2)] {
        let apim = Apim::start().await;
        let azure = provider(&apim);
        apim.set_lro(Some(lro.clone()));
        azure.apply(&gateway(vec![alice()])).await.expect("apply");
        let gaps = poll_gaps(&apim);
        assert_eq!(gaps.len(), 2, "{lro:?}: {gaps:?}\n{}", apim.log());
        assert!(gaps.iter().all(|g| *g >= Duration::from_millis(950)), "{lro:?}: {gaps:?}\n{}", apim.log());
        assert_eq!(apim.pending_operations(), 0);
    }
}

#[tokio::test]
async fn a_next_link_to_another_endpoint_is_refused_and_gets_no_token() {
    let apim = Apim::start().await;
    let other = Recorder::start().await;
    let azure = provider(&apim);
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply");
    // Every listing now has a second page, and its link leads to another port.
    apim.set_page_size(1);
    apim.set_link_base(Some(other.url()));
    let error = azure.plan(&gw).await.expect_err("a link to another endpoint must not be followed");
    let text = error.to_string();
    assert!(text.contains(other.url()) && text.contains("not the configured ARM endpoint"), "{text}");
    assert!(!text.contains(apim.token()), "{text}");
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    // The same listing with its links on the endpoint is followed.
    apim.set_link_base(None);
    assert!(azure.plan(&gw).await.expect("plan").changes.is_empty());
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let apim = Apim::start().await;
    let other = Recorder::start().await;
    // Straight to the fake: Prism, in between, would follow the redirect itself.
    let settings = AzureSettings { endpoint: Some(apim.fake_url().into()), ..settings(&apim) };
    let azure = AzureProvider::new(&settings, "cluster", Some(Arc::new(StaticToken(apim.token().into()))))
        .expect("provider");
    apim.add(Rule::always(Fault::Redirect(format!("{}/elsewhere", other.url()))).method("GET"));
    let error = azure.plan(&gateway(vec![alice()])).await.expect_err("a redirect is an error");
    assert!(error.to_string().contains("307"), "{error}");
    assert!(other.requests().is_empty(), "{:?}", other.requests());
}

#[tokio::test]
async fn an_operation_monitor_on_another_endpoint_is_refused_and_gets_no_token() {
    for lro in [Lro::new(1).with_location(), Lro::new(1).location_only()] {
        let apim = Apim::start().await;
        let other = Recorder::start().await;
        let azure = provider(&apim);
        apim.set_lro(Some(lro.clone()));
        apim.set_link_base(Some(other.url()));
        let error = azure.apply(&gateway(vec![alice()])).await.expect_err("a monitor elsewhere");
        let text = error.to_string();
        assert!(
            text.contains(other.url()) && text.contains("not the configured ARM endpoint"),
            "{lro:?}: {text}"
        );
        assert!(other.requests().is_empty(), "{lro:?}: {:?}", other.requests());
    }
}

#[tokio::test]
async fn a_404_in_the_middle_of_a_listing_is_an_error_not_its_end() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply");
    apim.set_page_size(2);
    apim.add(
        Rule::next(1, Fault::Error { status: 404, code: "ResourceNotFound".into() })
            .method("GET")
            .path_contains("/operations")
            .query_contains("$skip"),
    );
    let error = azure.plan(&gw).await.expect_err("a listing cut short must not be planned from");
    assert!(error.to_string().contains("page"), "{error}");
    assert_eq!(apim.injected(), 1, "{}", apim.log());
    assert!(azure.plan(&gw).await.expect("plan").changes.is_empty());
}

/// A provider that has applied the usual Gateway (key alice), the Gateway, and the path of its
/// operation policy that sets `x-env`.
async fn applied(apim: &Apim) -> (AzureProvider, GatewayIr, String) {
    let azure = provider(apim);
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply");
    let policy = policy_path(apim, "x-env");
    (azure, gw, policy)
}

/// `gw` with route 1's `x-env` request header set to `value`: a change to one operation policy.
fn with_env(gw: &GatewayIr, value: &str) -> GatewayIr {
    let mut changed = gw.clone();
    changed.routes[1].filters.request_headers.set[0].value = value.into();
    changed
}

/// The path of the operation policy whose XML contains `needle`.
fn policy_path(apim: &Apim, needle: &str) -> String {
    apim.paths(Kind::OperationPolicy)
        .into_iter()
        .find(|p| apim.policy(p).is_some_and(|x| x.contains(needle)))
        .unwrap_or_else(|| panic!("no operation policy containing {needle:?}"))
}

const THEIR_POLICY: &str = "<policies><inbound><base /><set-header name=\"x-other-writer\" exists-action=\"override\"><value>theirs</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>";

#[tokio::test]
async fn a_change_between_plan_and_execute_gets_412_and_is_not_overwritten() {
    let apim = Apim::start().await;
    let (azure, gw, policy) = applied(&apim).await;
    let observed = apim.etag(&policy).unwrap();

    let changed = with_env(&gw, "staging");
    let plan = azure.plan(&changed).await.expect("plan");
    assert!(plan.changes.iter().any(|c| c.to_string() == format!("~ update operation-policy {policy}")));
    // Another writer replaces the policy after our observation.
    apim.put_policy(&policy, THEIR_POLICY);
    apim.clear_seen();

    let error = azure.execute(&plan).await.expect_err("the write must not replace a version it did not see");
    assert!(error.to_string().contains("412"), "{error}");
    assert!(apim.policy(&policy).unwrap().contains("x-other-writer"), "overwritten: {}", apim.log());
    // The write carried the ETag of the observation, not one read just before it.
    let puts = apim.requests("PUT", &policy);
    assert_eq!(puts.len(), 1, "{}", apim.log());
    assert_eq!(puts[0].header("if-match"), Some(observed.as_str()));
    assert_eq!(puts[0].status.map(|s| s.as_u16()), Some(412));
}

#[tokio::test]
async fn apply_plans_again_after_losing_a_race() {
    let apim = Apim::start().await;
    let (azure, gw, policy) = applied(&apim).await;
    let changed = with_env(&gw, "staging");
    // Another writer writes the policy just before our write arrives.
    apim.add(Rule::next(1, Fault::ConcurrentWrite).method("PUT").path_contains("/policies/policy"));
    apim.clear_seen();
    azure.apply(&changed).await.expect("apply observes again and converges");
    assert!(apim.policy(&policy).unwrap().contains("staging"));
    let statuses: Vec<u16> =
        apim.requests("PUT", &policy).iter().filter_map(|s| s.status.map(|c| c.as_u16())).collect();
    assert_eq!(statuses, [412, 200], "{}", apim.log());
}

#[tokio::test]
async fn a_product_with_subscriptions_we_do_not_own_is_kept_with_them_and_reported() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply");
    let product = apim.names(Kind::Product).remove(0);
    let ours = apim.names(Kind::Subscription).remove(0);
    // Someone subscribes a partner to our product by hand.
    apim.seed(
        "subscriptions/partner-key",
        serde_json::json!({ "displayName": "Partner", "scope": format!("/products/{product}"), "state": "active" }),
    );

    // The QuotaPolicy goes: our subscription, the product's API link and policy go; the
    // product stays for the partner's subscription, and the status says so.
    let mut without = gw.clone();
    without.policies.clear();
    without.routes[1].policy = None;
    let provisioned = azure.apply(&without).await.expect("apply");
    assert_eq!(apim.names(Kind::Subscription), ["partner-key"], "{}", apim.log());
    assert!(apim.exists(&format!("products/{product}")));
    assert!(apim.paths(Kind::ProductApi).is_empty() && apim.paths(Kind::ProductPolicy).is_empty());
    let report = provisioned.unprovisioned.join("\n");
    assert!(report.contains(&product) && report.contains("partner-key"), "{report}");
    assert!(!report.contains(&ours), "{report}");

    // The Gateway goes: everything else goes; delete reports what it left and why.
    let error = azure.delete(&gw.key).await.expect_err("a product left behind is reported");
    assert!(error.to_string().contains("partner-key"), "{error}");
    let left: Vec<String> = apim.entities().iter().map(|e| e.path.clone()).collect();
    assert_eq!(left, [format!("products/{product}"), "subscriptions/partner-key".to_string()]);

    // Once the partner's subscription is gone, so is the product.
    apim.remove("subscriptions/partner-key");
    azure.delete(&gw.key).await.expect("delete");
    assert!(apim.entities().is_empty(), "{:?}", apim.entities());
    // Never asked the service to take a product's subscriptions with it.
    let deletes = apim.requests("DELETE", "/products/");
    assert!(!deletes.is_empty() && deletes.iter().all(|s| s.query_param("deleteSubscriptions").is_none()));
}

/// Requests by method and kind of path since the record was cleared: `GET policies` counts
/// policy reads, `GET lists` collection pages.
fn reads(apim: &Apim) -> (usize, usize, usize) {
    let seen = apim.seen();
    let policies = seen.iter().filter(|s| s.method == "GET" && s.path.ends_with("/policies/policy")).count();
    let writes = seen.iter().filter(|s| s.is_write()).count();
    (seen.len(), policies, writes)
}

#[tokio::test]
async fn a_no_op_resync_reads_no_policy_and_a_changed_route_reads_only_its_own() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    let gw = gateway(vec![alice()]);
    azure.apply(&gw).await.expect("apply");

    // No change: one listing each of backends, APIs, the API's operations, products, the
    // product's APIs and subscriptions; no policy read, nothing written.
    apim.clear_seen();
    azure.apply(&gw).await.expect("no-op");
    assert_eq!(reads(&apim), (6, 0, 0), "{}", apim.log());

    // One prefix route changed (`/old`, `/old/*`): the policies of those two operations are
    // read, and no other.
    let mut changed = gw.clone();
    changed.routes[3]
        .filters
        .request_headers
        .set
        .push(HeaderValue { name: "x-new".into(), value: "1".into() });
    apim.clear_seen();
    azure.apply(&changed).await.expect("apply");
    let (_, policies, _) = reads(&apim);
    assert_eq!(policies, 2, "{}", apim.log());
    assert!(policy_of(&apim, Kind::OperationPolicy, "rewrite-uri").contains("x-new"));
    apim.clear_seen();
    azure.apply(&changed).await.expect("no-op");
    assert_eq!(reads(&apim), (6, 0, 0), "{}", apim.log());
}

#[tokio::test]
async fn after_a_failed_write_the_next_pass_reads_every_policy() {
    let apim = Apim::start().await;
    let (azure, gw, policy) = applied(&apim).await;
    let changed = with_env(&gw, "staging");
    // The operation's new marker is written, then its policy's write fails.
    apim.add(
        Rule::next(1, Fault::Error { status: 400, code: "ValidationError".into() })
            .method("PUT")
            .path_contains(&policy),
    );
    azure.apply(&changed).await.expect_err("the policy write fails");
    assert!(!apim.policy(&policy).unwrap().contains("staging"));
    // The marker now vouches for a policy that is not there: the next pass reads them all.
    apim.clear_seen();
    azure.apply(&changed).await.expect("apply");
    assert!(apim.policy(&policy).unwrap().contains("staging"), "{}", apim.log());
    let (_, policies, _) = reads(&apim);
    assert_eq!(policies, apim.paths(Kind::OperationPolicy).len() + apim.paths(Kind::ProductPolicy).len());
    // And the one after is a plain resync again.
    apim.clear_seen();
    azure.apply(&changed).await.expect("no-op");
    assert_eq!(reads(&apim), (6, 0, 0), "{}", apim.log());
}

fn usage_request(api_key: &str, first_day: &str, last_day: &str) -> UsageRequest {
    UsageRequest {
        policy: "shop/gold".into(),
        api_key: api_key.into(),
        first_day: first_day.into(),
        last_day: last_day.into(),
    }
}

#[tokio::test]
async fn key_usage_is_read_from_the_reports_by_subscription_one_report_per_period() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    let bob = key("shop/bob", "bob-secret-key-0123456789", "b2");
    let gw = gateway(vec![alice(), bob]);
    azure.apply(&gw).await.expect("apply");
    let sid = |consumer: &str| {
        apim.names(Kind::Subscription)
            .into_iter()
            .find(|name| {
                apim.properties(&format!("subscriptions/{name}")).unwrap()["displayName"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(consumer))
            })
            .unwrap_or_else(|| panic!("no subscription for {consumer}"))
    };
    let (alice_sid, bob_sid) = (sid("alice"), sid("bob"));
    // Inside the period: counted except blocked calls (401/403/429, the quota's own refusals).
    apim.record_calls(&alice_sid, "2026-12-01T00:00:00", 40, 9, 2);
    apim.record_calls(&alice_sid, "2026-12-06T23:00:00", 5, 0, 0);
    // Outside it (the day before, the day after): not counted.
    apim.record_calls(&alice_sid, "2026-11-30T23:00:00", 1000, 0, 0);
    apim.record_calls(&alice_sid, "2026-12-07T00:00:00", 1000, 0, 0);
    apim.record_calls(&bob_sid, "2026-12-03T12:00:00", 7, 3, 0);
    // Subscriptions of others in the same service, enough to page the report.
    apim.set_page_size(2);
    for n in 0..5 {
        let other = format!("someone-else-{n}");
        apim.seed(
            &format!("subscriptions/{other}"),
            serde_json::json!({"scope": "/apis", "displayName": other}),
        );
        apim.record_calls(&other, "2026-12-02T00:00:00", 100, 0, 0);
    }
    apim.clear_seen();

    let month = [
        usage_request("shop/alice", "2026-12-01", "2026-12-06"),
        usage_request("shop/bob", "2026-12-01", "2026-12-06"),
        usage_request("shop/carol", "2026-12-01", "2026-12-06"),
    ];
    let used = azure.key_usage(&gw, &month).await.expect("key usage");
    assert_eq!(used, [Some(47), Some(7), None], "alice: 40 + 2 + 5; bob: 7; carol has no subscription");
    let reports = apim.requests("GET", "reports/bySubscription");
    assert_eq!(reports.len(), 4, "one report, paged over 7 records of 2: {}", apim.log());
    assert!(reports[0]
        .query_param("$filter")
        .is_some_and(|f| f.contains("timestamp ge datetime'2026-12-01T00:00:00'")));

    // Another period is another report; a key whose subscription is gone is `None`.
    apim.clear_seen();
    let today = [usage_request("shop/alice", "2026-12-06", "2026-12-06")];
    assert_eq!(azure.key_usage(&gw, &today).await.expect("key usage"), [Some(5)]);
    assert_eq!(apim.requests("GET", "reports/bySubscription").len(), 1);
    azure.apply(&gateway(vec![alice()])).await.expect("apply without bob");
    let bob_now = [usage_request("shop/bob", "2026-12-01", "2026-12-06")];
    assert_eq!(azure.key_usage(&gw, &bob_now).await.expect("key usage"), [None]);
    // Dropping `apim` asserts that Prism refused no request: the reports' calls included.
}

#[tokio::test]
async fn a_jwt_policy_becomes_validate_jwt_in_its_routes_counting_per_token_consumer() {
    let apim = Apim::start().await;
    let azure = provider(&apim);
    let mut gw = gateway(vec![alice()]);
    // `orders` keeps the keyed policy; `ids` is guarded by tokens.
    let ids = gw.routes.iter_mut().find(|r| r.id.name == "ids").expect("the ids route");
    ids.policy = Some("shop/sso".into());
    gw.policies.push(QuotaPolicyIr {
        id: "shop/sso".into(),
        api_key: None,
        jwt: Some(JwtIr {
            issuer: "https://login.shop.example/".into(),
            audiences: vec!["orders-api".into()],
            jwks: JwksIr::OpenIdDiscovery,
            consumer_claim: "azp".into(),
            required_claims: vec![RequiredClaimIr { name: "roles".into(), values: vec!["buyer".into()] }],
            consumer_header: "x-consumer".into(),
            forward_token: false,
        }),
        rate_limit: Some(RateLimitIr { requests: 10, period_seconds: 60, burst: 10 }),
        quota: Some(QuotaIr { requests: 1000, period: QuotaPeriod::Day }),
        keys: Vec::new(),
    });

    azure.apply(&gw).await.expect("apply");
    // No product for the token policy: a subscription key of the keyed product cannot skip the
    // check, which runs in the route's own operation branch.
    assert_eq!(apim.paths(Kind::Product).len(), 1, "only the keyed policy's product");
    let xml = policy_of(&apim, Kind::OperationPolicy, "validate-jwt");
    let by_consumer = "shop/sso|&quot; + ((Jwt)context.Variables[&quot;tollbridge-jwt&quot;]).Claims.GetValueOrDefault(&quot;azp&quot;, &quot;&quot;))\"";
    for part in [
        "<openid-config url=\"https://login.shop.example/.well-known/openid-configuration\" />",
        "<issuer>https://login.shop.example/</issuer>",
        "<value>buyer</value>",
        by_consumer,
        "<set-header name=\"Authorization\" exists-action=\"delete\" />",
    ] {
        assert!(xml.contains(part), "{part} missing from:\n{xml}");
    }
    assert_eq!(xml.matches(by_consumer).count(), 2, "rate limit and quota count per consumer:\n{xml}");
    // Checked before anything is counted, inside the branch of the guarded route only.
    assert!(xml.find("<validate-jwt").unwrap() < xml.find("<rate-limit-by-key").unwrap(), "{xml}");
    let orders = policy_of(&apim, Kind::OperationPolicy, "x-served-by");
    assert!(!orders.contains("validate-jwt"), "a route without the policy checks tokens:\n{orders}");
    azure.delete(&gw.key).await.expect("delete");
    assert!(apim.paths(Kind::Product).is_empty());
}
